"""pyode.native's stiff methods against SciPy's implicit solvers, all given the same numba-jitted f and Jacobian.

    python bench/native_stiff.py [--quick]

Problems: Robertson (t 0-1e5, atol = 1e-4 rtol) and Van der Pol mu = 1000 (t 0-3000, atol = rtol). Both tolerances
move together, so a sweep sweeps accuracy: Robertson's y2 peaks at 3.6e-5, and a fixed atol of 1e-10 capped every
run's error on it at ~3e-6 of its peak whatever rtol was (LSODA from rtol 1e-5 to 1e-10 stayed within 4e-6 to 1e-5,
and a match "at equal accuracy" picked runs by noise). pyode rodas5 /
kvaerno5 (compiled jac, and forward differences) vs SciPy Radau / BDF / LSODA over a range of rtol. Error: the
largest |y - y_ref| over the output times, per component over that component's peak |y_ref| (Robertson: all three;
Van der Pol: the position y0, since y0' jumps by ~1e3 in t ~ 1e-3 where any phase error is O(1)), against Radau
at rtol 1e-12. pyode runs with the compiled jac, with forward differences ("FD jac"), with the plain PID
controller instead of the stiff methods' predictive default ("PID"), and with steps landing on
the output times ("landing": options step_t = t, so outputs are step ends, not the interpolant:
rodas5's 4th-order continuous extension, kvaerno5's cubic Hermite). Radau and BDF at rtol 1e-5 to 1e-8; LSODA, the
fastest SciPy method here, and pyode rodas5 with the compiled jac (interpolated and landing: OURS, the runs the
rules compare) at half decades from 1e-5 to 1e-10, so each side's runs reach the other's errors; the other pyode
variants at 1e-5 to 1e-8. "Speed-up at equal accuracy" compares pyode's work-precision front (the runs of OURS
that no other run of OURS beats on both error and time: at tight tolerances the interpolant's error, not the
steps', sets rodas5's, and landing on the outputs is the faster way to an accuracy) with SciPy's runs, by four
rules:
- discrete: each run on pyode's front against the fastest SciPy run that is at least as accurate. A near tie in
  error can pick a much slower rival: a pyode error 4% above a fast run's compares with the next, tighter, run.
- interpolated (the work-precision comparison): each SciPy method's time at that run's error, interpolated
  log-log between its two runs that bracket it (on the method's work-precision curve: its runs that no other of
  its runs beats on both error and time), extrapolated along the last segment (no steeper than time ~ 1/error)
  up to 2x beyond its least accurate run (farther: that run's time, flagged "at most", an upper bound on the
  speed-up); pyode against the fastest method. A method whose runs never reach the error is left out, as in the
  discrete rule.
- SciPy's side: each SciPy run against the fastest run of OURS at least as accurate.
- curves: pyode's front against the fastest SciPy front at every error both reach (log-log, never extrapolated).
Times are the best of a few repeats (the machine may be shared), each the mean of a batch of calls lasting about
2 ms (one call for anything slower), wall and process CPU time (the steadier figure on a loaded machine). Figures: docs/native.md ("Stiff problems").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np
from scipy.integrate import solve_ivp

import pyode.native as pn

if __package__ in (None, ""):  # run as a script: the repository root, for the bench package
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.curves import front, time_at


def robertson(t, y, dy, p):
    dy[0] = -0.04 * y[0] + 1e4 * y[1] * y[2]
    dy[1] = 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2
    dy[2] = 3e7 * y[1] ** 2


def robertson_jac(t, y, J, p):
    J[0, 0], J[0, 1], J[0, 2] = -0.04, 1e4 * y[2], 1e4 * y[1]
    J[1, 0], J[1, 1], J[1, 2] = 0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]
    J[2, 0], J[2, 1], J[2, 2] = 0.0, 6e7 * y[1], 0.0


def vdp(t, y, dy, p):
    dy[0] = y[1]
    dy[1] = p[0] * (1.0 - y[0] ** 2) * y[1] - y[0]


def vdp_jac(t, y, J, p):
    J[0, 0], J[0, 1] = 0.0, 1.0
    J[1, 0], J[1, 1] = -2.0 * p[0] * y[0] * y[1] - 1.0, p[0] * (1.0 - y[0] ** 2)


def scipy_pair(rhs, jac, n: int):
    """The same kernels as SciPy callables (njit; allocate and return the arrays SciPy expects)."""
    f_nb, j_nb = numba.njit(rhs), numba.njit(jac)

    @numba.njit
    def f(t, y, p):
        dy = np.empty(n)
        f_nb(t, y, dy, p)
        return dy

    @numba.njit
    def J(t, y, p):
        out = np.empty((n, n))
        j_nb(t, y, out, p)
        return out

    return f, J


PROBLEMS = {
    "robertson": {"rhs": robertson, "jac": robertson_jac, "y0": np.array([1.0, 0.0, 0.0]), "p": np.zeros(1),
                      "t": np.concatenate([[0.0], np.logspace(-4, 5, 37)]), "atol": lambda r: 1e-4 * r, "cols": slice(None)},
    "vdp_mu1000": {"rhs": vdp, "jac": vdp_jac, "y0": np.array([2.0, 0.0]), "p": np.array([1000.0]),
                       "t": np.linspace(0.0, 3000.0, 31), "atol": lambda r: r, "cols": slice(0, 1)},
}


def best(fn, repeats: int, budget_s: float = 2.0, batch_s: float = 2e-3):
    """The fastest of up to ``repeats`` timings (at least 2; fewer only once they took ``budget_s``) and the last
    result. Each timing is of a batch of calls, as many as take about ``batch_s`` (one call for anything slower:
    every SciPy run here), and counts their mean: a 40 us solve timed alone is at the mercy of one interrupt.
    SciPy and pyode get the same rule: on a shared machine the best of more repeats is faster, so giving one side
    more repeats would bias the ratio (a batch's mean is no faster than its fastest call).
    Returns (wall s, process CPU s of that fastest timing, per call, result): on a loaded machine wall time
    includes waiting for a core, CPU time does not (both sides here run on one thread)."""
    t0 = time.perf_counter()
    out = fn()
    batch = max(1, int(batch_s / max(time.perf_counter() - t0, 1e-9)))
    times = []
    while len(times) < max(repeats, 2) and (len(times) < 2 or sum(t for t, _ in times) * batch < budget_s):
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(batch):
            out = fn()
        times.append(((time.perf_counter() - t0) / batch, (time.process_time() - c0) / batch))
    wall, cpu = min(times)
    return wall, cpu, out


def error(ys: np.ndarray, ref: np.ndarray, cols) -> float:
    return float(np.max(np.abs(ys - ref)[:, cols] / np.abs(ref).max(axis=0)[cols]))


def run_problem(name: str, quick: bool) -> None:
    pr = PROBLEMS[name]
    n, t, p = pr["y0"].size, pr["t"], pr["p"]
    f, J = scipy_pair(pr["rhs"], pr["jac"], n)
    f(0.0, pr["y0"], p), J(0.0, pr["y0"], p)  # compile
    sol = solve_ivp(f, (t[0], t[-1]), pr["y0"], method="Radau", t_eval=t, rtol=1e-12, atol=pr["atol"](1e-12) * 1e-2,
                    jac=J, args=(p,))
    ref = sol.y.T
    print(f"\n== {name}: reference Radau rtol 1e-12 ({sol.t.size} outputs, {sol.nfev} f-evals) ==")
    print(f"{'solver':<24}{'rtol':>8}{'time ms':>11}{'cpu ms':>10}{'steps':>8}{'f-evals':>9}{'error':>11}")
    rows = []
    rtols = (1e-6,) if quick else (1e-5, 1e-6, 1e-7, 1e-8)
    # LSODA, the fastest SciPy method, and rodas5, the pyode method the rules compare, on a finer and wider sweep
    # (Radau and BDF take seconds at 1e-10)
    fine = (1e-6,) if quick else (1e-5, 3e-6, 1e-6, 3e-7, 1e-7, 3e-8, 1e-8, 3e-9, 1e-9, 3e-10, 1e-10)
    for method in ("Radau", "BDF", "LSODA"):
        for rtol in fine if method == "LSODA" else rtols:
            dt, cpu, s = best(lambda m=method, r=rtol: solve_ivp(f, (t[0], t[-1]), pr["y0"], method=m, t_eval=t, rtol=r,
                                                                  atol=pr["atol"](r), jac=J, args=(p,)), 3 if quick else 7)
            err = error(s.y.T, ref, pr["cols"]) if s.success else np.inf
            rows.append((f"scipy {method}", rtol, dt, err, cpu))
            print(f"{'scipy ' + method:<24}{rtol:>8.0e}{dt * 1e3:>11.2f}{cpu * 1e3:>10.2f}{'':>8}{s.nfev:>9}{err:>11.2e}")
    # (compiled jac, options, label suffix); " PID": the plain PID controller instead of the stiff methods'
    # default, Gustafsson's predictive one (the step counts at equal error that docs/stiff.md cites)
    variants = ((True, None, ""), (False, None, " FD jac"), (True, {"step_t": list(t)}, " landing"),
                (True, {"controller": "pid"}, " PID"))
    for method in ("rodas5", "kvaerno5"):
        for use_jac, options, suffix in variants:
            label = f"pyode {method}{suffix}"
            for rtol in fine if label in OURS else rtols:
                kw = {"method": method, "rtol": rtol, "atol": pr["atol"](rtol), "jac": pr["jac"] if use_jac else None,
                      "raise_on_failure": False, "options": options}
                pn.solve(pr["rhs"], pr["y0"], t, p, **kw)  # compile and cache
                dt, cpu, s = best(lambda kw=kw: pn.solve(pr["rhs"], pr["y0"], t, p, **kw), 3 if quick else 7)
                err = error(s.ys, ref, pr["cols"]) if s.success else np.inf
                rows.append((label, rtol, dt, err, cpu))
                print(f"{label:<24}{rtol:>8.0e}{dt * 1e3:>11.3f}{cpu * 1e3:>10.3f}{int(s.n_accepted[0] + s.n_rejected[0]):>8}"
                      f"{int(s.n_feval[0]):>9}{err:>11.2e}" + ("" if s.success else f"  {s.status_names()[0]}"))
    summary(rows)


# pyode's runs in the rules: rodas5 with the compiled jac, outputs interpolated or landed (options step_t = t),
# whichever is faster at an accuracy (a user picks the configuration, as SciPy's side picks the fastest method).
OURS = ("pyode rodas5", "pyode rodas5 landing")


def pyode_front(rows: list) -> list:
    """The rows of OURS that no other row of OURS beats on both error and CPU time (pyode's work-precision
    front): a dominated run is never the configuration to use at its accuracy."""
    ours = [r for r in rows if r[0] in OURS]
    kept = set(front([(r[3], r[4]) for r in ours]))
    return sorted((r for r in ours if (r[3], r[4]) in kept), key=lambda r: (r[3], r[4]))


def summary(rows: list) -> None:
    """Speed-ups at equal accuracy from the (label, rtol, wall, error, cpu) rows, by two rules (see the module
    docstring), and the discrete rule from SciPy's side."""
    print("speed-up at equal accuracy, discrete rule (each run on pyode's front vs the fastest SciPy run with error "
          "<= its error), wall / cpu:")
    for label, rtol, dt, err, cpu in pyode_front(rows):
        rivals = [(d, lab, r, c) for lab, r, d, e, c in rows if lab.startswith("scipy") and e <= err]
        if rivals:
            d, lab, r, c = min(rivals)
            print(f"  {label:<24} rtol {rtol:.0e}: {d / dt:6.0f}x / {c / cpu:4.0f}x  ({lab} rtol {r:.0e}, {d * 1e3:.1f} ms)")
        else:
            print(f"  {label:<24} rtol {rtol:.0e}: no SciPy run reached its error {err:.1e}")
    interpolated_summary(rows)
    curves_summary(rows)
    # The other direction of the same work-precision comparison: for each SciPy run, the fastest pyode run of
    # OURS at least as accurate.
    print("the same from SciPy's side (each SciPy run vs the fastest pyode rodas5 run, interpolated or landing, with "
          "error <= its error):")
    for label, rtol, dt, err, cpu in rows:
        if not label.startswith("scipy") or not np.isfinite(err):
            continue
        ours = [(d, r, c, lab) for lab, r, d, e, c in rows if lab in OURS and e <= err]
        if ours:
            d, r, c, lab = min(ours)
            print(f"  {label:<24} rtol {rtol:.0e} ({dt * 1e3:7.1f} ms, error {err:.1e}): {dt / d:6.0f}x / {cpu / c:4.0f}x  "
                  f"({lab} rtol {r:.0e}, {d * 1e3:.3f} ms)")
        else:
            print(f"  {label:<24} rtol {rtol:.0e}: no pyode rodas5 run reached its error {err:.1e}")


def interpolated_summary(rows: list) -> None:
    """The work-precision rule: each SciPy method's time at pyode's error, interpolated log-log between its two
    runs bracketing that error (time_at), wall and CPU separately; pyode against the fastest method."""
    print("speed-up at equal accuracy, interpolated rule (each run on pyode's front vs each SciPy method's time "
          "interpolated log-log at its error, the fastest method), wall / cpu:")
    methods = sorted({lab for lab, *_ in rows if lab.startswith("scipy")})
    curves = {(m, q): front([(e, c if q else d) for lab, r, d, e, c in rows if lab == m]) for m in methods
              for q in (0, 1)}
    for label, rtol, dt, err, cpu in pyode_front(rows):
        per = {m: (time_at(curves[(m, 0)], err), time_at(curves[(m, 1)], err)) for m in methods}
        per = {m: v for m, v in per.items() if v[0] is not None and v[1] is not None}
        if not per:
            print(f"  {label:<24} rtol {rtol:.0e}: no SciPy method's runs cover its error {err:.1e}")
            continue
        m_wall = min(per, key=lambda m: per[m][0][0])
        m_cpu = min(per, key=lambda m: per[m][1][0])
        (wall, how), (c, how_c) = per[m_wall][0], per[m_cpu][1]
        each = ", ".join(f"{m[6:]} {per[m][1][0] * 1e3:.1f}" for m in methods if m in per)
        note = "".join(f" {h}" for h in ("extrapolated", "at most") if h in (how, how_c))
        if "at most" in note:
            note += " (its least accurate run, 2x more accurate or better: an upper bound)"
        print(f"  {label:<24} rtol {rtol:.0e}: {wall / dt:6.0f}x / {c / cpu:4.0f}x  (fastest {m_wall[6:]} / "
              f"{m_cpu[6:]}{note}; cpu ms at error {err:.1e}: {each})")


def curves_summary(rows: list) -> None:
    """The two work-precision curves against each other, CPU time: pyode rodas5's front and, at each error, the
    fastest SciPy method's front there (each interpolated log-log between its own runs, never extrapolated), over
    a log grid of the errors both reach; the smallest speed-up and the error where it is."""
    ours = front([(e, c) for lab, r, d, e, c in rows if lab in OURS])
    theirs = [front([(e, c) for lab, r, d, e, c in rows if lab == m]) for m in {lab for lab, *_ in rows
                                                                                 if lab.startswith("scipy")}]

    def inside(curve, err):
        return time_at(curve, err)[0] if curve and curve[0][0] <= err <= curve[-1][0] else None

    lo = max(ours[0][0], min(c[0][0] for c in theirs if c))
    hi = min(ours[-1][0], max(c[-1][0] for c in theirs if c))
    ratios = []
    for err in np.geomspace(lo, hi, 60) if lo <= hi else []:
        rival = [t for t in (inside(c, err) for c in theirs) if t is not None]
        if rival and inside(ours, err) is not None:
            ratios.append((min(rival) / inside(ours, err), err))
    if ratios:
        worst, at = min(ratios)
        print(f"work-precision curves (pyode's front vs the fastest SciPy front, cpu, errors {lo:.1e} to "
              f"{hi:.1e}): speed-up {worst:.0f}x at least (at error {at:.1e}), {max(ratios)[0]:.0f}x at most")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one tolerance, fewer repeats")
    args = ap.parse_args()
    for name in PROBLEMS:
        run_problem(name, args.quick)


if __name__ == "__main__":
    main()
