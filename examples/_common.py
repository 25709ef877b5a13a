"""Shared by the example scripts: the command line (``--smoke``, ``--out``), matplotlib and the progress bar."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm


def parse_args(description: str) -> argparse.Namespace:
    """``--smoke`` (a seconds-long run with the same code paths) and ``--out DIR`` (where the PNG goes)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run (what the tests run)")
    parser.add_argument("--out", default="outputs", help="folder for the figure (default: outputs)")
    args = parser.parse_args()
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # small models: extra threads cost more in synchronisation than they save
    return args


def progress(iterable, desc: str):
    """A tqdm bar that is silent when stderr is not a terminal (``disable=None``)."""
    return tqdm(iterable, desc=desc, disable=None, file=sys.stderr)


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    print(f"wrote {path}")
