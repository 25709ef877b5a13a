"""Error norms computed in Python on the user's state structure: ``options={"norm": callable}``, and the
complex states' norm on ``|.|`` (torchdiffeq's semantics for both).

The compiled kernels compute the RMS norm over the flat real state in the same pass as ``y1``. A complex
state is stored as real pairs there, so its RMS over pairs and its tolerance ``atol + rtol * max(|re|, |im|)``
would differ from torchdiffeq's, which scales each element by ``atol + rtol * max(|y0|, |y1|)`` on complex
magnitudes and averages ``|ratio|^2`` over complex elements. :class:`NormKernels` wraps a kernel backend so
that ``y1`` still comes from the fused kernel while the error ratio goes through the norm given here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from pyode._kernels.backend import KernelBackend
from pyode._validation import all_finite


def rms_norm(x: Tensor) -> Tensor:
    """torchdiffeq's ``_rms_norm``: ``sqrt(mean(|x|^2))`` (over complex magnitudes for a complex x)."""
    return x.abs().pow(2).mean().sqrt() if x.numel() else x.new_zeros((), dtype=x.abs().dtype)


def mixed_norm(xs: tuple[Tensor, ...]) -> Tensor | float:
    """torchdiffeq's ``_mixed_norm`` for tuple states: the largest RMS norm of the components."""
    return max((rms_norm(x) for x in xs), default=0.0)


class StructuredNorm:
    """``norm(ratio)`` for a flat real ratio (n,): unflattened to the user's structure first (complex views,
    tuple components), then checked to be one finite number.

    Args:
        norm: the user's ``options['norm']`` or None (then :func:`rms_norm`, or :func:`mixed_norm` for a
            tuple state, as torchdiffeq); unflatten: (n,) -> the user's structure (see :class:`FlatFunc`).
    """

    def __init__(self, norm: Callable | None, unflatten: Callable, is_tuple: bool):
        self.user = norm
        self.norm = norm if norm is not None else (mixed_norm if is_tuple else rms_norm)
        self.unflatten = unflatten

    def __call__(self, ratio: Tensor) -> float:
        value = self.norm(self.unflatten(ratio))
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise ValueError(f"options['norm'] must return a scalar (one-element tensor or float), got shape "
                                 f"{tuple(value.shape)}")
            value = value.detach().abs().double().item()
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = abs(float(value))
        else:
            raise TypeError(f"options['norm'] must return a scalar tensor or float, got {type(value).__name__}")
        # A non-finite ratio (a NaN state) legitimately gives a non-finite norm: the step is then rejected.
        # From finite input it is the norm's own fault and would silently stall the solve.
        if not math.isfinite(value) and self.user is not None and all_finite(ratio):
            raise ValueError(f"options['norm'] returned {value} for a finite input; it must return a finite "
                             "non-negative number")
        return value


def pair_magnitude(y: Tensor) -> Tensor:
    """|z| of each complex element of a flat real-pair vector (2m,), repeated for both entries: (2m,)."""
    return torch.linalg.vector_norm(y.view(-1, 2), dim=-1, keepdim=True).expand(-1, 2).reshape(-1)


class NormKernels(KernelBackend):
    """A kernel backend whose error norms come from ``norm`` (a :class:`StructuredNorm`) instead of the
    kernels' flat RMS. ``complex_pairs``: the flat state holds complex numbers as real pairs, so the
    tolerance scales by complex magnitudes. ``tolerances``: per-element rtol/atol (:mod:`tolerances`) that
    replace the scalar ones. Has no compiled workspace: steps take the per-call path."""

    def __init__(self, base, norm: StructuredNorm, complex_pairs: bool, tolerances=None):
        self.base, self.norm, self.complex_pairs = base, norm, complex_pairs
        self.tolerances = tolerances
        self.name, self.device_type = f"{base.name}+norm", base.device_type
        self.lincomb, self.lincomb_row = base.lincomb, base.lincomb_row

    def _tolerances(self, atol: float, rtol: float):
        """The per-element tolerances where given, else the scalar ones."""
        if self.tolerances is None:
            return atol, rtol
        return self.tolerances.atol, self.tolerances.rtol

    def _magnitude(self, y: Tensor) -> Tensor:
        y = y.detach()
        if y.dtype in (torch.float16, torch.bfloat16):  # as the kernels: atol would round to 0 in half
            y = y.float()
        return pair_magnitude(y) if self.complex_pairs else y.abs()

    def rk_finish(self, y0: Tensor, y1: Tensor | None, ks, b, e, atol: float, rtol: float, segments=None):
        """Same contract as :func:`pyode._kernels.reference.rk_finish` (no per-segment norms)."""
        y1, _, _ = self.base.rk_finish(y0, y1, ks, b, None, atol, rtol, None)
        if e is None:
            return y1, 0.0, None
        with torch.no_grad():
            err = self.base.lincomb_row(None, [k.detach() for k in ks], e)
            atol, rtol = self._tolerances(atol, rtol)
            scale = atol + rtol * torch.maximum(self._magnitude(y0), self._magnitude(y1))
            return y1, self.norm(err.to(scale.dtype) / scale), None

    def scaled_norm(self, a: Tensor, b: Tensor | None, y: Tensor, atol: float, rtol: float) -> float:
        """``norm((a - b) / (atol + rtol * |y|))``, the initial-step heuristic's norm (torchdiffeq's)."""
        with torch.no_grad():
            diff = a.detach() if b is None else a.detach() - b.detach()
            atol, rtol = self._tolerances(atol, rtol)
            scale = atol + rtol * self._magnitude(y)
            return self.norm(diff.to(scale.dtype) / scale)
