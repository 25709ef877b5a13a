"""Stiff benchmarks: pyode's stiff methods against SciPy's Radau, BDF and LSODA on the same problems.

- Robertson's chemical kinetics to t = 1e5 (rtol 1e-6, atol 1e-10 at the headline point);
- Van der Pol, mu = 1000, t = 0 .. 3000 (rtol 1e-6, atol 1e-6);
- HIRES to t = 321.8122 (rtol 1e-6, atol 1e-10).

pyode solves with a torch ``func`` (float64 CPU tensors, one row); SciPy with the same right-hand side written in
NumPy, and (``Radau[torch f]``, ``BDF[torch f]``) with pyode's torch ``func`` itself, converted from and to NumPy
at each call: the solvers compared on the same function. Errors are measured at the final time against SciPy's Radau at rtol 1e-12 (computed once and cached in
``<out>/stiff_reference.json``): Robertson and HIRES per component relative to the component (Robertson's
y2 ~ 7e-8 included), Van der Pol as ``max|y - ref| / max|ref|``. ``func_s``: evaluations x the cost of one call of the right-hand side
alone (torch or NumPy), the floor under the wall time. Wall times are medians over ``--reps`` runs after one warm-up run (which
pays one-off costs such as imports). A sweep over ``--rtols`` (atol scaled alike) gives the work-precision chart
``<out>/stiff_work_precision.png``; ``<out>/stiff.json`` holds every record.

**Matched error against fixed grids** (``--matched``, on by default): torchdiffeq 0.2.5 (PyPI's newest release) has
one implicit fixed-grid method, ``implicit_adams`` (Adams-Bashforth-Moulton, the corrector solved by functional
iteration, not Newton; ``fixed_adams`` is the same class), besides explicit ones such as ``rk4``. Its stability
region is bounded, so its step is capped near ``1/|λ|``: Robertson to 1e5 would take 1e8-1e9 steps (hours to days at
~0.5 ms a step). These runs use a shortened horizon, ``t1 = 1`` for Robertson and for Van der Pol (``MATCHED_T1``),
the same horizon for every solver. Each fixed-grid method is swept over step sizes halving from ``h0`` until its
error at t1 is at or below the error of pyode's adaptive method (kvaerno5, rodas5) at its headline tolerance; that
run, the cheapest on the sweep at an error no worse than pyode's, is "matched", and the record
``{"study": "matched"}`` gives the ratio of wall times. pyode's own fixed-grid implicit methods (``radauIIA5``,
``gl6``, ``radauIIA3``, ``trbdf2``: torchdiffeq's main-branch set, not on PyPI) are swept alike. Each point: one
timed run after a warm-up (``--matched-reps``); an unstable run is not repeated.

pyode's methods are the ESDIRK ``kvaerno5``, the Rosenbrock ``rodas5``, ``auto`` (tsit5 <-> kvaerno5) and the
variable-order ``bdf`` (the NDF algorithm of SciPy's BDF, :mod:`pyode._solvers.bdf`: it takes SciPy's steps).
They run with exact Jacobians (autograd) and, as ``kvaerno5:differences``, ``rodas5:differences`` and ``bdf:differences``,
with the steps' Jacobians by forward differences (``options["jacobian"] = "differences"``), as SciPy's Radau and
BDF compute theirs when no ``jac`` is given (here none is). The stiff issue's target, pyode with a torch func no
slower than SciPy's BDF on NumPy code on Robertson and Van der Pol, is printed and written under the tables: at the
headline rtol, and at BDF's error there (pyode's CPU time interpolated on its own runs), from the sweep; and at the
headline rtol in ``--target-rounds`` interleaved rounds (every pyode method and BDF once a round, the order rotated),
the median of the per-round ratios: the sweep times each solver in its own block, and on a shared machine a slow
spell during one block moves that ratio by tens of percent.

Every torch right-hand side (pyode's, torchdiffeq's, ``BDF[torch f]``'s) runs under ``torch.inference_mode()``
(``--grad-mode inference``, the default: these are forward solves, and PyTorch's mode for code that needs no
autograd skips its bookkeeping in every op of func) or ``torch.no_grad()`` (``--grad-mode no_grad``); the target
rounds run pyode under both.

Usage: ``python bench/stiff.py [--reps 3] [--rtols 1e-4,1e-5,1e-6,1e-7,1e-8] [--methods kvaerno5,rodas5,...] [--quick]
[--no-matched] [--target-rounds 15] [--grad-mode inference|no_grad] [--out bench/results]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import pyode
from bench.curves import front, time_at

TORCH_F = "[torch f]"
# How every torch right-hand side runs (``--grad-mode``): under ``torch.inference_mode()``, as PyTorch recommends for
# code that needs no autograd (func's ops skip autograd's bookkeeping: Robertson's func ~20 against ~24 us a call
# here), or under ``torch.no_grad()``. pyode's results are the same in both (tests/test_inference_mode.py).
GRAD_MODES = {"inference": torch.inference_mode, "no_grad": torch.no_grad}
grad_mode = "inference"
# SciPy's methods on the NumPy right-hand side, and BDF/Radau on pyode's torch one (the same function both solve).
SCIPY_METHODS = ("Radau", "BDF", "LSODA", "Radau" + TORCH_F, "BDF" + TORCH_F)


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
        if self.name.split("@")[0] in ("robertson", "hires"):  # every component relative to itself
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


def run_pyode(problem: Problem, method: str, rtol: float, atol: float, mode: str | None = None
              ) -> tuple[float, np.ndarray, int]:
    """``method``: a pyode method, or ``"<method>:<jacobian>"`` with ``options["jacobian"]`` (e.g.
    ``rodas5:differences``: the steps' Jacobians by forward differences, as SciPy's Radau/BDF compute theirs).
    ``mode``: a key of ``GRAD_MODES`` (default: ``grad_mode``)."""
    method, _, jacobian = method.partition(":")
    y0 = torch.tensor(problem.y0, dtype=torch.float64)
    t = torch.tensor([0.0, problem.t1], dtype=torch.float64)
    options = {"max_num_steps": 10**6, **({"jacobian": jacobian} if jacobian else {})}
    start = time.perf_counter()
    with GRAD_MODES[mode or grad_mode]():
        sol = pyode.solve(problem.torch_rhs, y0, t, method=method, rtol=rtol, atol=atol, options=options)
    return time.perf_counter() - start, sol.ys[-1].numpy(), sol.stats.nfe


def torch_rhs_for_scipy(torch_rhs):
    """The torch right-hand side as SciPy calls one (float, ndarray) -> ndarray: the solver comparison on the same
    function pyode is given (``BDF[torch f]`` and so on)."""
    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        with GRAD_MODES[grad_mode]():
            return torch_rhs(torch.tensor(t, dtype=torch.float64), torch.from_numpy(y)).numpy()

    return rhs


def run_scipy(problem: Problem, method: str, rtol: float, atol: float) -> tuple[float, np.ndarray, int]:
    """``method``: a SciPy method, on the NumPy right-hand side, or ``"<method>[torch f]"`` on the torch one."""
    rhs = problem.numpy_rhs
    if method.endswith(TORCH_F):
        method, rhs = method[:-len(TORCH_F)], torch_rhs_for_scipy(problem.torch_rhs)
    start = time.perf_counter()
    sol = solve_ivp(rhs, (0.0, problem.t1), problem.y0, method=method, rtol=rtol, atol=atol)
    wall = time.perf_counter() - start
    if not sol.success:
        raise RuntimeError(f"scipy {method} failed on {problem.name}: {sol.message}")
    return wall, sol.y[:, -1], sol.nfev


def call_cost(problem: Problem, library: str) -> float:
    """Seconds per call of the right-hand side alone (torch for pyode, NumPy for SciPy): ``nfe x call_cost`` is
    the floor under a solve's wall time, the rest is the solver's own overhead."""
    if library == "scipy-torch":
        rhs, y, t = torch_rhs_for_scipy(problem.torch_rhs), np.array(problem.y0), 0.0
    else:
        rhs = problem.torch_rhs if library == "pyode" else problem.numpy_rhs
        y = torch.tensor(problem.y0, dtype=torch.float64) if library == "pyode" else np.array(problem.y0)
        t = torch.tensor(0.0, dtype=torch.float64) if library == "pyode" else 0.0
    with GRAD_MODES[grad_mode]():
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
        runs = [_with_cpu_time(run, problem, solver, rtol, atol) for _ in range(reps + 1)][1:]
    except (RuntimeError, pyode.ODESolverError) as exc:
        return {"problem": problem.name, "library": library, "method": solver, "rtol": rtol, "atol": atol,
                "failed": str(exc)}
    wall = statistics.median(r[0] for r in runs)
    return {"problem": problem.name, "library": library, "method": solver, "rtol": rtol, "atol": atol,
            "wall_s": wall, "cpu_s": statistics.median(r[3] for r in runs), "nfe": runs[0][2],
            "error": problem.error(runs[0][1], ref),
            "func_s": runs[0][2] * call_cost(problem, "scipy-torch" if solver.endswith(TORCH_F) else library)}


def _with_cpu_time(run, *args) -> tuple:
    """``run(*args)``'s (wall, y, nfe) plus the process CPU time it took (steadier than wall on a shared machine)."""
    start = time.process_time()
    result = run(*args)
    return (*result, time.process_time() - start)


# --- matched error against fixed-grid methods (torchdiffeq 0.2.5 and pyode's fixed-grid implicit set) ---

MATCHED_T1 = {"robertson": 1.0, "vdp1000": 1.0}  # shortened horizons: see the module docstring
MATCHED_TARGETS = ("kvaerno5", "rodas5")  # pyode's adaptive methods whose error the fixed grids must reach
# (library, method, extra options, first step size); each sweep halves the step from there
FIXED_GRID_RUNS = (
    ("torchdiffeq", "implicit_adams", {}, 2e-4),  # default max_order 12: unstable at every step tried
    ("torchdiffeq", "implicit_adams", {"max_order": 4}, 1e-3),
    ("torchdiffeq", "rk4", {}, 1e-3),
    ("pyode", "radauIIA5", {}, 0.25),
    ("pyode", "gl6", {}, 0.25),
    ("pyode", "radauIIA3", {}, 0.25),
    ("pyode", "trbdf2", {}, 0.25),
)
MAX_GRID_STEPS = 20_000  # a sweep stops past this many steps (~10 s a run for torchdiffeq on this machine)
# Errors below this are float64 rounding accumulated over thousands of steps (a few ulps a step), not the method's:
# a target error below it is matched by any run at or below it.
ERROR_FLOOR = 1e-12


def fixed_label(library: str, method: str, extra: dict) -> str:
    opts = ",".join(f"{k}={v}" for k, v in extra.items())
    return f"{method}[{opts}]" if opts else method


def run_fixed(problem: Problem, library: str, method: str, extra: dict, step: float, rtol: float,
              atol: float) -> tuple[float, np.ndarray, int]:
    """One fixed-grid solve with step ``step``; torchdiffeq's corrector iteration gets ``rtol``/``atol`` (its
    convergence test), pyode's Newton its own (a few ulps)."""
    y0 = torch.tensor(problem.y0, dtype=torch.float64)
    t = torch.tensor([0.0, problem.t1], dtype=torch.float64)
    options = {"step_size": step, **extra}
    start = time.perf_counter()
    with GRAD_MODES[grad_mode]():
        y1, nfe = _fixed_solve(problem, library, method, options, rtol, atol, y0, t)
    return time.perf_counter() - start, y1, nfe


def _fixed_solve(problem: Problem, library: str, method: str, options: dict, rtol: float, atol: float, y0, t):
    if library == "torchdiffeq":
        import torchdiffeq

        counter = {"nfe": 0}

        def rhs(t, y):
            counter["nfe"] += 1
            return problem.torch_rhs(t, y)

        with warnings.catch_warnings():  # "Functional iteration did not converge": the error shows it
            warnings.simplefilter("ignore")
            y1 = torchdiffeq.odeint(rhs, y0, t, method=method, rtol=rtol, atol=atol, options=options)[-1]
        return y1.numpy(), counter["nfe"]
    sol = pyode.solve(problem.torch_rhs, y0, t, method=method, options=options)
    return sol.ys[-1].numpy(), sol.stats.nfe


def sweep_fixed(problem: Problem, run: tuple, target: float, ref: np.ndarray, reps: int) -> list[dict]:
    """Step sizes halving from the run's first one until the error is <= ``target`` (or the grid passes
    ``MAX_GRID_STEPS``); wall time the median of ``reps`` runs after a warm-up run."""
    library, method, extra, step = run
    records = []
    while problem.t1 / step <= MAX_GRID_STEPS:
        try:
            runs = [run_fixed(problem, library, method, extra, step, problem.rtol, problem.atol)]  # warm-up
            error = problem.error(runs[0][1], ref)
            if math.isfinite(error):  # no repetitions of an unstable run
                runs = [run_fixed(problem, library, method, extra, step, problem.rtol, problem.atol)
                        for _ in range(reps)]
        except (RuntimeError, pyode.ODESolverError) as exc:  # e.g. Newton failing on a too-large step
            runs, error = None, f"{type(exc).__name__}: {str(exc)[:120]}"
        rec = {"problem": problem.name, "library": library, "method": fixed_label(library, method, extra),
               "step_size": step, "n_steps": math.ceil(problem.t1 / step - 1e-9)}
        if runs is not None and math.isfinite(error):
            rec.update(wall_s=statistics.median(r[0] for r in runs), nfe=runs[0][2], error=error)
        else:
            rec["failed"] = error if isinstance(error, str) else "non-finite solution (unstable step)"
        records.append(rec)
        print(f"{problem.name:14s} {library:11s} {rec['method']:28s} h={step:.2e} "
              + (f"wall={rec['wall_s']:.3f}s nfe={rec['nfe']:7d} err={rec['error']:.2e}" if "error" in rec
                 else f"FAILED: {rec['failed'][:70]}"), flush=True)
        if rec.get("error", math.inf) <= max(target, ERROR_FLOOR):
            break
        step /= 2
    return records


def matched_study(problem: Problem, ref: np.ndarray, reps: int, rtols: list[float]) -> list[dict]:
    """pyode's adaptive targets over ``rtols`` (which must hold the headline ``problem.rtol``), every fixed-grid
    sweep, and one ``study: matched`` record per (target, fixed-grid method): the cheapest run at an error <= the
    target's at the headline tolerance, and the ratio of wall times."""
    records = []
    for rtol in rtols:  # the adaptive methods' work-precision points on this horizon (chart)
        for method in MATCHED_TARGETS:
            rec = measure(problem, method, rtol, problem.atol * rtol / problem.rtol, ref, reps)
            records.append(rec)
            print(f"{problem.name:14s} pyode       {rec['method']:28s} rtol={rtol:.0e} "
                  f"wall={rec['wall_s']:.3f}s nfe={rec['nfe']:7d} err={rec['error']:.2e}", flush=True)
    targets = [next(r for r in records if r["method"] == m and r["rtol"] == problem.rtol) for m in MATCHED_TARGETS]
    tightest = min(rec["error"] for rec in targets)  # each sweep runs until it matches every target
    for run in FIXED_GRID_RUNS:
        sweep = sweep_fixed(problem, run, tightest, ref, reps)
        records += sweep
        for target in targets:
            hits = [r for r in sweep if r.get("error", math.inf) <= max(target["error"], ERROR_FLOOR)]
            best = min(hits, key=lambda r: r["wall_s"]) if hits else None
            records.append({
                "study": "matched", "problem": problem.name, "target": target["method"],
                "target_error": target["error"], "target_wall_s": target["wall_s"],
                "library": run[0], "method": sweep[0]["method"],
                "matched": best, "wall_ratio": best["wall_s"] / target["wall_s"] if best else None,
                "note": None if best else f"no step on the sweep reached the error within {MAX_GRID_STEPS} steps"})
    return records


def print_matched(records: list[dict]) -> None:
    print(f"\nat matched error (the fixed grid's cheapest run at an error <= max(pyode's, {ERROR_FLOOR:g})):")
    for r in records:
        if r.get("study") != "matched":
            continue
        m = r["matched"]
        print(f"  {r['problem']:14s} {r['target']:8s} ({r['target_wall_s']:.3f}s, err {r['target_error']:.1e}) vs "
              f"{r['library']} {r['method']:26s} "
              + (f"h={m['step_size']:.1e} {m['wall_s']:.3f}s err {m['error']:.1e}: {r['wall_ratio']:.1f}x"
                 if m else r["note"]))


BDF_TARGET_PROBLEMS = ("robertson", "vdp1000")  # the stiff issue's target: pyode with a torch func <= SciPy BDF


def bdf_target(records: list[dict], headline: dict) -> list[str]:
    """pyode (torch func) against SciPy BDF (NumPy right-hand side), CPU time: at the headline rtol, and at BDF's
    error there (each pyode method's CPU time interpolated log-log between its runs that bracket that error)."""
    lines = []
    for name in BDF_TARGET_PROBLEMS:
        rows = [r for r in records if r["problem"] == name and "error" in r and "step_size" not in r]
        bdf = next((r for r in rows if r["method"] == "BDF" and r["rtol"] == headline[name]), None)
        if bdf is None:
            continue
        for method in dict.fromkeys(r["method"] for r in rows if r["library"] == "pyode"):
            same = next((r for r in rows if r["method"] == method and r["rtol"] == headline[name]), None)
            at = time_at(front([(r["error"], r["cpu_s"]) for r in rows if r["method"] == method]), bdf["error"])
            matched = at[0] if at is not None and at[1] in ("", "=") else None  # bracketed by pyode's own runs
            lines.append(f"{name} {method}: at rtol {headline[name]:g} {same['cpu_s'] * 1e3:.1f} ms (error "
                         f"{same['error']:.1e}) vs BDF {bdf['cpu_s'] * 1e3:.1f} ms (error {bdf['error']:.1e}): "
                         f"{bdf['cpu_s'] / same['cpu_s']:.2f}x; at BDF's error: "
                         + (f"{matched * 1e3:.1f} ms, {bdf['cpu_s'] / matched:.2f}x" if matched else "not bracketed"))
    return lines


TARGET_ROUNDS = 15  # interleaved rounds of the target study (--target-rounds)


def target_rounds(problem: Problem, methods: list[str], rounds: int) -> list[dict]:
    """The BDF target measured against drift: ``rounds`` rounds (after one warm-up round), each running every pyode
    method in ``methods`` under each of ``GRAD_MODES`` and SciPy's BDF (NumPy right-hand side) once at the headline
    tolerances, in an order rotated every round, so that a slow spell of the machine hits every solver alike. One
    record per pyode method and mode (``study: "target"``): the medians of its and BDF's CPU times, and the median
    over the rounds of the per-round ratio BDF / pyode (x > 1: pyode faster)."""
    solvers = [(m, mode) for m in methods for mode in GRAD_MODES] + [("BDF", None)]
    cpu = {s: [] for s in solvers}
    for k in range(rounds + 1):
        shift = k % len(solvers)
        for method, mode in solvers[shift:] + solvers[:shift]:
            if mode is None:
                seconds = _with_cpu_time(run_scipy, problem, method, problem.rtol, problem.atol)[3]
            else:
                seconds = _with_cpu_time(run_pyode, problem, method, problem.rtol, problem.atol, mode)[3]
            if k:  # round 0 warms up
                cpu[(method, mode)].append(seconds)
    bdf = cpu[("BDF", None)]
    return [{"study": "target", "problem": problem.name, "method": m, "mode": mode, "rounds": rounds,
             "rtol": problem.rtol, "cpu_s": statistics.median(cpu[(m, mode)]), "bdf_cpu_s": statistics.median(bdf),
             "ratio": statistics.median(b / p for b, p in zip(bdf, cpu[(m, mode)])),
             "ratio_min": min(b / p for b, p in zip(bdf, cpu[(m, mode)]))} for m, mode in solvers[:-1]]


def target_lines(records: list[dict]) -> list[str]:
    return [f"{r['problem']} {r['method']} under {r.get('mode', 'no_grad')}: {r['cpu_s'] * 1e3:.1f} ms vs BDF {r['bdf_cpu_s'] * 1e3:.1f} ms (medians); "
            f"BDF / pyode per round: median {r['ratio']:.2f}x, lowest {r['ratio_min']:.2f}x ({r['rounds']} rounds)"
            for r in records if r.get("study") == "target"]


def markdown(records: list[dict], meta: dict) -> str:
    """The headline records as Markdown tables, one per problem: wall [CPU] (right-hand side alone) / evaluations
    / error per solver and tolerance."""
    head = (f"Command: `{meta['command']}` ({meta['threads']} torch thread; torch right-hand sides under "
            f"torch.{GRAD_MODES[meta.get('grad_mode', 'no_grad')].__name__}; medians of the timed runs after a "
            "warm-up). Cells: wall time [CPU time] (the right-hand side's own cost) / evaluations / error.")
    lines = [head, ""]
    solved = [r for r in records if "error" in r and "step_size" not in r and "@" not in r["problem"]]
    for name in dict.fromkeys(r["problem"] for r in solved):
        rows = [r for r in solved if r["problem"] == name]
        rtols = sorted({r["rtol"] for r in rows}, reverse=True)
        lines += [f"**{name}**", "", "| solver | " + " | ".join(f"rtol {x:g}" for x in rtols) + " |",
                  "|---|" + "---|" * len(rtols)]
        for lib, method in dict.fromkeys((r["library"], r["method"]) for r in rows):
            cells = []
            for rtol in rtols:
                r = next((r for r in rows if (r["library"], r["method"], r["rtol"]) == (lib, method, rtol)), None)
                cells.append("–" if r is None else f"{r['wall_s'] * 1e3:.0f} ms [{r.get('cpu_s', float('nan')) * 1e3:.0f}] "
                             f"({r['func_s'] * 1e3:.0f}) / {r['nfe']} / {r['error']:.1e}")
            lines.append(f"| {lib} `{method}` | " + " | ".join(cells) + " |")
        lines.append("")
    target = bdf_target(records, {p.name: p.rtol for p in PROBLEMS.values()})
    if target:
        lines += ["pyode with the torch func against SciPy BDF on NumPy code, CPU time (x > 1: pyode faster):", ""]
        lines += [f"- {line}" for line in target] + [""]
    rounds = target_lines(records)
    if rounds:
        lines += [("The same comparison at the headline rtol in interleaved rounds (every solver once a round, the "
                   "order rotated; CPU time):"), ""]
        lines += [f"- {line}" for line in rounds] + [""]
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in records if "error" in r]  # solved runs (not failures, not matched summaries)
    names = list(dict.fromkeys(r["problem"] for r in records))
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4.5 * nrows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        for solver in dict.fromkeys((r["library"], r["method"]) for r in records if r["problem"] == name):
            points = sorted((r["error"], r["wall_s"]) for r in records
                            if r["problem"] == name and (r["library"], r["method"]) == solver)
            style = "s--" if "step_size" in next(r for r in records if (r["library"], r["method"]) == solver) \
                else "o-"
            ax.loglog([p[0] for p in points], [p[1] for p in points], style, label=" ".join(solver))
        ax.set_xlabel("error at t1 (vs Radau rtol 1e-12)")
        ax.set_ylabel("wall time [s]")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rtols", default="1e-4,1e-5,1e-6,1e-7,1e-8", help="sweep; atol is scaled by the same factor")
    parser.add_argument("--methods", default="kvaerno5,rodas5,kvaerno5:differences,rodas5:differences,auto,bdf,"
                                             "bdf:differences",
                        help="pyode methods (method:jacobian sets options['jacobian'])")
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one tolerance, one repetition (smoke test)")
    parser.add_argument("--no-matched", dest="matched", action="store_false",
                        help="skip the matched-error study against fixed grids (torchdiffeq, pyode)")
    parser.add_argument("--matched-reps", type=int, default=1, help="timed runs per fixed-grid point")
    parser.add_argument("--target-rounds", type=int, default=TARGET_ROUNDS,
                        help="interleaved rounds of the BDF target study at the headline rtol (0: skip)")
    parser.add_argument("--grad-mode", choices=list(GRAD_MODES), default="inference",
                        help="how the torch right-hand sides run in the sweeps (the target rounds run both)")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--plot-only", action="store_true", help="redraw the chart from <out>/stiff.json")
    args = parser.parse_args(argv)
    if args.plot_only:
        plot(json.loads((Path(args.out) / "stiff.json").read_text())["records"], Path(args.out) / "stiff_work_precision.png")
        return
    torch.set_num_threads(args.threads)
    global grad_mode
    grad_mode = args.grad_mode
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
    if args.matched:
        for name in [n for n in args.problems.split(",") if n in MATCHED_T1]:
            short = dataclasses.replace(PROBLEMS[name], name=f"{name}@t1={MATCHED_T1[name]:g}", t1=MATCHED_T1[name])
            records += matched_study(short, reference(short, out / "stiff_reference.json"), args.matched_reps,
                                     sorted(set(rtols) | {short.rtol}, reverse=True))
        print_matched(records)
    if args.target_rounds:
        for name in [n for n in args.problems.split(",") if n in BDF_TARGET_PROBLEMS]:
            records += target_rounds(PROBLEMS[name], [m for m in args.methods.split(",") if m], args.target_rounds)
    print("\n".join(bdf_target(records, {p.name: p.rtol for p in PROBLEMS.values()}) + target_lines(records)))
    meta = {"command": "python " + " ".join(sys.argv), "torch": torch.__version__, "threads": args.threads,
            "grad_mode": grad_mode}
    try:
        import torchdiffeq

        meta["torchdiffeq"] = torchdiffeq.__version__
    except ImportError:
        pass
    (out / "stiff.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    (out / "stiff.md").write_text(markdown(records, meta))
    plot(records, out / "stiff_work_precision.png")
    print(f"wrote {out / 'stiff.json'}, {out / 'stiff.md'} and {out / 'stiff_work_precision.png'}")


if __name__ == "__main__":
    main()
