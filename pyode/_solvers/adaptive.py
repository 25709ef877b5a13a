"""The adaptive Runge-Kutta integration loop.

All step-size bookkeeping is in plain Python floats: the per-step cost outside ``func`` is the fused
kernel calls (one per stage, one for y1 + error norm) and a handful of float operations, with no tensor
ops and no host synchronisation beyond the norm the kernel returns.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pyode._solvers.callbacks import step_callbacks
from pyode._solvers.controller import (
    PIDController,
    initial_step,
    initial_step_error,
    uses_predictive,
    zero_scale_hint,
)
from pyode._solvers.events import EventLocator
from pyode._solvers.hooks import NO_HOOKS, LoopHooks
from pyode._solvers.rk_step import RKStepper, StepRecord, StepResult, step_outputs
from pyode.errors import MaxStepsError, NonFiniteStateError, StepSizeUnderflowError
from pyode.solution import SolverStats


@dataclass
class AdaptiveOptions:
    """Options of the adaptive solvers (names as in torchdiffeq, plus the PID coefficients)."""

    first_step: float | None = None
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    controller: str = "auto"     # "pid", "predictive" (Gustafsson), "auto": predictive for the stiff methods
    min_step: float = 0.0
    max_step: float = math.inf
    max_num_steps: int = 2**31 - 1
    step_t: list = field(default_factory=list)
    jump_t: list = field(default_factory=list)
    interp: str = "auto"
    per_sample: bool = False     # each batch row its own step size (see pyode._solvers.per_sample)
    on_failure: str = "raise"    # per_sample: "mark" finishes the other rows when one fails


def step_resolution(t: float) -> float:
    """The smallest step the loops take at time ``t``: 4 ulps of ``max(|t|, 1)``. A proposed step at or below it is
    a step-size underflow; a remainder below it before the next stop is taken in the step before (no sliver step).
    Twin: ``step_resolution`` in csrc/include/pyode/core/norms.h."""
    return 4.0 * math.ulp(max(abs(t), 1.0))


def check_step_resolution(opts: AdaptiveOptions, t0: float, time_sign: float) -> None:
    """``first_step`` and ``max_step`` must exceed the resolution of t at ``t0`` (solver time): the
    step-underflow threshold of the loops' progress checks, below which the solver could not advance."""
    resolution = step_resolution(t0)
    for name in ("first_step", "max_step"):
        value = getattr(opts, name)
        if value is not None and value <= resolution:
            raise ValueError(f"options[{name!r}] = {value:g} is below the resolution of t near "
                             f"t0 = {time_sign * t0:g} (the solver could not advance); use a larger value")


class StallWatch:
    """Detects a solve that cannot make progress at the edge of its dtype's range (y' = 100 y in float32 near
    1e36): every step large enough to change the state makes it, or func's output, overflow (a NaN/inf error
    ratio: rejected, shrunk), and the steps that stay finite are too small to change the state in its
    precision, so t creeps on (in float64) while y stands still, for ever. Counted per state change: after a
    NaN/inf rejection, ``LIMIT`` accepted steps that leave the state bitwise unchanged raise
    :class:`NonFiniteStateError`. Costs nothing until a step's error ratio is NaN/inf."""

    LIMIT = 4

    def __init__(self, time_sign: float):
        self.time_sign, self.non_finite, self.stalled = time_sign, 0, 0

    def rejected(self, ratio: float) -> None:
        if not math.isfinite(ratio):
            self.non_finite += 1

    def accepted(self, t: float, y0: Tensor, y1: Tensor) -> None:
        """After an accepted step from ``y0`` to ``y1`` ending at ``t`` (solver time)."""
        if not self.non_finite:
            return
        if not torch.equal(y0, y1):
            self.non_finite = self.stalled = 0
            return
        self.stalled += 1
        if self.stalled >= self.LIMIT:
            raise NonFiniteStateError("non_finite", self.time_sign * t, stall_message(y1))


def stall_message(y: Tensor) -> str:
    """The reason of a :class:`StallWatch` failure, with the state's size against its dtype's range."""
    biggest = float(y.detach().abs().max()) if y.numel() else 0.0
    return (f"the solve cannot make progress: every step that changes the state makes it or func's output NaN/inf, "
            f"and smaller steps no longer change the state in {y.dtype} (max |y| = {biggest:.3g}; {y.dtype} ends at "
            f"{torch.finfo(y.dtype).max:.3g}): the solution overflows {y.dtype} here, or func is singular; use "
            "float64 or rescale the problem")


def segment_scaled_norm(stepper):
    """The initial-step heuristic's scaled norm for a stepper whose error ratio is the max of per-segment RMS
    norms over its first ``norm_segments`` segments (the mixed norm of tuple states, the adjoint's seminorm):
    the same max, so both use one norm as in torchdiffeq. None: the kernel's RMS over everything."""
    segments, count = getattr(stepper, "segments", None), getattr(stepper, "norm_segments", None)
    if segments is None or count is None:
        return None
    base = stepper.kern.scaled_norm
    bounds = [(i, j) for i, j in itertools.pairwise(segments.offsets[:count + 1]) if j > i]

    def norm(a: Tensor, b: Tensor | None, y: Tensor, atol: float, rtol: float) -> float:
        return max((base(a[i:j], None if b is None else b[i:j], y[i:j], atol, rtol) for i, j in bounds),
                   default=0.0)

    return norm


class AdaptiveLoop:
    """Integrates ``fn`` from ``t_out[0]`` through increasing output times with an embedded RK pair.

    Output times never force a step: they are filled in with the step's interpolant. ``step_t`` points
    are stepped onto exactly; ``jump_t`` points too, and ``f`` is re-evaluated just after them
    (a discontinuity in ``f``). The final step is clamped to the last output time.
    """

    SUPPORTED_HOOKS = frozenset({"on_accept", "on_step"})  # see pyode._solvers.hooks

    def __init__(self, stepper: RKStepper, opts: AdaptiveOptions, stats: SolverStats, time_sign: float, core=None):
        self.stepper, self.opts, self.stats, self.time_sign = stepper, opts, stats, time_sign
        self.core = core  # pyode._solvers.core_loop.CoreSolver: the C++ loop for solves that record nothing
        order = stepper.tableau.order
        self.controller = PIDController(order=order, safety=opts.safety, ifactor=opts.ifactor,
                                        dfactor=opts.dfactor, pcoeff=opts.pcoeff, icoeff=opts.icoeff,
                                        dcoeff=opts.dcoeff, min_step=opts.min_step, max_step=opts.max_step,
                                        predictive=uses_predictive(opts.controller, stepper))
        self.stops = sorted(set(opts.step_t) | set(opts.jump_t))
        self.jumps = set(opts.jump_t)
        self.stall = StallWatch(time_sign)
        self.callbacks = step_callbacks(stepper.fn)  # func's callback_step/accept/reject hooks, or None

    def _first_step(self, t0: float, y0: Tensor, f0: Tensor) -> float:
        check_step_resolution(self.opts, t0, self.time_sign)
        if self.opts.first_step is not None:
            h = float(self.opts.first_step)
        else:
            st = self.stepper
            h = initial_step(st.fn, st.kern, t0, y0, f0, st.tableau.order, st.rtol, st.atol,
                             norm=segment_scaled_norm(st))
        # min_step and max_step bound every step, the first included (a NaN h stays NaN for the caller).
        return h if math.isnan(h) else min(max(h, self.opts.min_step), self.opts.max_step)

    def _clamp(self, t: float, h: float, t_end: float) -> float:
        """Shortens ``h`` to land on the next step_t/jump_t point or the end time, exactly: ``t + (target - t)``
        can round one ulp short of it (for t < target / 2), and the step after it would be one ulp long, its
        successor below the resolution of t (a StepSizeUnderflowError, or a dozen needless steps). A step that
        would leave less than the resolution of t before the target stretches to it, for the same reason."""
        target = t_end
        if self.stops:
            i = bisect.bisect_right(self.stops, t)
            if i < len(self.stops) and self.stops[i] < target:
                target = self.stops[i]
        if h < target - t - step_resolution(target):
            return h
        h = target - t
        while t + h < target:  # at most a couple of ulps
            h = math.nextafter(h, math.inf)
        return h

    def _check_progress(self, t: float, h: float, step: StepResult) -> None:
        self.stats.t_reached = self.time_sign * t
        if self.stats.n_steps >= self.opts.max_num_steps:
            raise MaxStepsError("max_num_steps", self.time_sign * t,
                                f"max_num_steps={self.opts.max_num_steps} exceeded; raise options['max_num_steps'] "
                                "or loosen rtol/atol (the problem may be stiff)")
        if not h > step_resolution(t):  # written so that a NaN h stops here too
            self._raise_stepper_failure(t)
            if not math.isfinite(step.ratio):
                hint = zero_scale_hint(self.stepper.atol, self.stepper.rtol, step.y0)
                raise NonFiniteStateError("non_finite", self.time_sign * t,
                                          f"the state or func's output became NaN/inf and shrinking the "
                                          f"step did not help{'; ' + hint if hint else ''}")
            raise StepSizeUnderflowError("step_underflow", self.time_sign * t,
                                         f"step size underflow (h = {h:.3g}); the problem may be stiff or "
                                         "singular here")

    def _raise_stepper_failure(self, t: float) -> None:
        """A stepper that failed for its own reason (an implicit method's Newton solve) says so at the
        minimum step, rather than the generic NaN/underflow message."""
        describe = getattr(self.stepper, "failure_error", None)
        failure = describe(self.time_sign * t) if describe is not None else None
        if failure is not None:
            raise failure

    def _check_shrinks(self, t: float, h_step: float, h_next: float, step: StepResult) -> None:
        """A rejected step must be retried smaller; otherwise the same step would be retried forever."""
        if h_next >= h_step:
            self._raise_stepper_failure(t)
            why = (f"error ratio {step.ratio:.3g}" if math.isfinite(step.ratio) else
                   "the state or func's output became NaN/inf")
            raise StepSizeUnderflowError(
                "step_underflow", self.time_sign * t,
                f"a step of size {h_step:.3g} was rejected ({why}) but the controller cannot shrink it "
                f"(min_step = {self.opts.min_step:g}); lower options['min_step'], check the pcoeff/icoeff/dcoeff "
                "coefficients, or loosen rtol/atol")

    def _runs_in_core(self, y0: Tensor, f0: Tensor, hooks: LoopHooks) -> bool:
        """Whether this solve runs in the C++ loop: one exists for it, and nothing needs the Python loop's
        per-step tensors (autograd's graph, any hook), and torch.compile is not tracing it (its graph cannot
        hold the loop's C callbacks)."""
        return (self.core is not None and not hooks
                and not torch.compiler.is_compiling()
                and not (torch.is_grad_enabled() and (y0.requires_grad or f0.requires_grad)))

    def integrate(self, y0: Tensor, t_out: list[float], events: EventLocator | None = None,
                  hooks: LoopHooks = NO_HOOKS) -> list[Tensor]:
        """Returns the states at ``t_out`` as a list of (m, n) blocks (first block: ``y0[None]``); calls
        ``hooks`` once per accepted step (:mod:`pyode._solvers.hooks`)."""
        st, stats, callbacks = self.stepper, self.stats, self.callbacks
        t, y, t_end = t_out[0], y0, t_out[-1]
        f0 = st.fn(st.fn.nudge(t, 1.0) if t in self.jumps else t, y)  # a jump at t0: its right piece
        if self._runs_in_core(y0, f0, hooks):
            outputs = self.core.integrate(y0, t_out, None if t in self.jumps else f0, events)
            if outputs is not None:
                return outputs
        h = self._first_step(t, y, f0)
        if not (math.isfinite(h) and h > 0):
            raise initial_step_error(self.time_sign * t, y, f0, st.atol, st.rtol)
        outputs, next_out = [y0.unsqueeze(0)], 1
        stats.t_reached = self.time_sign * t
        while t < t_end and next_out < len(t_out):
            h_step = self._clamp(t, h, t_end)
            if callbacks is not None:
                callbacks.step(t, y, h_step)
            step = st.attempt(t, y, f0, h_step, ends_at_jump=(t + h_step) in self.jumps)
            accepted = step.ratio <= 1.0
            if callbacks is not None:
                (callbacks.accept if accepted else callbacks.reject)(t, y, h_step)
            h = self.controller.next_step(h_step, step.ratio, accepted)
            if not accepted:
                stats.n_rejected += 1
                self.stall.rejected(step.ratio)
                self._check_progress(t, h, step)
                self._check_shrinks(t, h_step, h, step)
                continue
            stats.n_accepted += 1
            t1 = min(t_end, t + h_step)
            self.stall.accepted(t1, y, step.y1)
            if t1 in self.jumps and st.needs_f1:  # the interpolant's f(t1) from the left piece, not at the jump
                step.f1 = st.fn(st.fn.nudge(t1, -1.0), step.y1)
            if events is not None and events.crossed(st, step):
                return [events.locate(st, step)]
            blocks, j = step_outputs(st, step, t1, t_out, next_out)
            outputs.extend(blocks)
            if hooks.on_accept is not None:
                hooks.on_accept(StepRecord(t, h_step, y.detach(), t1 in self.jumps, t in self.jumps, next_out, j))
            if hooks.on_step is not None:
                hooks.on_step(t, t1, step, st)
            next_out = j
            t, y = t1, step.y1
            # Just after a jump_t point, f is evaluated on its right piece.
            f0 = st.end_derivative(step) if t not in self.jumps else st.fn(st.fn.nudge(t, 1.0), y)
            self.stats.t_reached = self.time_sign * t
            if t < t_end:  # at the end, the step size proposed next is never taken
                self._check_progress(t, h, step)
        return outputs
