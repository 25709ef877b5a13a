"""Input validation shared by the ``pyode.nn`` models (clear errors instead of deep shape failures)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch


def check_finite(name: str, value: float) -> float:
    """Return ``value`` as a float, or raise naming ``name`` if it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number (int or float), got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` naming ``name`` if it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    if not value > 0:  # also catches NaN
        raise ValueError(f"{name} must be > 0, got {value}")
    return check_finite(name, value)


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is an int >= 1 (a layer width or count), else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_finite_sequence(name: str, values: Sequence[float]) -> list[float]:
    """Return ``values`` as a list of floats, or raise naming ``name`` (and the index) if one is not finite."""
    return [check_finite(f"{name}[{i}]", v) for i, v in enumerate(values)]


def check_non_negative_int(name: str, value: int) -> int:
    """Return ``value`` if it is an int >= 0, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 0, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")
    return value


def check_tensor(name: str, x: object) -> torch.Tensor:
    """Raise ``TypeError`` unless ``x`` is a tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_feature_shape(name: str, x: torch.Tensor, feature_shape: Sequence[int]) -> None:
    """Check ``x: (batch, *feature_shape)``; raise ``ValueError`` explaining the expected shape otherwise."""
    check_tensor(name, x)
    expected = tuple(feature_shape)
    if x.dim() != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise ValueError(
            f"{name} must have shape (batch, {', '.join(map(str, expected))}), got {tuple(x.shape)}"
        )


def eval_same_shape(name: str, f: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    """Evaluate ``f(*args)`` and check the result is shaped like the last argument (the state)."""
    out = f(*args)
    state = args[-1]
    if not isinstance(out, torch.Tensor) or out.shape != state.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"{name} must return a tensor shaped like its input state {tuple(state.shape)}, got {got}"
        )
    return out
