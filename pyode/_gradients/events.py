"""Gradients through a terminal event's time (implicit function theorem; torchdiffeq's rerouting).

The event time t* solves ``c(t*, y(t*)) = 0``. Differentiating, a loss's dependence on t* equals a
dependence on the state: ``dt* = -(∂c/∂y · dy) / (∂c/∂t + ∂c/∂y · f)``. So the backward pass of the event
adds ``-(∂c/∂y) (dL/dt*_total) / (dc/dt)`` to the state's gradient, and the solve's own backward carries it
to ``y0``, the start time ``t0`` and ``func``'s parameters.

Beyond torchdiffeq, tensors that ``event_fn`` captures (a learned threshold, say) also move the event:
``dt*/dθ = -(∂c/∂θ) / (dc/dt)`` (:func:`add_event_fn_dependence`). torchdiffeq drops this term, which is
why its examples put such parameters into the state.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _event_slopes(user_flat, event_flat, event_t: Tensor, y_event: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """At the event: f = func(t*, y*) (n,), the total derivative dc/dt along the solution (0-dim) and
    ∂c/∂y (n,). An ``event_fn`` output that depends on neither t nor y gives zero slopes."""
    with torch.enable_grad():
        t = event_t.detach().clone().requires_grad_(True)
        y = y_event.detach().clone().requires_grad_(True)
        f = user_flat(t, y).detach()
        c = event_flat(t, y)
        if isinstance(c, Tensor) and c.requires_grad:
            dc_dt, dc_dy = torch.autograd.grad(c, (t, y), allow_unused=True)
        else:
            dc_dt = dc_dy = None
    dc_dt = torch.zeros_like(t) if dc_dt is None else dc_dt.reshape(t.shape)
    dc_dy = torch.zeros_like(y) if dc_dy is None else dc_dy
    return f, dc_dt + torch.dot(dc_dy, f).to(dc_dt.dtype), dc_dy


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
        f, total_dc_dt, dc_dy = _event_slopes(ctx.user_flat, ctx.event_flat, event_t, y_event)
        total_grad_t = grad_t + torch.dot(grad_y, f).to(grad_t.dtype)  # moving t* also moves the state along f
        if not bool(dc_dy.any()):  # c does not depend on the state: t* does not move with it
            return None, None, None, grad_y
        grad_y = grad_y - dc_dy * (total_grad_t / total_dc_dt).to(grad_y.dtype)
        return None, None, None, grad_y


def add_event_fn_dependence(user_flat, event_flat, event_t: Tensor, y_event: Tensor) -> tuple[Tensor, Tensor]:
    """Adds, with value exactly zero, the event's dependence on tensors ``event_fn`` captures.

    ``c`` is evaluated at the detached event, so its graph reaches only what ``event_fn`` captures (its
    parameters). The shift ``s = -(c - c.detach()) / (dc/dt)`` is 0 with gradient ``-(∂c/∂θ)/(dc/dt) =
    dt*/dθ``; the state at the event moves with the time: ``y* + f s``. Returns (event_t, y_event)
    unchanged when ``event_fn`` captures nothing that requires grad.
    """
    with torch.enable_grad():
        c = event_flat(event_t.detach(), y_event.detach())
    if not (isinstance(c, Tensor) and c.requires_grad):
        return event_t, y_event
    f, total_dc_dt, _ = _event_slopes(user_flat, event_flat, event_t, y_event)
    shift = -(c - c.detach()).reshape(()) / total_dc_dt.detach()
    return event_t + shift.to(event_t.dtype), y_event + f * shift.to(y_event.dtype)
