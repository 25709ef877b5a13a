"""Steps of implicit Runge-Kutta methods (DIRK/ESDIRK stage by stage, fully implicit as one system), with
the same interface as :class:`~pyode._solvers.rk_step.RKStepper` (``attempt``, ``dense``,
``end_derivative``), so the fixed-grid and adaptive loops run them unchanged: a stepper kind, not a loop.

Stage equations are solved by simplified Newton (:mod:`pyode._solvers.newton`) under ``torch.no_grad``;
when autograd records, the converged stages get their gradient from the implicit function theorem
(:mod:`pyode._solvers.implicit_grad`), never by differentiating the iterations. The stage combination,
``y1`` and the error norm use the kernels (``lincomb_row``, ``rk_finish``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyode._kernels.segments import Segments
from pyode._solvers import interpolation
from pyode._solvers.implicit_tableaux import ImplicitTableau
from pyode._solvers.krylov import JacobianProducts, gmres
from pyode._solvers.newton import ImplicitSolveError, NewtonMatrix, NewtonState, jacobian_for, solve_stages
from pyode._solvers.rk_step import StepResult

# Recompute the Jacobian at the next step when Newton contracted slower than this (Hairer & Wanner IV.8
# keep it while convergence is fast; a stale Jacobian shows up as a slow rate first).
REFRESH_THETA = 0.05
# Newton stops when the predicted remaining error is below KAPPA in the step's scaled error norm (adaptive
# methods: diffrax's and Hairer's choice, 1e-2 of the allowed local error).
KAPPA = 1e-2
# Fixed-grid methods have no tolerance to solve to: the stages are solved to a few ulps of the state
# (scale FIXED_ULPS * eps * (1 + |y|)), so a convergence test sees the method's error, not Newton's, and a
# stall at rounding level (up to FIXED_STALL of those units) counts as converged.
FIXED_ULPS = 4.0
FIXED_STALL = 64.0
# A failed Newton solve rejects the step with this error ratio per order: the default I controller (safety
# 0.9) then halves the step, as Hairer & Wanner's codes do, instead of cutting it to dfactor = 0.2 (an infinite
# ratio), which costs many steps to grow back (measured: 5.1k instead of 9.1k evaluations on Van der Pol
# mu = 1000 at rtol 1e-4).
NEWTON_FAILURE_BASE = 0.9 / 0.5
DEFAULT_MAX_ITERS = {"fixed": 100, "adaptive": 10}  # torchdiffeq's default; diffrax's root_find_max_steps


class ImplicitStepper:
    """Takes steps of one implicit RK tableau.

    Args:
        tableau: the method; fn: the flat function; kern: kernel backend; time_sign: -1 for reversed time
            (for the times in error messages).
        rtol, atol: tolerances (adaptive methods: the error ratio and Newton's test; ignored on a fixed grid).
        segments, norm_segments: as for :class:`RKStepper` (tuple states' mixed norm, the adjoint seminorm).
        interp: "linear" or "cubic" (Hermite through f0, f1); "auto" is cubic for adaptive methods.
        max_iters: Newton iterations per solve before the step fails.
        jacobian_rows: B when the rows of a (B, *state) state are independent: the Jacobian is B diagonal
            blocks, factored as a batch (see :class:`Jacobian`); None: one dense block; "gmres": matrix-free
            Newton-Krylov (:mod:`pyode._solvers.krylov`; DIRK tableaux only); "differences": one dense block by
            forward differences (:func:`~pyode._solvers.newton.jacobian_for`).
    """

    default_controller = "predictive"  # options["controller"] = "auto" (pyode._solvers.controller.uses_predictive)

    def __init__(self, tableau: ImplicitTableau, fn, kern, time_sign: float, rtol: float = 0.0, atol: float = 0.0,
                 segments: Segments | None = None, norm_segments: int | None = None, interp: str = "auto",
                 max_iters: int | None = None, jacobian_rows: int | None = None):
        self.tableau, self.fn, self.kern, self.time_sign = tableau, fn, kern, time_sign
        self.rtol, self.atol, self.segments, self.norm_segments = rtol, atol, segments, norm_segments
        self.adaptive = tableau.adaptive
        self.interp = ("cubic" if self.adaptive else "linear") if interp == "auto" else interp
        if self.interp not in ("linear", "cubic"):
            raise ValueError(f"options['interp'] must be 'linear' or 'cubic' for {tableau.name}, got {interp!r}")
        iters = DEFAULT_MAX_ITERS["adaptive" if self.adaptive else "fixed"] if max_iters is None else max_iters
        self.newton = NewtonState(KAPPA if self.adaptive else 1.0, iters)
        self.krylov = JacobianProducts(fn) if jacobian_rows == "gmres" else None
        if self.krylov is not None and not tableau.diagonal:
            raise ValueError(f"options['jacobian']='gmres' needs a diagonally implicit method (kvaerno3, kvaerno5, "
                             f"sdirk2, trbdf2, implicit_euler, ...), not {tableau.name}; use 'dense' for it")
        self.jac = jacobian_for(fn, None if self.krylov is not None else jacobian_rows)
        # A func that declares its Jacobian zero outside some columns (the interpolated adjoint's augmented
        # dynamics): Newton factors only that block (NewtonMatrix.solver).
        self._columns = getattr(getattr(fn, "func", None), "jacobian_columns", None) if jacobian_rows is None else None
        self.matrix = NewtonMatrix(time_sign)
        self._J, self._jac_id, self._jac_at, self._stale = None, 0, None, True
        self._matrix_failure: ImplicitSolveError | None = None
        self.failure: ImplicitSolveError | None = None
        # Filter the error estimate of a singly diagonally implicit pair (one γ: its LU is at hand).
        self.filter_error = (self.adaptive and tableau.diagonal
                             and len({row[i] for i, row in enumerate(tableau.a) if row[i] != 0.0}) == 1)
        self._a_inv = None if tableau.diagonal else torch.linalg.inv(torch.tensor(tableau.a, dtype=torch.float64))
        self._norm = kern.scaled_norm
        # The step's terms are its stages, led by f0 where the first stage is not f0 itself (all but ESDIRKs),
        # so that y1, the error and the Hermite interpolant (which needs f0) are all weights on the terms.
        self._lead_f0 = not tableau.explicit_stage(0)
        lead = [0.0] if self._lead_f0 else []
        self._b = lead + list(tableau.b)
        self._b_err = None if tableau.b_err is None else lead + list(tableau.b_err)
        size = len(self._b)
        f1_index = size - 1 if tableau.stiffly_accurate else size
        self.needs_f1 = self.interp == "cubic" and not tableau.stiffly_accurate  # dense output evaluates f(t1)
        self._P = (interpolation.linear(self._b, size) if self.interp == "linear"
                   else interpolation.cubic_hermite(self._b, f1_index, size + (0 if tableau.stiffly_accurate else 1)))

    # -- Jacobian management -------------------------------------------------------------------------------
    def jacobian(self, t0: float, y0: Tensor, f0: Tensor, force: bool) -> bool:
        """Makes sure a Jacobian is held (computed at ``(t0, y0)`` if stale or ``force``); returns whether
        the held one is fresh, i.e. computed at this very point."""
        at = self._jac_at
        fresh = at is not None and at == (t0, y0.data_ptr())
        if fresh or not (force or self._stale or self._J is None):
            return fresh
        if self.krylov is not None:  # matrix-free: only the linearisation point is held
            self.krylov.linearise(t0, y0, f0)
            self._J = True
            self._jac_id, self._jac_at, self._stale = self._jac_id + 1, (t0, y0.data_ptr()), False
            return True
        # f0 is not passed: an ESDIRK's f0 is its last stage derivative, (Y_s - base) / hγ, carrying Newton's error
        # over hγ, which forward differences would divide by their small step again (J off by ~1e3 on Van der Pol)
        self._J, self._jac_id, self._jac_at, self._stale = self.jac(t0, y0), self._jac_id + 1, (t0, y0.data_ptr()), False
        return True

    def _tolerances(self, y0: Tensor) -> tuple[float, float, float]:
        """(atol, rtol, stall) of Newton's scaled norm."""
        if self.adaptive:
            return self.atol, self.rtol, KAPPA
        tol = FIXED_ULPS * torch.finfo(y0.dtype).eps
        return tol, tol, FIXED_STALL

    # -- stage solves --------------------------------------------------------------------------------------
    def _stage_time(self, t0: float, h: float, t_end: float, i: int) -> float:
        c = self.tableau.c[i]
        return t_end if c == 1.0 else t0 + c * h

    def _solve_dirk(self, t0: float, y0: Tensor, f0: Tensor, h: float, t_end: float, norm) -> list | None:
        """Stage by stage: ``Y_i = base_i + h a_ii f(t_i, Y_i)``; returns the stage derivatives or None."""
        tab, fn, ks = self.tableau, self.fn, []
        for i in range(tab.num_stages):
            t_i = self._stage_time(t0, h, t_end, i)
            if tab.explicit_stage(i):
                ks.append(f0 if tab.c[i] == 0.0 else fn(t_i, y0))
                continue
            base = self.kern.lincomb_row(y0, ks, [h * x for x in tab.a[i][:i]]) if ks else y0
            hg = h * tab.a[i][i]
            solve = self._newton_solver(h, tab.a[i][i], t0)

            def update(y, base=base, hg=hg, t_i=t_i, solve=solve):
                return solve(base + hg * fn(t_i, y) - y)

            # Newton's starting point: the stage derivative predicted from the previous ones (the tableau's
            # extrapolation weights, else the last one), so the first iterate is already O(h) close.
            if tab.predictor is not None:
                k_guess = self.kern.lincomb_row(None, ks, list(tab.predictor[i]))
            else:
                k_guess = ks[-1] if ks else f0
            y_stage = self.newton.iterate(update, base + hg * k_guess, norm)
            if y_stage is None:
                return None
            ks.append((y_stage - base) / hg)  # = f(t_i, Y_i) at convergence, without amplifying Newton's error by J
        return ks

    def _newton_solver(self, h: float, gamma: float, t0: float):
        """``r -> (I - hγJ)⁻¹ r`` with the held Jacobian: its cached LU, or GMRES on Jacobian-vector products."""
        if self.krylov is not None:
            hg, jv = h * gamma, self.krylov
            return lambda r: gmres(lambda v: v - hg * jv(v), r)
        return self.matrix.solver(self._J, self._jac_id, h, gamma, t0, self._columns)

    def _solve_firk(self, t0: float, y0: Tensor, f0: Tensor, h: float, t_end: float, norm) -> list | None:
        """All stages as one (s*n) system in ``Z_i = Y_i - y0``: ``Z = h (A ⊗ I) F(y0 + Z)``."""
        tab, fn, s, n = self.tableau, self.fn, self.tableau.num_stages, y0.numel()
        times = [self._stage_time(t0, h, t_end, i) for i in range(s)]
        A = torch.tensor(tab.a, dtype=y0.dtype, device=y0.device)
        lu, pivots = self.matrix.get(self._J, self._jac_id, h, tab.a, t0)

        def update(z):
            zs = z.view(s, n)
            F = torch.stack([fn(times[i], y0 + zs[i]) for i in range(s)])
            return solve_stages(lu, pivots, (h * (A @ F) - zs).reshape(-1), s)

        guess = (torch.tensor(tab.c, dtype=y0.dtype, device=y0.device)[:, None] * (h * f0)).reshape(-1)
        z = self.newton.iterate(update, guess, norm)
        if z is None:
            return None
        ks = (self._a_inv.to(y0.dtype) @ z.view(s, n)) / h  # K = A⁻¹ Z / h: no extra evaluation of f
        return list(ks.unbind(0))

    def _solve_stages(self, t0: float, y0: Tensor, f0: Tensor, h: float, t_end: float) -> list | None:
        """Newton with the held Jacobian; on failure with a stale one, once more with a fresh one."""
        atol, rtol, stall = self._tolerances(y0)
        s = self.tableau.num_stages
        scale_y = y0 if self.tableau.diagonal else y0.repeat(s)
        self.newton.kappa = KAPPA if self.adaptive else 1.0
        self.newton.stall = stall

        def norm(dz, z):
            return self._norm(dz, None, scale_y, atol, rtol)

        solve = self._solve_dirk if self.tableau.diagonal else self._solve_firk
        force, self._matrix_failure = False, None
        while True:
            fresh = self.jacobian(t0, y0, f0, force)
            self.newton.theta_max = 0.0
            try:
                ks = solve(t0, y0, f0, h, t_end, norm)
            except ImplicitSolveError as exc:  # I - h*gamma*J singular at this h, or J not finite
                if not self.adaptive:
                    raise
                ks, self._matrix_failure = None, exc  # adaptive: reject, and try a smaller step
            if ks is not None:
                self._stale = self.newton.theta_max > REFRESH_THETA
                return ks
            if fresh:
                return None
            force = True

    # -- the step ------------------------------------------------------------------------------------------
    def attempt(self, t0: float, y0: Tensor, f0: Tensor, h: float, ends_at_jump: bool = False) -> StepResult:
        """One step of size ``h`` from ``(t0, y0)`` with ``f0 = f(t0, y0)``. A failed Newton solve rejects the
        step (the adaptive loop halves it, see NEWTON_FAILURE_BASE; a fixed grid raises)."""
        from pyode._solvers.implicit_grad import stages_with_gradient

        tab = self.tableau
        t_end = self.fn.nudge(t0 + h, -1.0) if ends_at_jump else t0 + h  # one ulp before a discontinuity
        self.failure = None
        with torch.no_grad():
            ks = self._solve_stages(t0, y0.detach(), f0.detach(), h, t_end)
        if ks is None:
            return self._failed(t0, y0, f0, h)
        if torch.is_grad_enabled() and (y0.requires_grad or f0.requires_grad):
            ks = stages_with_gradient(self, t0, y0, f0, h, [self._stage_time(t0, h, t_end, i)
                                                               for i in range(tab.num_stages)], ks)
        if self._lead_f0:
            ks = [f0, *ks]
        b = [h * x for x in self._b]
        if self._b_err is None:
            y1, norm, seg = self.kern.rk_finish(y0, None, ks, b, None, self.atol, self.rtol, None)
        elif self.filter_error:
            y1, norm, seg = self._finish_filtered(t0, y0, ks, b, h)
        else:
            y1, norm, seg = self.kern.rk_finish(y0, None, ks, b, [h * x for x in self._b_err], self.atol, self.rtol,
                                                self.segments)
        if self.norm_segments is not None and seg is not None:
            norm = float(seg[:self.norm_segments].max())
        return StepResult(t0, h, y0, y1, ks, norm, seg)

    def _finish_filtered(self, t0: float, y0: Tensor, ks: list, b: list, h: float):
        """y1 and the error ratio of ``(I - hγJ)⁻¹ err`` (Hairer & Wanner IV.8, eq. 8.20; Shampine's filter):
        the raw embedded difference overestimates the error of stiff components, whose exact local error the
        L-stable stages damp, and would reject good steps; the filtered one tends to 0 for them and to ``err``
        for non-stiff components. Reuses the stages' LU (the same hγ)."""
        gamma = self.tableau.a[-1][-1]
        y1, _, _ = self.kern.rk_finish(y0, None, ks, b, None, self.atol, self.rtol, None)
        with torch.no_grad():
            err = self.kern.lincomb_row(None, [k.detach() for k in ks], [h * x for x in self._b_err])
            err = self._newton_solver(h, gamma, t0)(err)
            _, norm, seg = self.kern.rk_finish(y0.detach(), y1.detach(), [err], None, [1.0], self.atol, self.rtol,
                                               self.segments)
        return y1, norm, seg

    def _failed(self, t0: float, y0: Tensor, f0: Tensor, h: float) -> StepResult:
        if self._matrix_failure is not None:  # adaptive only: a singular or non-finite Newton matrix
            cause = self._matrix_failure
            self.failure = ImplicitSolveError(cause.reason, self.time_sign * t0,
                                              f"{self.tableau.name} at the minimum step size: {cause.message}")
            return StepResult(t0, h, y0, y0, [f0], NEWTON_FAILURE_BASE ** self.tableau.order)
        where = "at the minimum step size" if self.adaptive else f"with step_size={h:.3g}"
        hint = ("try float64, a smaller rtol/atol or first_step, options['max_iters'], or another method "
                "(rodas5 solves no nonlinear equations)" if self.adaptive else
                "use a smaller step_size, float64, a larger options['max_iters'], or an adaptive stiff method "
                "(kvaerno5)")
        self.failure = ImplicitSolveError("newton", self.time_sign * t0,
                                          f"{self.tableau.name}: {self.newton.failure} {where}; {hint}")
        if not self.adaptive:
            raise self.failure
        return StepResult(t0, h, y0, y0, [f0], NEWTON_FAILURE_BASE ** self.tableau.order)

    def failure_error(self, t_reached: float) -> ImplicitSolveError | None:
        """The error to raise when the loop gives up on a step that failed here (None: it was not Newton)."""
        return self.failure

    def end_derivative(self, step: StepResult) -> Tensor:
        """``f(t1, y1)``: the last stage of a stiffly accurate method, else one evaluation (cached)."""
        if step.f1 is None:
            step.f1 = step.ks[-1] if self.tableau.stiffly_accurate else self.fn(step.t0 + step.h, step.y1)
        return step.f1

    def dense(self, step: StepResult, thetas: list[float]) -> Tensor:
        """Linear or cubic Hermite interpolant at ``t0 + θh``: (len(thetas), n)."""
        terms = step.ks
        if self.interp == "cubic" and not self.tableau.stiffly_accurate:
            terms = [*step.ks, self.end_derivative(step)]
        return self.kern.lincomb(step.y0, terms, interpolation.weights_at(self._P, thetas, step.h))
