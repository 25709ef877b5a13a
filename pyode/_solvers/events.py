"""Terminal events: stop at the first time ``event_fn(t, y)`` changes sign, located by bisection on the
step's interpolant (torchdiffeq semantics: the event time is located to ``atol``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from pyode._solvers.rk_step import RKStepper, StepResult


class EventLocator:
    """Watches the sign of ``event_fn`` at the end of each accepted step and locates the crossing.

    Args:
        event_fn: ``event_fn(t, y) -> scalar tensor`` with the user's ``t`` and ``y`` structure.
        fn: the :class:`FlatFunc` (for time and state conversion).
        tol: time tolerance of the located event.
    """

    def __init__(self, event_fn: Callable, fn, tol: float):
        self.event_fn, self.fn, self.tol = event_fn, fn, max(float(tol), 0.0)
        self.sign0 = 0.0
        self.event_t: float | None = None

    def _value(self, s: float, y: Tensor) -> float:
        value = self.value_or_nan(s, y)
        if math.isnan(value):  # a NaN has no sign: the event would silently never fire
            raise ValueError(f"event_fn(t, y) returned {value} at t = {-s if self.fn.reverse else s:.10g}; it must "
                             "not be NaN")
        return value

    def value_or_nan(self, s: float, y: Tensor) -> float:
        """The event's value at solver time ``s`` for the flat state ``y`` (n,), NaN where it is NaN (the C++
        loop then stops and the Python loop reruns the solve to raise :meth:`_value`'s error)."""
        with torch.no_grad():
            v = self.event_fn(self.fn.time_tensor(s), self.fn.unflatten(y.detach()))
        if not isinstance(v, Tensor) or v.numel() != 1:
            raise ValueError("event_fn(t, y) must return a tensor with a single element")
        return float(v)

    def start(self, s0: float, y0: Tensor) -> None:
        self.sign0 = math.copysign(1.0, self._value(s0, y0))

    def crossed(self, stepper: RKStepper, step: StepResult) -> bool:
        v = self._value(step.t0 + step.h, step.y1)
        return v == 0.0 or math.copysign(1.0, v) != self.sign0

    def locate(self, stepper: RKStepper, step: StepResult) -> Tensor:
        """Bisects the interpolant on the step; returns the state at the event, (1, n)."""
        lo, hi = 0.0, 1.0
        iters = 0 if self.tol <= 0 else math.ceil(math.log2(max(step.h / self.tol, 1.0)))
        for _ in range(max(iters, 1) + 1):
            mid = 0.5 * (lo + hi)
            y_mid = stepper.dense(step, [mid])[0]
            v = self._value(step.t0 + mid * step.h, y_mid)
            if v != 0.0 and math.copysign(1.0, v) == self.sign0:
                lo = mid
            else:
                hi = mid
            if (hi - lo) * step.h <= self.tol:
                break
        theta = hi  # the first point known to be past the crossing
        self.event_t = step.t0 + theta * step.h
        return stepper.dense(step, [theta])
