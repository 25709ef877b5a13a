"""``python -m pyode.bench`` / ``python -m pyode bench``: runs the benchmark suite in ``bench/``.

The suite lives beside the package in a source checkout (it imports torchdiffeq and torchode, which
pyode itself does not depend on): install them with ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "run.py").exists():
        raise SystemExit("pyode.bench needs a source checkout of pyode (the bench/ folder beside pyode/); "
                         "clone the repository and run `python -m pyode.bench` from it")
    if str(root) not in sys.path:
        sys.path.append(str(root))
    from bench.run import main as run_main

    run_main(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
