"""Eager ``pyode.odeint`` against the same fixed-step solve under ``torch.compile(fullgraph=True)``.

An MLP vector field ``Linear(2, hidden) - tanh - Linear(hidden, 2)`` on a (batch, 2) state, rk4, 100 steps on
[0, 1]; the compiled solve is :func:`pyode._solvers.traced.traced_fixed_solve` (what ``odeint`` runs while
compiling), traced with torch's ``scan`` so the compile time does not grow with the step count. Timings are
medians of interleaved runs (forward without autograd, and forward + backward to y0 and the parameters).

Usage: ``python bench/compile_bench.py [--batch 8] [--hidden 16] [--reps 20] [--loop scan|unroll]
[--combine torch|op]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import pyode
from pyode._solvers.tableaux import TABLEAUX
from pyode._solvers.traced import traced_fixed_solve


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--loop", choices=("scan", "unroll"), default="scan")
    parser.add_argument("--combine", choices=("torch", "op"), default="torch",
                        help="stages combined by plain torch ops (inductor fuses them) or the pyode::lincomb op")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, args.hidden), torch.nn.Tanh(), torch.nn.Linear(args.hidden, 2))
    y0, t = torch.randn(args.batch, 2), torch.linspace(0, 1, 101)

    def func(t, y):
        return net(y)

    solvers = {"eager odeint": lambda y: pyode.odeint(func, y, t, method="rk4"),
               "compiled": torch.compile(lambda y: traced_fixed_solve(func, y, t, TABLEAUX["rk4"], loop=args.loop,
                                                                      combine=args.combine), fullgraph=True)}

    def forward(solve):
        with torch.no_grad():
            return solve(y0)

    def forward_backward(solve):
        y = y0.clone().requires_grad_()
        solve(y).square().sum().backward()

    print(f"compile (forward graph): {_timed(lambda: forward(solvers['compiled'])):.1f} s, "
          f"(forward + backward graphs): {_timed(lambda: forward_backward(solvers['compiled'])):.1f} s")
    diff = (forward(solvers["compiled"]) - forward(solvers["eager odeint"])).abs().max().item()
    for label, run in (("forward", forward), ("forward + backward", forward_backward)):
        times = {name: [] for name in solvers}
        for _ in range(args.reps):
            for name, solve in solvers.items():
                times[name].append(_timed(lambda solve=solve, run=run: run(solve)))
        print(f"{label}: " + ", ".join(f"{name} {statistics.median(v) * 1e3:.2f} ms" for name, v in times.items()))
    print(f"max |compiled - eager| = {diff:.1e} (batch {args.batch}, hidden {args.hidden}, rk4, 100 steps, "
          f"combine={args.combine}, loop={args.loop})")


if __name__ == "__main__":
    main()
