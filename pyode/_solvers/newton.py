"""Newton's method for the stage equations of implicit methods: Jacobians of ``func``, LU factorisations
reused while ``h*γ`` and the Jacobian are unchanged, and the convergence test of Hairer & Wanner (IV.8).

A simplified Newton iteration solves ``G(z) = 0`` with a fixed matrix ``M ≈ ∂G/∂z``: ``z += M⁻¹(-G(z))``.
The contraction rate ``θ_k = |Δ_k| / |Δ_{k-1}|`` predicts the remaining error ``η_k |Δ_k|`` with
``η_k = θ_k / (1 - θ_k)``; the iteration stops when that is below ``κ`` (in the solver's scaled norm, where
1 is the error the step may make), and fails when it diverges (``θ >= 1``) or runs out of iterations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pyode.errors import ODESolverError


class ImplicitSolveError(ODESolverError):
    """The stage equations of an implicit method could not be solved (``reason``: ``"newton"``,
    ``"singular_jacobian"`` or ``"non_finite_jacobian"``)."""


class Jacobian:
    """``J = ∂fn/∂y`` at ``(t, y)``: (n, n), exact, from ``torch.func``: ``jacrev`` (vmapped reverse passes) for
    states of more than ``VJP_ROWS_MAX`` elements, else one recorded call and ``torch.autograd.grad`` per row (below that
    size vmap's per-call overhead and torch.func's one-off import of torch._dynamo, ~2 s, are not worth it). Where
    ``func`` cannot be traced by torch.func (in-place ops, ``.item()``, autograd calls inside, e.g. the adjoint's
    augmented dynamics) it falls back, for the rest of the solve, to forward differences (n evaluations; a
    simplified Newton iteration needs only an approximate Jacobian).

    Args:
        fn: the flat function ``fn(t: float, y: (n,)) -> (n,)``.
    """

    VJP_ROWS_MAX = 64

    def __init__(self, fn):
        self.fn, self.mode, self.evaluations = fn, "torch.func", 0

    def __call__(self, t: float, y: Tensor, f: Tensor | None = None) -> Tensor:
        """(n, n) Jacobian at ``(t, y)``; ``f = fn(t, y)`` if known (saves an evaluation of the fallback)."""
        self.evaluations += 1
        y = y.detach()
        if self.mode == "torch.func":
            try:
                return self._exact(t, y)
            except (RuntimeError, NotImplementedError, TypeError):
                self.mode = "differences"  # torch.func could not trace func: remember, do not retry
        return self._differences(t, y, f)

    def _exact(self, t: float, y: Tensor) -> Tensor:
        n = y.numel()
        if n > self.VJP_ROWS_MAX:
            return torch.func.jacrev(lambda x: self.fn(t, x))(y).detach()
        with torch.enable_grad():
            x = y.requires_grad_(True)
            out = self.fn(t, x)
            eye = torch.eye(n, dtype=y.dtype, device=y.device)
            rows = [torch.autograd.grad(out, x, eye[i], retain_graph=i < n - 1)[0] for i in range(n)]
        return torch.stack(rows)

    def with_graph(self, t: float, y: Tensor) -> Tensor:
        """(n, n) Jacobian at ``(t, y)`` that autograd can differentiate further (to ``y`` and ``func``'s
        parameters: second derivatives of ``func``); the forward-difference fallback is differentiable too, but
        only approximately."""
        self.evaluations += 1
        if self.mode == "torch.func":
            try:
                with torch.enable_grad():
                    out = self.fn(t, y)
                    eye = torch.eye(y.numel(), dtype=y.dtype, device=y.device)
                    return torch.stack([torch.autograd.grad(out, y, eye[i], create_graph=True)[0]
                                        for i in range(y.numel())])
            except (RuntimeError, NotImplementedError, TypeError):
                self.mode = "differences"
        return self._differences(t, y, None, keep_graph=True)

    def _differences(self, t: float, y: Tensor, f: Tensor | None, keep_graph: bool = False) -> Tensor:
        # Step sqrt(eps) * max(|y_j|, 1): balances truncation (~δ|f''|) and rounding (~eps|f|/δ) errors.
        with torch.set_grad_enabled(keep_graph and torch.is_grad_enabled()):
            f = self.fn(t, y) if f is None else f
            eps = torch.finfo(y.dtype).eps
            deltas = math.sqrt(eps) * torch.clamp(y.detach().abs(), min=1.0)
            cols = []
            for j in range(y.numel()):
                step = torch.zeros_like(y.detach())
                step[j] = deltas[j]
                yj = y + step
                cols.append((self.fn(t, yj) - f) / float(yj[j].detach() - y[j].detach()))
            return torch.stack(cols, dim=1)


def factor(matrix: Tensor, t: float, time_sign: float) -> tuple[Tensor, Tensor]:
    """LU factors of a Newton matrix; a non-finite or singular one raises :class:`ImplicitSolveError`."""
    if not bool(torch.isfinite(matrix).all()):
        raise ImplicitSolveError("non_finite_jacobian", time_sign * t,
                                 "the Jacobian of func is NaN/inf here; check func for overflow or a singularity, "
                                 "or try float64 or a smaller step")
    lu, pivots, info = torch.linalg.lu_factor_ex(matrix)
    diag = lu.diagonal(dim1=-2, dim2=-1).abs()
    if int(info) != 0 or float(diag.min()) <= float(diag.max()) * torch.finfo(matrix.dtype).eps:
        raise ImplicitSolveError("singular_jacobian", time_sign * t,
                                 "the Newton matrix I - h*gamma*J is singular; try a smaller step (step_size, or "
                                 "rtol/first_step), float64, or another method")
    return lu, pivots


class NewtonMatrix:
    """LU factors of ``I - h·(A ⊗ J)`` (``A`` a scalar γ for one DIRK stage, or the (s, s) matrix of a fully
    implicit method), cached for the last ``(h, J)``: an SDIRK step factors once for all its stages, and a
    fixed-grid solve once for all its steps while the Jacobian is kept."""

    def __init__(self, time_sign: float):
        self.time_sign = time_sign
        self._key, self._lu = None, None

    def get(self, J: Tensor, jac_id: int, h: float, a, t: float) -> tuple[Tensor, Tensor]:
        key = (jac_id, h, a)
        if key != self._key:
            n = J.shape[0]
            if isinstance(a, float):
                m = torch.eye(n, dtype=J.dtype, device=J.device) - (h * a) * J
            else:
                A = torch.tensor(a, dtype=J.dtype, device=J.device)
                m = torch.eye(n * A.shape[0], dtype=J.dtype, device=J.device) - h * torch.kron(A, J)
            self._lu, self._key = factor(m, t, self.time_sign), key
        return self._lu


class NewtonState:
    """Convergence bookkeeping across iterations and steps: ``eta`` carries over (Hairer's
    ``η = max(η_old, eps)^0.8`` at a step's first iteration), ``theta_max`` records the slowest rate seen.
    ``stall``: an iteration that stops contracting with increments below this has reached rounding level and
    counts as converged."""

    def __init__(self, kappa: float, max_iters: int):
        self.kappa, self.max_iters, self.stall = kappa, max_iters, kappa
        self.eta_old, self.theta_max, self.failure = 1.0, 0.0, None

    def iterate(self, update, z: Tensor, norm) -> Tensor | None:
        """Runs ``z = z + update(z)`` until converged; returns z, or None on failure (``self.failure`` says
        why). ``norm(dz, z) -> float``: the scaled norm of an increment."""
        eta = max(self.eta_old, 1e-16) ** 0.8
        previous = None
        for k in range(self.max_iters):
            dz = update(z)
            z = z + dz
            size = norm(dz, z)
            if not math.isfinite(size):
                self.failure = "the Newton iteration produced NaN/inf"
                return None
            if previous is not None and previous > 0.0:
                theta = size / previous
                self.theta_max = max(self.theta_max, theta)
                if theta >= 1.0:
                    if size <= self.stall:  # stalled at rounding level: as converged as it can be
                        return z
                    self.failure = f"the Newton iteration diverged (contraction rate {theta:.3g} at iteration {k + 1})"
                    return None
                eta = theta / (1.0 - theta)
                left = self.max_iters - 1 - k
                if left > 0 and theta ** left * eta * size > self.kappa and size > self.stall:
                    # Hairer & Wanner IV.8: at this rate the error left after the remaining iterations still
                    # exceeds the tolerance; stop now rather than spend them.
                    self.failure = (f"the Newton iteration would not converge within max_iters={self.max_iters} "
                                    f"iterations (contraction rate {theta:.3g})")
                    return None
            if eta * size <= self.kappa or size == 0.0:
                self.eta_old = eta
                return z
            previous = size
        self.failure = f"the Newton iteration did not converge in max_iters={self.max_iters} iterations"
        return None
