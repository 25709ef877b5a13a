"""Step-size control: one PID controller (I and PI are special cases) and the initial-step heuristic.

The controller's formula is written once (:func:`step_factor`) over a tiny arithmetic namespace, so the joint
loop runs it on Python floats (no tensor op per step) and the per-sample loop on (batch,) tensors, one value
per row. The compiled per-sample rounds apply the same formula in C++ (``csrc/include/pyode/controller.h``)
with the gains of :func:`pid_gains`; tests check the three take the same steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pyode import _tuning
from pyode._solvers import scratch
from pyode._validation import all_finite
from pyode.errors import NonFiniteStateError

RATIO_FLOOR = 1e-300    # an error ratio of 0 is read as this (log(0) = -inf; the factor is then ifactor)
HISTORY_FLOOR = 1e-10   # past ratios are kept at least this large (a zero would weigh forever)
_LOG_CAP = 700.0        # exp() of more overflows a double; the factor is clipped to ifactor long before
REJECT_FACTOR_MAX = 0.9  # a rejected step shrinks at least this much (unless dfactor forbids it)


@dataclass(frozen=True)
class Gains:
    """What :func:`step_factor` needs: the exponents on r_n, r_{n-1}, r_{n-2} and the clipping bounds."""

    b1: float
    b2: float
    b3: float
    safety: float
    ifactor: float
    dfactor: float
    log_safety: float = field(init=False)  # derived once: step_factor runs every step
    log_cap: float = field(init=False)
    reject_upper: float = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "log_safety", math.log(self.safety))
        object.__setattr__(self, "log_cap", min(math.log(self.ifactor) + 1.0, _LOG_CAP))
        object.__setattr__(self, "reject_upper", min(self.safety, REJECT_FACTOR_MAX))


def pid_gains(order: int, pcoeff: float, icoeff: float, dcoeff: float, safety: float = 0.9,
              ifactor: float = 10.0, dfactor: float = 0.2) -> Gains:
    """Söderlind's PID gains in diffrax's convention: ``b1 = (p + i + d) / k``, ``b2 = -(p + 2d) / k``,
    ``b3 = d / k`` with ``k = order``."""
    k = float(order)
    return Gains((pcoeff + icoeff + dcoeff) / k, -(pcoeff + 2.0 * dcoeff) / k, dcoeff / k, safety, ifactor, dfactor)


class _FloatOps:
    """Python-float arithmetic for :func:`step_factor` (the joint loop)."""

    log, exp, isfinite = staticmethod(math.log), staticmethod(math.exp), staticmethod(math.isfinite)

    @staticmethod
    def where(cond, a, b):
        return a if cond else b

    @staticmethod
    def clip(x, lo, hi):
        return min(max(x, lo), hi)

    minimum = staticmethod(min)

    @staticmethod
    def both(a, b):
        return a and b


class _TensorOps:
    """The same on (batch,) float64 tensors (the per-sample loop: every row at once)."""

    log, exp, isfinite = torch.log, torch.exp, torch.isfinite

    @staticmethod
    def where(cond, a, b):
        if not isinstance(a, Tensor) and not isinstance(b, Tensor):  # two numbers: float64, not the default dtype
            a = torch.tensor(a, dtype=torch.float64, device=cond.device)
        return torch.where(cond, a, b)

    @staticmethod
    def clip(x, lo, hi):
        return torch.clamp(torch.clamp(x, min=lo), max=hi)

    @staticmethod
    def minimum(a, b):
        return torch.clamp(a, max=b) if not isinstance(b, Tensor) else torch.minimum(a, b)

    @staticmethod
    def both(a, b):
        return a & b


FLOAT_OPS, TENSOR_OPS = _FloatOps, _TensorOps


def step_factor(ops, g: Gains, ratio, prev1, prev2, accepted):
    """``h_next / h`` after a step with error ratio ``ratio`` (accept when <= 1); ``prev1``, ``prev2``: the
    ratios of the last two accepted steps (1.0 before there are any).

    ``safety * r^-b1 * prev1^-b2 * prev2^-b3`` clipped to ``[1, ifactor]`` after an accepted step (torchdiffeq's:
    accepted steps never shrink) and to ``[dfactor, min(safety, 0.9)]`` after a rejected one (diffrax's cap: with
    safety = 1, or a PID history term above 1, a rejected step would shrink by a hair, 1 - 4e-13 was seen, and
    be retried for ever; dfactor wins where the two cross); a NaN/inf ratio shrinks by ``dfactor`` (the callers
    raise once the step underflows). Evaluated in log space, so no gain and no ratio can overflow (``r ** b`` of
    a large gain would raise OverflowError on floats).
    ``ops``: :data:`FLOAT_OPS` (floats) or :data:`TENSOR_OPS` ((batch,) tensors, one value per row)."""
    finite = ops.isfinite(ratio)
    r = ops.clip(ops.where(finite, ratio, 1.0), RATIO_FLOOR, math.inf)
    log_factor = g.log_safety - g.b1 * ops.log(r)
    if g.b2:  # zero for the default I controller: skip the history terms' logs
        log_factor = log_factor - g.b2 * ops.log(prev1)
    if g.b3:
        log_factor = log_factor - g.b3 * ops.log(prev2)
    factor = ops.exp(ops.clip(log_factor, -_LOG_CAP, g.log_cap))
    upper = ops.where(accepted, g.ifactor, g.reject_upper)
    factor = ops.clip(ops.clip(factor, 0.0, upper), ops.where(accepted, 1.0, g.dfactor), math.inf)
    return ops.where(finite, factor, g.dfactor)


PREDICTIVE_RATIO_FLOOR = 1e-2  # the last accepted ratio is kept at least this large (as in RADAU5 and RODAS)


def predictive_factor(ops, g: Gains, order: int, factor, h, ratio, accepted, state):
    """Gustafsson's predictive controller (Hairer & Wanner II, IV.8, (8.25); RADAU5's and RODAS's default) on
    top of :func:`step_factor`'s ``factor``. After an accepted step of size ``h`` with ratio ``r``, whose previous
    accepted step had size ``h_acc`` and ratio ``r_acc``, the factor is at most
    ``safety * (h / h_acc) * (r_acc / r^2)^(1/order)`` (clipped to ``[dfactor, ifactor]``; it may be below 1),
    and at most 1 right after a rejected step. It damps the step growth that a sudden drop of the error estimate
    would cause, which is where stiff solves misjudge steps.

    Args:
        state: ``(h_acc, r_acc, after_reject)``; ``h_acc = 0``: no accepted step yet; ``after_reject``: the last
            step was rejected. Floats (FLOAT_OPS) or (batch,) tensors (TENSOR_OPS).
    Returns:
        (factor, state after this step). Twin of ``predictive_bound`` in ``csrc/include/pyode/controller.h``."""
    h_acc, r_acc, after_reject = state
    good = ops.both(accepted, ops.isfinite(ratio))
    r = ops.clip(ops.where(ops.isfinite(ratio), ratio, 1.0), RATIO_FLOOR, math.inf)
    have = h_acc > 0.0
    log_bound = g.log_safety + ops.log(h / ops.where(have, h_acc, h)) + (ops.log(r_acc) - 2.0 * ops.log(r)) / order
    bound = ops.clip(ops.exp(ops.clip(log_bound, -_LOG_CAP, _LOG_CAP)), g.dfactor, g.ifactor)
    factor = ops.where(ops.both(good, have), ops.minimum(factor, bound), factor)
    factor = ops.where(ops.both(good, after_reject), ops.minimum(factor, 1.0), factor)
    state = (ops.where(good, h, h_acc), ops.where(good, ops.clip(r, PREDICTIVE_RATIO_FLOOR, math.inf), r_acc),
             ops.where(good, False, True) if ops is FLOAT_OPS else ~good)
    return factor, state


def uses_predictive(choice: str, stepper) -> bool:
    """Whether a solve adds :func:`predictive_factor` to the PID controller: ``options["controller"]`` is
    "predictive", or "auto" and the stepper's ``default_controller`` is (the stiff methods', as in RADAU5 and
    RODAS; explicit methods keep torchdiffeq's controller, so both libraries take the same steps)."""
    return choice == "predictive" or (choice == "auto" and getattr(stepper, "default_controller", "pid") == "predictive")


def next_history(ops, ratio, prev1, prev2, accepted):
    """``(prev1, prev2)`` after a step: an accepted step with a finite ratio pushes ``max(ratio, 1e-10)``."""
    push = ops.isfinite(ratio) & accepted if ops is TENSOR_OPS else (accepted and math.isfinite(ratio))
    new1 = ops.where(push, ops.clip(ops.where(push, ratio, 1.0), HISTORY_FLOOR, math.inf), prev1)
    return new1, ops.where(push, prev1, prev2)


@dataclass
class PIDController:
    """Söderlind's PID step-size controller on the error ratio r (accept when r <= 1): :func:`step_factor`
    on Python floats, with the ratio history of this solve.

    The default ``(p, i, d) = (0, 1, 0)`` is the I controller of torchdiffeq, whose defaults (safety 0.9,
    ifactor 10, dfactor 0.2, no shrinking after an accepted step) are copied so that both libraries take the
    same steps. Past ratios come from accepted steps only.
    """

    order: int
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    min_step: float = 0.0
    max_step: float = math.inf
    predictive: bool = False  # Gustafsson's bound on top (predictive_factor)

    def __post_init__(self):
        self.gains = pid_gains(self.order, self.pcoeff, self.icoeff, self.dcoeff, self.safety, self.ifactor,
                               self.dfactor)
        self._prev = (1.0, 1.0)  # r_{n-1}, r_{n-2}
        self._predictive_state = (0.0, 1.0, False)

    def next_step(self, h: float, ratio: float, accepted: bool) -> float:
        """The next step size after a step of size ``h`` (> 0) with error ratio ``ratio``."""
        factor = step_factor(FLOAT_OPS, self.gains, ratio, *self._prev, accepted)
        if self.predictive:
            factor, self._predictive_state = predictive_factor(FLOAT_OPS, self.gains, self.order, factor, h, ratio,
                                                               accepted, self._predictive_state)
        self._prev = next_history(FLOAT_OPS, ratio, *self._prev, accepted)
        return min(max(h * factor, self.min_step), self.max_step)


def initial_step(fn, kern, t0: float, y0: Tensor, f0: Tensor, order: int, rtol: float, atol: float,
                 norm=None) -> float:
    """Hairer, Nørsett & Wanner (1993), II.4's starting step, as torchdiffeq computes it (one extra call).

    ``order`` is the method's order (torchdiffeq passes ``order - 1`` to the textbook formula's ``q``, so
    the final exponent is ``1 / order``). Three fused norm passes (``kern.scaled_norm``) and one
    ``lincomb`` instead of a dozen tensor ops.

    Args:
        fn: the flat function; kern: the kernel backend; y0, f0: (n,) state and derivative at ``t0``.
        norm: ``norm(a, b, y, atol, rtol) -> float`` as ``kern.scaled_norm``; None: the kernel's RMS. Solves
            whose error ratio is a mixed norm or the adjoint's seminorm pass theirs (torchdiffeq uses one
            norm for both).
    """
    if norm is None:
        norm = kern.scaled_norm
    with torch.no_grad():
        y0, f0 = y0.reshape(-1), f0.reshape(-1)
        d0, d1 = norm(y0, None, y0, atol, rtol), norm(f0, None, y0, atol, rtol)
        if not (math.isfinite(d0) and math.isfinite(d1)):
            return math.nan  # f0 (or the scaled y0) is NaN/inf: the caller reports it at the initial time
        h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        if h0 == 0.0:  # d1 so large that h0 underflowed: no usable step exists
            return math.nan
        f1 = fn(t0 + h0, _euler_probe(kern, y0, f0, h0)).reshape(-1)
        d2 = norm(f1, f0, y0, atol, rtol) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / order)
    return min(100.0 * h0, h1)


def _euler_probe(kern, y0: Tensor, f0: Tensor, h0: float) -> Tensor:
    """``y0 + h0 f0`` (n,); a large CPU state goes into a pooled buffer (see :mod:`scratch`)."""
    if not kern.fused_out or y0.device.type != "cpu" or y0.numel() * y0.element_size() < _tuning.POOL_MIN_BYTES:
        return kern.lincomb_row(y0, [f0], [h0])
    return kern.lincomb_raw(y0, [f0], [[h0]], like=y0, out=scratch.POOL.take(y0).view(1, -1))[0]


def initial_step_error(t0: float, y0: Tensor, f0: Tensor, atol: float, rtol: float) -> Exception:
    """Why :func:`initial_step` found no step (it returned NaN), as the exception to raise.

    Args:
        t0: the initial time in the caller's direction; y0, f0: the state and ``func``'s output there."""
    if not all_finite(f0):
        return NonFiniteStateError("non_finite", t0, "func returned NaN/inf at the initial time "
                                   "(no initial step size exists)")
    hint = zero_scale_hint(atol, rtol, y0)
    if hint:
        return ValueError(f"no initial step size exists: {hint}, or give options['first_step']")
    biggest = float(f0.detach().abs().max()) if f0.numel() else 0.0
    return NonFiniteStateError("non_finite", t0, f"no initial step size exists: func's output at the initial "
                               f"time (max |f| = {biggest:.3g}) is so large against the tolerance scale "
                               "atol + rtol*|y0| that any step underflows; check func, or give options['first_step']")


def zero_scale_hint(atol: float, rtol: float, y: Tensor) -> str:
    """A sentence naming atol/rtol when the error scale ``atol + rtol * |y|`` is 0 somewhere (``atol = 0`` and a
    component of ``y`` exactly 0: the error ratio there is 0/0 = NaN); "" otherwise."""
    if atol != 0.0 or y.numel() == 0 or not bool((y.detach() == 0).any()):
        return ""
    return (f"atol = 0 and y has components equal to 0, so the tolerance scale atol + rtol*|y| (rtol = {rtol:g}) "
            "is 0 there and the error ratio is 0/0; set atol > 0 (e.g. 1e-9)")
