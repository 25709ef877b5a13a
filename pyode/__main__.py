"""Command line of pyode.

    python -m pyode demo [NAME] [--quick] [--out DIR]   run an example (default: cnf), PNGs go to DIR
    python -m pyode info                                 which kernel backends are loaded
    python -m pyode bench [ARGS]                         the benchmark suite (see bench/run.py --help)

Demos: ``cnf`` (a continuous normalising flow on two circles, the README's demo), ``spiral`` (a neural ODE
fitted to a spiral), ``latent`` (latent ODE vs RNN on irregular spirals), ``digits`` (ODE-Net vs ResNet on
sklearn's digits), ``msa`` (E-MSA vs SGD/Adagrad/Adam on the sin(x) toy), ``yopo`` (YOPO vs PGD adversarial
training on digits).
"""

from __future__ import annotations

import argparse
import json

import pyode


def _demos() -> dict:
    """name -> callable(out_dir, quick) -> dict of figures; imported lazily (they pull in sklearn etc.)."""

    def cnf(out, quick):
        from pyode.nn.demos import run_cnf_demo

        return run_cnf_demo(out, quick)

    def spiral(out, quick):
        from pyode.examples import spiral as example

        return example.run(out, iterations=10 if quick else 300)

    def latent(out, quick):
        from pyode.nn.demos import run_spiral_comparison

        return run_spiral_comparison(out, quick)

    def digits(out, quick):
        from pyode.nn.demos import run_digits_comparison

        return run_digits_comparison(quick)

    def msa(out, quick):
        from pyode.control import run_msa_demo

        return run_msa_demo(out, quick)

    def yopo(out, quick):
        from pyode.control import run_yopo_demo

        return run_yopo_demo(out, quick)

    return {"cnf": cnf, "spiral": spiral, "latent": latent, "digits": digits, "msa": msa, "yopo": yopo}


def _print_figures(name: str, figures: dict) -> None:
    if name == "cnf":
        print(f"two circles, held-out NLL (nats): CNF {figures['test_nll']:.3f} | single Gaussian "
              f"{figures['gaussian_nll']:.3f} | true density (floor) {figures['true_density_nll']:.3f}")
    shown = {k: v for k, v in figures.items() if isinstance(v, (int, float, str))}
    print(json.dumps(shown, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyode", description="pyode command line")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run an example")
    demo.add_argument("name", nargs="?", default="cnf", choices=sorted(_demos()))
    demo.add_argument("--out", default="outputs", help="folder for the PNGs (default: outputs)")
    demo.add_argument("--quick", action="store_true", help="a seconds-long smoke version")
    sub.add_parser("info", help="print which kernel backends are loaded")
    bench = sub.add_parser("bench", help="run the benchmark suite (bench/run.py)", add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "info":
        print(json.dumps(pyode.backend_info(), indent=2))
        return 0
    if args.command == "bench":
        from pyode.bench import main as bench_main

        return bench_main(args.args)
    _print_figures(args.name, _demos()[args.name](args.out, args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
