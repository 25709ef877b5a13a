"""Gradients with respect to the output times, for the modes that integrate with plain float times.

Two exact identities of the flow (no differentiation through step-size choices):
- an output ``y(t_i)`` moves with ``t_i`` at the speed ``f(t_i, y_i)``: ``dL/dt_i = <dL/dy_i, f(t_i, y_i)>``;
- starting later from the same ``y0`` equals starting at ``t0`` from ``y0 - δ f(t0, y0)``:
  ``dL/dt0 = -<dL/dy0, f(t0, y0)>``, with ``dL/dy0`` the gradient through the solve.
"""

from __future__ import annotations

import torch


class StartTime(torch.autograd.Function):
    """Identity on y0 (n,) that sends ``-<grad, f(t0, y0)>`` to ``t0`` (0-dim). Inputs: user_flat, y0, t0."""

    @staticmethod
    def forward(ctx, user_flat, y0, t0):  # type: ignore[override]
        ctx.user_flat = user_flat
        ctx.save_for_backward(y0, t0)
        return y0.view_as(y0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        y0, t0 = ctx.saved_tensors
        with torch.no_grad():
            f0 = ctx.user_flat(t0.detach(), y0.detach())
        return None, grad, -torch.dot(grad, f0).to(t0.dtype)


class OutputTimes(torch.autograd.Function):
    """Identity on ys (T, n) that sends ``<grad_i, f(t_i, y_i)>`` to ``t_i`` for i >= 1. Inputs: user_flat, ys, t."""

    @staticmethod
    def forward(ctx, user_flat, ys, t):  # type: ignore[override]
        ctx.user_flat = user_flat
        ctx.save_for_backward(ys, t)
        return ys.view_as(ys)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        ys, t = ctx.saved_tensors
        grad_t = torch.zeros_like(t)
        with torch.no_grad():
            for i in range(1, len(t)):
                grad_t[i] = torch.dot(grad[i], ctx.user_flat(t[i].detach(), ys[i].detach()))
        return None, grad, grad_t
