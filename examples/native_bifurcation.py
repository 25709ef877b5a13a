"""A native ensemble sweep: the Rössler system's bifurcation diagram, one trajectory per parameter value.

``pyode.native.solve`` compiles the right-hand side (numba ``cfunc``) and integrates every trajectory of the
ensemble in pyode's C++ loop on threads, without calling Python: here ``c`` is swept over [2, 18] (one row of
``params`` per trajectory), each trajectory is integrated past its transient, and the local maxima of ``x`` on
the attractor are plotted against ``c``: the period-doubling route to chaos and its periodic windows.

    python examples/native_bifurcation.py [--smoke] [--out outputs]      # writes native_bifurcation.png
"""

import time

import numpy as np
from _common import parse_args, pyplot, save

import pyode.native as pn

A, B = 0.2, 0.2


def rossler(t, y, dy, p):
    """dy/dt of the Rössler system with c = p[0] (numba nopython subset: writes dy in place)."""
    dy[0] = -y[1] - y[2]
    dy[1] = y[0] + A * y[1]
    dy[2] = B + y[2] * (y[0] - p[0])


def local_maxima(x: np.ndarray) -> list[np.ndarray]:
    """x (T, M) -> for each trajectory, the values of its strict interior local maxima."""
    peak = (x[1:-1] > x[:-2]) & (x[1:-1] > x[2:])
    return [x[1:-1, m][peak[:, m]] for m in range(x.shape[1])]


def sweep(c: np.ndarray, transient: float, window: float, dt: float):
    """Integrate one trajectory per c (c: (M,)); returns the x-maxima on [transient, transient + window] of each
    trajectory and the accepted steps of all of them."""
    y0 = np.array([1.0, 1.0, 0.0])
    params = c[:, None]
    settle = pn.solve(rossler, y0, np.array([0.0, transient]), params, rtol=1e-8, atol=1e-8)
    t = np.arange(transient, transient + window + dt / 2, dt)
    sol = pn.solve(rossler, settle.ys[-1], t, params, rtol=1e-8, atol=1e-8)  # (T, M, 3), dense output at t
    if not sol.success:
        raise RuntimeError(f"some trajectories failed: {set(sol.status_names())}")
    return local_maxima(sol.ys[:, :, 0]), int(sol.n_accepted.sum() + settle.n_accepted.sum())


def plot(c: np.ndarray, maxima: list[np.ndarray], path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 5))
    cs = np.concatenate([np.full(len(m), ci) for ci, m in zip(c, maxima)])
    ax.scatter(cs, np.concatenate(maxima), s=0.2, color="k", alpha=0.5)
    ax.set(xlabel="c", ylabel="local maxima of x on the attractor",
           title=f"Rössler (a = b = {A}): bifurcation diagram, {len(c)} trajectories, pyode.native.solve")
    save(fig, path)


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    n, transient, window = (20, 50.0, 50.0) if args.smoke else (1000, 300.0, 200.0)
    c = np.linspace(2.0, 18.0, n)
    start = time.perf_counter()
    maxima, steps = sweep(c, transient, window, dt=0.05)
    seconds = time.perf_counter() - start
    plot(c, maxima, args.out / "native_bifurcation.png")
    print(f"{n} trajectories, {steps} accepted steps in {seconds:.1f} s (compilation included)")


if __name__ == "__main__":
    main()
