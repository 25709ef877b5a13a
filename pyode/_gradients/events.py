"""Gradients through a terminal event's time (implicit function theorem; torchdiffeq's rerouting).

The event time t* solves ``c(t*, y(t*)) = 0``. Differentiating, a loss's dependence on t* equals a
dependence on the state: ``dt* = -(∂c/∂y · dy) / (∂c/∂t + ∂c/∂y · f)``. So the backward pass of the event
adds ``-(∂c/∂y) (dL/dt*_total) / (dc/dt)`` to the state's gradient, and the solve's own backward carries it
to ``y0`` and the parameters.
"""

from __future__ import annotations

import torch


class EventTimeGradient(torch.autograd.Function):
    """Identity on ``(event_t, y_event)``; backward reroutes dL/d(event_t) into dL/d(y_event).

    Inputs: user_flat (``f(t, y_flat)``), event_flat (``c(t, y_flat)``), event_t (0-dim), y_event (n,).
    """

    @staticmethod
    def forward(ctx, user_flat, event_flat, event_t, y_event):  # type: ignore[override]
        ctx.user_flat, ctx.event_flat = user_flat, event_flat
        ctx.save_for_backward(event_t, y_event)
        return event_t.detach().clone(), y_event.detach().clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_t, grad_y):  # type: ignore[override]
        event_t, y_event = ctx.saved_tensors
        with torch.enable_grad():
            t = event_t.detach().clone().requires_grad_(True)
            y = y_event.detach().clone().requires_grad_(True)
            f = ctx.user_flat(t, y).detach()
            c = ctx.event_flat(t, y)
            dc_dt, dc_dy = torch.autograd.grad(c, (t, y), allow_unused=True)
        dc_dt = torch.zeros_like(t) if dc_dt is None else dc_dt
        dc_dy = torch.zeros_like(y) if dc_dy is None else dc_dy
        total_dc_dt = dc_dt + torch.dot(dc_dy, f)
        total_grad_t = grad_t + torch.dot(grad_y, f)  # moving t* also moves the state along f
        grad_y = grad_y - dc_dy * (total_grad_t / total_dc_dt).to(grad_y.dtype)
        return None, None, None, grad_y
