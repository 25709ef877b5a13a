"""Stiff benchmarks: pyode's stiff methods against SciPy's Radau, BDF and LSODA on the same problems.

- Robertson's chemical kinetics to t = 1e5 (rtol 1e-6, atol 1e-10 at the headline point);
- Van der Pol, mu = 1000, t = 0 .. 3000 (rtol 1e-6, atol 1e-6);
- HIRES to t = 321.8122 (rtol 1e-6, atol 1e-10).

pyode solves with a torch ``func`` (float64 CPU tensors, one row); SciPy with the same right-hand side written in
NumPy. Errors are measured at the final time against SciPy's Radau at rtol 1e-12 (computed once and cached in
``<out>/stiff_reference.json``): Robertson and HIRES per component relative to the component (Robertson's
y2 ~ 7e-8 included), Van der Pol as ``max|y - ref| / max|ref|``. ``func_s``: evaluations x the cost of one call of the right-hand side
alone (torch or NumPy), the floor under the wall time. Wall times are medians over ``--reps`` runs after one warm-up run (which
pays one-off costs such as imports). A sweep over ``--rtols`` (atol scaled alike) gives the work-precision chart
``<out>/stiff_work_precision.png``; ``<out>/stiff.json`` holds every record.

Usage: ``python bench/stiff.py [--reps 3] [--rtols 1e-4,1e-6,1e-8] [--methods kvaerno5,rodas5,auto] [--quick]
[--out bench/results]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import pyode

SCIPY_METHODS = ("Radau", "BDF", "LSODA")


def robertson_torch(t, y):
    y1, y2, y3 = y[0], y[1], y[2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2, 3e7 * y2 * y2])


def robertson_numpy(t, y):
    y1, y2, y3 = y
    return np.array([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2, 3e7 * y2 * y2])


MU = 1000.0


def vdp_torch(t, y):
    return torch.stack([y[1], MU * (1.0 - y[0] * y[0]) * y[1] - y[0]])


def vdp_numpy(t, y):
    return np.array([y[1], MU * (1.0 - y[0] * y[0]) * y[1] - y[0]])


def hires_torch(t, y):
    """HIRES (Schäfer 1975; Hairer & Wanner's test set): 8 reactions of plant physiology."""
    y1, y2, y3, y4, y5, y6, y7, y8 = y.unbind()
    r = 280.0 * y6 * y8
    return torch.stack([-1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007, 1.71 * y1 - 8.75 * y2,
                        -10.03 * y3 + 0.43 * y4 + 0.035 * y5, 8.32 * y2 + 1.71 * y3 - 1.12 * y4,
                        -1.745 * y5 + 0.43 * y6 + 0.43 * y7, -r + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
                        r - 1.81 * y7, -r + 1.81 * y7])


def hires_numpy(t, y):
    y1, y2, y3, y4, y5, y6, y7, y8 = y
    r = 280.0 * y6 * y8
    return np.array([-1.71 * y1 + 0.43 * y2 + 8.32 * y3 + 0.0007, 1.71 * y1 - 8.75 * y2,
                     -10.03 * y3 + 0.43 * y4 + 0.035 * y5, 8.32 * y2 + 1.71 * y3 - 1.12 * y4,
                     -1.745 * y5 + 0.43 * y6 + 0.43 * y7, -r + 0.69 * y4 + 1.71 * y5 - 0.43 * y6 + 0.69 * y7,
                     r - 1.81 * y7, -r + 1.81 * y7])


@dataclass
class Problem:
    name: str
    torch_rhs: object
    numpy_rhs: object
    y0: list
    t1: float
    rtol: float  # the headline tolerances
    atol: float

    def error(self, y: np.ndarray, ref: np.ndarray) -> float:
        if self.name in ("robertson", "hires"):  # every component relative to itself
            return float(np.max(np.abs(y - ref) / np.abs(ref)))
        return float(np.max(np.abs(y - ref)) / np.max(np.abs(ref)))


PROBLEMS = {
    "robertson": Problem("robertson", robertson_torch, robertson_numpy, [1.0, 0.0, 0.0], 1e5, 1e-6, 1e-10),
    "vdp1000": Problem("vdp1000", vdp_torch, vdp_numpy, [2.0, 0.0], 3000.0, 1e-6, 1e-6),
    "hires": Problem("hires", hires_torch, hires_numpy, [1.0, 0, 0, 0, 0, 0, 0, 0.0057], 321.8122, 1e-6, 1e-10),
}


def reference(problem: Problem, cache: Path) -> np.ndarray:
    """y(t1) by SciPy's Radau at rtol 1e-12 (atol scaled alike), cached by problem name."""
    store = json.loads(cache.read_text()) if cache.exists() else {}
    if problem.name not in store:
        sol = solve_ivp(problem.numpy_rhs, (0.0, problem.t1), problem.y0, method="Radau", rtol=1e-12,
                        atol=problem.atol * 1e-6)
        if not sol.success:
            raise RuntimeError(f"reference solve failed for {problem.name}: {sol.message}")
        store[problem.name] = sol.y[:, -1].tolist()
        cache.write_text(json.dumps(store, indent=1))
    return np.array(store[problem.name])


def run_pyode(problem: Problem, method: str, rtol: float, atol: float) -> tuple[float, np.ndarray, int]:
    y0 = torch.tensor(problem.y0, dtype=torch.float64)
    t = torch.tensor([0.0, problem.t1], dtype=torch.float64)
    start = time.perf_counter()
    sol = pyode.solve(problem.torch_rhs, y0, t, method=method, rtol=rtol, atol=atol,
                      options={"max_num_steps": 10**6})
    return time.perf_counter() - start, sol.ys[-1].numpy(), sol.stats.nfe


def run_scipy(problem: Problem, method: str, rtol: float, atol: float) -> tuple[float, np.ndarray, int]:
    start = time.perf_counter()
    sol = solve_ivp(problem.numpy_rhs, (0.0, problem.t1), problem.y0, method=method, rtol=rtol, atol=atol)
    wall = time.perf_counter() - start
    if not sol.success:
        raise RuntimeError(f"scipy {method} failed on {problem.name}: {sol.message}")
    return wall, sol.y[:, -1], sol.nfev


def call_cost(problem: Problem, library: str) -> float:
    """Seconds per call of the right-hand side alone (torch for pyode, NumPy for SciPy): ``nfe x call_cost`` is
    the floor under a solve's wall time, the rest is the solver's own overhead."""
    rhs = problem.torch_rhs if library == "pyode" else problem.numpy_rhs
    y = torch.tensor(problem.y0, dtype=torch.float64) if library == "pyode" else np.array(problem.y0)
    t = torch.tensor(0.0, dtype=torch.float64) if library == "pyode" else 0.0
    rhs(t, y)
    start = time.perf_counter()
    for _ in range(500):
        rhs(t, y)
    return (time.perf_counter() - start) / 500


def measure(problem: Problem, solver: str, rtol: float, atol: float, ref: np.ndarray, reps: int) -> dict:
    """Median wall time over ``reps`` runs after a warm-up run; error at t1."""
    run = run_scipy if solver in SCIPY_METHODS else run_pyode
    library = "scipy" if solver in SCIPY_METHODS else "pyode"
    try:
        runs = [run(problem, solver, rtol, atol) for _ in range(reps + 1)][1:]
    except (RuntimeError, pyode.ODESolverError) as exc:
        return {"problem": problem.name, "library": library, "method": solver, "rtol": rtol, "atol": atol,
                "failed": str(exc)}
    wall = statistics.median(r[0] for r in runs)
    return {"problem": problem.name, "library": library, "method": solver, "rtol": rtol, "atol": atol,
            "wall_s": wall, "nfe": runs[0][2], "error": problem.error(runs[0][1], ref),
            "func_s": runs[0][2] * call_cost(problem, library)}


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["problem"] for r in records})
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        for solver in dict.fromkeys(r["method"] for r in records):
            points = sorted((r["error"], r["wall_s"]) for r in records
                            if r["problem"] == name and r["method"] == solver and "error" in r)
            if points:
                ax.loglog([p[0] for p in points], [p[1] for p in points], "o-",
                          label=("pyode " if solver not in SCIPY_METHODS else "scipy ") + solver)
        ax.set_xlabel("error at t1 (vs Radau rtol 1e-12)")
        ax.set_ylabel("wall time [s]")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rtols", default="1e-4,1e-6,1e-8", help="sweep; atol is scaled by the same factor")
    parser.add_argument("--methods", default="kvaerno5,rodas5,auto", help="pyode methods")
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one tolerance, one repetition (smoke test)")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rtols = [1e-6] if args.quick else [float(x) for x in args.rtols.split(",")]
    reps = 1 if args.quick else args.reps
    solvers = [m for m in args.methods.split(",") if m] + list(SCIPY_METHODS)
    records = []
    for name in args.problems.split(","):
        problem = PROBLEMS[name]
        ref = reference(problem, out / "stiff_reference.json")
        for rtol in rtols:
            atol = problem.atol * rtol / problem.rtol
            for solver in solvers:
                rec = measure(problem, solver, rtol, atol, ref, reps)
                records.append(rec)
                print(f"{name:10s} rtol={rtol:.0e} {rec['library']:5s} {solver:9s} "
                      + (f"wall={rec['wall_s']:.3f}s (func {rec['func_s']:.3f}s) nfe={rec['nfe']:6d} "
                         f"err={rec['error']:.2e}"
                         if "error" in rec else f"FAILED: {rec['failed'][:80]}"), flush=True)
    (out / "stiff.json").write_text(json.dumps(records, indent=1))
    plot(records, out / "stiff_work_precision.png")
    print(f"wrote {out / 'stiff.json'} and {out / 'stiff_work_precision.png'}")


if __name__ == "__main__":
    main()
