"""A/B of one P3 optimisation at a time, in one process: the same solve alternating "on" and "off".

P3 at N = 1e7 float32 (dopri5, no autograd), the solution dropped after each solve as a training or
evaluation loop would. Prints, per variant state, the loop time per step (wall time minus the time inside
func, over the attempted steps) of every round, its median, and the fraction of the same-process STREAM
triad it reaches (40 N 4 bytes per step, as in the suite).

Optimisations (``--what``):
    carry   the last FSAL stage carrying the partial error (``RKWorkspace.set_error_carry``), or not;
    nt      stage inputs written with non-temporal stores, or plain ones (``pyode._C.set_non_temporal``).

Usage: ``python bench/p3_ab.py --what carry [--rounds 6] [--n 10000000] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pyode
from bench import measure
from bench.peers import TimedFunc
from bench.problems import DiffusionDecay
from pyode import _C, _tuning


def _setter(obj, name: str, on, off) -> Callable[[bool], None]:
    return lambda enabled: setattr(obj, name, on if enabled else off)


DEFAULT_NON_TEMPORAL_BYTES = _C.non_temporal()
SWITCHES: dict[str, Callable[[bool], None]] = {
    "carry": _setter(_tuning, "ERROR_CARRY_MIN_BYTES", _tuning.ERROR_CARRY_MIN_BYTES, 1 << 62),
    "nt": lambda enabled: _C.set_non_temporal(DEFAULT_NON_TEMPORAL_BYTES if enabled else 1 << 62),
}


def loop_ms_per_step(func: TimedFunc, y0: torch.Tensor, t: torch.Tensor) -> float:
    func.reset()
    with torch.no_grad():
        start = time.perf_counter()
        sol = pyode.solve(func, y0, t, rtol=1e-5, atol=1e-5)
        wall = time.perf_counter() - start
    return (wall - func.seconds) / sol.stats.n_steps * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=sorted(SWITCHES), required=True)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--n", type=int, default=10**7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    switch = SWITCHES[args.what]
    func, y0, t = TimedFunc(DiffusionDecay()), torch.randn(args.n), torch.tensor([0.0, 1.0])
    ideal_ms = 40 * args.n * 4 / measure.triad_bandwidth(args.n) * 1e3
    per_step: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for state in (True, False):  # warm-up: the buffer pool, page tables, the kernels' first touch
            switch(state)
            loop_ms_per_step(func, y0, t)
        for r in range(args.rounds):  # alternate which goes first: drift hits both alike
            for state in (("on", "off") if r % 2 == 0 else ("off", "on")):
                switch(state == "on")
                per_step[state].append(loop_ms_per_step(func, y0, t))
    finally:
        switch(True)
    print(f"{args.what}, n = {args.n:.0e}, {args.threads} thread(s); triad limit {ideal_ms:.1f} ms per step")
    for state, values in per_step.items():
        median = statistics.median(values)
        print(f"  {state:3s} loop ms per step: median {median:.1f} (fraction {ideal_ms / median:.3f}); rounds: "
              + ", ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main()
