"""Newton's method for the stage equations of implicit methods: Jacobians of ``func``, LU factorisations
reused while ``h*γ`` and the Jacobian are unchanged, and the convergence test of Hairer & Wanner (IV.8).

A simplified Newton iteration solves ``G(z) = 0`` with a fixed matrix ``M ≈ ∂G/∂z``: ``z += M⁻¹(-G(z))``.
The contraction rate ``θ_k = |Δ_k| / |Δ_{k-1}|`` predicts the remaining error ``η_k |Δ_k|`` with
``η_k = θ_k / (1 - θ_k)``; the iteration stops when that is below ``κ`` (in the solver's scaled norm, where
1 is the error the step may make), and fails when it diverges (``θ >= 1``) or runs out of iterations.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from pyode import _tuning
from pyode.errors import ImplicitSolveError

FD_FLOOR = 1e-5  # forward differences perturb y_j by sqrt(eps max(|y_j|, FD_FLOOR)) (Hairer's RADAU5 and RODAS)


def jacobian_for(fn, spec) -> Jacobian:
    """The Jacobian of ``fn`` that ``options["jacobian"]`` asks for: ``spec`` None (dense, exact), B (a block per
    batch row, exact) or "differences" (dense, forward differences)."""
    if spec == "differences":
        return Jacobian(fn, None, mode="differences")
    return Jacobian(fn, spec)


class Jacobian:
    """``J = ∂fn/∂y`` at ``(t, y)`` as diagonal blocks (B, m, m): one block (1, n, n) for the whole state, or
    with ``rows = B`` one block per batch row of a (B, *state) state whose rows are independent (then
    ``∂f_b/∂y_c = 0`` for b != c; e.g. a batch of trajectories of the same ODE).

    Exact, by reverse mode: one recorded call of ``func`` and one vector-Jacobian product per component of a
    block (m of them; with independent rows one product gives the same row of every block at once), or, for a
    single block of more than ``pyode._tuning.JACOBIAN_VJP_MAX_ROWS`` elements, ``torch.func.jacrev`` (vmapped;
    below that size vmap's per-call overhead and torch.func's one-off import of torch._dynamo, ~2 s, are not worth
    it). Where ``func``
    cannot be differentiated (it leaves autograd, e.g. through NumPy, or calls autograd itself, like the adjoint's
    augmented dynamics) it falls back, for the rest of the solve, to forward differences (m evaluations; a
    simplified Newton iteration needs only an approximate Jacobian). ``mode="differences"``
    (``options["jacobian"] = "differences"``) asks for forward differences from the start: for a small state they
    cost m evaluations of ``func`` against the reverse passes' m backward sweeps (Robertson: ~80 against
    ~300-700 us), as SciPy's Radau/BDF and Hairer's codes compute theirs by default. That applies to the steps'
    Jacobians only: gradients (:meth:`exact`, :meth:`with_graph`) stay exact. A ``func`` with a
    ``flat_jacobian(t, y) -> (n, n)`` method (user time, flat state) supplies its own (the interpolated adjoint's,
    which is exact).

    Args:
        fn: the flat function ``fn(t: float, y: (n,)) -> (n,)``; rows: B for a block per batch row, or None;
        mode: "autograd" or "differences" (the steps' Jacobians).
    """

    def __init__(self, fn, rows: int | None = None, mode: str = "autograd"):
        self.fn, self.rows, self.evaluations = fn, rows or 1, 0
        self.steps_by_differences = mode == "differences"
        self.mode = "autograd"  # "differences" once func turned out not to be differentiable

    def __call__(self, t: float, y: Tensor, f: Tensor | None = None) -> Tensor:
        """(B, m, m) at ``(t, y)`` for a step; ``f = fn(t, y)`` if known (saves an evaluation of the differences)."""
        if self.steps_by_differences and not self.has_own_jacobian():
            self.evaluations += 1
            return self._differences(t, y.detach(), f)
        return self.exact(t, y, f)

    def has_own_jacobian(self) -> bool:
        """Whether func supplies its own exact Jacobian (``flat_jacobian``: the interpolated adjoint's)."""
        return self.rows == 1 and getattr(getattr(self.fn, "func", None), "flat_jacobian", None) is not None

    def exact(self, t: float, y: Tensor, f: Tensor | None = None) -> Tensor:
        """(B, m, m) at ``(t, y)`` by autograd whatever the steps use (the implicit function theorem's gradients),
        by differences only where ``func`` cannot be differentiated."""
        self.evaluations += 1
        y = y.detach()
        if self.has_own_jacobian():  # a function that knows its Jacobian (the interpolated adjoint)
            J = self.fn.func.flat_jacobian(self.fn.time_tensor(t), y)
            return (-J if self.fn.reverse else J).unsqueeze(0)
        if self.mode == "autograd":
            try:
                return self._exact(t, y, create_graph=False)
            except (RuntimeError, NotImplementedError, TypeError):
                self.mode = "differences"  # func cannot be differentiated: remember, do not retry
        return self._differences(t, y, f)

    def with_graph(self, t: float, y: Tensor) -> Tensor:
        """(B, m, m) at ``(t, y)`` that autograd can differentiate further (to ``y`` and ``func``'s parameters:
        second derivatives of ``func``); the forward-difference fallback is differentiable too, approximately."""
        self.evaluations += 1
        if self.mode == "autograd":
            try:
                return self._exact(t, y, create_graph=True)
            except (RuntimeError, NotImplementedError, TypeError):
                self.mode = "differences"
        return self._differences(t, y, None, keep_graph=True)

    def _exact(self, t: float, y: Tensor, create_graph: bool) -> Tensor:
        if y.numel() == 0:  # a state without elements: nothing to differentiate (and no row to stack)
            return y.new_zeros(self.rows, 0, 0)
        if torch.is_inference_mode_enabled():  # a solve the caller runs under torch.inference_mode: J needs autograd
            with torch.inference_mode(False):
                return self._exact(t, y.clone() if y.is_inference() else y, create_graph)
        rows, n = self.rows, y.numel()
        m = n // rows
        if rows == 1 and n > _tuning.JACOBIAN_VJP_MAX_ROWS and not create_graph:
            return torch.func.jacrev(lambda x: self.fn(t, x))(y).detach().unsqueeze(0)
        with torch.enable_grad():
            x = y if create_graph else y.requires_grad_(True)
            out = self.fn(t, x)
            eye = torch.eye(m, dtype=y.dtype, device=y.device)
            blocks = []
            for i in range(m):  # row i of every block: the VJP with e_i in every batch row
                pattern = eye[i].expand(rows, m)
                g = torch.autograd.grad(out, x, pattern.reshape(-1), retain_graph=create_graph or i < m - 1,
                                        create_graph=create_graph)[0]
                blocks.append(g.reshape(rows, m))
        return torch.stack(blocks, dim=1)

    def _differences(self, t: float, y: Tensor, f: Tensor | None, keep_graph: bool = False) -> Tensor:
        """Forward differences, column j of every block from one evaluation (with independent rows, all rows
        perturbed at once): the step δ_j = sqrt(eps max(|y_j|, 1e-5)) of Hairer's RADAU5/RODAS balances truncation
        (~δ|f''|) against rounding (~eps|f|/δ) relative to y_j itself, so a small component (Robertson's y2 ~ 1e-5)
        is not perturbed by 1e-3 of itself; divided by the step as represented. Twin of ``fd_jacobian`` in
        ``csrc/include/pyode/core/dense_lu.h`` (same steps, same arithmetic)."""
        rows, m = self.rows, y.numel() // self.rows
        if m == 0:  # a state without elements: no column to difference
            return y.new_zeros(rows, 0, 0)
        with torch.set_grad_enabled(keep_graph and torch.is_grad_enabled()):
            f = (self.fn(t, y) if f is None else f).reshape(rows, m)
            base = y.detach().reshape(rows, m)
            steps = (base + torch.sqrt(torch.finfo(y.dtype).eps * base.abs().clamp(min=FD_FLOOR))) - base
            points = base.expand(m, rows, m).clone()          # (j, row, component): y with column j bumped
            points.diagonal(dim1=0, dim2=2).copy_(base + steps)
            if keep_graph:  # differentiable in y as well (approximately), as the exact path is
                points = points + (y.reshape(rows, m) - base)
            cols = torch.stack([self.fn(t, points[j].reshape(-1)).reshape(rows, m) for j in range(m)], dim=2)
            return (cols - f[:, :, None]) / steps[:, None, :]


def factor(matrix: Tensor, t: float, time_sign: float) -> tuple[Tensor, Tensor]:
    """LU factors of (a batch of) Newton matrices; a non-finite or singular one raises
    :class:`ImplicitSolveError`."""
    if not bool(torch.isfinite(matrix).all()):
        raise ImplicitSolveError("non_finite_jacobian", time_sign * t,
                                 "the Jacobian of func is NaN/inf here; check func for overflow or a singularity, "
                                 "or try float64 or a smaller step")
    lu, pivots, info = torch.linalg.lu_factor_ex(matrix)
    if matrix.shape[-1] == 0:  # a state without elements: nothing to factor
        return lu, pivots
    diag = lu.diagonal(dim1=-2, dim2=-1).abs()
    tiny = diag.amin(-1) <= diag.amax(-1) * torch.finfo(matrix.dtype).eps
    if bool((info != 0).any()) or bool(tiny.any()):
        raise ImplicitSolveError("singular_jacobian", time_sign * t,
                                 "the Newton matrix I - h*gamma*J is singular; try a smaller step (step_size, or "
                                 "rtol/first_step), float64, or another method")
    return lu, pivots


def stage_matrix(jacobians, h: float, a) -> Tensor:
    """``M = I - h [a_ij J_i]``, per block: (B, s*m, s*m) ordered (stage, component) within a block.

    Args:
        jacobians: (B, m, m) shared by every stage, or a list of s such (None: an explicit stage, J = 0);
        a: a float (one stage, e.g. a DIRK's diagonal) or the (s, s) matrix as nested sequences.
    """
    A = [[a]] if isinstance(a, float) else a
    s = len(A)
    if isinstance(jacobians, Tensor):
        jacobians = [jacobians] * s
    like = next(j for j in jacobians if j is not None)
    B, m, _ = like.shape
    Js = torch.stack([torch.zeros_like(like) if j is None else j for j in jacobians], dim=1)  # (B, s, m, m)
    At = torch.tensor(A, dtype=like.dtype, device=like.device)
    blocks = -h * At[None, :, None, :, None] * Js[:, :, :, None, :]  # (B, s, m, s, m): row (i, p), column (j, q)
    return blocks.reshape(B, s * m, s * m) + torch.eye(s * m, dtype=like.dtype, device=like.device)


def solve_stages(lu: Tensor, pivots: Tensor, r: Tensor, stages: int = 1, adjoint: bool = False) -> Tensor:
    """Solves ``M x = r`` (``Mᵀ x = r`` with ``adjoint``) with the factors of a :func:`stage_matrix` of
    ``stages`` stages; ``r`` and ``x`` are flat and ordered (stage, batch row, component), like stacked states."""
    B, size = lu.shape[0], lu.shape[-1]
    if stages == 1:  # a DIRK stage: the state's own layout, no reordering
        return torch.linalg.lu_solve(lu, pivots, r.view(B, size, 1), adjoint=adjoint).view(-1)
    m = size // stages
    rb = r.reshape(stages, B, m).transpose(0, 1).reshape(B, size, 1)
    x = torch.linalg.lu_solve(lu, pivots, rb, adjoint=adjoint)
    return x.reshape(B, stages, m).transpose(0, 1).reshape(-1)


class NewtonMatrix:
    """LU factors of ``I - h·(A ⊗ J)`` per Jacobian block (``A`` a scalar γ for one DIRK stage, or the (s, s)
    matrix of a fully implicit method), cached for the last ``(h, A, J)``: an SDIRK step factors once for all its
    stages, and a fixed-grid solve once for all its steps while the Jacobian is kept."""

    def __init__(self, time_sign: float):
        self.time_sign = time_sign
        self._key, self._lu, self._inverse = None, None, None

    def get(self, J: Tensor, jac_id: int, h: float, a, t: float) -> tuple[Tensor, Tensor]:
        """``J``: (B, m, m) blocks; ``jac_id`` changes whenever ``J`` does; ``t``: for error messages."""
        key = (jac_id, h, a)
        if key != self._key:
            self._lu, self._key, self._inverse = factor(stage_matrix(J, h, a), t, self.time_sign), key, None
        return self._lu

    def solver(self, J: Tensor, jac_id: int, h: float, gamma: float, t: float, columns: tuple | None = None):
        """``r -> M⁻¹ r`` for one stage (``M = I - hγJ``, r flat (B*m,)), from the cached factors. ``columns``
        ``(lo, hi)``: J (one block) is zero outside those columns (the interpolated adjoint's, where nothing
        depends on the parameter gradients): then only the (hi-lo)² block is factored (see :meth:`_by_columns`)."""
        if columns is not None and J.shape[0] == 1:
            return self._by_columns(J[0], jac_id, h, gamma, t, columns)
        lu, pivots = self.get(J, jac_id, h, gamma, t)
        B, m = lu.shape[0], lu.shape[-1]
        if m > _tuning.NEWTON_INVERSE_MAX_ROWS:  # small blocks: multiply by the inverse (see pyode._tuning)
            return lambda r: solve_stages(lu, pivots, r)
        if self._inverse is None:
            eye = torch.eye(m, dtype=lu.dtype, device=lu.device).expand(B, m, m)
            self._inverse = torch.linalg.lu_solve(lu, pivots, eye)
        inverse = self._inverse
        if B == 1:
            inv = inverse[0]
            return lambda r: torch.mv(inv, r)
        return lambda r: torch.bmm(inverse, r.view(B, m, 1)).view(-1)

    def _by_columns(self, J: Tensor, jac_id: int, h: float, gamma: float, t: float, columns: tuple):
        """With ``C = J[:, lo:hi]`` the only nonzero columns, ``M x = x - hγ C x_a = r`` (x_a = x[lo:hi]) gives
        ``(I - hγ C_a) x_a = r_a`` (C_a = C[lo:hi], factored here, cached like the full matrix) and then
        ``x = r + hγ C x_a``: O(k³ + m k) instead of O(m³) for k = hi - lo nonzero columns of m."""
        lo, hi = columns
        key = (jac_id, h, gamma, columns)
        if key != self._key:
            C = J[:, lo:hi]
            a_block = torch.eye(hi - lo, dtype=J.dtype, device=J.device) - h * gamma * C[lo:hi]
            self._lu, self._key, self._inverse = factor(a_block.unsqueeze(0), t, self.time_sign), key, C
        (lu, pivots), C, hg = self._lu, self._inverse, h * gamma
        return lambda r: r + hg * torch.mv(C, solve_stages(lu, pivots, r[lo:hi].contiguous()))


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


# -- every batch row its own step (per-sample mode, pyode._solvers.per_sample_implicit) ---------------------------

def factor_rows(matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """LU factors of one Newton matrix per batch row, (B, m, m), where each row takes its own step: a row whose
    matrix is non-finite or singular does not raise (only its step fails) but is reported in ``bad`` (B,) bool and
    factored as the identity, so that the other rows' factors stay usable. Differentiable (the matrix's graph)."""
    m = matrix.shape[-1]
    eye = torch.eye(m, dtype=matrix.dtype, device=matrix.device)
    bad = ~torch.isfinite(matrix).all(dim=-1).all(dim=-1)
    matrix = torch.where(bad[:, None, None], eye, matrix)
    lu, pivots, info = torch.linalg.lu_factor_ex(matrix)
    diag = lu.detach().diagonal(dim1=-2, dim2=-1).abs()
    singular = (info != 0) | (diag.amin(-1) <= diag.amax(-1) * torch.finfo(matrix.dtype).eps)
    if bool(singular.any()):
        bad = bad | singular
        lu, pivots = torch.linalg.lu_factor(torch.where(bad[:, None, None], eye, matrix))
    return lu, pivots, bad


class RowSolver:
    """``r -> M_b⁻¹ r_b`` for every row b of r (B, m), from the factors of :func:`factor_rows`: by the inverse
    (formed once) up to ``pyode._tuning.NEWTON_INVERSE_MAX_ROWS`` components per row, as :class:`NewtonMatrix` does, else by
    ``lu_solve``."""

    def __init__(self, lu: Tensor, pivots: Tensor):
        m = lu.shape[-1]
        self.lu, self.pivots, self.inverse = lu, pivots, None
        if m <= _tuning.NEWTON_INVERSE_MAX_ROWS:
            eye = torch.eye(m, dtype=lu.dtype, device=lu.device).expand(lu.shape[0], m, m)
            self.inverse = torch.linalg.lu_solve(lu, pivots, eye)

    def __call__(self, r: Tensor) -> Tensor:
        if self.inverse is not None:
            return torch.bmm(self.inverse, r.unsqueeze(-1)).squeeze(-1)
        return torch.linalg.lu_solve(self.lu, self.pivots, r.unsqueeze(-1)).squeeze(-1)


class RowNewton:
    """:class:`NewtonState`'s simplified Newton iteration and convergence test for every batch row at once, each
    row with its own contraction rate, ``η`` (carried over between solves and steps, per row) and verdict: rows
    that converge stop moving while the others iterate, and a row that diverges or would not converge in time fails
    alone. ``theta_max`` (B,): the slowest rate each row has seen since it was last reset. The per-row bookkeeping
    is on (B,) NumPy arrays: a few dozen operations per iteration on B floats, ~1 us each instead of a torch op's
    ~5 us (the row norms come to the host once per iteration, as the joint iteration's float does)."""

    def __init__(self, kappa: float, max_iters: int, stall: float, batch: int):
        self.kappa, self.max_iters, self.stall = kappa, max_iters, stall
        self.eta_old = np.ones(batch)
        self.theta_max = np.zeros(batch)
        self.reason = np.zeros(batch, dtype=np.int8)  # why each row last failed: a key of ROW_FAILURES

    def iterate(self, update, z: Tensor, norm, running: Tensor) -> tuple[Tensor, Tensor]:
        """Runs ``z = z + update(z)`` on the rows ``running`` (B,) bool of z (B, m); ``norm(dz) -> (B,)`` float64
        is each row's scaled norm. Returns z and the rows that failed (B,) bool (their z is meaningless)."""
        eta = np.maximum(self.eta_old, 1e-16) ** 0.8
        previous = np.zeros_like(eta)  # 0: no previous increment (first iteration, or one of size 0)
        done = ~running.cpu().numpy()
        failed = np.zeros_like(done)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for k in range(self.max_iters):
                if done.all():
                    break
                go = ~done
                dz = update(z)
                if not go.all():  # rows that converged or failed stay put
                    dz = torch.where(torch.from_numpy(go).to(z.device)[:, None], dz, 0.0)
                z = z + dz
                size = norm(dz).cpu().numpy()
                bad = go & ~np.isfinite(size)
                if k == 0:  # no rate yet: converged if the carried-over η says so (η finite: η * 0 = 0)
                    fail, stalled, converged = bad, bad, go & ~bad & (eta * size <= self.kappa)
                else:
                    fail, stalled, converged = self._judge(k, go, bad, size, previous, eta)
                self.eta_old = np.where(converged, eta, self.eta_old)
                if fail.any():
                    failed |= fail
                    if k == 0:
                        self.reason[fail] = 1
                done |= fail | stalled | converged
                previous = np.where(go, size, previous)
        self.reason[~done] = 4
        return z, torch.from_numpy(failed | ~done).to(z.device)

    def _judge(self, k: int, go, bad, size, previous, eta):
        """Iteration k >= 1's verdicts per row (NumPy (B,) arrays): (failed, stalled at rounding level, converged);
        updates ``eta`` in place and the rows' ``theta_max`` and failure reasons."""
        rated = go & (previous > 0) & ~bad
        theta = size / previous  # inf/NaN where there is no previous increment: masked by rated
        self.theta_max = np.where(rated, np.fmax(self.theta_max, theta), self.theta_max)
        diverged = rated & (theta >= 1.0)
        stalled = diverged & (size <= self.stall)  # at rounding level: as converged as it can be
        contracting = rated & ~diverged
        np.copyto(eta, theta / (1.0 - theta), where=contracting)
        fail = bad | (diverged & ~stalled)
        left = self.max_iters - 1 - k
        if left > 0:  # Hairer & Wanner IV.8: at this rate the error left after the remaining iterations exceeds
            # the tolerance: the row stops now rather than spend them
            fail = fail | (contracting & (size > self.stall) & (theta ** left * eta * size > self.kappa))
        if fail.any():
            self.reason[fail] = np.where(bad, 1, np.where(diverged, 2, 3))[fail]
        return fail, stalled, go & ~(fail | diverged) & (eta * size <= self.kappa)

    def describe(self, row: int) -> str:
        """Why row ``row``'s last failed iteration failed."""
        return ROW_FAILURES[int(self.reason[row])].format(max_iters=self.max_iters)


ROW_FAILURES = {0: "the Newton iteration failed", 1: "the Newton iteration produced NaN/inf",
                2: "the Newton iteration diverged",
                3: "the Newton iteration would not converge within max_iters={max_iters} iterations",
                4: "the Newton iteration did not converge in max_iters={max_iters} iterations"}
