"""What the C++ loop pays around each call of a torch ``func`` (pyode._C.TorchRhs), in one process.

    python bench/callback_cost.py [--reps 200]

A solve of rk4 on a fixed grid with a trivial ``func`` (returns a constant (1, 2) float32 tensor), once with 10
and once with 1000 steps: the difference over the 990 extra steps (3960 calls) is the cost per call of the
loop's step plus the callback, free of the per-solve setup. Printed beside it:

- the same with func and FlatFunc taken out: TorchRhs calls a closure that returns a fixed tensor (the loop's
  step, taking the GIL, the two copies and one Python call; the solve's values are then meaningless, only its
  time counts). The difference to the first line is FlatFunc's share: the time tensor, the count, the checks;
- the ways to make the 0-dim time tensor ``func`` receives (``FlatFunc.time_tensor`` uses the cheapest).
"""

from __future__ import annotations

import argparse
import time
import timeit

import numpy as np
import torch

import pyode
from pyode._solvers import core_loop


def _median_seconds(fn, reps: int) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def per_call_us(reps: int) -> float:
    """Seconds per func call (in µs) of the C++ loop's rk4 around a trivial func, setup excluded."""
    y0 = torch.tensor([[2.0, 0.0]])
    t = torch.linspace(0.0, 2.0, 10)
    const = torch.tensor([[-0.1, -0.1]])

    def solve(steps: int) -> float:
        def run():
            return pyode.solve(lambda s, y: const, y0, t, method="rk4", options={"step_size": 2.0 / steps})

        with torch.no_grad():
            return _median_seconds(run, reps)

    return (solve(1000) - solve(10)) / (4 * 990) * 1e6


def _without_func():
    """Makes every C++-loop solve call a closure returning a fixed tensor instead of func (the caller puts
    ``CoreSolver._rhs`` back)."""

    def rhs(self, n, cancel):
        out = torch.zeros(n, dtype=self.fn.dtype)
        return core_loop._C().TorchRhs(call=lambda s: out, y_in=torch.empty(n, dtype=self.fn.dtype), n=n,
                                       item_size=self.fn.dtype.itemsize, cancel=cancel)

    core_loop.CoreSolver._rhs = rhs


def time_tensor_us() -> dict[str, float]:
    """µs per 0-dim float32 time tensor, by construction."""
    env = {"torch": torch, "np": np, "f32": np.float32, "dt": torch.float32}
    ways = {"torch.from_numpy(np.array(s))": "torch.from_numpy(np.array(0.5, dtype=f32))",
            "torch.scalar_tensor(s)": "torch.scalar_tensor(0.5, dtype=dt)",
            "torch.tensor(s)": "torch.tensor(0.5)",
            "one unbound view of 64": "torch.from_numpy(np.empty(64, f32)).unbind()"}
    out = {}
    for name, stmt in ways.items():
        number = 20000
        per = timeit.timeit(stmt, globals=env, number=number) / number * 1e6
        out[name] = per / 64 if "unbound" in name else per
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/callback_cost.py", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=200, help="timed solves per configuration (median)")
    args = parser.parse_args(argv)
    if not core_loop.available():
        raise SystemExit("the C++ loop is not built here (pyode._C and libpyode_native are needed)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    original = core_loop.CoreSolver._rhs
    try:
        full = per_call_us(args.reps)
        _without_func()
        bare = per_call_us(args.reps)
    finally:
        core_loop.CoreSolver._rhs = original
        torch.set_num_threads(threads)
    print(f"per call, trivial func:           {full:.2f} us")
    print(f"per call, without func/FlatFunc:  {bare:.2f} us  (the loop's step, the GIL, two copies, one Python call)")
    for name, us in time_tensor_us().items():
        print(f"time tensor, {name + ':':32s} {us:.2f} us")


if __name__ == "__main__":
    main()
