"""Evaluating ``func`` just beside a time instead of at it (torchdiffeq's ``perturb``).

Where ``f`` is discontinuous in time (a grid point of a piecewise forcing, a ``jump_t`` point) a step must
see only the piece on its own side: its start is evaluated one ulp after the point (:attr:`Perturb.NEXT`),
an end stage one ulp before it (:attr:`Perturb.PREV`), in the integration direction. The ulp is that of
the time dtype handed to ``func``: a float64 nudge would round back onto the point in a float32 time.
"""

from __future__ import annotations

import enum
import inspect
import weakref
from collections.abc import Callable

import torch


class Perturb(enum.Enum):
    """Which side of ``t`` a call of ``func`` stands for (torchdiffeq's ``Perturb``, same members).

    A ``func`` that declares a ``perturb`` keyword receives it; the ``t`` it receives is already moved.
    Members: ``NONE`` (at ``t``), ``PREV`` (just before, in the integration direction), ``NEXT`` (just after).

    Examples:
        A forcing that switches off at ``t = 0.5``, a ``jump_t`` point: each step sees one piece.

        >>> import torch, pyode
        >>> seen = set()
        >>> def f(t, y, perturb=pyode.Perturb.NONE):
        ...     seen.add(perturb.name)
        ...     return (t < 0.5).to(y.dtype) * torch.ones_like(y)
        >>> t = torch.tensor([0.0, 1.0], dtype=torch.float64)
        >>> ys = pyode.odeint(f, torch.zeros(1, dtype=torch.float64), t,
        ...                   options={"jump_t": torch.tensor([0.5], dtype=torch.float64)})
        >>> round(float(ys[-1, 0]), 6), sorted(seen)
        (0.5, ['NEXT', 'NONE', 'PREV'])
    """

    NONE = 0
    PREV = 1
    NEXT = 2


def nudge(s: float, direction: float, dtype: torch.dtype) -> float:
    """The neighbour of ``s`` in ``dtype`` towards ``direction`` (+1: next, -1: previous), as a float that
    converts to ``dtype`` exactly (float16/32 values are float64 values)."""
    x = torch.tensor(s, dtype=dtype)
    return float(torch.nextafter(x, torch.tensor(direction * float("inf"), dtype=dtype)))


def accepts_perturb(func: Callable) -> bool:
    """Whether ``func`` declares a ``perturb`` parameter. A ``**kwargs`` does not count: torchdiffeq never
    passes the keyword, so a func written for it may forward its keywords elsewhere.

    Remembered per function (a module's class, a method's function): reading a signature costs ~20 us, a
    tenth of a short solve's setup."""
    target = func.forward if isinstance(func, torch.nn.Module) else func
    key = getattr(target, "__func__", target)  # a bound method: its function
    if not inspect.isfunction(key):  # partials, callable objects, builtins: read every time
        return _declares_perturb(target)
    known = _ACCEPTS_PERTURB.get(key)
    if known is None:
        known = _ACCEPTS_PERTURB[key] = _declares_perturb(target)
    return known


_ACCEPTS_PERTURB: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _declares_perturb(target: Callable) -> bool:
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # builtins and C functions: no signature to read
        return False
    return any(p.name == "perturb" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
