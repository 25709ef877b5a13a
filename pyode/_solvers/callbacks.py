"""torchdiffeq's step callbacks: ``func.callback_step(t0, y0, dt)`` before each step, and
``func.callback_accept_step`` / ``func.callback_reject_step`` (same arguments) once the step's error test has
decided. The ``*_adjoint`` variants are called the same way during the adjoint's backward solve (see
:mod:`pyode._gradients.adjoint`).

The loops take a :class:`StepCallbacks` (or None) once per solve from :func:`step_callbacks`; with no
callback defined every hook is one ``is None`` test. Arguments are the user's: ``t0`` a tensor of the
solve's time dtype in the caller's time direction, ``y0`` in the structure of ``y0`` (a tuple for a tuple
state), ``dt`` the size of the step attempted (positive, as torchdiffeq's), a tensor. In per-sample mode
``t0`` and ``dt`` are (batch,): each row's; rows that did not take part in a decision have ``dt = 0``. A
callback that raises propagates unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

CALLBACK_NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")
ADJOINT_SUFFIX = "_adjoint"


def defined_callbacks(func, suffix: str = "") -> dict[str, Callable]:
    """The callbacks ``func`` defines, by torchdiffeq name (``suffix="_adjoint"``: the backward solve's)."""
    found = {}
    for name in CALLBACK_NAMES:
        callback = getattr(func, name + suffix, None)
        if callable(callback):
            found[name] = callback
    return found


def warn_unsupported(func, method: str, supported: frozenset, suffix: str = "") -> None:
    """Warns (as torchdiffeq does) about callbacks ``func`` sets that ``method`` never calls."""
    unused = sorted(name + suffix for name in defined_callbacks(func, suffix) if name not in supported)
    if unused:
        warnings.warn(f"method {method!r} never calls {', '.join(unused)} (it calls "
                      f"{', '.join(sorted(supported)) or 'no callbacks'})", UserWarning, stacklevel=4)


class StepCallbacks:
    """The hooks the loops call: ``step`` before an attempt, ``accept`` / ``reject`` after its error test.

    Args:
        fn: the solve's :class:`FlatFunc` (user time, state structure); found: the callbacks by name.
    Loop arguments: ``s`` the step's start in solver time (float, or (batch,) tensor per row), ``y`` the
    flat state (n,) or rows (batch, m), ``h`` the step size (float, or (batch,) tensor).
    """

    def __init__(self, fn, found: dict[str, Callable]):
        self.fn = fn
        self._step = found.get("callback_step")
        self._accept = found.get("callback_accept_step")
        self._reject = found.get("callback_reject_step")
        self.wants_decisions = self._accept is not None or self._reject is not None

    def _args(self, s, y: Tensor, h) -> tuple[Tensor, object, Tensor]:
        fn = self.fn
        if isinstance(s, Tensor):
            t0 = (-s if fn.reverse else s).to(fn.t_dtype)
            dt = h.to(fn.t_dtype)
        else:
            t0 = fn.time_tensor(s)
            dt = torch.tensor(h, dtype=fn.t_dtype, device=t0.device)
        return t0, fn.unflatten(y.reshape(-1)), dt

    def step(self, s, y: Tensor, h) -> None:
        if self._step is not None:
            self._step(*self._args(s, y, h))

    def accept(self, s, y: Tensor, h) -> None:
        if self._accept is not None:
            self._accept(*self._args(s, y, h))

    def reject(self, s, y: Tensor, h) -> None:
        if self._reject is not None:
            self._reject(*self._args(s, y, h))


def step_callbacks(fn) -> StepCallbacks | None:
    """The hooks for a solve of ``fn`` (a :class:`FlatFunc`), or None when its ``func`` defines no callback."""
    found = defined_callbacks(fn.func)
    return StepCallbacks(fn, found) if found else None
