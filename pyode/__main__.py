"""Command line of pyode.

    python -m pyode demo [NAME] [--quick] [--quiet] [--out DIR]   run an example (default: cnf), PNGs go to DIR
    python -m pyode info [--quiet]                                 version, kernel backends, optional packages

Progress bars are drawn only when stderr is a terminal; ``--quiet`` turns them off there too. The benchmark
suite compares pyode with its peers and lives in the source checkout: ``python bench/run.py --help``.

Demos: ``cnf`` (a continuous normalising flow on two circles, the README's demo), ``spiral`` (a neural ODE
fitted to a spiral), ``latent`` (latent ODE vs RNN on irregular spirals), ``digits`` (ODE-Net vs ResNet on
sklearn's digits), ``msa`` (E-MSA vs SGD/Adagrad/Adam on the sin(x) toy), ``yopo`` (YOPO vs PGD adversarial
training on digits).
"""

from __future__ import annotations

import argparse
import json

import torch

import pyode


def _demos() -> dict:
    """name -> callable(out_dir, quick, progress) -> dict of figures; imported lazily (they pull in sklearn etc.).
    ``progress`` True: bars on a terminal only; False: none."""

    def cnf(out, quick, progress):
        from pyode.nn.demos import run_cnf_demo

        return run_cnf_demo(out, quick, progress=progress)

    def spiral(out, quick, progress):
        from pyode.examples import spiral as example

        return example.run(out, iterations=10 if quick else 300, quiet=not progress)

    def latent(out, quick, progress):
        from pyode.nn.demos import run_spiral_comparison

        return run_spiral_comparison(out, quick, progress=progress)

    def digits(out, quick, progress):
        from pyode.nn.demos import run_digits_comparison

        return run_digits_comparison(out, quick, progress=progress)

    def msa(out, quick, progress):
        from pyode.control import run_msa_demo

        return run_msa_demo(out, quick, progress=progress)

    def yopo(out, quick, progress):
        from pyode.control import run_yopo_demo

        return run_yopo_demo(out, quick, progress=progress)

    return {"cnf": cnf, "spiral": spiral, "latent": latent, "digits": digits, "msa": msa, "yopo": yopo}


def _print_figures(name: str, figures: dict) -> None:
    if name == "cnf":
        print(f"two circles, held-out NLL (nats): CNF {figures['test_nll']:.3f} | single Gaussian "
              f"{figures['gaussian_nll']:.3f} | true density (floor) {figures['true_density_nll']:.3f}")
    shown = {k: v for k, v in figures.items() if isinstance(v, (int, float, str))}
    print(json.dumps(shown, indent=2))


def info() -> dict:
    """The version, the kernel backends and which optional packages are importable (with versions)."""
    from importlib import metadata

    optional = {}
    for dist in ("numba", "cffi", "scipy", "scikit-learn", "dask", "distributed", "torchdiffeq", "torchode",
                 "matplotlib", "tqdm", "mkdocs"):
        try:
            optional[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            optional[dist] = None
    try:
        from pyode.native import _lib

        native = {"library": str(_lib.library_path())}
    except ImportError as exc:
        native = {"library": None, "error": str(exc)}
    return {"version": pyode.__version__, "torch": torch.__version__, "backends": pyode.backend_info(),
            "native": native, "optional": optional}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run an example")
    demo.add_argument("name", nargs="?", default="cnf", choices=sorted(_demos()))
    demo.add_argument("--out", default="outputs", help="folder for the PNGs (default: outputs)")
    demo.add_argument("--quick", action="store_true", help="a seconds-long smoke version")
    demo.add_argument("--quiet", action="store_true", help="no progress bars, even on a terminal")
    info_parser = sub.add_parser("info", help="print the version, kernel backends and optional packages")
    info_parser.add_argument("--quiet", action="store_true", help="print only the version")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(pyode.__version__ if args.quiet else json.dumps(info(), indent=2))
        return 0
    _print_figures(args.name, _demos()[args.name](args.out, args.quick, not args.quiet))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
