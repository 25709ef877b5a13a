"""Public entry points: :func:`odeint` (torchdiffeq-compatible), :func:`odeint_adjoint`, :func:`solve`
(with statistics) and :func:`odeint_event`. One argument, ``gradient``, chooses how gradients flow; see
:mod:`pyode._gradients` for the memory/accuracy trade-off of each mode."""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from pyode._gradients.adjoint import AdjointSolve, make_config
from pyode._gradients.checkpoint import CheckpointSolve
from pyode._gradients.events import EventTimeGradient, add_event_fn_dependence
from pyode._gradients.params import resolve_params
from pyode._gradients.reversible import ReversibleSolve
from pyode._gradients.times import OutputTimes, StartTime
from pyode._solvers.callbacks import ADJOINT_SUFFIX, CALLBACK_NAMES, defined_callbacks, warn_unsupported
from pyode._solvers.dense import dense_fields, step_log_for
from pyode._solvers.hooks import NO_HOOKS, LoopHooks
from pyode._solvers.problem import (
    ADAPTIVE_METHODS,
    FIXED_RK_METHODS,
    METHODS,
    Problem,
    build_problem,
    combined_event_fn,
    integrate,
    integrate_until_event,
)
from pyode._solvers.tableaux import TABLEAUX
from pyode._solvers.tolerances import is_per_element
from pyode._validation import check_tolerance
from pyode.native._torch import is_native_rhs, native_odeint, native_solve
from pyode.solution import Solution

GRADIENT_MODES = ("backprop", "adjoint", "checkpoint", "reversible")
__all__ = ["GRADIENT_MODES", "METHODS", "odeint", "odeint_adjoint", "odeint_event", "solve"]


def _check_gradient(gradient: str, method: str | None) -> str | None:
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"unknown gradient mode {gradient!r}; valid: {', '.join(GRADIENT_MODES)}")
    if gradient == "reversible":
        if method not in (None, "alf"):
            raise ValueError("gradient='reversible' reconstructs the trajectory with the asynchronous leapfrog "
                             f"method; use method='alf' (or leave method unset), not {method!r}")
        return "alf"
    return method


def _check_adjoint_args(adjoint_params, adjoint_rtol, adjoint_atol, adjoint_method) -> None:
    """Bad adjoint settings fail at the call, not later in the backward pass."""
    if adjoint_params is not None and (isinstance(adjoint_params, Tensor) or not isinstance(adjoint_params, Iterable)):
        raise TypeError("adjoint_params must be a tuple or list of tensors (wrap a single tensor as (p,)), got "
                        f"{type(adjoint_params).__name__}")
    for name, value in (("adjoint_rtol", adjoint_rtol), ("adjoint_atol", adjoint_atol)):
        if value is not None:
            check_tolerance(name, value)
    if adjoint_method is not None and adjoint_method not in METHODS:
        raise ValueError(f"unknown adjoint_method {adjoint_method!r}; valid methods: {', '.join(METHODS)}")


def _event_start_time(t0) -> Tensor:
    """``odeint_event``'s ``t0`` as a one-element tensor: a float or a 0-dim/one-element tensor."""
    if not isinstance(t0, Tensor):
        if isinstance(t0, bool) or not isinstance(t0, numbers.Real):
            raise TypeError(f"t0 must be a float or a 0-dim tensor, got {type(t0).__name__}")
        return torch.tensor([float(t0)], dtype=torch.float64)
    if t0.numel() != 1:
        raise ValueError(f"t0 must be a single time (0-dim tensor), got shape {tuple(t0.shape)}")
    return t0.reshape(1)


def _integrate_with_gradient(problem: Problem, gradient: str, params, adjoint_cfg,
                             hooks: LoopHooks = NO_HOOKS) -> Tensor:
    """Flat outputs (T, n) of the problem, with gradients flowing the chosen way; ``hooks``: the caller's
    per-step watchers (dense output, step times, progress), composed with the gradient mode's own."""
    y0, t = problem.y0, problem.t
    if not torch.is_grad_enabled() or not (y0.requires_grad or params or t.requires_grad):
        return integrate(problem, hooks=hooks)
    if gradient == "adjoint":  # the adjoint differentiates the times itself
        return AdjointSolve.apply(problem, adjoint_cfg, hooks, y0, t, *params)
    y_start = StartTime.apply(problem.fn.user_time_call, y0, t[0]) if t.requires_grad else y0
    if gradient == "checkpoint":
        ys = CheckpointSolve.apply(problem, hooks, y_start, *params)
    elif gradient == "reversible":  # the ALF loop calls no hooks (step_log_for refused dense/progress)
        ys = ReversibleSolve.apply(problem, y_start, *params)
    else:
        ys = integrate(problem, y_start, hooks=hooks)
    if not t.requires_grad:
        return ys
    ys = torch.cat([y0.unsqueeze(0), ys[1:]])  # the output at t0 is y0 itself, whatever t0 is
    return OutputTimes.apply(problem.fn.user_time_call, ys, t)


def _callbacks_called_by(method: str) -> frozenset:
    """The step callbacks a method's loop calls (torchdiffeq's ``valid_callbacks``)."""
    if method in ADAPTIVE_METHODS:
        return frozenset(CALLBACK_NAMES)
    return frozenset() if method == "scipy_solver" else frozenset({"callback_step"})


def _warn_unused_callbacks(func, method: str | None, adjoint_cfg) -> None:
    """Warns, as torchdiffeq, about callbacks that the chosen methods never call (accept/reject on fixed grids,
    any on scipy_solver), for the forward solve and, with the adjoint, the ``*_adjoint`` ones of its backward."""
    method = method or "dopri5"
    warn_unsupported(func, method, _callbacks_called_by(method))
    if adjoint_cfg is not None:
        warn_unsupported(func, adjoint_cfg.method, _callbacks_called_by(adjoint_cfg.method), ADJOINT_SUFFIX)


def _warn_params_left_out(func, given, params, adjoint_cfg) -> None:
    """As torchdiffeq: a callable adjoint norm receives only the parameters that require grad; say so when
    some were left out."""
    if callable(adjoint_cfg.norm) and len(params) < len(tuple(func.parameters()) if given is None else given):
        warnings.warn("an adjoint parameter does not require grad: it is left out of the adjoint pass, and of the "
                      "tuple adjoint_options['norm'] receives", UserWarning, stacklevel=4)


def _event_solution(problem: Problem, event_fn, gradient, params, adjoint_cfg, build) -> Solution:
    """Solves until the event. The state there carries gradients to ``y0``, ``t0`` and the parameters
    through the chosen mode; the event time carries them by the implicit function theorem."""
    t0 = problem.t[0]
    track_t0 = torch.is_grad_enabled() and t0.requires_grad
    start = problem
    if gradient == "backprop" and track_t0:  # the located state then depends on t0 through y0
        start = dataclasses.replace(problem, y0=StartTime.apply(problem.fn.user_time_call, problem.y0, t0))
    event_s, y_event = integrate_until_event(start, event_fn)
    event_t = torch.tensor(problem.sign * event_s, dtype=problem.t.dtype, device=problem.t.device)
    if gradient != "backprop":  # re-solve over [t0, t_event] with the chosen gradient mode
        again = build(torch.stack([t0 if track_t0 else t0.detach(), event_t]))
        y_event = _integrate_with_gradient(again, gradient, params, adjoint_cfg)[-1]
        problem.stats.nfe_backward += again.stats.nfe_backward
        problem.stats.nfe += again.stats.nfe

    def event_flat(t, y):
        return event_fn(t, problem.fn.unflatten(y))

    if torch.is_grad_enabled():
        if y_event.requires_grad:
            event_t, y_event = EventTimeGradient.apply(problem.fn.user_time_call, event_flat, event_t, y_event)
        event_t, y_event = add_event_fn_dependence(problem.fn.user_time_call, event_flat, event_t, y_event)
    ys = problem.fn.unflatten(torch.stack([problem.y0, y_event]))
    return Solution(ys, torch.stack([t0.detach(), event_t]), problem.stats, event_t)


def solve(func: Callable, y0: Tensor | tuple[Tensor, ...], t: Tensor | Sequence[float], *,
          rtol: float | Tensor | Sequence[float] = 1e-7,
          atol: float | Tensor | Sequence[float] = 1e-9, method: str | None = None,
          options: dict | None = None, event_fn: Callable | None = None, gradient: str = "backprop",
          adjoint_params: Sequence[Tensor] | None = None, adjoint_rtol: float | None = None,
          adjoint_atol: float | None = None, adjoint_method: str | None = None,
          adjoint_options: dict | None = None, dense: bool = False, save_steps: bool = False,
          progress: bool | object = False) -> Solution:
    """Solves ``dy/dt = func(t, y)``; returns the trajectory with statistics (:class:`pyode.Solution`).

    Same arguments as :func:`odeint` and :func:`odeint_adjoint`. ``sol.stats.nfe_backward`` counts the
    evaluations of the backward pass once it has run (adjoint, checkpoint and reversible modes).

    Args:
        func (Callable): ``func(t, y) -> dy/dt``, as for :func:`odeint`; or a native rhs
            (:mod:`pyode.native`), solved by the compiled loop.
        y0 (Tensor | tuple[Tensor, ...]): (*state) initial state, or a tuple of tensors.
        t (Tensor | Sequence[float]): (T,) strictly monotonic output times; ``t[0]`` is the initial time.
        rtol (float | Tensor | Sequence[float]): relative tolerance (default ``1e-7``); per element: a
            tensor broadcastable to a tensor ``y0``, or one float per component of a tuple ``y0``.
        atol (float | Tensor | Sequence[float]): absolute tolerance (default ``1e-9``), as ``rtol``.
        method (str | None): one of :data:`pyode.METHODS` (default None: ``'dopri5'``).
        options (dict | None): solver options, as for :func:`odeint` (default None).
        event_fn (Callable | None): terminal event ``event_fn(t, y) -> scalar`` (default None).
        gradient (str): ``"backprop"`` (default), ``"checkpoint"``, ``"adjoint"`` or ``"reversible"``;
            see :func:`odeint`.
        adjoint_params (Sequence[Tensor] | None): tensors the non-backprop modes differentiate (default
            None: ``func.parameters()`` of an ``nn.Module`` func).
        adjoint_rtol (float | None): the adjoint backward solve's rtol (default None: ``rtol``).
        adjoint_atol (float | None): its atol (default None: ``atol``).
        adjoint_method (str | None): its method (default None: ``method``).
        adjoint_options (dict | None): its options (default None: ``options``); ``{"norm": "seminorm"}``
            leaves the parameter channels out of its error norm.
        dense (bool): keep the continuous extension: ``sol.evaluate(t)`` gives the state at any time of
            the solved interval (memory: every step's stages), and ``sol.ts`` the accepted steps' end
            times (default False).
        save_steps (bool): only ``sol.ts`` (default False).
        progress (bool | object): a tqdm bar over the interval (True), or a meter with ``update(dt)`` and
            ``close()`` (default False).

    ``dense``, ``save_steps`` and ``progress`` do not combine with ``event_fn``, ``per_sample``, ``alf``,
    ``scipy_solver`` or a native rhs.

    Returns:
        Solution: ``sol.ys`` (T, *state) (a tuple for a tuple ``y0``; with ``event_fn`` (2, *state), the
        initial state and the state at the event), ``sol.t`` (T,), ``sol.stats`` (:class:`SolverStats`),
        ``sol.event_t`` (0-dim, with ``event_fn``), ``sol.ts`` (n_steps + 1,) with ``dense`` or
        ``save_steps``.

    Raises:
        ValueError: a bad argument (the message names it), e.g. an unknown ``gradient`` or ``method``.
        TypeError: an argument of the wrong type.
        ODESolverError: the solve failed (:class:`MaxStepsError`, :class:`StepSizeUnderflowError`,
            :class:`NonFiniteStateError`, :class:`ImplicitSolveError`), with the time reached.

    Examples:
        >>> import torch, pyode
        >>> t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
        >>> sol = pyode.solve(lambda t, y: -y, torch.ones(2, dtype=torch.float64), t, dense=True)
        >>> sol.ys.shape, sol.stats.status
        (torch.Size([3, 2]), 'success')
        >>> round(float(sol.evaluate(0.25)[0]), 4)  # exp(-0.25)
        0.7788
        >>> sol.stats.n_steps == sol.ts.numel() - 1  # no step rejected here
        True
    """
    if is_native_rhs(func) and (dense or save_steps or progress):
        raise ValueError("dense, save_steps and progress need a Python func (not a native rhs)")
    if is_native_rhs(func):  # a compiled rhs (pyode.native.rhs, numba cfunc, cffi): the native loop, no autograd
        return native_solve(func, y0, t, rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn,
                            gradient=gradient, adjoint_params=adjoint_params, adjoint_rtol=adjoint_rtol,
                            adjoint_atol=adjoint_atol, adjoint_method=adjoint_method, adjoint_options=adjoint_options)
    method = _check_gradient(gradient, method)
    if event_fn is not None and gradient == "reversible":
        raise ValueError("gradient='reversible' integrates on a fixed asynchronous-leapfrog grid, which does not "
                         "locate events; use event_fn with gradient='adjoint', 'checkpoint' or 'backprop'")
    _check_adjoint_args(adjoint_params, adjoint_rtol, adjoint_atol, adjoint_method)
    adjoint_params = None if adjoint_params is None else tuple(adjoint_params)  # a generator is read once
    params = () if gradient == "backprop" else resolve_params(func, adjoint_params, gradient)

    def build(times):
        return build_problem(func, y0, times, rtol=rtol, atol=atol, method=method, options=options,
                             event_fn=event_fn)

    problem = build(t)  # validates y0, t, the tolerances and the options first: their errors name the argument
    adjoint_cfg = None
    if gradient == "adjoint":
        if (adjoint_rtol is None and is_per_element(rtol)) or (adjoint_atol is None and is_per_element(atol)):
            raise ValueError("per-component or per-element rtol/atol: the adjoint's backward solve needs float "
                             "tolerances; pass adjoint_rtol and adjoint_atol")
        adjoint_cfg = make_config(rtol, atol, method, options, adjoint_rtol, adjoint_atol, adjoint_method,
                                  adjoint_options)
        _warn_params_left_out(func, adjoint_params, params, adjoint_cfg)
    _warn_unused_callbacks(func, method, adjoint_cfg)
    if event_fn is not None:
        if dense or save_steps or progress:
            raise ValueError("dense, save_steps and progress do not combine with event_fn")
        return _event_solution(problem, combined_event_fn(event_fn, problem), gradient, params, adjoint_cfg, build)
    log = step_log_for(problem, dense, save_steps, progress)
    try:
        ys = _integrate_with_gradient(problem, gradient, params, adjoint_cfg, NO_HOOKS if log is None else log.hooks())
    finally:
        if log is not None:
            log.close()
    return Solution(problem.fn.unflatten(ys), problem.t, problem.stats, **dense_fields(problem, log, dense))


def odeint(func: Callable, y0: Tensor | tuple[Tensor, ...], t: Tensor | Sequence[float], *,
           rtol: float | Tensor | Sequence[float] = 1e-7,
           atol: float | Tensor | Sequence[float] = 1e-9, method: str | None = None,
           options: dict | None = None, event_fn: Callable | None = None, gradient: str = "backprop",
           progress: bool | object = False, **adjoint_kwargs) -> Tensor | tuple:
    """Integrates ``dy/dt = func(t, y)`` from ``t[0]`` and returns ``y`` at every time in ``t``.

    A drop-in replacement for ``torchdiffeq.odeint``.

    Args:
        func (Callable): ``func(t, y) -> dy/dt``; ``t`` a 0-dim tensor, ``y`` shaped like ``y0`` (an
            ``nn.Module`` or any callable; a native rhs runs the compiled loop, see :mod:`pyode.native`).
        y0 (Tensor | tuple[Tensor, ...]): (*state) initial state, or a tuple of tensors.
        t (Tensor | Sequence[float]): (T,) strictly increasing or decreasing times; ``t[0]`` is the
            initial time.
        rtol (float | Tensor | Sequence[float]): relative tolerance of the adaptive methods (default
            ``1e-7``); per element: a tensor broadcastable to a tensor ``y0``, or a tuple with one float per
            component of a tuple ``y0`` (the adjoint then needs float ``adjoint_rtol``/``adjoint_atol``).
        atol (float | Tensor | Sequence[float]): absolute tolerance (default ``1e-9``), as ``rtol``.
        method (str | None): one of :data:`METHODS` (default None: ``'dopri5'``; ``'alf'`` for
            ``gradient='reversible'``).
        options (dict | None): solver options (default None), e.g. ``step_size``, ``first_step``,
            ``max_num_steps``, ``step_t``, ``jump_t``, ``min_step``, ``max_step``, ``safety``, ``ifactor``,
            ``dfactor``, ``pcoeff``, ``icoeff``, ``dcoeff``, ``norm``, ``dtype``, ``interp``; unknown names
            raise.
        event_fn (Callable | None): terminal event ``event_fn(t, y) -> scalar``: the solve stops where it
            changes sign (default None).
        gradient (str): how gradients flow (default ``"backprop"``):
            ``"backprop"`` through the solver's operations (exact for the discretisation; memory grows
            with steps x stages); ``"checkpoint"`` the same gradient from replayed steps (memory: one
            state per step); ``"adjoint"`` the continuous adjoint (memory flat in the number of steps;
            gradient accurate to the tolerances; see :func:`odeint_adjoint`); ``"reversible"`` the
            asynchronous leapfrog method reconstructed backwards (flat memory, exact for its solve).
        progress (bool | object): True shows a tqdm bar over the integration interval (silent when stderr
            is not a terminal); or a progress meter with ``update(dt)`` and ``close()`` (default False).
        **adjoint_kwargs: ``adjoint_params``, ``adjoint_rtol``, ``adjoint_atol``, ``adjoint_method``,
            ``adjoint_options`` for the non-backprop modes (parameters: those of an ``nn.Module`` func);
            see :func:`solve`.

    Returns:
        Tensor | tuple: (T, *state) tensor (a tuple of such for a tuple ``y0``); with ``event_fn``:
        ``(event_t, ys)``, ``event_t`` 0-dim and ``ys`` (2, *state): the initial state and the state at
        the event.

    Raises:
        ValueError: a bad argument (the message names it and the fix): unknown method, gradient mode or
            option, non-monotonic ``t``, negative tolerances, ...
        TypeError: an argument of the wrong type.
        ODESolverError: the solve could not reach ``t[-1]`` (:class:`MaxStepsError`,
            :class:`StepSizeUnderflowError`, :class:`NonFiniteStateError`, :class:`ImplicitSolveError`);
            the exception carries the time reached.

    Under ``torch.compile`` a fixed-grid RK solve (``euler``, ``midpoint``, ``rk4``, ...) on the grid ``t``
    is traced without graph breaks (``fullgraph=True`` works): see :mod:`pyode._solvers.traced`.

    Examples:
        The harmonic oscillator ``y'' = -y`` as a first-order system, from ``(1, 0)``: ``y(t) = cos t``.

        >>> import torch, pyode
        >>> t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
        >>> y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
        >>> ys = pyode.odeint(lambda t, y: torch.stack([y[1], -y[0]]), y0, t)
        >>> ys.shape
        torch.Size([3, 2])
        >>> round(float(ys[-1, 0]), 6), round(float(torch.cos(t[-1])), 6)
        (0.540302, 0.540302)

        A fixed-step method and a gradient by checkpointing:

        >>> y0 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
        >>> ys = pyode.odeint(lambda t, y: -y, y0, t, method="rk4", options={"step_size": 0.1},
        ...                   gradient="checkpoint", adjoint_params=())  # a lambda has no parameters
        >>> ys[-1].sum().backward()
        >>> round(float(y0.grad), 5)  # d exp(-1) y0 / d y0
        0.36788
    """
    if is_native_rhs(func):  # a compiled rhs: the native loop (see solve)
        return native_odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn,
                             gradient=gradient, **adjoint_kwargs)
    if not progress and _traceable_fixed_solve(func, y0, t, method, options, event_fn, gradient, adjoint_kwargs):
        from pyode._solvers.traced import traced_fixed_solve  # registers torch.ops.pyode.lincomb on first use
        return traced_fixed_solve(func, y0, t, TABLEAUX[method], options)
    sol = solve(func, y0, t, rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn,
                gradient=gradient, progress=progress, **adjoint_kwargs)
    return sol.ys if event_fn is None else (sol.event_t, sol.ys)


def _traceable_fixed_solve(func, y0, t, method, options, event_fn, gradient, adjoint_kwargs) -> bool:
    """While torch.compile traces: a backprop fixed-grid RK solve of a tensor state on the grid ``t``.
    Left to the eager path (graph breaks, same results): tuple states, a ``step_size`` grid (its length
    depends on t's values), ``t`` requiring grad (eager gives continuous-time gradients there), and a ``func``
    with step callbacks."""
    return (torch.compiler.is_compiling() and method in FIXED_RK_METHODS and gradient == "backprop"
            and not defined_callbacks(func)
            and event_fn is None and not adjoint_kwargs and isinstance(y0, Tensor)
            and not (isinstance(t, Tensor) and t.requires_grad)
            and not (isinstance(options, dict) and options.get("step_size") is not None))


def odeint_adjoint(func: Callable, y0: Tensor | tuple[Tensor, ...], t: Tensor | Sequence[float], *,
                   rtol: float | Tensor | Sequence[float] = 1e-7,
                   atol: float | Tensor | Sequence[float] = 1e-9, method: str | None = None,
                   options: dict | None = None, event_fn: Callable | None = None,
                   adjoint_rtol: float | None = None, adjoint_atol: float | None = None,
                   adjoint_method: str | None = None, adjoint_options: dict | None = None,
                   adjoint_params: Sequence[Tensor] | None = None) -> Tensor | tuple:
    """:func:`odeint` with gradients by the continuous adjoint (Chen et al. 2018), as torchdiffeq's.

    The backward pass solves the augmented system [y, a, dL/dθ] from ``t[-1]`` to ``t[0]`` (one fused
    kernel call per stage over all of it), so memory does not grow with the number of steps.
    ``func`` must be an ``nn.Module`` or ``adjoint_params`` must list the tensors it uses. The backward
    solve defaults to the forward's tolerances, method and options; ``adjoint_options={"norm":
    "seminorm"}`` (Kidger et al. 2021) leaves the parameter-gradient channels out of its error norm,
    which usually takes fewer steps.

    Args:
        func (Callable): ``func(t, y) -> dy/dt``, usually an ``nn.Module``.
        y0 (Tensor | tuple[Tensor, ...]): (*state) initial state, or a tuple of tensors.
        t (Tensor | Sequence[float]): (T,) strictly monotonic output times.
        rtol (float | Tensor | Sequence[float]): forward relative tolerance (default ``1e-7``), as for
            :func:`odeint`.
        atol (float | Tensor | Sequence[float]): forward absolute tolerance (default ``1e-9``).
        method (str | None): forward method (default None: ``'dopri5'``).
        options (dict | None): forward options (default None).
        event_fn (Callable | None): terminal event, as for :func:`odeint` (default None).
        adjoint_rtol (float | None): backward rtol (default None: ``rtol``; needed with per-component
            ``rtol``).
        adjoint_atol (float | None): backward atol (default None: ``atol``).
        adjoint_method (str | None): backward method (default None: ``method``).
        adjoint_options (dict | None): backward options (default None: ``options``).
        adjoint_params (Sequence[Tensor] | None): the tensors to differentiate (default None:
            ``func.parameters()``).

    Returns:
        Tensor | tuple: as :func:`odeint`: (T, *state), or ``(event_t, ys)`` with ``event_fn``.

    Raises:
        ValueError, TypeError, ODESolverError: as :func:`odeint`.

    Examples:
        >>> import torch, pyode
        >>> class Decay(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.k = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
        ...     def forward(self, t, y):
        ...         return -self.k * y
        >>> f = Decay()
        >>> t = torch.tensor([0.0, 1.0], dtype=torch.float64)
        >>> ys = pyode.odeint_adjoint(f, torch.ones(1, dtype=torch.float64), t)
        >>> ys[-1].sum().backward()
        >>> round(float(f.k.grad), 5)  # d/dk exp(-k) at k = 1
        -0.36788
    """
    return odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn,
                  gradient="adjoint", adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol,
                  adjoint_method=adjoint_method, adjoint_options=adjoint_options, adjoint_params=adjoint_params)


def odeint_event(func: Callable, y0: Tensor | tuple[Tensor, ...], t0: float | Tensor, *, event_fn: Callable,
                 reverse_time: bool = False, odeint_interface: Callable | None = None,
                 **kwargs) -> tuple[Tensor, Tensor | tuple]:
    """Solves from ``t0`` until ``event_fn(t, y)`` changes sign (torchdiffeq's ``odeint_event``).

    The event time and the state there are differentiable with respect to ``y0``, ``t0`` (so chained
    events, each starting at the previous event time, keep every dependence), ``func``'s parameters and
    tensors that ``event_fn`` captures (torchdiffeq drops the last). ``odeint_interface=odeint_adjoint``
    (or ``gradient=...`` in kwargs) picks the gradient mode.

    Args:
        func (Callable): ``func(t, y) -> dy/dt``.
        y0 (Tensor | tuple[Tensor, ...]): (*state) initial state.
        t0 (float | Tensor): the initial time, a float or a 0-dim (one-element) tensor.
        event_fn (Callable): ``event_fn(t, y) -> scalar tensor``; the solve stops where it changes sign.
        reverse_time (bool): integrate towards decreasing times (default False).
        odeint_interface (Callable | None): :func:`odeint_adjoint` for adjoint gradients (default None:
            ``gradient`` from kwargs, else backprop).
        **kwargs: ``rtol``, ``atol``, ``method``, ``options``, ``gradient`` and the adjoint arguments of
            :func:`solve`.

    Returns:
        tuple[Tensor, Tensor | tuple]: ``(event_t, ys)``: ``event_t`` 0-dim, ``ys`` (2, *state): the
        initial state and the state at the event.

    Raises:
        TypeError: ``event_fn`` not callable, or ``t0`` not a float or tensor.
        ValueError: ``t0`` with more than one element, or a bad solver argument.
        ODESolverError: the solve failed before the event (e.g. :class:`MaxStepsError` when the event
            never happens).

    Examples:
        ``y' = -1`` from ``y = 1`` reaches ``y = 0.25`` at ``t = 0.75``:

        >>> import torch, pyode
        >>> event_t, ys = pyode.odeint_event(lambda t, y: -torch.ones_like(y),
        ...                                  torch.ones(1, dtype=torch.float64), 0.0,
        ...                                  event_fn=lambda t, y: y.sum() - 0.25)
        >>> round(float(event_t), 6), ys.shape
        (0.75, torch.Size([2, 1]))
        >>> round(float(ys[-1, 0]), 6)
        0.25
    """
    if not callable(event_fn):
        raise TypeError(f"event_fn must be callable as event_fn(t, y) -> scalar tensor, got {type(event_fn).__name__}")
    if odeint_interface is odeint_adjoint:
        kwargs.setdefault("gradient", "adjoint")
    t0 = _event_start_time(t0)
    t = torch.cat([t0, t0.detach() + (-1.0 if reverse_time else 1.0)])
    sol = solve(func, y0, t, event_fn=event_fn, **kwargs)
    return sol.event_t, sol.ys
