"""The floor under pyode's loop time per step when autograd records the solve (P2's backprop rows).

Each stage of an explicit RK step must exist as autograd nodes, because ``func``'s own graph hangs off the
stage input. With torch's eager ops, a stage input ``y0 + sum_j w_j k_j`` that autograd sees costs at least
the ops pyode issues for it (the cheapest sequence found): the weights as a tensor, ``stack`` of the
previous derivatives, a transposed view, ``addmv``, and the views between the solver's flat state and
``func``'s shape. This times each of them on a P2-sized state (2 and 1024 floats) and prints their sum
per stage and per dopri5 step (6 stages), beside the issue's target for P2 (10x below the faster peer's
loop time per step, ~70-85 us in the suite's runs).

Usage: ``python bench/recording_floor.py [--threads 1] [--reps 20000]``
"""

from __future__ import annotations

import argparse
import time

import torch


def _microseconds(fn, reps: int) -> float:
    for _ in range(min(reps, 500)):
        fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e6


def stage_ops(n: int, reps: int) -> dict[str, float]:
    """Microseconds of each recorded op of one 5-term stage input on an (n,) float32 state."""
    y = torch.randn(1, n, requires_grad=True).view(-1)  # a non-leaf, like a stage input
    ks = [torch.randn(n, requires_grad=True) * 1.0 for _ in range(5)]
    weights = [0.1, 0.2, 0.3, 0.4, 0.5]
    stacked, w = torch.stack(ks), torch.tensor(weights)
    return {
        "weights tensor": _microseconds(lambda: torch.tensor([0.01 * a for a in weights], dtype=torch.float32), reps),
        "stack": _microseconds(lambda: torch.stack(ks), reps),
        "transpose view": _microseconds(lambda: stacked.t(), reps),
        "addmv": _microseconds(lambda: torch.addmv(y, stacked.t(), w), reps),
        "2 views (func's shape and back)": 2 * _microseconds(lambda: y.view(1, n), reps),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=20000)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for n in (2, 1024):
        ops = stage_ops(n, args.reps)
        per_stage = sum(ops.values())
        print(f"state of {n} floats: " + ", ".join(f"{k} {v:.1f}" for k, v in ops.items())
              + f" -> {per_stage:.1f} us per stage, {6 * per_stage:.0f} us per dopri5 step (recorded ops only)")


if __name__ == "__main__":
    main()
