"""pyode.native against SciPy with the same numba-jitted Lorenz right-hand side.

    python bench/native_lorenz.py [--quick]

1. One trajectory, t 0-100, rtol = atol = 1e-8: pyode dopri8 / dopri5 vs SciPy DOP853 / RK45 (time, steps,
   error at t = 10 against DOP853 at rtol 1e-13; Lorenz is chaotic, so later times only measure divergence).
2. Ensemble: 4000 trajectories, rho swept over [0, 100], t 0-10, 100 output times: pyode (1 and 2 threads)
   vs SciPy in a loop (timed on a subset, reported per trajectory) and pyode's per-sample torch path.
3. Overhead per step: y' = -y with dopri5 (time per attempted step and per evaluation, in ns).
4. diffrax (JAX, jit / jit + vmap) on 1 and 2, when jax and diffrax are installed (bench/native_diffrax.py;
   ``--no-diffrax`` skips it).
Times are the best of a few repeats (the machine may be shared). Figures: docs/figures/native_lorenz.md.
"""

from __future__ import annotations

import argparse
import os
import time

import numba
import numpy as np
from scipy.integrate import solve_ivp

import pyode.native as pn

SIGMA, BETA = 10.0, 8.0 / 3.0


def lorenz(t, y, dy, p):
    dy[0] = SIGMA * (y[1] - y[0])
    dy[1] = y[0] * (p[0] - y[2]) - y[1]
    dy[2] = y[0] * y[1] - BETA * y[2]


@numba.njit
def lorenz_scipy(t, y, rho):
    return np.array([SIGMA * (y[1] - y[0]), y[0] * (rho - y[2]) - y[1], y[0] * y[1] - BETA * y[2]])


def decay(t, y, dy, p):
    dy[0] = -y[0]


CPU = {}  # the process CPU time of the last best() call's fastest repeat (robust to a shared machine)


def best(fn, repeats: int) -> tuple[float, object]:
    """The fastest wall time of ``repeats`` calls and the last result; CPU["last"] holds that repeat's
    process CPU time (on a loaded machine wall time includes waiting for a core, CPU time does not)."""
    times, out = [], None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    wall, cpu = min(times)
    CPU["last"] = cpu
    return wall, out


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """:func:`best` as (wall s, CPU s of that repeat, result)."""
    wall, out = best(fn, repeats)
    return wall, CPU["last"], out


def single(repeats: int) -> tuple[np.ndarray, dict]:
    """Returns the reference state at t = 10 and pyode's (wall, cpu) times in ms by method (for diffrax)."""
    y0, rho = np.array([1.0, 1.0, 1.0]), 28.0
    t_eval = np.linspace(0.0, 100.0, 101)
    ref = solve_ivp(lorenz_scipy, (0, 10), y0, method="DOP853", rtol=1e-13, atol=1e-13, args=(rho,)).y[:, -1]
    lorenz_scipy(0.0, y0, rho)  # compile before timing
    pn.solve(lorenz, y0, t_eval, np.array([rho]))
    print("== one trajectory, t 0-100, rtol = atol = 1e-8 ==")
    print(f"{'solver':<14}{'time ms':>10}{'cpu ms':>10}{'steps':>8}{'nfe':>8}{'err(t=10)':>12}")
    rows, pyode_ms = {}, {}
    for method, peer in (("dopri8", "DOP853"), ("dopri5", "RK45")):
        dt, sol = best(lambda m=method: pn.solve(lorenz, y0, t_eval, np.array([rho]), method=m, rtol=1e-8, atol=1e-8),
                       repeats)
        cpu = CPU["last"]
        pyode_ms[method] = (dt * 1e3, cpu * 1e3)
        err = np.abs(sol.ys[10] - ref).max()
        steps = int(sol.n_accepted[0] + sol.n_rejected[0])
        print(f"{'pyode ' + method:<14}{dt * 1e3:>10.3f}{CPU['last'] * 1e3:>10.3f}{steps:>8}"
              f"{int(sol.n_feval[0]):>8}{err:>12.2e}")
        dts, ss = best(lambda pm=peer: solve_ivp(lorenz_scipy, (0, 100), y0, method=pm, rtol=1e-8, atol=1e-8,
                                                 t_eval=t_eval, args=(rho,)), max(1, repeats // 3))
        errs = np.abs(ss.y[:, 10] - ref).max()
        print(f"{'scipy ' + peer:<14}{dts * 1e3:>10.3f}{CPU['last'] * 1e3:>10.3f}{'':>8}{ss.nfev:>8}{errs:>12.2e}")
        rows[method] = (dts / dt, CPU["last"] / cpu)
    print(f"speed-up (wall / cpu time): dopri8 vs DOP853 {rows['dopri8'][0]:.0f}x / {rows['dopri8'][1]:.0f}x, "
          f"dopri5 vs RK45 {rows['dopri5'][0]:.0f}x / {rows['dopri5'][1]:.0f}x\n")
    return ref, pyode_ms


def ensemble(M: int, subset: int, repeats: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Returns rho (M, 1), pyode's outputs (T, M, 3) and its (wall time on 2 threads, CPU time) per trajectory
    (for diffrax)."""
    rho = np.linspace(0.0, 100.0, M)[:, None]
    y0 = np.array([1.0, 1.0, 1.0])
    t_eval = np.linspace(0.0, 10.0, 100)
    print(f"== ensemble: {M} trajectories, rho in [0, 100], t 0-10, 100 outputs, rtol 1e-8 atol 1e-8 ==")
    pn.solve(lorenz, y0, t_eval, rho[:8], rtol=1e-8, atol=1e-8)
    per = {}
    cpu_per = {}
    for threads in (1, 2):
        dt, sol = best(lambda th=threads: pn.solve(lorenz, y0, t_eval, rho, rtol=1e-8, atol=1e-8,
                                                   options={"num_threads": th}), repeats)
        busy = CPU["last"] / dt  # ~threads when the cores were free for us
        per[threads], cpu_per[threads] = dt, CPU["last"] / M
        steps = int(sol.n_accepted.sum() + sol.n_rejected.sum())
        print(f"pyode dopri5, {threads} thread(s): {dt * 1e3:9.1f} ms  ({dt / M * 1e6:8.2f} us/trajectory, "
              f"{steps} steps, {dt / steps * 1e9:.0f} ns/step, cpu/wall {busy:.2f}, success {sol.success})")
    idx = np.linspace(0, M - 1, subset).astype(int)

    def scipy_loop():
        return [solve_ivp(lorenz_scipy, (0, 10), y0, method="RK45", rtol=1e-8, atol=1e-8, t_eval=t_eval,
                          args=(float(rho[i, 0]),)).y for i in idx]

    dts, ys = best(scipy_loop, 1)
    cpu_scipy = CPU["last"] / subset
    # Lorenz is chaotic: compare at t ~ 1 (index 10), before rounding differences grow to O(1).
    err = max(np.abs(ys[q][:, 10] - sol.ys[10, i]).max() for q, i in enumerate(idx[: min(8, subset)]))
    print(f"scipy RK45 loop on {subset} of them: {dts / subset * 1e6:10.1f} us/trajectory "
          f"(pyode 2 threads {dts / subset / (per[2] / M):.0f}x faster per trajectory; max |diff| at t~1 over 8 rows "
          f"{err:.1e})")
    print(f"cpu time per trajectory: scipy {cpu_scipy * 1e6:.0f} us, pyode {cpu_per[1] * 1e6:.1f} us "
          f"({cpu_scipy / cpu_per[1]:.0f}x)")
    print(f"thread scaling 1 -> 2 (wall): {per[1] / per[2]:.2f}x")
    _torch_per_sample(rho[idx], t_eval, per[2] / M)
    return rho, sol.ys, (per[2] / M, cpu_per[1])


def _torch_per_sample(rho_sub: np.ndarray, t_eval: np.ndarray, native_per_traj: float) -> None:
    import torch

    import pyode

    rho = torch.tensor(rho_sub[:, 0])

    def f(t, y):
        x, yy, z = y[:, 0], y[:, 1], y[:, 2]
        return torch.stack([SIGMA * (yy - x), x * (rho - z) - yy, x * yy - BETA * z], dim=1)

    y0 = torch.ones(len(rho), 3, dtype=torch.float64)
    tt = torch.tensor(t_eval)
    dt, _ = best(lambda: pyode.solve(f, y0, tt, rtol=1e-8, atol=1e-8, options={"per_sample": True}), 1)
    print(f"pyode per-sample torch path, {len(rho)} rows: {dt / len(rho) * 1e6:10.1f} us/trajectory "
          f"(native {dt / len(rho) / native_per_traj:.0f}x faster)")


def overhead(repeats: int) -> None:
    t_eval = np.array([0.0, 2000.0])
    pn.solve(decay, np.ones(1), t_eval, rtol=1e-10, atol=1e-12)
    dt, sol = best(lambda: pn.solve(decay, np.ones(1), t_eval, rtol=1e-10, atol=1e-12), repeats)
    steps = int(sol.n_accepted[0] + sol.n_rejected[0])
    # The same solve with 1 output time has ~20 us of fixed Python/cffi cost; subtract it via a tiny solve.
    dt0, _ = best(lambda: pn.solve(decay, np.ones(1), np.array([0.0, 1e-3]), rtol=1e-10, atol=1e-12), repeats)
    per_step = (dt - dt0) / steps * 1e9
    print(f"== overhead, y' = -y, dopri5, {steps} steps ==\n{per_step:.0f} ns per step, "
          f"{(dt - dt0) / int(sol.n_feval[0]) * 1e9:.0f} ns per evaluation (fixed cost per call {dt0 * 1e6:.0f} us)")


def scaling(M: int, rounds: int) -> None:
    """Thread scaling 1 -> 2 of the ensemble, measured in ``rounds`` interleaved rounds (1 then 2 threads, order
    alternating) with the 1-minute load average before each: wall ratio t1/t2, and CPU time t2/t1 (the threads'
    overhead: 1.0 when the second thread adds no work). Medians over the rounds (the machine may be shared)."""
    rho = np.linspace(0.0, 100.0, M)[:, None]
    y0, t_eval = np.array([1.0, 1.0, 1.0]), np.linspace(0.0, 10.0, 100)
    pn.solve(lorenz, y0, t_eval, rho[:8], rtol=1e-8, atol=1e-8)
    print(f"== thread scaling: {M} Lorenz trajectories (dopri5, rtol = atol = 1e-8), {rounds} rounds ==")
    walls, cpus = [], []
    for r in range(rounds):
        load = os.getloadavg()[0]
        out = {}
        for threads in ((1, 2) if r % 2 == 0 else (2, 1)):
            c0, t0 = time.process_time(), time.perf_counter()
            pn.solve(lorenz, y0, t_eval, rho, rtol=1e-8, atol=1e-8, options={"num_threads": threads})
            out[threads] = (time.perf_counter() - t0, time.process_time() - c0)
        walls.append(out[1][0] / out[2][0])
        cpus.append(out[2][1] / out[1][1])
        print(f"round {r}: load {load:.2f}; 1 thread {out[1][0] * 1e3:.0f} ms wall / {out[1][1] * 1e3:.0f} ms cpu, "
              f"2 threads {out[2][0] * 1e3:.0f} ms wall / {out[2][1] * 1e3:.0f} ms cpu; wall ratio {walls[-1]:.2f}x")
    print(f"median wall speed-up 1 -> 2 threads: {np.median(walls):.2f}x; median cpu(2)/cpu(1): {np.median(cpus):.3f}")


def _diffrax(skip: bool):
    """bench/native_diffrax.py when jax and diffrax import, else None (and why, printed)."""
    if skip:
        return None
    try:
        from bench import native_diffrax
    except ImportError:  # run as a script: bench/ is on sys.path
        import native_diffrax
    reason = native_diffrax.available()
    if reason is not None:
        print(f"(diffrax column skipped: {reason})\n")
        return None
    return native_diffrax


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller ensemble and fewer repeats")
    ap.add_argument("--scaling", action="store_true", help="only the 1 -> 2 thread scaling (3 interleaved rounds)")
    ap.add_argument("--no-diffrax", action="store_true", help="skip the diffrax column even if it is installed")
    args = ap.parse_args()
    if args.scaling:
        scaling(4000, 3)
        return
    repeats = 2 if args.quick else 5
    dfx = _diffrax(args.no_diffrax)
    ref, pyode_ms = single(repeats)
    if dfx is not None:
        dfx.single(ref, pyode_ms, lambda fn: timed(fn, repeats))
        print()
    rho, ys, per_traj = ensemble(400 if args.quick else 4000, 10 if args.quick else 40, repeats)
    if dfx is not None:
        dfx.ensemble(rho, ys, per_traj, lambda fn: timed(fn, 1 if args.quick else 2))
    print()
    overhead(repeats)


if __name__ == "__main__":
    main()
