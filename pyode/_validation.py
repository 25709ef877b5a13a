"""Checks of user input for the public entry points. Each error names the argument and the fix."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_func(func) -> None:
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, y), got {type(func).__name__}")


def check_state(y0) -> tuple[list[Tensor], bool]:
    """Returns the state tensors and whether ``y0`` was a tuple."""
    is_tuple = isinstance(y0, (tuple, list))
    tensors = list(y0) if is_tuple else [y0]
    if is_tuple and not tensors:
        raise ValueError("y0 is an empty tuple; pass at least one tensor")
    for i, y in enumerate(tensors):
        name = f"y0[{i}]" if is_tuple else "y0"
        if not isinstance(y, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
        if y.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be floating point, got {y.dtype}; convert it with y0.double() or .float()")
        if y.dtype != tensors[0].dtype or y.device != tensors[0].device:
            raise ValueError(f"all tensors of y0 must share one dtype and device; {name} is {y.dtype} on "
                             f"{y.device}, y0[0] is {tensors[0].dtype} on {tensors[0].device}")
        with torch.no_grad():
            if not bool(torch.isfinite(y).all()):
                raise ValueError(f"{name} contains NaN or inf")
    return tensors, is_tuple


def check_times(t, device: torch.device) -> Tensor:
    """``t`` must be a 1-D, finite, strictly monotonic tensor on ``y0``'s device."""
    if not isinstance(t, Tensor):
        if isinstance(t, (Sequence, float, int)):
            t = torch.as_tensor(t, dtype=torch.float64)
        else:
            raise TypeError(f"t must be a 1-D torch.Tensor of times, got {type(t).__name__}")
    if t.dim() != 1:
        raise ValueError(f"t must be 1-D, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError("t is empty; pass at least the initial time")
    if not t.is_floating_point():
        raise TypeError(f"t must be floating point, got {t.dtype}; use torch.tensor([...], dtype=torch.float64)")
    if t.device != device:
        raise ValueError(f"t is on {t.device} but y0 is on {device}; move them to the same device")
    return t


def check_time_values(values: list[float]) -> None:
    """``t`` as floats (one host transfer for all checks): finite and strictly monotonic."""
    if not all(math.isfinite(v) for v in values):
        raise ValueError("t contains NaN or inf")
    if len(values) > 1:
        steps = [b - a for a, b in itertools.pairwise(values)]
        if not (all(d > 0 for d in steps) or all(d < 0 for d in steps)):
            raise ValueError("t must be strictly increasing or strictly decreasing (no repeated times)")


def check_tolerance(name: str, value) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be a scalar (per-component tolerances are not supported)")
        value = float(value)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return float(value)


def parse_options(options: dict | None, cls, method: str, extra: Sequence[str] = ()) -> tuple[object, dict]:
    """Builds the options dataclass ``cls`` from ``options``; returns it and the ``extra`` keys found.

    Unknown names raise, listing the valid ones (no silent typos)."""
    options = dict(options or {})
    if not isinstance(options, dict):
        raise TypeError("options must be a dict")
    valid = {f.name for f in dataclasses.fields(cls)} | set(extra)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid options: {sorted(valid)}")
    extras = {k: options.pop(k) for k in list(options) if k in extra}
    return cls(**options), extras


def positive(name: str, value, allow_none: bool = True, allow_zero: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    value = float(value)
    if not math.isfinite(value) and value != math.inf:
        raise ValueError(f"options[{name!r}] must be a number, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"options[{name!r}] must be > 0, got {value}")
    return value


def times_list(name: str, values, sign: float) -> list[float]:
    if values is None:
        return []
    vals = values.tolist() if isinstance(values, Tensor) else list(values)
    return sorted(sign * float(v) for v in vals)


