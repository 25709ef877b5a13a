"""Non-temporal stores in the single-row stage kernel: on vs off, in one process, interleaved.

Usage: ``python bench/kernels_nt.py [--n 10000000] [--threads 1,2] [--reps 15]``

For each number of terms (a dopri5 stage has 1-6 terms plus the base state), times ``lincomb`` with one
output row of n float32 elements with the policy off (plain stores) and on (every size, every stream
count), beside a STREAM triad on the same n. Bandwidth is counted as STREAM does (streams named by the
kernel, no write-allocate traffic): (terms + 2) * n * 4 bytes. Prints best and median GB/s; the default
policy (``pyode._C.non_temporal()``) is chosen from this table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch

from pyode import _C
from pyode._kernels import compiled

OFF = 1 << 62   # no output is large enough: plain stores
ON = 0          # every output: non-temporal stores


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(n: int, reps: int) -> dict[str, list[float]]:
    """GB/s samples per label: "triad", and "<terms> terms, plain|non-temporal"."""
    ks = [torch.rand(n) for _ in range(6)]
    base, out = torch.rand(n), torch.empty(1, n)
    samples: dict[str, list[float]] = {"triad": []}

    def stage(terms: int) -> None:
        compiled.lincomb_raw(base, ks[:terms], [[0.1 * (j + 1) for j in range(terms)]], like=base, out=out)

    for _ in range(reps):
        samples["triad"].append(3 * n * 4 / _seconds(lambda: torch.add(ks[0], ks[1], alpha=3.0, out=out[0])))
        for terms in range(1, 7):
            for label, policy in (("plain", OFF), ("non-temporal", ON)):
                _C.set_non_temporal(policy)
                samples.setdefault(f"{terms} terms, {label}", []).append(
                    (terms + 2) * n * 4 / _seconds(lambda t=terms: stage(t)))
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args(argv)
    default = _C.non_temporal()
    try:
        for threads in (int(x) for x in args.threads.split(",")):
            torch.set_num_threads(threads)
            print(f"n = {args.n:.0e} float32, {threads} thread(s): GB/s best / median")
            for label, values in measure(args.n, args.reps).items():
                print(f"  {label:22s} {max(values) / 1e9:5.1f} / {statistics.median(values) / 1e9:5.1f}")
    finally:
        _C.set_non_temporal(default)
    print(f"default: non-temporal stores from {default / 2**20:g} MB")


if __name__ == "__main__":
    main()
