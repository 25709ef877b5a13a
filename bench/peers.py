"""Adapters that run one :class:`bench.problems.Case` through pyode, torchdiffeq or torchode alike.

Every library gets the same dynamics wrapped in the same :class:`TimedFunc`, which accumulates the
``perf_counter`` time spent inside ``func`` and counts calls; the solver's own bookkeeping ("loop time")
is the wall time minus that. ``Peer.solve`` returns a :class:`RunResult` or raises :class:`NotAvailable`
when a library lacks a method or gradient mode (the suite records it as "n/a").

Modes:
    ``forward``             solve without gradients, the whole state stepped jointly;
    ``forward_per_sample``  each batch row its own step size (torchode's native mode; pyode's if it has
                            one) -- only for autonomous dynamics with state (batch, features);
    ``backprop``            forward + backward, differentiating through the solver;
    ``adjoint``             forward + backward by the continuous adjoint (Chen et al. 2018);
    ``adjoint_seminorm``    the adjoint with the seminorm of Kidger et al. 2021 ("Hey, that's not an ODE");
    ``checkpoint``          backprop through steps replayed from per-step checkpoints (pyode only).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bench.problems import Case

FORWARD_MODES = ("forward", "forward_per_sample")
ALL_MODES = FORWARD_MODES + ("backprop", "adjoint", "adjoint_seminorm", "checkpoint")


class NotAvailable(Exception):
    """The library cannot run this method / mode; the message says why."""


class PlainTimedFunc(nn.Module):
    """Wraps ``func(t, y)``: accumulates the seconds spent inside it and the number of calls. Defines no step
    callbacks: for libraries that count their own steps (pyode, whose C++ loop runs no callbacks, so a func
    defining them would keep its no-grad solves in the Python loop and the benchmark would not measure it)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.reset()

    def reset(self) -> None:
        self.seconds, self.calls, self.accepted, self.rejected = 0.0, 0, 0, 0

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        start = time.perf_counter()
        out = self.inner(t, y)
        stop = time.perf_counter()
        # The counters live in __dict__; nn.Module.__setattr__ (isinstance checks for parameters) would
        # cost ~4 us per call outside the timed region, billed to every library's loop time.
        counters = self.__dict__
        counters["seconds"] += stop - start
        counters["calls"] += 1
        return out

    # Called directly, not through nn.Module.__call__ (no hooks here): its ~2 us of dispatch per call lies
    # outside the timed region too.
    __call__ = forward


class TimedFunc(PlainTimedFunc):
    """:class:`PlainTimedFunc` with torchdiffeq's step callbacks (forward and adjoint), which is how
    torchdiffeq's accepted/rejected steps are counted."""

    def callback_accept_step(self, t0, y0, dt) -> None:
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.rejected += 1

    # torchdiffeq's odeint_adjoint hands these to its backward solve under the plain names
    callback_accept_step_adjoint = callback_accept_step
    callback_reject_step_adjoint = callback_reject_step


@dataclass
class StepCounts:
    """Steps of one solve. For per-sample stepping: accepted/rejected are means over rows and
    ``iterations`` the loop iterations (the slowest row's attempted steps)."""

    accepted: float | None = None
    rejected: float | None = None
    iterations: int | None = None

    @classmethod
    def joint(cls, accepted: int, rejected: int) -> StepCounts:
        return cls(float(accepted), float(rejected), int(accepted + rejected))


@dataclass
class RunResult:
    """One timed run. Times in seconds; ``*_bwd`` are zero/None for forward-only modes.

    ys: (T, *state) detached solution; grad: (n_params,) flattened parameter gradient or None.
    """

    wall_fwd: float
    func_fwd: float
    nfe_fwd: int
    steps_fwd: StepCounts
    ys: Tensor
    wall_bwd: float = 0.0
    func_bwd: float = 0.0
    nfe_bwd: int = 0
    steps_bwd: StepCounts | None = None
    grad: Tensor | None = None


class Peer(ABC):
    """A library under test. Subclasses implement :meth:`_forward` and the step counters."""

    name = "peer"
    modes: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    timed_func: type[PlainTimedFunc] = TimedFunc  # the wrapper that times func (and counts steps by callbacks)

    def unavailable_reason(self, case: Case, method: str, mode: str) -> str | None:
        """Why this library cannot run (method, mode) on ``case``, or None if it can."""
        if mode not in self.modes:
            return f"{self.name} has no {mode!r} mode"
        if self.methods and method not in self.methods:
            return f"{self.name} has no method {method!r}"
        return None

    def solve(self, case: Case, method: str, rtol: float, atol: float, mode: str) -> RunResult:
        """Runs the case once (forward, plus backward for gradient modes) and measures it."""
        reason = self.unavailable_reason(case, method, mode)
        if reason:
            raise NotAvailable(reason)
        func = self.timed_func(case.func)
        grad_mode = mode not in FORWARD_MODES
        for p in case.params:
            p.grad = None
            p.requires_grad_(grad_mode)
        with torch.set_grad_enabled(grad_mode):
            start = time.perf_counter()
            ys, handle = self._forward(case, func, method, rtol, atol, mode)
            wall_fwd = time.perf_counter() - start
        result = RunResult(wall_fwd, func.seconds, func.calls, self._forward_counts(handle, func),
                           ys.detach())
        if grad_mode:
            self._backward(case, ys, func, handle, result)
        return result

    def _backward(self, case: Case, ys: Tensor, func: TimedFunc, handle: Any, result: RunResult) -> None:
        loss = case.loss(ys)
        func.reset()
        start = time.perf_counter()
        loss.backward()
        result.wall_bwd = time.perf_counter() - start
        result.func_bwd, result.nfe_bwd = func.seconds, func.calls
        result.steps_bwd = self._backward_counts(handle, func)
        result.grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                 for p in case.params]).detach()

    @abstractmethod
    def _forward(self, case: Case, func: TimedFunc, method: str, rtol: float, atol: float,
                 mode: str) -> tuple[Tensor, Any]:
        """Solves; returns ys (T, *state) and a handle for the step counters."""

    @abstractmethod
    def _forward_counts(self, handle: Any, func: TimedFunc) -> StepCounts:
        """Steps of the forward solve."""

    def _backward_counts(self, handle: Any, func: TimedFunc) -> StepCounts | None:
        """Steps of the backward (adjoint) solve, if the library reports them."""
        return None


class TorchdiffeqPeer(Peer):
    """torchdiffeq 0.2.5: ``odeint`` (backprop through the solver) and ``odeint_adjoint``."""

    name = "torchdiffeq"
    modes = ("forward", "backprop", "adjoint", "adjoint_seminorm")

    def _forward(self, case, func, method, rtol, atol, mode):
        import torchdiffeq

        kwargs = {"rtol": rtol, "atol": atol, "method": method}
        if mode in ("adjoint", "adjoint_seminorm"):
            options = {"norm": "seminorm"} if mode == "adjoint_seminorm" else None
            ys = torchdiffeq.odeint_adjoint(func, case.y0, case.t, adjoint_params=tuple(case.params),
                                            adjoint_options=options, **kwargs)
        else:
            ys = torchdiffeq.odeint(func, case.y0, case.t, **kwargs)
        counts = StepCounts.joint(func.accepted, func.rejected)
        func.accepted = func.rejected = 0
        return ys, (counts, mode in ("adjoint", "adjoint_seminorm"))

    def _forward_counts(self, handle, func):
        return handle[0]  # counted by the step callbacks during the solve

    def _backward_counts(self, handle, func):
        has_backward_solve = handle[1]  # backprop replays the graph: no backward steps to count
        return StepCounts.joint(func.accepted, func.rejected) if has_backward_solve else None


class _TorchodeShape(nn.Module):
    """Presents ``func(t, y)`` (y shaped like the case's state) to torchode, which steps (batch, features)
    tensors with per-row times. Joint stepping uses batch 1: y (1, n) -> (*state). Also works per sample
    under ``torch.func.vmap`` (BacksolveAdjoint): y (n,) -> (*state)."""

    def __init__(self, func: nn.Module, state_shape: torch.Size, per_sample: bool):
        super().__init__()
        self.func, self.state_shape, self.per_sample = func, state_shape, per_sample

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        if self.per_sample:  # autonomous dynamics only (checked by the caller): per-row t is ignored
            return self.func(t, y)
        return self.func(t.reshape(()), y.reshape(self.state_shape)).reshape(y.shape)


class TorchodePeer(Peer):
    """torchode 1.0.1 (Lienen & Guennemann 2022): ``AutoDiffAdjoint`` + ``Dopri5``/``Tsit5`` +
    ``IntegralController``; ``BacksolveAdjoint`` for the adjoint (it has no seminorm)."""

    name = "torchode"
    modes = ("forward", "forward_per_sample", "backprop", "adjoint")
    methods = ("dopri5", "tsit5")

    def unavailable_reason(self, case, method, mode):
        if mode == "forward_per_sample" and case.y0.dim() != 2:
            return "per-sample stepping needs a (batch, features) state"
        return super().unavailable_reason(case, method, mode)

    def _forward(self, case, func, method, rtol, atol, mode):
        import torchode

        per_sample = mode == "forward_per_sample"
        term = torchode.ODETerm(_TorchodeShape(func, case.y0.shape, per_sample))
        step = {"dopri5": torchode.Dopri5, "tsit5": torchode.Tsit5}[method](term=term)
        controller = torchode.IntegralController(atol=atol, rtol=rtol, term=term)
        if mode == "adjoint":
            solver = torchode.BacksolveAdjoint(term, step, controller)
        else:
            solver = torchode.AutoDiffAdjoint(step, controller)
        y0 = case.y0 if per_sample else case.y0.reshape(1, -1)
        t_eval = case.t.expand(y0.shape[0], -1)
        solution = solver.solve(torchode.InitialValueProblem(y0=y0, t_eval=t_eval))
        if per_sample:
            ys = solution.ys.transpose(0, 1)  # (batch, T, f) -> (T, batch, f)
        else:
            ys = solution.ys[0].reshape(len(case.t), *case.y0.shape)
        return ys, solution.stats

    def _forward_counts(self, handle, func):
        steps, accepted = handle["n_steps"], handle["n_accepted"]
        if steps.numel() == 1:
            return StepCounts.joint(int(accepted), int(steps - accepted))
        return StepCounts(accepted.double().mean().item(), (steps - accepted).double().mean().item(),
                          int(steps.max()))

    def _backward_counts(self, handle, func):
        solves = handle.get("backsolve", [])  # BacksolveAdjoint: one solve per output interval
        if not solves:
            return None
        steps = sum(int(s["n_steps"].sum()) for s in solves)
        accepted = sum(int(s["n_accepted"].sum()) for s in solves)
        return StepCounts.joint(accepted, steps - accepted)


# the ``gradient`` argument of pyode.solve for each mode
_PYODE_GRADIENT = {"forward": "backprop", "forward_per_sample": "backprop", "backprop": "backprop",
                   "adjoint": "adjoint", "adjoint_seminorm": "adjoint", "checkpoint": "checkpoint"}


def _pyode_gradient_modes() -> tuple[str, ...]:
    """pyode's ``GRADIENT_MODES`` (exported, or from the module ``pyode.odeint``, which the function of the
    same name shadows as an attribute of the package)."""
    import importlib

    import pyode

    modes = getattr(pyode, "GRADIENT_MODES", None)
    return tuple(modes or getattr(importlib.import_module("pyode.odeint"), "GRADIENT_MODES", ("backprop",)))


class PyodePeer(Peer):
    """pyode: ``pyode.solve`` with its ``gradient`` argument (backprop, adjoint [+ seminorm], checkpoint)."""

    name = "pyode"
    modes = ALL_MODES
    timed_func = PlainTimedFunc  # pyode's steps come from its SolverStats

    def unavailable_reason(self, case, method, mode):
        import pyode

        gradient = _PYODE_GRADIENT.get(mode)
        if gradient is not None and gradient not in _pyode_gradient_modes():
            return f"pyode has no gradient={gradient!r} yet"
        if mode == "forward_per_sample" and case.y0.dim() != 2:
            return "per-sample stepping needs a (batch, features) state"
        if method not in getattr(pyode, "METHODS", (method,)):
            return f"pyode has no method {method!r}"
        return super().unavailable_reason(case, method, mode)

    def _forward(self, case, func, method, rtol, atol, mode):
        import pyode

        kwargs = {"rtol": rtol, "atol": atol, "method": method, "gradient": _PYODE_GRADIENT[mode]}
        if mode not in FORWARD_MODES + ("backprop",):
            kwargs["adjoint_params"] = tuple(case.params)
        if mode == "adjoint_seminorm":
            kwargs["adjoint_options"] = {"norm": "seminorm"}
        if mode == "forward_per_sample":
            kwargs["options"] = {"per_sample": True}
        try:
            solution = pyode.solve(func, case.y0, case.t, **kwargs)
        except NotImplementedError as exc:
            raise NotAvailable(f"pyode: {exc}") from exc
        except ValueError as exc:
            if mode == "forward_per_sample" and "per_sample" in str(exc):
                raise NotAvailable("pyode has no per-sample stepping option (options['per_sample'])") from exc
            raise
        return solution.ys, (solution.stats, case.y0.shape[0] if mode == "forward_per_sample" else None)

    def _forward_counts(self, handle, func):
        stats, rows = handle
        if rows is None:
            return StepCounts.joint(stats.n_accepted, stats.n_rejected)
        # per-sample convention: per-row tensors (or totals over rows) and the loop iterations
        accepted, rejected = (torch.as_tensor(v, dtype=torch.float64) for v in (stats.n_accepted, stats.n_rejected))
        scale = 1.0 if accepted.numel() > 1 else 1.0 / rows
        iterations = getattr(stats, "n_iterations", None)
        if iterations is None and accepted.numel() > 1:
            iterations = int((accepted + rejected).max())
        return StepCounts(accepted.mean().item() * scale, rejected.mean().item() * scale, iterations)

    def _backward_counts(self, handle, func):
        stats, _ = handle
        accepted, rejected = (getattr(stats, f"n_{kind}_backward", 0) for kind in ("accepted", "rejected"))
        # only the adjoint solves backwards; backprop and checkpoint replay the forward steps
        return StepCounts.joint(accepted, rejected) if accepted + rejected > 0 else None


PEERS: dict[str, type[Peer]] = {"pyode": PyodePeer, "torchdiffeq": TorchdiffeqPeer, "torchode": TorchodePeer}


def make_peers(names: list[str]) -> list[Peer]:
    """Adapters for the named libraries (``pyode``, ``torchdiffeq``, ``torchode``)."""
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise ValueError(f"unknown library {unknown}; choose from {', '.join(PEERS)}")
    return [PEERS[n]() for n in names]
