"""``method="bdf"``: variable-order (1-5), variable-step backward differentiation formulas in their numerical
differentiation form (NDF; Shampine & Reichelt 1997, "The MATLAB ODE Suite"), the algorithm of MATLAB's ode15s
and SciPy's ``BDF``: the workhorse for large stiff systems, one nonlinear solve of size n per step.

The solution's history is held as modified divided differences ``D`` ((max_order + 3) vectors of n: ``D[0]`` the
state, ``D[j]`` the j-th backward difference scaled to the current step; quasi-constant step size, Shampine &
Reichelt section 2.1). A step of order k from t to ``t + h``:

- predictor ``y_p = Σ_{j<=k} D[j]``; corrector: ``y = y_p + d`` with ``d`` solving
  ``d - c f(t + h, y_p + d) + ψ = 0``, ``c = h / α_k``, ``ψ = Σ_{1<=j<=k} γ_j D[j] / α_k`` (α_k = (1 - κ_k) γ_k,
  γ_k = Σ_{j<=k} 1/j, κ the NDF coefficients), by simplified Newton on ``I - cJ`` (at most 4 iterations; the
  Jacobian is refreshed only when Newton fails with an old one, then the step halves);
- error estimate ``E_k d`` (E_k = κ_k γ_k + 1/(k+1)) in the RMS norm scaled by ``atol + rtol |y|``; a rejected
  step shrinks by ``max(0.2, s ε^(-1/(k+1)))`` (s: 0.9 x a Newton-effort factor);
- after ``k + 1`` steps of equal size the order may change by one (the estimates at k-1 and k+1 from D), and the
  step grows by at most 10x. A change of step size rescales D (:func:`change_matrix`).

Outputs come from the interpolating polynomial held in D after each step. This module is the reference (pure
torch, any dtype, and the only path that records gradients); ``RowSolver::run_bdf`` in
``csrc/include/pyode/core/bdf.h`` is its C++ twin (the same operations in the same order), which runs the solves
that record nothing on float64 CPU states.

Gradients (``gradient="backprop"``) never differentiate Newton's iterations: each step's corrected state gets its
graph from the implicit function theorem, one transposed solve with ``I - cJ`` at the converged point
(:class:`~pyode._solvers.implicit_grad.StageAdjoint`, as the ESDIRK stages), and everything else in a step (the
predictor, ψ, the D updates and rescalings, the interpolant) is linear in D and recorded as it is. Step sizes and
orders are decisions, not recorded (as every adaptive controller's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pyode import _validation as check
from pyode._solvers.adaptive import step_resolution
from pyode._solvers.callbacks import step_callbacks
from pyode._solvers.controller import initial_step, initial_step_error
from pyode._solvers.hooks import NO_HOOKS, LoopHooks
from pyode._solvers.implicit_grad import StageAdjoint
from pyode._solvers.newton import Jacobian, factor, stage_matrix
from pyode.errors import ImplicitSolveError, MaxStepsError, NonFiniteStateError, StepSizeUnderflowError

MAX_ORDER = 5
NEWTON_MAX_ITERS = 4
MIN_FACTOR, MAX_FACTOR = 0.2, 10.0
# The NDF coefficients κ_k (Shampine & Reichelt, Table 1; κ_5 = 0: order 5 is the plain BDF, for stability).
KAPPA = (0.0, -0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0)
GAMMA = tuple(sum(1.0 / j for j in range(1, k + 1)) for k in range(MAX_ORDER + 1))
ALPHA = tuple((1.0 - KAPPA[k]) * GAMMA[k] for k in range(MAX_ORDER + 1))
ERROR_CONST = tuple(KAPPA[k] * GAMMA[k] + 1.0 / (k + 1) for k in range(MAX_ORDER + 1))


def _difference_matrix(order: int, factor: float) -> list[list[float]]:
    """R(order, factor) (order+1, order+1): row i the running product of ``(i - 1 - factor j) / i``, row 0 ones."""
    rows = [[1.0] * (order + 1)]
    for i in range(1, order + 1):
        prev = rows[-1]
        rows.append([0.0] + [prev[j] * ((i - 1 - factor * j) / i) for j in range(1, order + 1)])
    return rows


def change_matrix(order: int, factor: float) -> list[list[float]]:
    """``W = R(factor) U`` with ``U = R(1)``: a step size change by ``factor`` maps ``D[:order+1]`` to
    ``D'[i] = Σ_j W[j][i] D[j]`` (the same interpolating polynomial, differences at the new spacing). Twin:
    ``change_matrix`` in csrc/include/pyode/core/bdf.h (same products, same order)."""
    R, U = _difference_matrix(order, factor), _difference_matrix(order, 1.0)
    size = order + 1
    return [[sum(R[i][m] * U[m][j] for m in range(size)) for j in range(size)] for i in range(size)]


def newton_tolerance(rtol: float, dtype: torch.dtype) -> float:
    """Newton's stopping tolerance in the scaled norm: ``max(10 eps / rtol, min(0.03, sqrt(rtol)))`` (SciPy's)."""
    eps = torch.finfo(dtype).eps
    return max(10.0 * eps / rtol, min(0.03, math.sqrt(rtol))) if rtol > 0 else 0.03


def interpolant_weights(t: float, t1: float, h: float, order: int) -> list[float]:
    """Weights on ``D[1..order]`` of the polynomial held after a step ending at ``t1`` (step size h), at time t:
    ``y(t) = D[0] + Σ_j w_j D[j]``, ``w_j = Π_{m<j} (t - (t1 - m h)) / ((m + 1) h)``."""
    weights, p = [], 1.0
    for m in range(order):
        p *= (t - (t1 - m * h)) / ((m + 1) * h)
        weights.append(p)
    return weights


@dataclass
class BdfOptions:
    """Options of ``method="bdf"`` (``pyode.solve`` and ``pyode.native.solve``)."""

    first_step: float | None = None
    max_num_steps: int = 2**31 - 1
    max_order: int = MAX_ORDER
    jacobian: str = "dense"      # "dense" (exact, by autograd), "differences" (forward differences) or "rows"
    #                              (a (batch, *state) y0 whose rows evolve independently: one block per row)
    norm: str = "rms"            # the RMS over the flat state (the only norm of this method)


def check_bdf_options(opts: BdfOptions) -> None:
    """Validates ``opts`` in place (numbers converted); raises naming the option."""
    opts.first_step = check.positive("first_step", opts.first_step)
    opts.max_num_steps = check.positive_int("max_num_steps", opts.max_num_steps)
    if isinstance(opts.max_order, bool) or not (isinstance(opts.max_order, int) and 1 <= opts.max_order <= MAX_ORDER):
        raise ValueError(f"options['max_order'] must be an int from 1 to {MAX_ORDER} for bdf, got {opts.max_order!r}")
    if opts.jacobian not in ("dense", "differences", "rows"):
        raise ValueError(f"options['jacobian'] must be 'dense', 'differences' or 'rows' for bdf, got {opts.jacobian!r}")


@dataclass
class BdfStep:
    """An accepted step for the ``on_step`` hook and the event search: from ``t0`` by ``h`` (solver time); ``poly``:
    (t1, h, order, D) of the interpolating polynomial held after it (D detached unless the solve records); ``y1``:
    the state it reached."""

    t0: float
    h: float
    poly: tuple
    y1: Tensor


@dataclass
class _History:
    """The integration state between steps: time, step size, order, differences, and Newton's matrix."""

    t: float
    h: float
    order: int
    D: list
    n_equal: int = 0
    J: Tensor | None = None
    lu: tuple | None = None   # LU factors of I - cJ; kept until dropped (a rejection by the error test keeps them)
    fresh_jac: bool = False   # J was computed during the current step (at its predictor)
    non_finite: bool = False  # the last Newton failure saw f NaN/inf
    attempted: int = 0        # steps attempted in this solve (accepted and rejected)


class BdfLoop:
    """Integrates with the NDF/BDF method (see the module docstring).

    Args:
        fn: the flat function; kern: the kernel backend (norms and linear combinations); jac: the steps'
        :class:`~pyode._solvers.newton.Jacobian`; rtol, atol: tolerances; stats: counters; time_sign: -1 for
        decreasing time; max_order: 1..5; first_step: the first step (None: Hairer's rule); max_num_steps: a
        limit on attempted steps; norm_len: the error norm over the first ``norm_len`` entries only (the
        adjoint's seminorm; None: all); core: the C++ loop (:class:`~pyode._solvers.core_loop.CoreSolver`) for
        solves that record nothing, or None.
    """

    SUPPORTED_HOOKS = frozenset({"on_step"})  # no on_accept: a step record cannot replay a multistep step

    def __init__(self, fn, kern, jac: Jacobian, rtol: float, atol: float, stats, time_sign: float, *,
                 max_order: int = MAX_ORDER, first_step: float | None = None, max_num_steps: int = 2**31 - 1,
                 norm_len: int | None = None, core=None):
        self.fn, self.kern, self.jac, self.rtol, self.atol = fn, kern, jac, rtol, atol
        self.stats, self.time_sign, self.max_order, self.first_step = stats, time_sign, max_order, first_step
        self.max_num_steps, self.norm_len, self.core = max_num_steps, norm_len, core
        self.newton_tol = newton_tolerance(rtol, fn.dtype)
        self.callbacks = step_callbacks(fn)  # func's torchdiffeq step callbacks, or None

    # -- the public loop interface ---------------------------------------------------------------------------
    def integrate(self, y0: Tensor, t_out: list[float], events=None, hooks: LoopHooks = NO_HOOKS) -> list[Tensor]:
        """Solves from ``y0`` (n,) through the increasing solver times ``t_out``; returns ``[ys]`` (T, n), or with
        ``events`` (:class:`~pyode._solvers.events.EventLocator`) that fired, ``[y_event]`` (1, n) with its
        ``event_t`` set (the event located on the interpolant; such solves run in this Python loop)."""
        from pyode._solvers.fixed_grid import core_first

        if y0.numel() == 0:  # nothing moves; func is called once (its output checked), as in the other loops
            self.fn(t_out[0], y0)
            self.stats.t_reached = self.time_sign * t_out[-1]
            return [y0.reshape(1, -1).repeat(len(t_out), 1)]
        out, f0 = core_first(None if events is not None else self.core, self.fn, t_out, y0, t_out, hooks)
        if out is not None:
            return out
        if f0 is None:
            f0 = self.fn(t_out[0], y0)
        record = torch.is_grad_enabled() and (y0.requires_grad or f0.requires_grad)
        with torch.set_grad_enabled(record):
            outputs = self._solve(y0, f0, t_out, hooks, record, events)
        return [outputs] if events is not None and events.event_t is not None else [torch.stack(outputs)]

    def dense(self, step: BdfStep, thetas: list[float]) -> Tensor:
        """The interpolant at ``step.t0 + θ step.h`` for each θ: (len(thetas), n)."""
        t1, h, order, D = step.poly
        rows = [interpolant_weights(step.t0 + th * step.h, t1, h, order) for th in thetas]
        return self.kern.lincomb(D[0], D[1:order + 1], rows)

    # -- the solve -------------------------------------------------------------------------------------------
    def _solve(self, y0: Tensor, f0: Tensor, t_out: list[float], hooks: LoopHooks, record: bool, events=None):
        """The outputs (a list of (n,)), or the state at a located event (1, n)."""
        s = self._start(y0, f0, t_out)
        outputs, t_end = [y0], t_out[-1]
        while len(outputs) < len(t_out):
            t_prev = s.t
            y_new = self._step(s, t_end, record)
            self.stats.t_reached = self.time_sign * s.t
            poly = (s.t, s.h, s.order, s.D[:s.order + 1] if record else [d.detach() for d in s.D[:s.order + 1]])
            step = BdfStep(t_prev, s.t - t_prev, poly, y_new)
            if events is not None and events.crossed(self, step):
                return events.locate(self, step)
            while len(outputs) < len(t_out) and t_out[len(outputs)] <= s.t:
                t = t_out[len(outputs)]
                outputs.append(y_new if t == s.t else self.dense(step, [(t - t_prev) / step.h])[0])
            if hooks.on_step is not None:
                hooks.on_step(t_prev, s.t, step, self)
        return outputs

    def _start(self, y0: Tensor, f0: Tensor, t_out: list[float]) -> _History:
        t0 = t_out[0]
        h = self.first_step
        if h is None:
            h = initial_step(self.fn, self.kern, t0, y0.detach(), f0.detach(), 2, self.rtol, self.atol)
            if not (math.isfinite(h) and h > 0.0):
                raise initial_step_error(self.time_sign * t0, y0, f0, self.atol, self.rtol)
        D = [y0, f0 * h] + [torch.zeros_like(y0) for _ in range(MAX_ORDER + 1)]
        s = _History(t0, h, 1, D)
        with torch.no_grad():
            s.J = self.jac(t0, y0.detach(), f0.detach())
        return s

    def _norm(self, x: Tensor, y: Tensor) -> float:
        """RMS of ``x / (atol + rtol |y|)`` over the first ``norm_len`` entries."""
        if self.norm_len is not None:
            x, y = x[:self.norm_len], y[:self.norm_len]
        return self.kern.scaled_norm(x.detach(), None, y.detach(), self.atol, self.rtol)

    def _rescale(self, s: _History, factor_: float, keep_lu: bool = False) -> None:
        """The step size times ``factor_``: D rescaled to the new spacing; Newton's matrix dropped unless
        ``keep_lu`` (SciPy's BDF keeps it after a rejection by the error test: a simplified Newton iteration
        only needs an approximate matrix, and its convergence test catches one too far off)."""
        W = change_matrix(s.order, factor_)
        k = s.order
        rows = [[W[j][i] for j in range(k + 1)] for i in range(k + 1)]  # row i: D'[i] = Σ_j W[j][i] D[j]
        s.D[:k + 1] = list(self.kern.lincomb(None, s.D[:k + 1], rows).unbind(0))
        s.h *= factor_
        s.n_equal = 0
        if not keep_lu:
            s.lu = None

    def _check_progress(self, s: _History) -> None:
        if s.attempted >= self.max_num_steps:
            raise MaxStepsError("max_num_steps", self.time_sign * s.t,
                                f"max_num_steps={self.max_num_steps} exceeded; raise options['max_num_steps'] or "
                                "loosen rtol/atol")
        if not s.h > step_resolution(s.t):
            if s.non_finite:
                raise NonFiniteStateError("non_finite", self.time_sign * s.t,
                                          "bdf: func returned NaN/inf at every step size tried; check func for "
                                          "overflow or a singularity")
            raise StepSizeUnderflowError("step_underflow", self.time_sign * s.t,
                                         "bdf: the step size fell below the resolution of t (the Newton iteration "
                                         "kept failing or the error estimate rejecting); try float64, a smaller "
                                         "rtol/atol, or method='kvaerno5'")

    # -- one step ----------------------------------------------------------------------------------------------
    def _step(self, s: _History, t_end: float, record: bool) -> Tensor:
        """Advances ``s`` by one accepted step (rejections retry inside); returns the new state (n,)."""
        s.fresh_jac = False
        while True:
            self._check_progress(s)
            t_new = s.t + s.h
            if t_new > t_end:  # the last step lands on t_end exactly
                t_new = t_end
                self._rescale(s, (t_new - s.t) / s.h)
            s.h = t_new - s.t
            s.attempted += 1
            if self.callbacks is not None:
                self.callbacks.step(s.t, s.D[0], s.h)
            solved = self._corrector(s, t_new)
            if solved is None:  # Newton failed with a fresh Jacobian: halve the step
                self._rejected(s)
                self._rescale(s, 0.5)
                continue
            y_new, d, n_iter = solved
            k = s.order
            safety = 0.9 * (2 * NEWTON_MAX_ITERS + 1) / (2 * NEWTON_MAX_ITERS + n_iter)
            error = abs(ERROR_CONST[k]) * self._norm(d, y_new)
            if not error <= 1.0:
                self._rejected(s)
                shrink = safety * error ** (-1.0 / (k + 1)) if math.isfinite(error) else MIN_FACTOR
                self._rescale(s, max(MIN_FACTOR, shrink), keep_lu=True)
                continue
            break
        self.stats.n_accepted += 1
        if self.callbacks is not None:
            self.callbacks.accept(s.t, s.D[0], s.h)
        if record:
            y_new, d = self._with_gradient(s, t_new, y_new)
        return self._accept(s, t_new, y_new, d, safety, error)

    def _rejected(self, s: _History) -> None:
        self.stats.n_rejected += 1
        if self.callbacks is not None:
            self.callbacks.reject(s.t, s.D[0], s.h)

    def _accept(self, s: _History, t_new: float, y_new: Tensor, d: Tensor, safety: float, error: float) -> Tensor:
        """The differences updated with the step's ``d``; then, after k + 1 equal steps, the order and size."""
        k, D = s.order, s.D
        D[k + 2] = d - D[k + 1]
        D[k + 1] = d
        for i in range(k, -1, -1):
            D[i] = D[i] + D[i + 1]
        s.t, s.n_equal = t_new, s.n_equal + 1
        if s.n_equal < k + 1:
            return y_new
        lower = abs(ERROR_CONST[k - 1]) * self._norm(D[k], y_new) if k > 1 else math.inf
        upper = abs(ERROR_CONST[k + 1]) * self._norm(D[k + 2], y_new) if k < self.max_order else math.inf
        factors = [_factor(e, q) for e, q in ((lower, k), (error, k + 1), (upper, k + 2))]
        best = max(range(3), key=lambda i: (factors[i], -i))  # the first of equal factors, as argmax
        s.order = k + best - 1
        self._rescale(s, min(MAX_FACTOR, safety * factors[best]))
        return y_new

    def _corrector(self, s: _History, t_new: float):
        """Newton on the step's corrector with the held Jacobian, and once more with a fresh one (at the
        predictor) if that fails and none was computed yet during this step. Returns (y_new, d, iterations)
        or None."""
        with torch.no_grad():
            y_pred, psi = self._predictor([x.detach() for x in s.D[:s.order + 1]])
            c = s.h / ALPHA[s.order]
            while True:
                solve = self._matrix(s, c)
                result = None if solve is None else self._newton(s, t_new, y_pred, c, psi, solve)
                if result is not None or s.fresh_jac:
                    return result
                s.J = self.jac(t_new, y_pred)
                s.lu, s.fresh_jac = None, True

    def _matrix(self, s: _History, c: float):
        """``r -> (I - cJ)⁻¹ r`` from the held LU (factored with this c when none is held), per Jacobian block (one
        dense block, or one per batch row with ``jacobian="rows"``); None where I - cJ is singular or not finite."""
        if s.lu is None:
            try:
                s.lu = factor(stage_matrix(s.J, c, 1.0), s.t, self.time_sign)
            except ImplicitSolveError:
                return None
        lu, piv = s.lu
        return lambda r: torch.linalg.lu_solve(lu, piv, r.view(lu.shape[0], -1, 1)).view(-1)

    def _predictor(self, D: list[Tensor]) -> tuple[Tensor, Tensor]:
        """(predictor ``Σ_{j<=k} D[j]``, ``ψ = Σ_{1<=j<=k} γ_j D[j] / α_k``) for the k + 1 differences ``D``."""
        k = len(D) - 1
        return (self.kern.lincomb_row(None, D, [1.0] * (k + 1)),
                self.kern.lincomb_row(None, D[1:], [GAMMA[j] / ALPHA[k] for j in range(1, k + 1)]))

    def _newton(self, s: _History, t_new: float, y_pred: Tensor, c: float, psi: Tensor, solve):
        """Simplified Newton on ``d - c f(t_new, y_pred + d) + ψ = 0`` from d = 0 (SciPy's test: stop when the
        predicted remaining error is below the tolerance, give up when the rate says it would not be in time)."""
        y, d, previous = y_pred.clone(), torch.zeros_like(y_pred), None
        for it in range(NEWTON_MAX_ITERS):
            f = self.fn(t_new, y)
            s.non_finite = not bool(torch.isfinite(f).all())
            if s.non_finite:
                return None
            dy = solve(c * f - psi - d)
            size = self._norm(dy, y_pred)
            rate = None if previous is None else size / previous
            if rate is not None and (rate >= 1.0 or rate ** (NEWTON_MAX_ITERS - it) / (1.0 - rate) * size
                                     > self.newton_tol):
                return None
            y, d = y + dy, d + dy
            if size == 0.0 or (rate is not None and rate / (1.0 - rate) * size < self.newton_tol):
                return y, d, it + 1
            previous = size
        return None

    def _with_gradient(self, s: _History, t_new: float, y_new: Tensor) -> tuple[Tensor, Tensor]:
        """The accepted step's state and ``d`` with the implicit function theorem's graph: ``y = b + cK`` with
        ``b = y_p - ψ`` (recorded, linear in D) and ``K = f(t_new, y)`` at Newton's solution (StageAdjoint)."""
        y_pred, psi = self._predictor(s.D[:s.order + 1])
        base = y_pred - psi
        c = s.h / ALPHA[s.order]
        k_value = ((y_new - base.detach()) / c).detach()
        with torch.no_grad():
            lu, piv = torch.linalg.lu_factor(stage_matrix(self.jac.exact(t_new, y_new.detach()), c, 1.0))
        k_graph = self.fn(t_new, base + c * k_value)
        K = StageAdjoint.apply(k_value[None], lu, piv, k_graph[None])[0]
        y = base + c * K
        return y, y - y_pred



def _factor(error: float, exponent: int) -> float:
    """``error^(-1/exponent)`` (inf for a zero error, 0 for an infinite or NaN one)."""
    if error == 0.0:
        return math.inf
    if not math.isfinite(error):
        return 0.0
    return error ** (-1.0 / exponent)

