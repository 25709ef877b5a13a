"""The floor under a forward+backward time: ``func``'s own cost, without any solver.

For the gradient cases of P1 and P2 this evaluates ``func`` as many times as a solve does (NFE of torchdiffeq's
dopri5 solve in the suite), on states near the solution, records the graph, and backpropagates once through
all outputs. No solver can train faster than this with backprop at that NFE, so it bounds the reachable
"pyode / faster peer" wall-time ratio from below.

Usage: ``python bench/func_floor.py [--threads 1] [--reps 7]``; prints one line per case.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.problems import make_cases

NFE = {("P1", "batch=512"): 110, ("P2", "batch=512"): 212, ("P2", "batch=1"): 266}


def _func_forward_backward(case, nfe: int) -> tuple[float, float]:
    """Seconds for ``nfe`` recorded evaluations of ``case.func`` and for one backward through them."""
    y = tuple(c.detach() for c in case.y0) if isinstance(case.y0, tuple) else case.y0.detach()
    times = torch.linspace(float(case.t[0]), float(case.t[-1]), nfe, dtype=case.t.dtype)
    start = time.perf_counter()
    total = 0.0
    for t in times:
        out = case.func(t, y)
        total = total + sum(o.sum() for o in out) if isinstance(out, tuple) else total + out.sum()
    forward = time.perf_counter() - start
    start = time.perf_counter()
    total.backward()
    return forward, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for case in make_cases(["P1", "P2"], quick=False):
        nfe = NFE.get((case.problem, case.variant))
        if nfe is None:
            continue
        for p in case.params:
            p.requires_grad_(True)
        runs = [_func_forward_backward(case, nfe) for _ in range(args.reps + 1)][1:]  # first: warm-up
        fwd = statistics.median(r[0] for r in runs)
        bwd = statistics.median(r[1] for r in runs)
        print(f"{case.problem} {case.variant}: {nfe} evaluations of func: forward {fwd * 1e3:.1f} ms, "
              f"backward {bwd * 1e3:.1f} ms, total {(fwd + bwd) * 1e3:.1f} ms ({args.threads} thread(s))")


if __name__ == "__main__":
    main()
