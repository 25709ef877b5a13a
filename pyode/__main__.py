"""Command line: ``python -m pyode demo [spiral] [--out DIR]``, ``python -m pyode info``."""

from __future__ import annotations

import argparse
import json

import pyode


def _demos() -> dict:
    from pyode.examples import spiral

    return {"spiral": spiral.run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyode", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run an example")
    demo.add_argument("name", nargs="?", default="spiral", choices=sorted(_demos()))
    demo.add_argument("--out", default="outputs", help="folder for the PNGs (default: outputs)")
    sub.add_parser("info", help="print which kernel backends are loaded")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(json.dumps(pyode.backend_info(), indent=2))
        return 0
    result = _demos()[args.name](out_dir=args.out)
    print(json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float, str))}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
