"""Exact gradients through an implicit Runge-Kutta step without differentiating Newton's iterations.

The stages ``K`` (s, n) solve ``G(K) = K - F(y0 + h (A ⊗ I) K) = 0`` with ``F_i(Y) = f(t_i, Y_i)``. By the
implicit function theorem, for any input ``p`` of the step (``y0``, ``func``'s parameters),

    dK/dp = M⁻¹ ∂F/∂p,   M = ∂G/∂K = I - h [a_ij J_i]   (J_i = ∂f/∂y at stage i),

so a cotangent ``g`` on ``K`` becomes ``λ = M⁻ᵀ g`` (one transposed linear solve per step) followed by one
vector-Jacobian product ``λᵀ ∂F/∂p`` through a single re-evaluation of the stages at the converged values
(the same construction as the implicit layers of deep equilibrium models, Bai et al. 2019). The forward
values stay Newton's converged stages; the graph only supplies ``∂F/∂p``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyode._solvers.newton import solve_stages, stage_matrix


class StageAdjoint(torch.autograd.Function):
    """``K = k_values`` in the forward pass; backward maps ``g`` to ``λ = M⁻ᵀ g`` on ``k_graph``.

    Inputs: k_values (s, n) Newton's stages (no graph); lu, pivots: LU factors of M per Jacobian block
    (:func:`~pyode._solvers.newton.stage_matrix`);
    k_graph (s, n): ``F(y0 + h A K)`` re-evaluated with the graph to ``y0`` and the parameters.
    """

    @staticmethod
    def forward(ctx, k_values: Tensor, lu: Tensor, pivots: Tensor, k_graph: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(lu, pivots)
        return k_values.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        lu, pivots = ctx.saved_tensors
        lam = solve_stages(lu, pivots, grad.reshape(-1), grad.shape[0], adjoint=True)
        return None, None, None, lam.view_as(grad)


def _stage_matrix(tableau, jacobians: list, h: float) -> Tensor:
    """``M = I - h [a_ij J_i]`` per Jacobian block (row block i uses stage i's Jacobian; None: explicit stage)."""
    return stage_matrix(jacobians, h, tableau.a)


def stages_with_gradient(stepper, t0: float, y0: Tensor, f0: Tensor, h: float, times: list[float],
                         ks: list[Tensor]) -> list[Tensor]:
    """Newton's converged stages ``ks`` (s tensors (n,), no graph) with the implicit-function-theorem graph
    to ``y0``, ``f0`` (the explicit first stage of an ESDIRK) and ``func``'s parameters."""
    tab, fn = stepper.tableau, stepper.fn
    k_values = [k.detach() for k in ks]
    graph, jacobians = [], []
    for i in range(tab.num_stages):
        if tab.explicit_stage(i):
            graph.append(f0 if tab.c[i] == 0.0 else fn(times[i], y0))
            jacobians.append(None)
            continue
        y_stage = stepper.kern.lincomb_row(y0, k_values, [h * a for a in tab.a[i]])
        graph.append(fn(times[i], y_stage))
        jacobians.append(stepper.jac.exact(times[i], y_stage.detach()))  # exact J at the converged stage
    with torch.no_grad():
        lu, pivots = torch.linalg.lu_factor(_stage_matrix(tab, jacobians, h))
    out = StageAdjoint.apply(torch.stack(k_values), lu, pivots, torch.stack(graph))
    return list(out.unbind(0))
