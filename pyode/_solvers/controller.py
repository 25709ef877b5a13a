"""Step-size control: one PID controller (I and PI are special cases) and the initial-step heuristic."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pyode._kernels import reference
from pyode._solvers import scratch


@dataclass
class PIDController:
    """Söderlind's PID step-size controller on the error ratio r (accept when r <= 1).

    ``h_next = h * clip(safety * r_n^(-b1) * r_{n-1}^(-b2) * r_{n-2}^(-b3), dfactor, ifactor)`` with
    ``b1 = (p + i + d) / k``, ``b2 = -(p + 2d) / k``, ``b3 = d / k`` and ``k = order`` (diffrax's
    convention). The default ``(p, i, d) = (0, 1, 0)`` is the I controller of torchdiffeq, whose
    defaults (safety 0.9, ifactor 10, dfactor 0.2, no shrinking after an accepted step) are copied so
    that both libraries take the same steps. Past ratios come from accepted steps only.
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

    def __post_init__(self):
        k = float(self.order)
        self._b1 = (self.pcoeff + self.icoeff + self.dcoeff) / k
        self._b2 = -(self.pcoeff + 2.0 * self.dcoeff) / k
        self._b3 = self.dcoeff / k
        self._prev = [1.0, 1.0]  # r_{n-1}, r_{n-2}

    def next_step(self, h: float, ratio: float, accepted: bool) -> float:
        """The next step size after a step of size ``h`` (> 0) with error ratio ``ratio``."""
        if not math.isfinite(ratio):
            factor = self.dfactor  # NaN/inf error: shrink hard; the caller raises on underflow
        elif ratio == 0.0:
            factor = self.ifactor
        else:
            factor = self.safety * ratio ** (-self._b1)
            if self._b2:
                factor *= self._prev[0] ** (-self._b2)
            if self._b3:
                factor *= self._prev[1] ** (-self._b3)
            lower = 1.0 if accepted else self.dfactor
            factor = min(self.ifactor, max(factor, lower))
        if accepted and math.isfinite(ratio):
            self._prev = [max(ratio, 1e-10), self._prev[0]]
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
        norm = getattr(kern, "scaled_norm", reference.scaled_norm)  # backends without it use the reference
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
    raw = getattr(kern, "lincomb_raw", None)
    if raw is None or y0.device.type != "cpu" or y0.numel() * y0.element_size() < scratch.MIN_BYTES:
        return kern.lincomb_row(y0, [f0], [h0])
    return raw(y0, [f0], [[h0]], like=y0, out=scratch.POOL.take(y0).view(1, -1))[0]
