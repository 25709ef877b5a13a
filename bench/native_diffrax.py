"""diffrax (JAX) on bench/native_lorenz.py's Lorenz problems: the diffrax column of that bench.

    python bench/native_lorenz.py [--quick]     (this module is its diffrax column)

jax and diffrax are optional and never pyode dependencies: ``pip install jax diffrax``; without them this module
reports itself unavailable and native_lorenz.py skips the column. float64 throughout (``jax_enable_x64``), on the
CPU. Each solve is ``jax.jit``-compiled once (the ensemble: ``jit(vmap(...))`` over rho); the compile time
is reported separately and the timed calls run the compiled function (``block_until_ready``), best of a few.
Accuracy is checked as in native_lorenz.py: one trajectory at t = 10 against SciPy's DOP853 at rtol 1e-13; the
ensemble at t ~ 1 (output 10) against pyode's rows.
"""

from __future__ import annotations

import time

import numpy as np

SIGMA, BETA = 10.0, 8.0 / 3.0


def available() -> str | None:
    """None when jax and diffrax import, else the reason they do not."""
    try:
        import diffrax  # noqa: F401
        import jax
    except ImportError as exc:
        return f"{exc.name or exc} not installed"
    jax.config.update("jax_enable_x64", True)
    return None


def _solver_fn(solver_name: str, t1: float, ts: np.ndarray, rtol: float, atol: float):
    """A ``(y0, rho) -> (ys (T, 3), steps)`` with diffrax's solver ``solver_name`` (jit it)."""
    import diffrax
    import jax.numpy as jnp

    def vf(t, y, rho):
        return jnp.stack([SIGMA * (y[1] - y[0]), y[0] * (rho - y[2]) - y[1], y[0] * y[1] - BETA * y[2]])

    term, solver = diffrax.ODETerm(vf), getattr(diffrax, solver_name)()
    ctrl = diffrax.PIDController(rtol=rtol, atol=atol)
    saveat = diffrax.SaveAt(ts=jnp.asarray(ts))

    def solve(y0, rho):
        sol = diffrax.diffeqsolve(term, solver, t0=float(ts[0]), t1=t1, dt0=None, y0=y0, args=rho,
                                  stepsize_controller=ctrl, saveat=saveat, max_steps=200_000)
        return sol.ys, sol.stats["num_steps"]

    return solve


def single(ref_t10: np.ndarray, pyode_ms: dict, timed) -> None:
    """One trajectory, t 0-100, rtol = atol = 1e-8 (Dopri8, Dopri5, Tsit5). ``pyode_ms``: pyode's (wall, cpu)
    times in ms by method name, for the ratios; ``timed(fn)``: native_lorenz's (wall s, cpu s, result) of the
    fastest of its repeats."""
    import jax
    import jax.numpy as jnp

    y0, rho = jnp.array([1.0, 1.0, 1.0]), jnp.asarray(28.0)
    ts = np.linspace(0.0, 100.0, 101)
    print("-- diffrax (jax.jit, float64, CPU), same problem --")
    print(f"{'solver':<16}{'compile s':>10}{'time ms':>10}{'cpu ms':>10}{'steps':>8}{'err(t=10)':>12}"
          f"{'pyode x wall / cpu':>20}")
    for name, pyode_method in (("Dopri8", "dopri8"), ("Dopri5", "dopri5"), ("Tsit5", "dopri5")):
        fn = jax.jit(_solver_fn(name, 100.0, ts, 1e-8, 1e-8))
        c0 = time.perf_counter()
        jax.block_until_ready(fn(y0, rho))
        compile_s = time.perf_counter() - c0
        dt, cpu, (ys, steps) = timed(lambda f=fn: jax.block_until_ready(f(y0, rho)))
        err = float(np.abs(np.asarray(ys)[10] - ref_t10).max())
        wall_ms, cpu_ms = pyode_ms[pyode_method]
        print(f"{'diffrax ' + name:<16}{compile_s:>10.2f}{dt * 1e3:>10.3f}{cpu * 1e3:>10.3f}{int(steps):>8}"
              f"{err:>12.2e}{dt * 1e3 / wall_ms:>13.0f}x /{cpu * 1e3 / cpu_ms:>4.0f}x")
    print("(pyode x: diffrax's time over pyode's with the same tableau family: dopri8 for Dopri8, dopri5 for Dopri5 "
          "and Tsit5)")


def ensemble(rho: np.ndarray, pyode_ys: np.ndarray, pyode_per_traj: tuple, timed) -> None:
    """The rho-sweep ensemble, t 0-10, 100 outputs, Dopri5 and Tsit5 under jit(vmap); ``pyode_ys`` (T, M, 3) and
    pyode's (wall on 2 threads, CPU) seconds per trajectory, for the accuracy check and the ratios."""
    import jax
    import jax.numpy as jnp

    M = rho.shape[0]
    ts = np.linspace(0.0, 10.0, 100)
    y0 = jnp.array([1.0, 1.0, 1.0])
    rj = jnp.asarray(rho[:, 0])
    print(f"-- diffrax ensemble: jit(vmap) over the {M} rho values --")
    for name in ("Dopri5", "Tsit5"):
        fn = jax.jit(jax.vmap(_solver_fn(name, 10.0, ts, 1e-8, 1e-8), in_axes=(None, 0)))
        c0 = time.perf_counter()
        jax.block_until_ready(fn(y0, rj))
        compile_s = time.perf_counter() - c0
        dt, cpu, (ys, steps) = timed(lambda f=fn: jax.block_until_ready(f(y0, rj)))
        ys = np.asarray(ys)  # (M, T, 3)
        rows = np.linspace(0, M - 1, 8).astype(int)
        # Lorenz is chaotic: compare at t ~ 1 (output 10), before rounding differences grow to O(1).
        diff = float(np.abs(ys[rows, 10] - pyode_ys[10, rows]).max())
        wall_s, cpu_s = pyode_per_traj
        print(f"diffrax {name}: compile {compile_s:.2f} s, {dt * 1e3:.1f} ms ({dt / M * 1e6:.2f} us/trajectory, "
              f"cpu/wall {cpu / dt:.2f}, {int(np.sum(steps))} steps in all), max |diff| vs pyode at t~1 over 8 rows "
              f"{diff:.1e}; per trajectory pyode is {dt / M / wall_s:.1f}x faster (wall, 2 threads) and uses "
              f"{cpu / M / cpu_s:.1f}x less CPU time")
