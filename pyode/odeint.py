"""Public entry points: :func:`odeint` (torchdiffeq-compatible), :func:`solve` (with statistics) and
:func:`odeint_event`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from pyode import _validation as check
from pyode._kernels import Segments, get_backend, reference
from pyode._solvers.adaptive import AdaptiveLoop, AdaptiveOptions
from pyode._solvers.events import EventLocator
from pyode._solvers.fixed_grid import AdamsLoop, FixedGridLoop, FixedOptions, make_grid
from pyode._solvers.flat_func import FlatFunc
from pyode._solvers.rk_step import RKStepper
from pyode._solvers.tableaux import TABLEAUX
from pyode.solution import Solution, SolverStats

ADAMS_METHODS = {"explicit_adams": 0, "implicit_adams": None, "fixed_adams": 1}
FIXED_RK_METHODS = tuple(name for name, tab in TABLEAUX.items() if not tab.adaptive)
ADAPTIVE_METHODS = tuple(name for name, tab in TABLEAUX.items() if tab.adaptive)
METHODS = ADAPTIVE_METHODS + FIXED_RK_METHODS + tuple(ADAMS_METHODS)
GRADIENT_MODES = ("backprop",)
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


def _adaptive_loop(fn, kern, method, options, rtol, atol, n_rows, sign, stats, is_tuple):
    opts, extra = check.parse_options(options, AdaptiveOptions, method, extra=("norm", "dtype"))
    for name in ("first_step", "max_step"):
        setattr(opts, name, check.positive(name, getattr(opts, name)))
    opts.max_step = torch.inf if opts.max_step is None else opts.max_step
    opts.min_step = check.positive("min_step", opts.min_step, allow_zero=True)
    if int(opts.max_num_steps) < 1:
        raise ValueError(f"options['max_num_steps'] must be >= 1, got {opts.max_num_steps}")
    opts.step_t, opts.jump_t = check.times_list("step_t", opts.step_t, sign), check.times_list("jump_t", opts.jump_t, sign)
    norm = extra.get("norm", "mixed" if is_tuple else "rms")
    if norm not in _NORMS:
        raise ValueError(f"options['norm'] must be one of {_NORMS}, got {norm!r}")
    segments = Segments(n_rows) if norm == "mixed" and len(n_rows) > 2 else None
    stepper = RKStepper(TABLEAUX[method], fn, kern, rtol, atol, segments, mixed_norm=segments is not None,
                        interp=opts.interp)
    return AdaptiveLoop(stepper, opts, stats, sign)


def _fixed_loop(fn, kern, method, options, t_out, sign, stats):
    opts, _ = check.parse_options(options, FixedOptions, method, extra=("dtype",))
    step = check.positive("step_size", opts.step_size)
    if opts.interp not in ("linear", "cubic"):
        raise ValueError(f"options['interp'] must be 'linear' or 'cubic', got {opts.interp!r}")
    grid = make_grid(t_out, step)
    if method in ADAMS_METHODS:
        iters = ADAMS_METHODS[method]
        iters = max(int(opts.max_iters), 1) if iters is None else iters
        return AdamsLoop(fn, kern, grid, stats, sign, iters)
    stepper = RKStepper(TABLEAUX[method], fn, kern, interp=opts.interp)
    return FixedGridLoop(stepper, grid, stats, sign)


def solve(func: Callable, y0, t, *, rtol: float = 1e-7, atol: float = 1e-9, method: str | None = None,
          options: dict | None = None, event_fn: Callable | None = None) -> Solution:
    """Solves ``dy/dt = func(t, y)`` and returns the trajectory with statistics.

    Same arguments as :func:`odeint`. Returns a :class:`pyode.Solution` (``.ys``, ``.t``, ``.stats``,
    ``.event_t``).
    """
    states, is_tuple, t, rtol, atol, method = _prepare(func, y0, t, rtol, atol, method, event_fn)
    t_user = t
    t_list = t.detach().double().tolist()
    sign = -1.0 if len(t_list) > 1 and t_list[1] < t_list[0] else 1.0
    t_out = [sign * x for x in t_list]
    stats = SolverStats()
    t_dtype = (options or {}).get("dtype", t.dtype) if isinstance(options, dict) else t.dtype
    fn = FlatFunc(func, [s.shape for s in states], is_tuple, states[0].dtype, states[0].device, t_dtype,
                  sign < 0, stats)
    y_flat = torch.cat([s.reshape(-1) for s in states]) if is_tuple else states[0].reshape(-1)
    kern = _kernel_backend(y_flat)
    sizes = [s.numel() for s in states]
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    if method in ADAPTIVE_METHODS:
        loop = _adaptive_loop(fn, kern, method, options, rtol, atol, offsets, sign, stats, is_tuple)
    else:
        loop = _fixed_loop(fn, kern, method, options, t_out, sign, stats)
    return _run(loop, fn, y_flat, t_out, t_user, event_fn, atol, sign, stats)


def _run(loop, fn, y_flat, t_out, t_user, event_fn, atol, sign, stats) -> Solution:
    if event_fn is None:
        if len(t_out) == 1:
            blocks = [y_flat.unsqueeze(0)]
        else:
            blocks = loop.integrate(y_flat, t_out)
        return Solution(fn.unflatten(torch.cat(blocks)), t_user, stats)
    if not isinstance(loop, AdaptiveLoop):
        raise ValueError("event_fn is supported with the adaptive methods; pick e.g. method='dopri5'")
    events = EventLocator(event_fn, fn, atol)
    events.start(t_out[0], y_flat)
    # Like torchdiffeq, only t[0] (and the direction of t) matter: integrate until the event.
    blocks = loop.integrate(y_flat, [t_out[0], t_out[0] + 1e30], events)
    if events.event_t is None:
        raise ValueError("no event occurred before the end of t; extend t or check event_fn's sign change")
    stats.status, stats.t_reached = "event", sign * events.event_t
    event_t = torch.tensor(sign * events.event_t, dtype=t_user.dtype, device=t_user.device)
    ys = fn.unflatten(torch.cat([y_flat.unsqueeze(0), blocks[0]]))
    return Solution(ys, torch.stack([t_user[0].detach(), event_t]), stats, event_t)


def odeint(func: Callable, y0, t, *, rtol: float = 1e-7, atol: float = 1e-9, method: str | None = None,
           options: dict | None = None, event_fn: Callable | None = None, gradient: str = "backprop"):
    """Integrates ``dy/dt = func(t, y)`` from ``t[0]`` and returns ``y`` at every time in ``t``.

    A drop-in replacement for ``torchdiffeq.odeint``.

    Args:
        func: ``func(t, y) -> dy/dt``; ``t`` a 0-dim tensor, ``y`` shaped like ``y0``.
        y0: (*state) tensor, or a tuple of tensors.
        t: (T,) strictly increasing or decreasing times; ``t[0]`` is the initial time.
        rtol, atol: relative and absolute tolerances of the adaptive methods.
        method: one of :data:`METHODS` (default ``'dopri5'``).
        options: solver options (e.g. ``step_size``, ``first_step``, ``max_num_steps``, ``step_t``,
            ``jump_t``, ``min_step``, ``max_step``, ``safety``, ``ifactor``, ``dfactor``, ``pcoeff``,
            ``icoeff``, ``dcoeff``, ``norm``, ``dtype``, ``interp``); unknown names raise.
        event_fn: terminal event ``event_fn(t, y) -> scalar``: the solve stops where it changes sign.
        gradient: how gradients flow; ``"backprop"`` differentiates through the solver's operations.
    Returns:
        (T, *state) tensor (a tuple for tuple ``y0``); with ``event_fn``: ``(event_t, ys)`` where ys is
        (2, *state): the initial state and the state at the event.
    """
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"unknown gradient mode {gradient!r}; valid: {', '.join(GRADIENT_MODES)}")
    sol = solve(func, y0, t, rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn)
    return sol.ys if event_fn is None else (sol.event_t, sol.ys)


def odeint_event(func: Callable, y0, t0, *, event_fn: Callable, reverse_time: bool = False, **kwargs):
    """Solves from ``t0`` until ``event_fn(t, y)`` changes sign (torchdiffeq's ``odeint_event``).

    Returns ``(event_t, ys)`` with ys (2, *state): the initial state and the state at the event.
    """
    t0 = torch.as_tensor(t0, dtype=torch.float64) if not isinstance(t0, Tensor) else t0
    t = torch.cat([t0.reshape(-1), t0.reshape(-1).detach() + (-1.0 if reverse_time else 1.0)])
    sol = solve(func, y0, t, event_fn=event_fn, **kwargs)
    return sol.event_t, sol.ys
