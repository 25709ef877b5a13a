"""A/B of P3's loop time with the solution written into a pooled buffer or into a fresh ``torch.cat`` result.

One process, the same P3 solve (N = 1e7 float32, dopri5, no autograd) alternating the two, the solution dropped
after each solve as a training or evaluation loop would. Prints the loop time per step (wall time minus the
time inside func, over the 4 steps) of every round.

Usage: ``python bench/p3_output_pool.py [--rounds 4] [--n 10000000]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pyode
from bench.peers import TimedFunc
from bench.problems import DiffusionDecay
from pyode._solvers import problem

VARIANTS = {"pooled": problem.concatenate_outputs, "torch.cat": torch.cat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--n", type=int, default=10**7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    func, y0, t = TimedFunc(DiffusionDecay()), torch.randn(args.n), torch.tensor([0.0, 1.0])
    per_step = {name: [] for name in VARIANTS}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, concatenate in VARIANTS.items():
                problem.concatenate_outputs = concatenate
                func.reset()
                start = time.perf_counter()
                sol = pyode.solve(func, y0, t, rtol=1e-5, atol=1e-5)
                wall = time.perf_counter() - start
                per_step[name].append((wall - func.seconds) / sol.stats.n_steps * 1e3)
                del sol
    problem.concatenate_outputs = VARIANTS["pooled"]
    for name, values in per_step.items():
        print(f"{name:10s} loop ms per step: " + ", ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main()
