"""Reversible gradients with the asynchronous leapfrog method (ALF; MALI: Zhuang, Dvornek, Tatikonda &
Duncan, ICLR 2021); the scheme and its loop are :mod:`pyode._solvers.alf`.

ALF is exactly invertible, so the backward pass rebuilds each step's input from its output instead of
storing it (O(1) memory in the number of steps) and backpropagates through that one step: the gradient
equals direct backprop of the same ALF solve (up to the rounding of the reconstruction).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyode._solvers.alf import alf_inverse, alf_step
from pyode._solvers.problem import concatenate_outputs


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
        with torch.no_grad():
            blocks, v = problem.loop.solve(y0, problem.t_out)  # the final v starts the reconstruction
        ys = concatenate_outputs(blocks)
        ctx.problem = problem
        ctx.save_for_backward(ys[-1], v, y0, *params)
        return ys

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_ys):  # type: ignore[override]
        y, v, y0, *params = ctx.saved_tensors
        loop, t_out = ctx.problem.loop, ctx.problem.t_out
        with loop.fn.backward_counting():  # replays count as backward evaluations
            a_y, g, vjp = _reverse(loop, t_out, y, v, y0, params, grad_ys)
        return (None, a_y + vjp[0], *g)


def _reverse(loop, t_out, y, v, y0, params, grad_ys):
    """The reversible backward pass: ALF steps reconstructed backwards, each step's VJP accumulated. Returns
    (a_y before the last product, the parameter gradients, the VJP of ``f(t0, y0)`` by a_v)."""
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
    return a_y, g, vjp
