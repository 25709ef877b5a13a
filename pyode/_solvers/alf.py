"""The asynchronous leapfrog method (ALF; MALI: Zhuang, Dvornek, Tatikonda & Duncan, ICLR 2021): the forward
scheme, its exact inverse and its integration loop. ``gradient="reversible"``
(:mod:`pyode._gradients.reversible`) differentiates it by running the inverse backwards.

ALF carries ``(y, v)`` with ``v ≈ f(t, y)``; one step of size h is

    k = y + h/2 v,   u = f(t + h/2, k),   v1 = 2u - v,   y1 = k + h/2 v1,

and it is exactly invertible: ``k = y1 - h/2 v1, u = f(t1 - h/2, k), v = 2u - v1, y = k - h/2 v``. Second
order; fixed steps: each output interval is split into ``ceil(Δt / step_size)`` equal steps.
"""

from __future__ import annotations

import itertools
import math

from torch import Tensor

from pyode._solvers.callbacks import step_callbacks
from pyode._solvers.fixed_grid import check_finite, core_first
from pyode._solvers.hooks import NO_HOOKS, LoopHooks


def alf_grid(t_out: list[float], step_size: float | None) -> list[tuple[int, float]]:
    """For each output interval, (number of equal steps, their size) covering it."""
    grid = []
    for t0, t1 in itertools.pairwise(t_out):
        n = 1 if step_size is None else max(1, math.ceil((t1 - t0) / step_size - 1e-9))
        grid.append((n, (t1 - t0) / n))
    return grid


def alf_step(fn, kern, t: float, y: Tensor, v: Tensor, h: float) -> tuple[Tensor, Tensor]:
    """One ALF step from ``(t, y, v)``: (y1, v1), each (n,)."""
    k = kern.lincomb_row(y, [v], [0.5 * h])
    u = fn(t + 0.5 * h, k)
    v1 = kern.lincomb_row(None, [u, v], [2.0, -1.0])
    y1 = kern.lincomb_row(k, [v1], [0.5 * h])
    return y1, v1


def alf_inverse(fn, kern, t: float, y1: Tensor, v1: Tensor, h: float) -> tuple[Tensor, Tensor]:
    """The exact inverse of :func:`alf_step` from ``t``: (y, v) at ``t`` from (y1, v1) at ``t + h``."""
    k = kern.lincomb_row(y1, [v1], [-0.5 * h])
    u = fn(t + 0.5 * h, k)  # the very time the forward step used
    v = kern.lincomb_row(None, [u, v1], [2.0, -1.0])
    y = kern.lincomb_row(k, [v], [-0.5 * h])
    return y, v


class AlfLoop:
    """Integrates with ALF through the output times from ``v0 = f(t0, y0)``.

    Args:
        fn: the :class:`FlatFunc`; kern: the kernel backend; t_out: the output times (solver time); step_size:
        the largest step (None: one step per output interval); stats: counters; time_sign: -1 for decreasing t.
    """

    SUPPORTED_HOOKS: frozenset[str] = frozenset()  # its steps have no StepResult or interpolant to hand out

    def __init__(self, fn, kern, t_out: list[float], step_size: float | None, stats, time_sign: float, core=None):
        self.fn, self.kern, self.stats, self.time_sign = fn, kern, stats, time_sign
        self.core = core  # pyode._solvers.core_loop.CoreSolver (ALF kind): the C++ loop for solves that record nothing
        self.sizes = alf_grid(t_out, step_size)
        self.callbacks = step_callbacks(fn)  # func's callback_step hook, or None

    def integrate(self, y0: Tensor, t_out: list[float], hooks: LoopHooks = NO_HOOKS) -> list[Tensor]:
        """The states at ``t_out`` as (1, n) blocks (``hooks`` must be empty: see ``SUPPORTED_HOOKS``)."""
        return self.solve(y0, t_out)[0]

    def solve(self, y0: Tensor, t_out: list[float]) -> tuple[list[Tensor], Tensor | None]:
        """(the states at ``t_out`` as (1, n) blocks, the final v (n,)); v is None for a single time (no step,
        ``func`` not called)."""
        if len(t_out) < 2:
            return [y0.unsqueeze(0)], None
        outputs, f0 = core_first(self.core, self.fn, t_out, y0, t_out, NO_HOOKS)
        if outputs is not None:
            return outputs, self.core.final_v
        y, v = y0, self.fn(t_out[0], y0) if f0 is None else f0
        outputs = [y0.unsqueeze(0)]
        for t0, (n, h) in zip(t_out[:-1], self.sizes):
            for k in range(n):
                if self.callbacks is not None:
                    self.callbacks.step(t0 + k * h, y, h)
                y, v = alf_step(self.fn, self.kern, t0 + k * h, y, v, h)
                self.stats.n_accepted += 1
            self.stats.t_reached = self.time_sign * (t0 + n * h)
            check_finite(y, t0 + n * h, self.time_sign)
            outputs.append(y.unsqueeze(0))
        return outputs, v
