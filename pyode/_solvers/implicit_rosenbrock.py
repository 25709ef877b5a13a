"""Rosenbrock steps (linearly implicit: one LU of ``I/(hγ) - J`` per step, no Newton iteration), with the
interface of :class:`~pyode._solvers.rk_step.RKStepper`, so they run in the adaptive loop as another stepper
kind. ``rodas5``: Di Marzo's RODAS5(4) (Hairer & Wanner, *Solving ODEs II*, VI.7, transformed form; see
:class:`~pyode._solvers.implicit_tableaux.RosenbrockTableau`).

Gradients: the step is a finite sequence of differentiable operations (function evaluations, the Jacobian,
an LU factorisation and solves), so autograd differentiates it exactly; when autograd records, the Jacobian
is built with ``create_graph`` (its own derivative, second derivatives of ``func``, enters the gradient).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pyode._kernels.segments import Segments
from pyode._solvers import interpolation
from pyode._solvers.implicit_tableaux import RosenbrockTableau
from pyode._solvers.newton import ImplicitSolveError, factor, jacobian_for, solve_stages
from pyode._solvers.rk_step import StepResult


class RosenbrockStepper:
    """Takes steps of one Rosenbrock tableau with a fresh Jacobian and time derivative at each step start.

    Args:
        tableau: the method; fn: the flat function; kern: kernel backend; time_sign: -1 for reversed time.
        rtol, atol, segments, norm_segments: as for :class:`RKStepper`; jacobian_rows: as for ImplicitStepper.
        interp: "auto" (the tableau's own continuous extension, ``RosenbrockTableau.dense``; rodas5: 4th order) or
            "cubic" (Hermite through (y0, f0), (y1, f1), 3rd order; also used by a tableau without ``dense``).
    """

    default_controller = "predictive"  # options["controller"] = "auto" (pyode._solvers.controller.uses_predictive)

    def __init__(self, tableau: RosenbrockTableau, fn, kern, time_sign: float, rtol: float, atol: float,
                 segments: Segments | None = None, norm_segments: int | None = None, jacobian_rows: int | None = None,
                 interp: str = "auto"):
        self.tableau, self.fn, self.kern, self.time_sign = tableau, fn, kern, time_sign
        if interp not in ("auto", "cubic"):
            raise ValueError(f"options['interp'] must be 'auto' or 'cubic' for {tableau.name}, got {interp!r}")
        # "auto": the tableau's own continuous extension (weights on the increments u_i); "cubic", or a tableau
        # without one: the cubic Hermite through (y0, f0), (y1, f1), which needs f(t1, y1).
        self._P = tableau.interpolant if interp == "auto" else None
        self.needs_f1 = self._P is None
        self.rtol, self.atol, self.segments, self.norm_segments = rtol, atol, segments, norm_segments
        if jacobian_rows == "gmres":
            raise ValueError(f"options['jacobian']='gmres' (Newton-Krylov) is for the Newton iterations of "
                             f"diagonally implicit methods (kvaerno3, kvaerno5); {tableau.name} factors its matrix "
                             "once per step: use 'dense' (or 'rows')")
        self.jac = jacobian_for(fn, jacobian_rows)
        self.failure: ImplicitSolveError | None = None
        self._at, self._jac_ft, self._lu_key, self._lu = None, None, None, None

    def _derivatives(self, t0: float, y0: Tensor, f0: Tensor, record: bool) -> tuple[Tensor, Tensor]:
        """(J, f_t) at the step start, kept while retrying a rejected step from the same point. ``f_t`` by a
        forward difference in t (one evaluation; its O(sqrt(eps)) error enters the step multiplied by h)."""
        key = (t0, y0.data_ptr(), record)
        if self._at != key:
            J = self.jac.with_graph(t0, y0) if record else self.jac(t0, y0, f0)
            dt = math.sqrt(torch.finfo(y0.dtype).eps) * max(abs(t0), 1.0)
            f_dt = self.fn(t0 + dt, y0 if record else y0.detach())
            f_t = (f_dt - (f0 if record else f0.detach())) / dt
            self._at, self._jac_ft, self._lu_key = key, (J, f_t), None
        return self._jac_ft

    def _factor(self, J: Tensor, h: float, t0: float, record: bool):
        """LU of ``I/(hγ) - J`` (cached for the last h while the Jacobian is kept)."""
        if record or self._lu_key != h:
            m = J.shape[-1]
            w = torch.eye(m, dtype=J.dtype, device=J.device) / (h * self.tableau.gamma) - J  # per block
            if record:  # differentiable factorisation; the checks of factor() on its value
                factor(w.detach(), t0, self.time_sign)
                return torch.linalg.lu_factor(w)
            self._lu, self._lu_key = factor(w, t0, self.time_sign), h
        return self._lu

    def attempt(self, t0: float, y0: Tensor, f0: Tensor, h: float, ends_at_jump: bool = False) -> StepResult:
        """All stages and the error ratio of one step; a singular ``I/(hγ) - J`` gives an infinite ratio (the
        loop shrinks the step and raises this failure if it cannot)."""
        tab, fn, lincomb_row = self.tableau, self.fn, self.kern.lincomb_row
        record = torch.is_grad_enabled() and (y0.requires_grad or f0.requires_grad)
        t_end = self.fn.nudge(t0 + h, -1.0) if ends_at_jump else t0 + h
        self.failure = None
        try:
            J, f_t = self._derivatives(t0, y0, f0, record)
            lu, pivots = self._factor(J, h, t0, record)
        except ImplicitSolveError as exc:
            self.failure = exc
            return StepResult(t0, h, y0, y0, [f0], math.inf)
        us, inv_h = [], 1.0 / h  # c_ij / h as c_ij * (1/h): the C++ loop's arithmetic (one division a step)
        for i in range(tab.num_stages):
            if i == 0:
                f_i = f0
            else:
                y_i = lincomb_row(y0, us, list(tab.a[i]))
                f_i = fn(t_end if tab.alpha[i] == 1.0 else t0 + tab.alpha[i] * h, y_i)
            rhs = lincomb_row(f_i, [*us, f_t], [c * inv_h for c in tab.c[i]] + [h * tab.d[i]])
            us.append(solve_stages(lu, pivots, rhs))
        terms = [*us, f0]  # f0 rides along (weight 0) for the dense output
        y1, norm, seg = self.kern.rk_finish(y0, None, terms, [*tab.m, 0.0], [*tab.m_err, 0.0], self.atol, self.rtol,
                                            self.segments)
        if self.norm_segments is not None and seg is not None:
            norm = float(seg[:self.norm_segments].max())
        return StepResult(t0, h, y0, y1, terms, norm, seg)

    def failure_error(self, t_reached: float) -> ImplicitSolveError | None:
        return self.failure

    def end_derivative(self, step: StepResult) -> Tensor:
        if step.f1 is None:
            step.f1 = self.fn(step.t0 + step.h, step.y1)
        return step.f1

    def dense(self, step: StepResult, thetas: list[float]) -> Tensor:
        """The interpolant at ``t0 + θh``: the method's own (weights on the increments ``step.ks[:s]``), or the
        cubic Hermite through (y0, f0) and (y1, f1). (len(thetas), n)"""
        if self._P is not None:
            s = self.tableau.num_stages
            return self.kern.lincomb(step.y0, step.ks[:s], interpolation.weights_at(self._P, thetas, 1.0))
        f1, h = self.end_derivative(step), step.h
        rows = [[3 * th**2 - 2 * th**3, h * (th**3 - 2 * th**2 + th), h * (th**3 - th**2)] for th in thetas]
        return self.kern.lincomb(step.y0, [step.y1 - step.y0, step.ks[-1], f1], rows)
