"""What a solve's callers watch in its loop, passed to the loop explicitly: the one way a gradient mode or an
output option (dense output, ``save_steps``, a progress bar) sees the steps.

A caller builds a :class:`LoopHooks` and passes it to :func:`pyode._solvers.problem.integrate` (which hands it
to ``loop.integrate(..., hooks=...)``); nobody sets attributes on a loop. Several watchers compose with
:func:`compose` without knowing about each other (checkpoint's records beside dense output, the interpolated
adjoint's step log beside a progress bar). Each loop class declares the hook kinds it calls in its
``SUPPORTED_HOOKS`` class attribute; :func:`supports` reads it and :func:`require` refuses a hook a loop would
never call. A solve with any hook runs in the Python loop (the C++ loop hands back no per-step tensors).

Hook kinds:

- ``on_accept(record)``: once per accepted step with its :class:`~pyode._solvers.rk_step.StepRecord` (start,
  size, detached start state, discontinuity flags, which outputs it wrote): what checkpointing replays.
- ``on_step(t0, t1, step, evaluator)``: once per accepted step with its start and end (solver time), the
  :class:`~pyode._solvers.rk_step.StepResult` and the object whose ``dense(step, thetas)`` evaluates it
  (:class:`~pyode._solvers.dense.StepLog` keeps them for dense output, step times and the progress bar).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

KINDS = ("on_accept", "on_step")


@dataclass(frozen=True, slots=True)
class LoopHooks:
    """The callables a loop calls per accepted step; None: not watched (see the module docstring)."""

    on_accept: Callable | None = None
    on_step: Callable | None = None

    @property
    def kinds(self) -> frozenset[str]:
        """The hook kinds set."""
        return frozenset(f.name for f in fields(self) if getattr(self, f.name) is not None)

    def __bool__(self) -> bool:
        return self.on_accept is not None or self.on_step is not None


NO_HOOKS = LoopHooks()


def _chain(first: Callable | None, second: Callable | None) -> Callable | None:
    if first is None or second is None:
        return first if second is None else second

    def both(*args) -> None:
        first(*args)
        second(*args)

    return both


def compose(*hooks: LoopHooks) -> LoopHooks:
    """One :class:`LoopHooks` calling each of ``hooks``' callables of a kind, in the order given."""
    out = NO_HOOKS
    for h in hooks:
        out = LoopHooks(**{kind: _chain(getattr(out, kind), getattr(h, kind)) for kind in KINDS})
    return out


def supports(loop, kind: str) -> bool:
    """Whether ``loop``'s class calls hooks of ``kind`` (its declared ``SUPPORTED_HOOKS``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown hook kind {kind!r}; valid: {', '.join(KINDS)}")
    return kind in type(loop).SUPPORTED_HOOKS


def require(loop, hooks: LoopHooks) -> None:
    """Raises ValueError when ``loop`` would never call one of ``hooks`` (a watcher that would see nothing)."""
    missing = hooks.kinds - type(loop).SUPPORTED_HOOKS
    if missing:
        raise ValueError(f"{type(loop).__name__} does not call the {', '.join(sorted(missing))} hook(s); it "
                         f"calls {', '.join(sorted(type(loop).SUPPORTED_HOOKS)) or 'none'}")
