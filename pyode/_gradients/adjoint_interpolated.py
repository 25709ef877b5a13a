"""The interpolated ("backsolve-free") adjoint: the backward pass reads y(t) from the forward solve's dense
output and integrates only ``[g_t], a, g_θ`` (SciMLSensitivity's ``InterpolatingAdjoint``; the backsolve of
:mod:`pyode._gradients.adjoint` is its ``BacksolveAdjoint``).

Why: the backsolve integrates ``dy/dt = f`` from ``t[-1]`` back to ``t[0]``; for a stiff problem the modes
that decay forwards grow backwards at the stiff rates, so the backward solve needs ever smaller steps (or
reconstructs a wrong y). With y interpolated, the backward system ``da/dt = -Jᵀa`` is linear in a and as
stiff as the forward problem (its eigenvalues are those of -J, decaying backwards), so a stiff method solves it.

Cost: the forward keeps every accepted step (its stages: memory O(steps x stages x state)). The Jacobian of
the augmented dynamics is built exactly from n vector-Jacobian products (:meth:`InterpolatedDynamics.flat_jacobian`)
and held dense, (1 + n + P)² (n state, P parameter elements); only its ``a`` columns are nonzero (nothing depends
on g_θ), so the ESDIRK Newton solves factor only an (n, n) block (``jacobian_columns``); rodas5 factors it whole.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import torch
from torch import Tensor

from pyode._gradients.adjoint import _AugmentedDynamics, _Layout
from pyode._solvers.dense import StepLog


class InterpolatedDynamics(_AugmentedDynamics):
    """``(t, ([g_t], a, *g_θ)) -> ([-aᵀf_t], -aᵀf_y, *(-aᵀf_θ))`` at ``y(t)`` from the forward's steps.

    Args:
        user_flat, params, layout (``carry_y=False``), callbacks, unflatten: as :class:`_AugmentedDynamics`;
        log: the forward's :class:`StepLog` (steps kept); sign: the forward's time direction (+1/-1).
    """

    def __init__(self, user_flat: Callable, params: tuple[Tensor, ...], layout: _Layout, log: StepLog,
                 sign: float, callbacks: dict | None = None, unflatten: Callable | None = None):
        super().__init__(user_flat, params, layout, callbacks, unflatten)
        self.log, self.sign = log, sign
        # flat_jacobian is zero outside the a columns: Newton factors only that (n, n) block
        self.jacobian_columns = (layout.lead, layout.lead + sum(layout.sizes))

    def state_at(self, t: Tensor, state=None) -> Tensor:
        """y (n,) at user time ``t`` from the step containing it (its interpolant, detached)."""
        s = self.sign * float(t)
        k = min(max(bisect.bisect_right(self.log.starts, s) - 1, 0), len(self.log.steps) - 1)
        step = self.log.steps[k]
        theta = min(max((s - step.t0) / step.h, 0.0), 1.0)
        return self.log.evaluators[k].dense(step, [theta])[0].detach()

    def flat_jacobian(self, t: Tensor, state_flat: Tensor) -> Tensor:
        """The exact Jacobian (m, m) of this function in user time for the flat packed state (m = [1] + n + P):
        only the a columns are nonzero, ``-[f_t, f_y, f_θ]ᵀ`` stacked as the state's rows, from the n VJPs with
        the unit vectors (one batched call where ``func`` allows vmap). The Newton solvers use it
        (:class:`pyode._solvers.newton.Jacobian`) instead of differentiating this function, which calls autograd."""
        y = self.state_at(t)
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            t = t.detach().requires_grad_(self.with_time)
            f = self.user_flat(t, y)
            inputs = (y, *self.params, t) if self.with_time else (y, *self.params)
            rows = self._vjp_rows(f, inputs) if f.requires_grad else [None] * len(inputs)
        n, lead = y.numel(), self.layout.lead
        m = state_flat.numel()
        J = state_flat.new_zeros(m, m)
        blocks = [r.reshape(n, -1) if r is not None else state_flat.new_zeros(n, x.numel())
                  for r, x in zip(rows, inputs)]
        if self.with_time:
            J[0, lead:lead + n] = -blocks.pop().reshape(n).to(J.dtype)
        offset = lead
        for b in blocks:  # y then each parameter: rows offset.. of the state, columns of a
            J[offset:offset + b.shape[1], lead:lead + n] = -b.T.to(J.dtype)
            offset += b.shape[1]
        return J

    @staticmethod
    def _vjp_rows(f: Tensor, inputs: tuple) -> list:
        """Per input, (n, *input.shape): row i is ``∂f_i/∂input`` (None where f does not depend on it)."""
        n = f.numel()
        eye = torch.eye(n, dtype=f.dtype, device=f.device)
        try:
            return list(torch.autograd.grad(f, inputs, eye, retain_graph=True, allow_unused=True,
                                            is_grads_batched=True))
        except (RuntimeError, NotImplementedError):  # func not vmappable: one VJP per row
            per_row = [torch.autograd.grad(f, inputs, eye[i], retain_graph=True, allow_unused=True) for i in range(n)]
            return [None if per_row[0][j] is None else torch.stack([r[j] for r in per_row])
                    for j in range(len(inputs))]
