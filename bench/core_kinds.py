"""The stepper kinds of the C++ loop against the Python loops they twin, on torch right-hand sides without autograd.

For each case (``auto`` on Robertson and Van der Pol, the Adams methods, ALF, torchdiffeq's diagonally implicit
grid methods) the same solve runs with
``PYODE_CORE_LOOP=0`` (the Python loop, the reference) and ``=1`` (the C++ loop) in alternation, ``--rounds``
rounds after a warm-up; the table gives each one's median wall time, their ratio, and checks that both took the
same number of evaluations.

Usage: ``python bench/core_kinds.py [--rounds 9] [--out bench/results]``; writes ``<out>/core_kinds.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyode
from bench.stiff import robertson_torch, vdp_torch

F64 = torch.float64


def spiral(t, y):
    return torch.stack([-0.1 * y[0] ** 3 + 2.0 * y[1] ** 3, -2.0 * y[0] ** 3 - 0.1 * y[1] ** 3 + 0.1 * torch.sin(t)])


# name: (func, y0, t, method, rtol, atol, options)
CASES = {
    "auto, Robertson to 1e5": (robertson_torch, [1.0, 0.0, 0.0], [0.0, 1e5], "auto", 1e-6, 1e-10, {}),
    "auto, Van der Pol mu=1000": (vdp_torch, [2.0, 0.0], [0.0, 3000.0], "auto", 1e-6, 1e-6, {}),
    "explicit_adams, spiral, 1000 steps": (spiral, [1.0, 0.5], [0.0, 10.0], "explicit_adams", 1e-7, 1e-9,
                                           {"step_size": 0.01, "max_order": 4}),
    "implicit_adams, spiral, 1000 steps": (spiral, [1.0, 0.5], [0.0, 10.0], "implicit_adams", 1e-7, 1e-9,
                                           {"step_size": 0.01, "max_order": 4}),
    "alf, spiral, 1000 steps": (spiral, [1.0, 0.5], [0.0, 10.0], "alf", 1e-7, 1e-9, {"step_size": 0.01}),
    "trbdf2, Van der Pol mu=1000, 3000 steps": (vdp_torch, [2.0, 0.0], [0.0, 3.0], "trbdf2", 1e-7, 1e-9,
                                               {"step_size": 0.001}),
    "implicit_euler, Van der Pol mu=1000, 3000 steps": (vdp_torch, [2.0, 0.0], [0.0, 3.0], "implicit_euler", 1e-7,
                                                       1e-9, {"step_size": 0.001}),
}


def solve_once(case: tuple, core: str) -> tuple[float, int]:
    func, y0, t, method, rtol, atol, options = case
    os.environ["PYODE_CORE_LOOP"] = core
    y0, t = torch.tensor(y0, dtype=F64), torch.tensor(t, dtype=F64)
    start = time.perf_counter()
    with torch.no_grad():
        sol = pyode.solve(func, y0, t, method=method, rtol=rtol, atol=atol, options=dict(options))
    return time.perf_counter() - start, sol.stats.nfe


def measure(case: tuple, rounds: int) -> dict:
    times: dict[str, list[float]] = {"0": [], "1": []}
    nfe = {}
    for k in range(rounds + 1):
        for core in ("0", "1") if k % 2 else ("1", "0"):
            seconds, nfe[core] = solve_once(case, core)
            if k:  # round 0 warms up
                times[core].append(seconds)
    return {"python_s": statistics.median(times["0"]), "cpp_s": statistics.median(times["1"]),
            "nfe_python": nfe["0"], "nfe_cpp": nfe["1"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    head = (f"Command: `python {' '.join(sys.argv)}` (1 torch thread, under torch.no_grad; medians of "
            f"{args.rounds} interleaved rounds).")
    lines = [head, "",
             "| case | Python loop | C++ loop | speed-up | evaluations (Python / C++) |", "|---|---|---|---|---|"]
    for name, case in CASES.items():
        r = measure(case, args.rounds)
        lines.append(f"| {name} | {r['python_s'] * 1e3:.1f} ms | {r['cpp_s'] * 1e3:.1f} ms | "
                     f"{r['python_s'] / r['cpp_s']:.1f}x | {r['nfe_python']} / {r['nfe_cpp']} |")
        print(lines[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "core_kinds.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'core_kinds.md'}")


if __name__ == "__main__":
    main()
