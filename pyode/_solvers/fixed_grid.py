"""Fixed-grid solvers: explicit Runge-Kutta on a grid, and Adams-Bashforth(-Moulton) multistep."""

from __future__ import annotations

import bisect
import itertools
import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from pyode import _validation as check
from pyode._solvers.callbacks import step_callbacks
from pyode._solvers.hooks import NO_HOOKS, LoopHooks
from pyode._solvers.rk_step import RKStepper, StepRecord, StepResult, step_outputs
from pyode._solvers.tableaux import ADAMS_MAX_ORDER, RK4, adams_bashforth, adams_moulton
from pyode._validation import all_finite
from pyode.errors import MaxStepsError, NonFiniteStateError
from pyode.solution import SolverStats


@dataclass
class FixedOptions:
    """Options of the fixed-grid solvers (torchdiffeq's names and defaults).

    ``step_size`` or ``grid_constructor`` (``fn(func, y0, t) -> grid``, mutually exclusive) choose the grid,
    else it is ``t``; ``perturb``: evaluate ``func`` one ulp inside each step (see :mod:`perturb`);
    ``max_order`` / ``max_iters``: the Adams methods' largest order and corrector iterations."""

    step_size: float | None = None
    grid_constructor: object = None
    interp: str = "linear"       # "linear" or "cubic" between grid points
    perturb: bool = False
    max_iters: int = 4           # corrector iterations of implicit_adams (stops early once converged)
    max_order: int = ADAMS_MAX_ORDER
    max_num_steps: int = 2**31 - 1  # checked before the grid is built: a tiny step_size fails at once


def check_step_count(t_out: list[float], step_size: float | None, max_num_steps: int, sign: float,
                     per_interval: bool = False) -> None:
    """Raises before a grid is built when ``step_size`` is too small to make progress or needs more than
    ``max_num_steps`` steps (a list of 1e300 grid points would never finish). ``per_interval``: each output
    interval is split on its own (ALF) instead of the whole span (:func:`make_grid`)."""
    if step_size is None or len(t_out) < 2:
        return
    resolution = 4.0 * math.ulp(max(abs(t_out[0]), abs(t_out[-1]), 1e-300))
    if step_size <= resolution:
        raise ValueError(f"options['step_size'] = {step_size:g} is below the resolution of the times near "
                         f"t = {sign * t_out[0]:g}; use a larger step_size")
    spans = [b - a for a, b in itertools.pairwise(t_out)] if per_interval else [t_out[-1] - t_out[0]]
    # Past the resolution check span / step_size < 2**52, so the count is exact and ceil cannot overflow.
    needed = sum(max(1.0, math.ceil(span / step_size - 1e-9)) for span in spans)
    if needed > max_num_steps:
        raise MaxStepsError("max_num_steps", sign * t_out[0],
                            f"step_size={step_size:g} needs {needed:.3g} steps to cover t = {sign * t_out[0]:g} .. "
                            f"{sign * t_out[-1]:g}, more than max_num_steps={max_num_steps}; use a larger "
                            "step_size or raise options['max_num_steps']")


def make_grid(t_out: list[float], step_size: float | None) -> list[float]:
    """torchdiffeq's grid: ``t0 + k * step_size`` while below the end, then the end; or ``t_out`` itself."""
    if step_size is None:
        return list(t_out)
    t0, t1 = t_out[0], t_out[-1]
    n_steps = max(1, math.ceil((t1 - t0) / step_size - 1e-9))
    return [t0 + k * step_size for k in range(n_steps)] + [t1]


def constructed_grid(grid_constructor, func, y0, t: Tensor, sign: float) -> list[float]:
    """``options['grid_constructor'](func, y0, t)`` (the user's func, y0 and times) checked, as floats in
    solver time: a 1-D tensor of finite times, monotonic in the direction of ``t``, from ``t[0]`` to ``t[-1]``."""
    if not callable(grid_constructor):
        raise TypeError("options['grid_constructor'] must be callable as fn(func, y0, t) -> 1-D tensor of times, "
                        f"got {type(grid_constructor).__name__}")
    grid = grid_constructor(func, y0, t)
    if not isinstance(grid, Tensor) or grid.dim() != 1 or grid.numel() < 1 or not grid.is_floating_point():
        raise ValueError("options['grid_constructor'] must return a 1-D floating tensor of times, got "
                         f"{type(grid).__name__}{tuple(grid.shape) if isinstance(grid, Tensor) else ''}")
    values = [sign * v for v in grid.detach().double().tolist()]
    t_ends = [sign * float(t[0]), sign * float(t[-1])]
    if not all(math.isfinite(v) for v in values) or any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError("options['grid_constructor'] returned times that are not finite and strictly monotonic "
                         "in the direction of t")
    if values[0] != t_ends[0] or values[-1] != t_ends[-1]:
        raise ValueError(f"options['grid_constructor'] must return a grid from t[0] = {sign * t_ends[0]:g} to "
                         f"t[-1] = {sign * t_ends[-1]:g}, got {sign * values[0]:g} .. {sign * values[-1]:g}")
    return values


def check_finite(y: Tensor, t: float, sign: float) -> None:
    if not all_finite(y):
        raise NonFiniteStateError("non_finite", sign * t, "the state became NaN/inf (try a smaller step_size)")


def check_adams_options(opts) -> None:
    """Checks an Adams method's ``max_order`` (1..ADAMS_MAX_ORDER) and ``max_iters`` (>= 1) in place."""
    opts.max_order = check.positive_int("max_order", opts.max_order)
    if opts.max_order > ADAMS_MAX_ORDER:
        raise ValueError(f"options['max_order'] must be at most {ADAMS_MAX_ORDER}, got {opts.max_order}")
    opts.max_iters = check.positive_int("max_iters", opts.max_iters)


def core_first(core, fn, grid: list[float], y0: Tensor, t_out: list[float],
               hooks: LoopHooks) -> tuple[list[Tensor] | None, Tensor | None]:
    """A grid's solve in the C++ loop (``core``, a CoreSolver or None) when it can run it (no hook, nothing recorded):
    (outputs, None); else (None, f(t0, y0) if it was evaluated to find out whether autograd records this solve, for
    the first step)."""
    if core is None or hooks or len(grid) < 2 or torch.compiler.is_compiling():
        return None, None
    f0 = None
    if torch.is_grad_enabled():
        if y0.requires_grad:
            return None, None
        f0 = fn(grid[0], y0)
        if f0.requires_grad:
            return None, f0
    return core.integrate(y0, t_out, f0), f0


class FixedGridLoop:
    """Steps through a grid with an explicit RK method; outputs by linear (or cubic) interpolation.

    ``perturb``: each step evaluates ``func`` one ulp after its start and its end stages one ulp before its
    end (torchdiffeq's ``perturb``), so a ``func`` discontinuous at grid points is never evaluated on the
    wrong side of one."""

    SUPPORTED_HOOKS = frozenset({"on_accept", "on_step"})  # see pyode._solvers.hooks

    def __init__(self, stepper: RKStepper, grid: list[float], stats: SolverStats, time_sign: float,
                 perturb: bool = False, core=None):
        self.stepper, self.grid, self.stats, self.time_sign = stepper, grid, stats, time_sign
        self.perturb = perturb
        self.core = core  # pyode._solvers.core_loop.CoreSolver: the C++ loop for solves that record nothing
        self.callbacks = step_callbacks(stepper.fn)  # func's callback_step hook, or None
        self.step_size, self.max_num_steps = None, 2**31 - 1  # of the event search (set by the problem)

    def step(self, t0: float, t1: float, y: Tensor, f0: Tensor | None = None) -> StepResult:
        """One step from ``(t0, y)`` to ``t1``, counted and checked (``f0``: f(t0, y) if already known)."""
        st = self.stepper
        if self.callbacks is not None:
            self.callbacks.step(t0, y, t1 - t0)
        if f0 is None:
            f0 = st.fn(st.fn.nudge(t0, 1.0) if self.perturb else t0, y)
        step = st.attempt(t0, y, f0, t1 - t0, ends_at_jump=self.perturb)
        self.stats.n_accepted += 1
        self.stats.t_reached = self.time_sign * t1
        check_finite(step.y1, t1, self.time_sign)
        return step

    def _end_derivative_from_left(self, step: StepResult, t1: float) -> None:
        """With perturb, an interpolant that needs ``f(t1)`` (cubic, non-FSAL) takes it one ulp before ``t1``,
        from the step's own piece (torchdiffeq evaluates it at ``t1`` itself)."""
        if self.perturb and step.f1 is None and getattr(self.stepper, "needs_f1", False):
            step.f1 = self.stepper.fn(self.stepper.fn.nudge(t1, -1.0), step.y1)

    def integrate(self, y0: Tensor, t_out: list[float], hooks: LoopHooks = NO_HOOKS) -> list[Tensor]:
        """The states at ``t_out`` as (m, n) blocks; ``hooks`` are called once per step."""
        outputs, f0 = core_first(self.core, self.stepper.fn, self.grid, y0, t_out, hooks)
        if outputs is not None:
            return outputs
        outputs, i = [y0.unsqueeze(0)], 1
        y = y0
        for t0, t1 in itertools.pairwise(self.grid):
            step = self.step(t0, t1, y, f0)
            f0 = None
            if (i < len(t_out) and t_out[i] < t1) or hooks.on_step is not None:  # the interpolant will be used
                self._end_derivative_from_left(step, t1)
            blocks, j = step_outputs(self.stepper, step, t1, t_out, i)
            outputs.extend(blocks)
            if hooks.on_accept is not None:
                hooks.on_accept(StepRecord(t0, t1 - t0, y.detach(), self.perturb, self.perturb, i, j))
            if hooks.on_step is not None:
                hooks.on_step(t0, t1, step, self.stepper)
            i, y = j, step.y1
        return outputs

    def until_event(self, y0: Tensor, t0: float, events) -> Tensor:
        """Steps ``t0 + k * step_size`` until ``events`` sees a sign change, then locates it on the step's
        interpolant (torchdiffeq's fixed-grid event handling). Returns the state there, (1, n)."""
        h = self.step_size
        if h is None:
            raise ValueError("event_fn with a fixed-grid method needs options['step_size'] (the steps are "
                             "t0 + k * step_size until the event)")
        y = y0
        for k in range(self.max_num_steps):
            step = self.step(t0 + k * h, t0 + (k + 1) * h, y)
            if events.crossed(self.stepper, step):
                self._end_derivative_from_left(step, step.t0 + h)
                return events.locate(self.stepper, step)
            y = step.y1
        raise MaxStepsError("max_num_steps", self.time_sign * (t0 + self.max_num_steps * h),
                            f"no event within max_num_steps={self.max_num_steps} steps of size {h:g}; raise "
                            "options['max_num_steps'] or check that event_fn changes sign")


class _LinearSteps:
    """Linear interpolation between a step's ends, with :class:`RKStepper`'s ``dense`` contract (the
    Adams methods' interpolant, as torchdiffeq's ``linear``)."""

    def __init__(self, kern):
        self.kern = kern

    def dense(self, step: StepResult, thetas: list[float]) -> Tensor:
        return self.kern.lincomb(step.y0, [step.y1, step.y0], [[th, -th] for th in thetas])


class AdamsLoop:
    """Adams-Bashforth (``explicit_adams``) or Adams-Bashforth-Moulton (``implicit_adams``/``fixed_adams``)
    of variable order on a grid, with torchdiffeq's meaning of the options:

    - the order grows with the history of past derivatives, up to ``max_order - 1`` steps of it; while
      fewer than 3 are known (the start), steps are RK4 (3/8 rule);
    - the implicit method corrects the predictor by fixed-point iteration, at most ``max_iters`` times,
      stopping once successive corrections agree to ``atol + rtol * |dy|`` (max norm); if they never do, it
      warns and drops the oldest derivative (a lower order for the next steps).

    Deliberate difference: a step whose size differs from the previous one restarts the history (the
    Adams weights assume equal spacing; torchdiffeq would apply them anyway), so a non-uniform grid keeps
    the method's accuracy. Outputs are interpolated linearly between grid points.
    """

    SUPPORTED_HOOKS = frozenset({"on_step"})  # no on_accept: a step record cannot replay a multistep step

    def __init__(self, fn, kern, grid: list[float], stats: SolverStats, time_sign: float, *, implicit: bool,
                 max_order: int, max_iters: int, rtol: float, atol: float, perturb: bool = False, core=None):
        self.fn, self.kern, self.grid, self.stats, self.time_sign = fn, kern, grid, stats, time_sign
        self.core = core  # pyode._solvers.core_loop.CoreSolver: the C++ loop for solves that record nothing
        self.implicit, self.max_iters, self.rtol, self.atol = implicit, max_iters, rtol, atol
        self.max_history, self.perturb = max_order - 1, perturb
        self.rk = RKStepper(RK4, fn, kern, interp="linear")
        self.stepper = _LinearSteps(kern)  # events locate on the linear interpolant
        self.history: list[Tensor] = []  # f at previous grid points, newest first
        self.last_h: float | None = None
        self.callbacks = step_callbacks(fn)  # func's callback_step hook, or None
        self.step_size, self.max_num_steps = None, 2**31 - 1  # of the event search (set by the problem)

    def _corrector(self, y: Tensor, dy: Tensor, history: list[Tensor], t1: float, h: float) -> Tensor:
        """Adams-Moulton fixed-point iteration from the predictor ``dy``; returns the corrected increment."""
        weights = adams_moulton(len(history) + 1)
        delta = self.kern.lincomb_row(None, history, [h * w for w in weights[1:]])
        t_eval = self.fn.nudge(t1, -1.0) if self.perturb else t1
        for _ in range(self.max_iters):
            dy_old = dy
            dy = self.kern.lincomb_row(delta, [self.fn(t_eval, y + dy)], [h * weights[0]])
            if _converged(dy_old, dy, self.rtol, self.atol):
                return dy
        warnings.warn("implicit_adams: the corrector iteration did not converge in options['max_iters'] = "
                      f"{self.max_iters} iterations; the solution may be inaccurate", RuntimeWarning, stacklevel=6)
        self.history.pop()
        return dy

    def step(self, t0: float, t1: float, y: Tensor, f0: Tensor | None = None) -> StepResult:
        """One step from ``(t0, y)`` to ``t1``, counted and checked (``f0``: f(t0, y) if already known)."""
        h = t1 - t0
        if self.callbacks is not None:
            self.callbacks.step(t0, y, h)
        if self.last_h is not None and not math.isclose(h, self.last_h, rel_tol=1e-9):
            self.history.clear()  # unequal spacing: the Adams weights no longer apply
        self.last_h = h
        if f0 is None:
            f0 = self.fn(self.fn.nudge(t0, 1.0) if self.perturb else t0, y)
        self.history.insert(0, f0)
        del self.history[max(self.max_history, 1):]
        order = min(len(self.history), self.max_history)
        if order < 3:
            y1 = self.rk.attempt(t0, y, f0, h, ends_at_jump=self.perturb).y1
        else:
            used = self.history[:order]
            dy = self.kern.lincomb_row(None, used, [h * w for w in adams_bashforth(order)])
            if self.implicit:
                dy = self._corrector(y, dy, used, t1, h)
            y1 = y + dy
        self.stats.n_accepted += 1
        self.stats.t_reached = self.time_sign * t1
        check_finite(y1, t1, self.time_sign)
        return StepResult(t0, h, y, y1, [], 0.0)

    def integrate(self, y0: Tensor, t_out: list[float], hooks: LoopHooks = NO_HOOKS) -> list[Tensor]:
        """The states at ``t_out`` as (m, n) blocks; ``hooks.on_step`` is called once per step."""
        outputs, f0 = core_first(self.core, self.fn, self.grid, y0, t_out, hooks)
        if outputs is not None:
            return outputs
        outputs, i, y = [y0.unsqueeze(0)], 1, y0
        for t0, t1 in itertools.pairwise(self.grid):
            step, f0 = self.step(t0, t1, y, f0), None
            j = bisect.bisect_right(t_out, t1, lo=i)
            if j > i:  # linear interpolation between grid points
                outputs.append(self.stepper.dense(step, [(tt - t0) / step.h for tt in t_out[i:j]]))
                i = j
            if hooks.on_step is not None:
                hooks.on_step(t0, t1, step, self.stepper)
            y = step.y1
        return outputs

    until_event = FixedGridLoop.until_event
    _end_derivative_from_left = FixedGridLoop._end_derivative_from_left  # linear: needs no f(t1)


def _converged(dy_old: Tensor, dy: Tensor, rtol: float, atol: float) -> bool:
    """torchdiffeq's corrector test: max |dy_old - dy| / (atol + rtol * max(|dy_old|, |dy|)) < 1."""
    with torch.no_grad():
        scale = atol + rtol * torch.maximum(dy_old.abs(), dy.abs())
        return bool(((dy_old - dy).abs() / scale).max() < 1) if dy.numel() else True
