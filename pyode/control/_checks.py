"""Input validation shared by the ``pyode.control`` constructors: one error per bad argument, naming it."""

from __future__ import annotations

import math
import numbers


def check_number(name: str, value: float, *, minimum: float | None = None, strict: bool = True,
                 hint: str = "") -> float:
    """Return ``value`` as a float; raise ``TypeError`` unless it is a real number and ``ValueError``
    unless it is finite and ``> minimum`` (``>= minimum`` when ``strict`` is false). ``hint`` explains
    the bound in the message, e.g. ``" (0 = basic MSA)"``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if minimum is not None:
        ok = value > minimum if strict else value >= minimum  # NaN fails both
        if not ok:
            raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum:g}{hint}, got {value}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def check_count(name: str, value: int) -> int:
    """Return ``value`` as an int if it is an integer >= 1 (``3.0`` is accepted, ``1.5`` is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an integer >= 1, got {type(value).__name__}")
    if not math.isfinite(value) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}")
    return int(value)


def check_callable(name: str, value: object, what: str) -> None:
    """Raise ``TypeError`` unless ``value`` is callable; ``what`` says what it should be."""
    if not callable(value):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
