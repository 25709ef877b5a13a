"""Reversible gradients with the asynchronous leapfrog method (ALF; MALI: Zhuang, Dvornek, Tatikonda &
Duncan, ICLR 2021).

ALF carries ``(y, v)`` with ``v ≈ f(t, y)``; one step of size h is

    k = y + h/2 v,   u = f(t + h/2, k),   v1 = 2u - v,   y1 = k + h/2 v1,

and it is exactly invertible: ``k = y1 - h/2 v1, u = f(t1 - h/2, k), v = 2u - v1, y = k - h/2 v``. The
backward pass rebuilds each step's input from its output instead of storing it (O(1) memory in the
number of steps) and backpropagates through that one step, so the gradient equals direct backprop of
the same ALF solve (up to the rounding of the reconstruction). Second order; fixed steps: each output
interval is split into ``ceil(Δt / step_size)`` equal steps.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from pyode._solvers.callbacks import step_callbacks
from pyode._solvers.fixed_grid import check_finite


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
    """Integrates with ALF through the output times; ``v0 = f(t0, y0)``. Returns outputs (T, n) blocks."""

    def __init__(self, fn, kern, t_out: list[float], step_size: float | None, stats, time_sign: float):
        self.fn, self.kern, self.stats, self.time_sign = fn, kern, stats, time_sign
        self.sizes = alf_grid(t_out, step_size)
        self.final_v: Tensor | None = None
        self.callbacks = step_callbacks(fn)  # func's callback_step hook, or None

    def integrate(self, y0: Tensor, t_out: list[float]) -> list[Tensor]:
        y, v = y0, self.fn(t_out[0], y0)
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
        self.final_v = v
        return outputs


def _step_vjp(loop, t: float, y: Tensor, v: Tensor, h: float, params, a_y: Tensor, a_v: Tensor):
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        v = v.detach().requires_grad_(True)
        y1, v1 = alf_step(loop.fn, loop.kern, t, y, v, h)
        return torch.autograd.grad((y1, v1), (y, v, *params), (a_y, a_v), allow_unused=True)


class ReversibleSolve(torch.autograd.Function):
    """ys (T, n) = ALF solve(y0), backward by reconstruction. Inputs: problem (with an AlfLoop), y0, *params."""

    @staticmethod
    def forward(ctx, problem, y0, *params):  # type: ignore[override]
        from pyode._solvers.problem import integrate

        with torch.no_grad():
            ys = integrate(problem, y0)
        ctx.problem = problem
        ctx.save_for_backward(ys[-1], problem.loop.final_v, y0, *params)
        return ys

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_ys):  # type: ignore[override]
        y, v, y0, *params = ctx.saved_tensors
        loop, t_out = ctx.problem.loop, ctx.problem.t_out
        stats = ctx.problem.stats
        nfe_forward = stats.nfe  # replays count as backward evaluations
        a_y, a_v = grad_ys[-1].clone(), torch.zeros_like(grad_ys[-1])
        g = [torch.zeros_like(p) for p in params]
        for i in range(len(t_out) - 1, 0, -1):
            n, h = loop.sizes[i - 1]
            for k in range(n - 1, -1, -1):
                t = t_out[i - 1] + k * h
                with torch.no_grad():
                    y, v = alf_inverse(loop.fn, loop.kern, t, y, v, h)
                a_y, a_v, *dg = _step_vjp(loop, t, y, v, h, params, a_y, a_v)
                g = [acc if d is None else acc + d for acc, d in zip(g, dg)]
            a_y = a_y + grad_ys[i - 1]
        # v0 = f(t0, y0): route a_v into y0 and the parameters. The stored y0 is used (not the
        # reconstruction), so rounding in the reconstruction never reaches this last product.
        with torch.enable_grad():
            y_leaf = y0.detach().requires_grad_(True)
            vjp = torch.autograd.grad(loop.fn(t_out[0], y_leaf), (y_leaf, *params), a_v, allow_unused=True)
        g = [acc if d is None else acc + d for acc, d in zip(g, vjp[1:])]
        stats.nfe_backward += stats.nfe - nfe_forward
        stats.nfe = nfe_forward
        return (None, a_y + vjp[0], *g)
