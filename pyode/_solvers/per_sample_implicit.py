"""Per-sample steps of the adaptive stiff methods: the row steppers of :class:`~pyode._solvers.per_sample.PerSampleLoop`
(see :func:`~pyode._solvers.per_sample.row_stepper`) for the ESDIRK pairs (kvaerno3, kvaerno5) and the Rosenbrock
method (rodas5), so the stiff methods run in the same lock-step rounds as the explicit ones, every row with its own
time, step size, PID controller state and accept/reject decision.

Every row has its own h, so its Newton matrix ``I - hγJ_b`` (Rosenbrock: ``I/(hγ) - J_b``) is its own: rows are
independent in per-sample mode, so the Jacobian is block-diagonal, one (m, m) block per row (m vector-Jacobian
products for the whole batch, :class:`~pyode._solvers.newton.Jacobian` with ``rows``), and the matrices are factored
as a batch (:func:`~pyode._solvers.newton.factor_rows`). A singular matrix or a Newton iteration that diverges fails
only that row's step, which the loop then rejects and retries smaller (Newton failures with the joint stepper's error
ratio ``NEWTON_FAILURE_BASE ** order``, which halves the step). The ESDIRK Jacobian management is the joint
stepper's, row by row: a row keeps its Jacobian while Newton converges fast, refreshes it after a slow solve, and
retries a failed step once with a fresh one before rejecting it.

Gradients: backprop through the rounds; an ESDIRK step's stages get theirs from the implicit function theorem (one
transposed solve per row and step, :class:`~pyode._solvers.implicit_grad.StageAdjoint`), a Rosenbrock step is
differentiated as it is computed (its Jacobian built with ``create_graph``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pyode._kernels import reference
from pyode._solvers import interpolation
from pyode._solvers.implicit_rosenbrock import RosenbrockStepper
from pyode._solvers.implicit_step import KAPPA, NEWTON_FAILURE_BASE, REFRESH_THETA, ImplicitStepper
from pyode._solvers.newton import Jacobian, RowNewton, RowSolver, factor_rows, stage_matrix
from pyode._solvers.per_sample import row_error_ratio
from pyode.errors import ImplicitSolveError


def implicit_rows(stepper, call, batch: int):
    """The row stepper of an implicit stepper (see :func:`~pyode._solvers.per_sample.row_stepper`)."""
    if isinstance(stepper, RosenbrockStepper):
        return RosenbrockRows(stepper, call, batch)
    if isinstance(stepper, ImplicitStepper) and stepper.tableau.diagonal and stepper.adaptive \
            and stepper.tableau.explicit_stage(0) and stepper.krylov is None:
        return ESDIRKRows(stepper, call, batch)
    raise ValueError("options['per_sample']=True supports the stiff methods kvaerno3, kvaerno5 and rodas5 (with a "
                     "dense or 'rows' Jacobian); use one of them or leave per_sample unset")


def _row_jacobian(call, batch: int, joint: Jacobian) -> Jacobian:
    """Block-diagonal Jacobian of ``call`` (B blocks), each row's block at the row's own time t (B,), computed as
    the joint stepper's ``joint`` computes its steps' Jacobians (autograd or forward differences)."""
    mode = "differences" if joint.steps_by_differences else "autograd"
    return Jacobian(lambda t, y: call(t, y.view(batch, -1)).reshape(-1), rows=batch, mode=mode)


def _lincomb(base: Tensor | None, ks: list[Tensor], weights) -> Tensor:
    """``base + Σ_j w_j k_j`` over (batch, m) tensors (zero weights skipped)."""
    return reference.lincomb(base, ks, [list(weights)])[0]


def _rows_norm(y: Tensor, atol: float, rtol: float):
    """Newton's scaled norm per row, ``dz -> (B,)`` float64: the RMS of ``dz / (atol + rtol |y|)`` (the joint
    stepper's), the scale formed once per step."""
    inverse = 1.0 / ((atol + rtol * y.abs()) * math.sqrt(max(y.shape[1], 1)))  # RMS = 2-norm / sqrt(m)
    if y.dtype == torch.float64:
        return lambda dz: torch.linalg.vector_norm(dz * inverse, dim=1)
    return lambda dz: torch.linalg.vector_norm((dz * inverse).double(), dim=1)


class ESDIRKRows:
    """Per-row steps of an adaptive ESDIRK pair (explicit first stage, one Newton solve per further stage)."""

    def __init__(self, stepper: ImplicitStepper, call, batch: int):
        self.st, self.tab, self.call = stepper, stepper.tableau, call
        self.P = stepper._P  # cubic Hermite (or linear) on the stages, f(t1) last: the joint stepper's
        self.jac = _row_jacobian(call, batch, stepper.jac)
        self.newton: RowNewton | None = None
        self.J: Tensor | None = None  # (B, m, m) blocks
        self.jac_t: Tensor | None = None  # (B,) the time at which each row's block was computed
        self.stale: Tensor | None = None  # (B,) refresh the row's block at its next step
        self.failed: Tensor | None = None  # (B,) the rows whose last step failed (Newton or matrix)
        self.bad_matrix: Tensor | None = None  # (B,) ... because their Newton matrix was singular or not finite

    # -- Jacobian: held per row, refreshed where slow or failed (ImplicitStepper.jacobian, row-wise) ---------------
    def _fresh(self, t: Tensor) -> Tensor:
        """Rows whose block was computed at their current point (rows only move forward, so the time says it)."""
        return self.jac_t == t

    def _refresh(self, t: Tensor, y: Tensor, rows: Tensor) -> None:
        """Recomputes the blocks of ``rows`` (B,) bool at their current (t, y): one batch Jacobian, kept where asked."""
        if not bool(rows.any()):
            return
        J = self.jac(t, y.reshape(-1))  # not f0: a stage derivative (see ImplicitStepper.jacobian)
        self.J = J if self.J is None else torch.where(rows[:, None, None], J, self.J)
        self.jac_t = torch.where(rows, t, self.jac_t)

    def _solver(self, hg: Tensor, active: Tensor) -> tuple[RowSolver, Tensor]:
        """``r -> (I - hγ J_b)⁻¹ r`` per row for hγ (B,); the active rows whose matrix is singular/non-finite."""
        m = self.J.shape[-1]
        eye = torch.eye(m, dtype=self.J.dtype, device=self.J.device)
        lu, pivots, bad = factor_rows(eye - hg.to(self.J.dtype)[:, None, None] * self.J)
        self.bad_matrix = torch.where(active, bad, self.bad_matrix)
        return RowSolver(lu, pivots), active & bad

    # -- the stages -------------------------------------------------------------------------------------------------
    def _stage_time(self, t: Tensor, h: Tensor, t_new: Tensor, i: int) -> Tensor:
        c = self.tab.c[i]
        return t_new if c == 1.0 else t + c * h

    def _stages(self, t: Tensor, y: Tensor, f0: Tensor, h: Tensor, t_new: Tensor, active: Tensor):
        """Stage by stage, every active row by its own Newton iteration; returns (ks, failed rows, the solver of
        the last diagonal entry's matrix). No autograd (see :meth:`attempt`)."""
        tab, st = self.tab, self.st
        hcol = torch.where(active, h, 0.0).to(y.dtype)[:, None]
        solvers, failed, norm = {}, torch.zeros_like(active), _rows_norm(y, st.atol, st.rtol)
        ks = [f0]
        for i in range(1, tab.num_stages):
            t_i = self._stage_time(t, h, t_new, i)
            if tab.explicit_stage(i):
                ks.append(self.call(t_i, y))
                continue
            gamma = tab.a[i][i]
            if gamma not in solvers:
                solvers[gamma], bad = self._solver(hcol[:, 0] * gamma, active)
                failed = failed | bad
            solve, hg = solvers[gamma], hcol * gamma
            base = y + hcol * _lincomb(None, ks, tab.a[i][:i])  # y + h Σ_j a_ij k_j, h per row

            def update(z, base=base, hg=hg, t_i=t_i, solve=solve):
                return solve(torch.addcmul(base - z, hg, self.call(t_i, z)))  # (I - hγJ)⁻¹ (base + hγ f - z)

            guess = _lincomb(None, ks, tab.predictor[i]) if tab.predictor is not None else ks[-1]
            z, bad = self.newton.iterate(update, base + hg * guess, norm, active & ~failed)
            failed = failed | bad
            hg_safe = torch.where(hg == 0.0, 1.0, hg)
            # = f(t_i, Y_i) at convergence without amplifying Newton's error by J; h = 0: Y_i = y, f0 itself
            ks.append(torch.where(hg == 0.0, f0, (z - base) / hg_safe))
        return ks, failed, solvers[tab.a[-1][-1]]

    def _solve(self, t: Tensor, y: Tensor, f0: Tensor, h: Tensor, t_new: Tensor, active: Tensor):
        """The stages with each row's held block; rows that failed with a stale block retry once with a fresh one
        (ImplicitStepper._solve_stages, row-wise). Returns (ks, failed rows, the error filter's solver)."""
        if self.newton is None:
            self.newton = RowNewton(KAPPA, self.st.newton.max_iters, KAPPA, t.shape[0])
            self.stale, self.bad_matrix = torch.ones_like(active), torch.zeros_like(active)
            self.jac_t = torch.full_like(t, math.nan)
        self._refresh(t, y, active & ~self._fresh(t) & self.stale)
        self.newton.theta_max[active.cpu().numpy()] = 0.0
        ks, failed, solve = self._stages(t, y, f0, h, t_new, active)
        retry = failed & ~self._fresh(t)
        if bool(retry.any()):
            self._refresh(t, y, retry)
            self.newton.theta_max[retry.cpu().numpy()] = 0.0
            ks2, failed2, _ = self._stages(t, y, f0, h, t_new, retry)
            ks = [torch.where(retry[:, None], b, a) for a, b in zip(ks, ks2, strict=True)]
            failed = torch.where(retry, failed2, failed)
            solve, _ = self._solver(torch.where(active, h, 0.0) * self.tab.a[-1][-1], active)
        done = active & ~failed
        slow = torch.from_numpy(self.newton.theta_max > REFRESH_THETA).to(done.device)
        self.stale = torch.where(done, slow, self.stale)
        self.failed = failed
        return ks, failed, solve

    def failure(self, row: int, t_user: float) -> ImplicitSolveError | None:
        """The error of row ``row`` whose step the loop gave up on at ``t_user``, if its Newton solve failed there."""
        if self.failed is None or not bool(self.failed[row]):
            return None
        matrix = bool(self.bad_matrix[row])
        why = "the Newton matrix I - h*gamma*J is singular or not finite" if matrix else self.newton.describe(row)
        return ImplicitSolveError("singular_jacobian" if matrix else "newton", t_user,
                                  f"{self.tab.name}: batch row {row}: {why} at the minimum step "
                                  "size; try float64, a smaller rtol/atol or first_step, options['max_iters'], or "
                                  "another method (rodas5 solves no nonlinear equations)")

    def attempt(self, t: Tensor, y: Tensor, f0: Tensor, h: Tensor, t_new: Tensor, active: Tensor):
        """One step of every active row (see :func:`~pyode._solvers.per_sample.row_stepper`); a row whose Newton
        solve failed stays put with the ratio that halves its step."""
        with torch.no_grad():
            ks, failed, solve = self._solve(t, y.detach(), f0.detach(), h, t_new, active)
            ks = [torch.where(failed[:, None], f0.detach(), k) for k in ks]  # nothing non-finite from failed rows
        h_ok = torch.where(active & ~failed, h, 0.0)
        if torch.is_grad_enabled() and (y.requires_grad or f0.requires_grad):
            ks = self._with_gradient(t, y, f0, h_ok, t_new, ks)
        hcol = h_ok.to(y.dtype)[:, None]
        y1 = y + hcol * _lincomb(None, ks, self.tab.b)
        with torch.no_grad():
            err = hcol * _lincomb(None, [k.detach() for k in ks], self.tab.b_err)
            if self.st.filter_error:  # Shampine's filter (ImplicitStepper._finish_filtered), per row
                err = solve(err)
            ratio = row_error_ratio(y.detach(), y1.detach(), err, self.st.atol, self.st.rtol)
            ratio = torch.where(failed, NEWTON_FAILURE_BASE ** self.tab.order, ratio)
        return ks, y1, ratio

    def _with_gradient(self, t: Tensor, y: Tensor, f0: Tensor, h: Tensor, t_new: Tensor, ks: list) -> list:
        """Newton's stages with the implicit-function-theorem graph to y, f0 and func's parameters
        (pyode._solvers.implicit_grad.stages_with_gradient, each row its own h): ``λ = M_b⁻ᵀ g`` per row."""
        from pyode._solvers.implicit_grad import StageAdjoint

        tab, s = self.tab, self.tab.num_stages
        hcol = h.to(y.dtype)[:, None]
        values = [k.detach() for k in ks]
        graph, jacobians = [], []
        for i in range(s):
            t_i = self._stage_time(t, h, t_new, i)
            if tab.explicit_stage(i):
                graph.append(f0 if tab.c[i] == 0.0 else self.call(t_i, y))
                jacobians.append(None)
                continue
            y_i = y + hcol * _lincomb(None, values, tab.a[i])
            graph.append(self.call(t_i, y_i))
            jacobians.append(self.jac.exact(t_i, y_i.detach().reshape(-1)))  # exact J at the converged stage
        with torch.no_grad():
            M = stage_matrix(jacobians, h.to(y.dtype).view(-1, 1, 1, 1, 1), tab.a)  # (B, s*m, s*m)
            lu, pivots = torch.linalg.lu_factor(M)
        B = y.shape[0]
        out = StageAdjoint.apply(torch.stack(values).reshape(s, -1), lu, pivots, torch.stack(graph).reshape(s, -1))
        return list(out.view(s, B, -1).unbind(0))

    def terms(self, t: Tensor, y: Tensor, f0: Tensor, h: Tensor, t_new: Tensor, ks: list, y1: Tensor):
        terms = [*ks, self.call(t_new, y1)] if self.st.needs_f1 else ks  # stiffly accurate: ks[-1] = f(t1, y1)
        return terms, terms[-1]


class RosenbrockRows:
    """Per-row steps of a Rosenbrock method: one batched LU of ``I/(h_b γ) - J_b`` per round, no iteration.
    Dense output: the joint stepper's, the method's own continuous extension (weights on the increments u_i,
    terms u_i / h) where it has one, else the cubic Hermite through (y0, f0), (y1, f1) on [f0, (y1 - y0)/h, f1]."""

    HERMITE = interpolation.cubic_hermite([0.0, 1.0, 0.0], 2, 3)

    def __init__(self, stepper: RosenbrockStepper, call, batch: int):
        self.st, self.tab, self.call = stepper, stepper.tableau, call
        self.own = getattr(stepper, "_P", None)  # the method's interpolant on the increments (h = 1), or None
        self.P = self.HERMITE if self.own is None else self.own
        self.jac = _row_jacobian(call, batch, stepper.jac)
        self._at, self._held = None, None
        self.failed: Tensor | None = None  # (B,) rows whose last matrix was singular or not finite

    def failure(self, row: int, t_user: float) -> ImplicitSolveError | None:
        """The error of row ``row`` given up on at ``t_user``, if its matrix ``I/(hγ) - J`` failed there."""
        if self.failed is None or not bool(self.failed[row]):
            return None
        return ImplicitSolveError("singular_jacobian", t_user, f"{self.tab.name}: batch row {row}: the matrix "
                                  "I/(h*gamma) - J is singular or not finite at the minimum step size (func or its "
                                  "Jacobian NaN/inf?); try float64, a smaller rtol/atol, or another method")

    def _derivatives(self, t: Tensor, y: Tensor, f0: Tensor, record: bool) -> tuple[Tensor, Tensor]:
        """(J (B, m, m), f_t (B, m)) at every row's step start, kept while no row has moved (rejected steps).
        f_t by a forward difference in t, as RosenbrockStepper."""
        if self._at is not None and self._at[1] == record and torch.equal(self._at[0], t):
            return self._held
        y_in, f_in = (y, f0) if record else (y.detach(), f0.detach())
        J = self.jac.with_graph(t, y_in.reshape(-1)) if record else self.jac(t, y_in.reshape(-1), f_in.reshape(-1))
        dt = math.sqrt(torch.finfo(y.dtype).eps) * t.abs().clamp_min(1.0)
        f_t = (self.call(t + dt, y_in) - f_in) / dt.to(y.dtype)[:, None]
        self._at, self._held = (t.clone(), record), (J, f_t)
        return J, f_t

    def attempt(self, t: Tensor, y: Tensor, f0: Tensor, h: Tensor, t_new: Tensor, active: Tensor):
        """One step of every active row; a row whose matrix is singular or non-finite gets an infinite ratio (as
        RosenbrockStepper: the loop shrinks it). Rows with h = 0 take a step of the resolution of t, discarded."""
        tab = self.tab
        record = torch.is_grad_enabled() and (y.requires_grad or f0.requires_grad)
        J, f_t = self._derivatives(t, y, f0, record)
        tiny = math.sqrt(torch.finfo(y.dtype).eps) * t.abs().clamp_min(1.0)
        h_safe = torch.where(active & (h > 0), h, tiny)
        hcol = h_safe.to(y.dtype)[:, None]
        eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device)
        lu, pivots, bad = factor_rows(eye / (hcol[:, :, None] * tab.gamma) - J)
        solve, failed = RowSolver(lu, pivots), active & bad
        self.failed = failed
        us = []
        for i in range(tab.num_stages):
            if i == 0:
                f_i = f0
            else:
                t_i = t_new if tab.alpha[i] == 1.0 else t + tab.alpha[i] * h_safe
                f_i = self.call(t_i, _lincomb(y, us, tab.a[i]))
            rhs = f_i + hcol * tab.d[i] * f_t
            if us:
                rhs = rhs + _lincomb(None, us, tab.c[i]) / hcol
            us.append(solve(rhs))
        y1 = torch.where((active & ~failed)[:, None], _lincomb(y, us, tab.m), y)
        with torch.no_grad():
            err = _lincomb(None, [u.detach() for u in us], tab.m_err)
            ratio = row_error_ratio(y.detach(), y1.detach(), err, self.st.atol, self.st.rtol)
            ratio = torch.where(failed, math.inf, ratio)
        return [*us, h_safe], y1, ratio

    def terms(self, t: Tensor, y: Tensor, f0: Tensor, h: Tensor, t_new: Tensor, ks: list, y1: Tensor):
        """ks: (u_1, ..., u_s, h_safe) of :meth:`attempt`."""
        h_safe, f1 = ks[-1].to(y.dtype)[:, None], self.call(t_new, y1)
        if self.own is not None:
            return [u / h_safe for u in ks[:-1]], f1
        return [f0, (y1 - y) / h_safe, f1], f1
