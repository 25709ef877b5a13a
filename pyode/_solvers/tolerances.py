"""Per-component and per-element tolerances (torchdiffeq's): ``rtol``/``atol`` as a tuple with one entry per
tuple component of ``y0``, or as a tensor broadcastable to a tensor ``y0``.

The compiled kernels take scalar tolerances; per-element ones go through :class:`NormKernels` (the error
ratio in Python, as torchdiffeq computes it: ``err / (atol + rtol * max(|y0|, |y1|))`` elementwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pyode import _validation as check


@dataclass
class ToleranceVectors:
    """Flat per-element tolerances over the solver's real state (n,): a complex element's two entries share
    its value."""

    rtol: Tensor
    atol: Tensor

    def both_zero(self) -> bool:
        return bool(((self.rtol == 0) & (self.atol == 0)).any())


def is_per_element(value) -> bool:
    """A tuple/list or a tensor of more than one element: torchdiffeq's per-component/per-element tolerance."""
    return isinstance(value, (tuple, list)) or (isinstance(value, Tensor) and value.numel() != 1)


def split(rtol, atol, states: list[Tensor], is_tuple: bool) -> tuple[float, float, ToleranceVectors | None]:
    """Returns scalar ``rtol``, ``atol`` (the smallest values: for the kernels' arguments, messages and the
    event tolerance) and the per-element vectors when either tolerance is per component/element, else None."""
    if not (is_per_element(rtol) or is_per_element(atol)):
        return check.check_tolerance("rtol", rtol), check.check_tolerance("atol", atol), None
    vectors = [_vector(name, value, states, is_tuple) for name, value in (("rtol", rtol), ("atol", atol))]
    return float(vectors[0].min()), float(vectors[1].min()), ToleranceVectors(*vectors)


def _vector(name: str, value, states: list[Tensor], is_tuple: bool) -> Tensor:
    """``value`` as a flat (n,) tensor over the solver's real state, checked finite and >= 0."""
    real = states[0].real.dtype if states[0].is_complex() else states[0].dtype
    if real in (torch.float16, torch.bfloat16):  # as the norms: atol = 1e-9 would round to 0 in half precision
        real = torch.float32
    if isinstance(value, (tuple, list)) and is_tuple:
        if len(value) != len(states):
            raise ValueError(f"{name} has {len(value)} entries but y0 has {len(states)} tuple components; pass one "
                             "tolerance per component (or a single float)")
        parts = [torch.full((s.numel(),), check.check_tolerance(f"{name}[{i}]", v), dtype=torch.float64)
                 for i, (s, v) in enumerate(zip(states, value))]
    elif isinstance(value, (tuple, list, Tensor)) and not (isinstance(value, Tensor) and value.numel() == 1):
        if is_tuple:
            raise TypeError(f"{name} for a tuple y0 must be a float or a tuple with one float per component, got a "
                            "tensor")
        tol = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
        try:
            parts = [tol.expand(states[0].shape).reshape(-1)]
        except RuntimeError:
            raise ValueError(f"{name} of shape {tuple(tol.shape)} does not broadcast to y0's shape "
                             f"{tuple(states[0].shape)}") from None
    else:  # a scalar beside a per-element other tolerance
        value = check.check_tolerance(name, value)
        parts = [torch.full((s.numel(),), value, dtype=torch.float64) for s in states]
    flat = torch.cat(parts)
    if flat.numel() and (not math.isfinite(float(flat.abs().max())) or float(flat.min()) < 0):
        raise ValueError(f"{name} must be finite and >= 0 in every entry")
    if states[0].is_complex():
        flat = flat.repeat_interleave(2)
    return flat.to(device=states[0].device, dtype=real)
