"""A validated solve ready to run: input checks, option parsing, the flat function and state, and the
integration loop for the chosen method. The gradient methods and the public API build on this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pyode import _validation as check
from pyode._kernels import Segments, get_backend, reference
from pyode._solvers import scratch
from pyode._solvers.adaptive import AdaptiveLoop, AdaptiveOptions
from pyode._solvers.events import EventLocator
from pyode._solvers.fixed_grid import AdamsLoop, FixedGridLoop, FixedOptions, check_step_count, make_grid
from pyode._solvers.flat_func import FlatFunc
from pyode._solvers.per_sample import PerSampleLoop
from pyode._solvers.rk_step import RKStepper
from pyode._solvers.tableaux import TABLEAUX
from pyode.solution import SolverStats

ADAMS_METHODS = {"explicit_adams": 0, "implicit_adams": None, "fixed_adams": 1}
FIXED_RK_METHODS = tuple(name for name, tab in TABLEAUX.items() if not tab.adaptive)
ADAPTIVE_METHODS = tuple(name for name, tab in TABLEAUX.items() if tab.adaptive)
METHODS = ADAPTIVE_METHODS + FIXED_RK_METHODS + tuple(ADAMS_METHODS) + ("alf",)
_NORMS = ("rms", "mixed")


def _check_method(method: str | None) -> str:
    method = "dopri5" if method is None else method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    return method


def _prepare(func, y0, t, rtol, atol, method, event_fn):
    """Validates the inputs; returns (states, is_tuple, t, rtol, atol, method)."""
    check.check_func(func)
    states, is_tuple = check.check_state(y0)
    t = check.check_times(t, states[0].device)
    rtol, atol = check.check_tolerance("rtol", rtol), check.check_tolerance("atol", atol)
    method = _check_method(method)
    if method in ADAPTIVE_METHODS and rtol == 0 and atol == 0:
        raise ValueError("rtol and atol cannot both be 0 for an adaptive method; set atol > 0 (e.g. 1e-9)")
    if event_fn is not None and not callable(event_fn):
        raise TypeError("event_fn must be callable as event_fn(t, y) -> scalar tensor")
    return states, is_tuple, t, rtol, atol, method


def _kernel_backend(y: Tensor):
    if y.dtype not in (torch.float32, torch.float64):
        return reference  # half precision: the reference path computes in torch's own kernels
    return get_backend(y.device)


def _adaptive_loop(fn, kern, method, options, rtol, atol, offsets, sign, stats, is_tuple, norm_segments):
    opts, extra = check.parse_options(options, AdaptiveOptions, method, extra=("norm", "dtype"))
    check.adaptive_options(opts, sign)
    if opts.interp not in ("auto", "quartic", "cubic", "linear", "restep"):
        raise ValueError(f"options['interp'] must be auto, quartic, cubic, linear or restep, got {opts.interp!r}")
    norm = extra.get("norm", "mixed" if is_tuple else "rms")
    if norm not in _NORMS:
        raise ValueError(f"options['norm'] must be one of {_NORMS}, got {norm!r}")
    segments = None
    if norm_segments is not None or (norm == "mixed" and len(offsets) > 2):
        segments = Segments(offsets)
        norm_segments = segments.count if norm_segments is None else norm_segments
    stepper = RKStepper(TABLEAUX[method], fn, kern, rtol, atol, segments, norm_segments, interp=opts.interp)
    if opts.per_sample:
        if opts.step_t or opts.jump_t or opts.interp == "restep":
            raise ValueError("options['per_sample'] does not combine with step_t, jump_t or interp='restep'")
        return PerSampleLoop(stepper, opts, stats, sign)
    return AdaptiveLoop(stepper, opts, stats, sign)


def _fixed_loop(fn, kern, method, options, t_out, sign, stats):
    opts, _ = check.parse_options(options, FixedOptions, method, extra=("dtype", "norm"))
    step = check.positive("step_size", opts.step_size)
    check_step_count(t_out, step, check.positive_int("max_num_steps", opts.max_num_steps), sign,
                     per_interval=method == "alf")
    if opts.interp not in ("linear", "cubic"):
        raise ValueError(f"options['interp'] must be 'linear' or 'cubic' for fixed-grid methods, got {opts.interp!r}")
    if method == "alf":
        from pyode._gradients.reversible import AlfLoop  # the reversible scheme lives with its gradient

        return AlfLoop(fn, kern, t_out, step, stats, sign)
    grid = make_grid(t_out, step)
    if method in ADAMS_METHODS:
        iters = ADAMS_METHODS[method]
        iters = check.positive_int("max_iters", opts.max_iters) if iters is None else iters
        return AdamsLoop(fn, kern, grid, stats, sign, iters)
    stepper = RKStepper(TABLEAUX[method], fn, kern, interp=opts.interp)
    return FixedGridLoop(stepper, grid, stats, sign)


@dataclass
class Problem:
    """A validated solve, ready to integrate: the flat function and state, times in the solver's
    direction, and the integration loop. Gradient methods build one and own how it is run.

    Attributes:
        fn: :class:`FlatFunc`; y0: (n,) flat initial state; t: the user's times (T,);
        t_out: the times as floats in the solver's (increasing) direction; sign: -1 for decreasing t;
        loop: the integration loop; stats: its counters; offsets: tuple component boundaries in y0.
    """

    fn: FlatFunc
    y0: Tensor
    t: Tensor
    t_out: list
    sign: float
    loop: object
    stats: SolverStats
    method: str
    rtol: float
    atol: float
    offsets: list


def build_problem(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None,
                  norm_segments: int | None = None, stats: SolverStats | None = None) -> Problem:
    """Validates everything and builds the loop. ``norm_segments``: error norm over only the first
    ``norm_segments`` tuple components (the adjoint's seminorm). ``stats``: counters to add to."""
    states, is_tuple, t, rtol, atol, method = _prepare(func, y0, t, rtol, atol, method, event_fn)
    t_list = t.detach().double().tolist()
    check.check_time_values(t_list)
    sign = -1.0 if len(t_list) > 1 and t_list[1] < t_list[0] else 1.0
    t_out = [sign * x for x in t_list]
    stats = SolverStats() if stats is None else stats
    stats.t_reached = t_list[0]
    t_dtype = check.time_dtype(options) or t.dtype
    fn = FlatFunc(func, [s.shape for s in states], is_tuple, states[0].dtype, states[0].device, t_dtype,
                  sign < 0, stats)
    # contiguous(): reshape(-1) of a strided or expanded y0 can be a non-contiguous view, and the kernels
    # read n consecutive elements from its address (wrong values, or past the end of its storage).
    y_flat = torch.cat([s.reshape(-1) for s in states]) if is_tuple else states[0].reshape(-1).contiguous()
    kern = _kernel_backend(y_flat)
    offsets = [0]
    for s in states:
        offsets.append(offsets[-1] + s.numel())
    if method in ADAPTIVE_METHODS:
        loop = _adaptive_loop(fn, kern, method, options, rtol, atol, offsets, sign, stats, is_tuple, norm_segments)
    else:
        loop = _fixed_loop(fn, kern, method, options, t_out, sign, stats)
    return Problem(fn, y_flat, t, t_out, sign, loop, stats, method, rtol, atol, offsets)


def integrate(problem: Problem, y0: Tensor | None = None) -> Tensor:
    """Runs the loop from ``y0`` (default: the problem's) and returns the flat outputs (T, n)."""
    y0 = problem.y0 if y0 is None else y0
    if len(problem.t_out) == 1:
        return y0.unsqueeze(0)
    return concatenate_outputs(problem.loop.integrate(y0, problem.t_out))


def concatenate_outputs(blocks: list[Tensor]) -> Tensor:
    """The (T, n) solution from the loop's (m, n) blocks. A large one without autograd goes into a pooled
    buffer (:mod:`scratch`): a fresh 80 MB tensor costs ~27 ms of page faults, more than the copy."""
    first = blocks[0]
    rows = sum(b.shape[0] for b in blocks)
    large = rows * first.shape[1] * first.element_size() >= scratch.MIN_BYTES
    if not large or first.device.type != "cpu" or (torch.is_grad_enabled() and any(b.requires_grad for b in blocks)):
        return torch.cat(blocks)
    return torch.cat(blocks, out=scratch.POOL.empty((rows, first.shape[1]), first.dtype, first.device))


def integrate_until_event(problem: Problem, event_fn: Callable) -> tuple[float, Tensor]:
    """Integrates until ``event_fn`` changes sign. Returns the event time (solver direction) and the
    flat state there (n,)."""
    if not isinstance(problem.loop, AdaptiveLoop):
        raise ValueError("event_fn is supported with the adaptive methods; pick e.g. method='dopri5'")  # noqa: TRY004
    events = EventLocator(event_fn, problem.fn, problem.atol)
    events.start(problem.t_out[0], problem.y0)
    # Like torchdiffeq, only t[0] (and the direction of t) matter: integrate until the event.
    blocks = problem.loop.integrate(problem.y0, [problem.t_out[0], problem.t_out[0] + 1e30], events)
    if events.event_t is None:
        raise ValueError("no event occurred; check that event_fn changes sign along the solution")
    problem.stats.status, problem.stats.t_reached = "event", problem.sign * events.event_t
    return events.event_t, blocks[0][0]


