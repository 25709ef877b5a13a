"""The continuous adjoint method (Chen, Rubanova, Bettencourt & Duvenaud, NeurIPS 2018), with
torchdiffeq's semantics, and the seminorm of Kidger, Chen & Lyons (ICML 2021).

The forward solve keeps no graph. The backward pass integrates the augmented state
``[y, a, g_θ (one block per parameter tensor), g_t]`` from ``t[-1]`` back to ``t[0]``:

    dy/dt = f,   da/dt = -aᵀ ∂f/∂y,   dg_θ/dt = -aᵀ ∂f/∂θ,   dg_t/dt = -aᵀ ∂f/∂t,

as ONE flat state: each stage of the backward solve is one fused kernel call over all of it (every
parameter gradient included), and one vector-Jacobian product per evaluation yields all parameter
blocks at once. Memory is O(state + parameters) whatever the number of steps.

``adjoint_options={"y": "interpolated"}`` (the default for the implicit methods and ``auto``) reads y(t) from
the forward solve's dense output instead of re-integrating it backwards (SciMLSensitivity's
``InterpolatingAdjoint``): integrating ``dy/dt = f`` backwards is unstable for a stiff problem (its decaying
modes grow backwards), so the backsolve runs out of steps or loses y. Only ``[g_t], a, g_θ`` are integrated;
memory grows with the number of forward steps (each step's stages are kept). See :mod:`pyode._gradients.
adjoint_interpolated`. ``{"y": "backsolve"}`` (the default of explicit methods) is the re-integration.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pyode._solvers.callbacks import ADJOINT_SUFFIX, defined_callbacks
from pyode._solvers.dense import StepLog
from pyode._solvers.hooks import LoopHooks, compose, supports
from pyode.errors import ODESolverError
from pyode.solution import SolverStats

_ADJOINT_NORMS = ("mixed", "seminorm", "rms")
Y_MODES = ("backsolve", "interpolated")


@dataclass
class AdjointConfig:
    """Settings of the backward solve; ``stats`` collects its counters (backward NFE, steps).

    ``norm``: "mixed" (torchdiffeq's default: the max over the state, adjoint, time and each parameter
    block), "seminorm" (without the parameter blocks), "rms" (one RMS over everything) or a callable
    (torchdiffeq's convention, see :func:`_callable_norm`). ``state_norm``: the forward's ``options['norm']``
    (None: its default), which the first two apply to the state and the adjoint, as torchdiffeq does.
    """

    rtol: float
    atol: float
    method: str
    options: dict
    norm: str | Callable
    state_norm: str | Callable | None = None
    stats: SolverStats = field(default_factory=SolverStats)
    y_mode: str = "backsolve"  # "interpolated": y(t) from the forward's dense output (see module docstring)
    y_mode_given: bool = False  # the user asked for y_mode (an unavailable one raises instead of falling back)


def _is_stiff_method(method: str) -> bool:
    """The adaptive implicit methods (kvaerno3/5, rodas5) and ``auto``: their adjoint defaults to
    ``y="interpolated"``. Not the fixed-grid implicit ones: their dense output is linear by default
    (torchdiffeq's), which would make the gradient only second-order accurate in the step; they can ask for it
    with ``options['interp'] = 'cubic'``, and their backsolve takes the same fixed steps (it cannot run out)."""
    from pyode._solvers.problem import IMPLICIT_ADAPTIVE_METHODS, MULTISTEP_ADAPTIVE_METHODS

    return method in IMPLICIT_ADAPTIVE_METHODS or method in MULTISTEP_ADAPTIVE_METHODS


def make_config(rtol, atol, method, options, adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options):
    """torchdiffeq's defaults: the backward solve inherits the forward settings (its options, less the
    norm, only when the method is the same)."""
    method = method or "dopri5"
    adjoint_method = adjoint_method or method
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict of solver options, got {type(options).__name__}")
    state_norm = (options or {}).get("norm")
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"} if adjoint_method == method else {}
    if not isinstance(adjoint_options, dict):
        raise TypeError("adjoint_options must be a dict")
    adjoint_options = dict(adjoint_options)
    norm = adjoint_options.pop("norm", "mixed")
    if not callable(norm) and norm not in _ADJOINT_NORMS:
        raise ValueError(f"adjoint_options['norm'] must be one of {_ADJOINT_NORMS} or a callable "
                         f"norm((t, y, adj_y, *adj_params)) -> scalar tensor, got {norm!r}")
    y_given = "y" in adjoint_options
    y_mode = adjoint_options.pop("y", "interpolated" if _is_stiff_method(method) else "backsolve")
    if y_mode not in Y_MODES:
        raise ValueError(f"adjoint_options['y'] must be 'backsolve' (re-integrate y backwards) or 'interpolated' "
                         f"(read y from the forward solve's dense output), got {y_mode!r}")
    if y_mode == "interpolated" and callable(norm):
        raise ValueError("a callable adjoint_options['norm'] receives y, which adjoint_options['y']='interpolated' "
                         "(the default of implicit methods) does not integrate; pass adjoint_options={'y': "
                         "'backsolve', ...} or a named norm")
    return AdjointConfig(rtol if adjoint_rtol is None else adjoint_rtol, atol if adjoint_atol is None else adjoint_atol,
                         adjoint_method, adjoint_options, norm, state_norm, y_mode=y_mode, y_mode_given=y_given)


class _Layout:
    """The order of the backward solve's tuple state: ``([g_t], y parts, a parts, *g_θ)``, as torchdiffeq's
    ``(vjp_t, y, adj_y, *vjp_params)``. The state and adjoint are split into the forward's tuple components
    (``sizes``) where the error norm is torchdiffeq's mixed norm over them, so the kernels' per-segment
    norms compute it; otherwise each is one flat block (``sizes == [n]``).

    Args:
        sizes: element counts of the blocks of y (and of a); n_params: parameter blocks; with_time: g_t is
        carried (the times require grad); carry_y: y is part of the state (False for the interpolated adjoint:
        ``([g_t], a parts, *g_θ)``, and ``unpack`` returns y = None).
    """

    def __init__(self, sizes: list[int], n_params: int, with_time: bool, carry_y: bool = True):
        self.sizes, self.n_params, self.with_time, self.carry_y = sizes, n_params, with_time, carry_y
        self.lead = 1 if with_time else 0

    def pack(self, y: Tensor | None, a: Tensor, g, g_t: Tensor | None) -> tuple:
        split = (lambda x: (x,)) if len(self.sizes) == 1 else (lambda x: tuple(x.split(self.sizes)))
        parts = (*split(y), *split(a)) if self.carry_y else split(a)
        return ((g_t,) if self.with_time else ()) + parts + tuple(g)

    def unpack(self, state) -> tuple[Tensor | None, Tensor, list[Tensor], Tensor | None]:
        """(y (n,) or None, a (n,), [g_θ], g_t (1,) or None) from a packed state."""
        m, k = len(self.sizes), self.lead
        blocks = [state[k + i] if m == 1 else torch.cat(state[k + i * m:k + (i + 1) * m])
                  for i in range(2 if self.carry_y else 1)]
        y, a = (blocks[0], blocks[1]) if self.carry_y else (None, blocks[0])
        return y, a, list(state[k + len(blocks) * m:]), state[0] if self.with_time else None

    @property
    def seminorm_segments(self) -> int:
        """The leading blocks a seminorm measures: g_t (torchdiffeq's), y (when carried) and a."""
        return self.lead + (2 if self.carry_y else 1) * len(self.sizes)


def _torchdiffeq_order(layout: _Layout, unflatten: Callable, state, y: Tensor | None = None) -> tuple:
    """A packed backward state as torchdiffeq hands it to adjoint norms and callbacks: ``(t, y, adj_y,
    *adj_params)`` with y and adj_y in the user's structure (``(t, *y, *adj_y, *adj_params)`` for a tuple
    state) and t 0-dim (zero when the times do not require grad). ``y``: (n,) where the state does not carry
    it (the interpolated adjoint)."""
    packed_y, a, g, g_t = layout.unpack(state)
    y = packed_y if y is None else y
    t = g_t.reshape(()) if g_t is not None else y.new_zeros(())
    ys, adj = unflatten(y), unflatten(a)
    parts = (*ys, *adj) if isinstance(ys, tuple) else (ys, adj)
    return (t, *parts, *g)


class _AugmentedDynamics:
    """``(t, ([g_t], y, a, *g_θ)) -> ([-aᵀf_t], f, -aᵀf_y, *(-aᵀf_θ))`` with one VJP per call.

    ``callbacks``: func's ``callback_*_adjoint`` by their forward names; they are this function's
    ``callback_step`` / ``callback_accept_step`` / ``callback_reject_step``, so the backward solve's loop
    calls them, with the state in torchdiffeq's order (:func:`_torchdiffeq_order`)."""

    def __init__(self, user_flat, params: tuple[Tensor, ...], layout: _Layout, callbacks: dict | None = None,
                 unflatten: Callable | None = None):
        self.user_flat, self.params, self.layout, self.unflatten = user_flat, params, layout, unflatten
        self.with_time = layout.with_time
        found = callbacks or {}
        self.callback_step = self._adjoint_callback(found.get("callback_step"), unflatten)
        self.callback_accept_step = self._adjoint_callback(found.get("callback_accept_step"), unflatten)
        self.callback_reject_step = self._adjoint_callback(found.get("callback_reject_step"), unflatten)

    def _adjoint_callback(self, user: Callable | None, unflatten: Callable | None) -> Callable | None:
        if user is None:
            return None

        def callback(t0: Tensor, state, dt: Tensor):
            return user(t0, _torchdiffeq_order(self.layout, unflatten, state, self.state_at(t0, state)), dt)

        return callback

    def state_at(self, t: Tensor, state) -> Tensor:
        """y (n,) at user time ``t``: carried in the backsolve's state (overridden by the interpolated adjoint)."""
        return self.layout.unpack(state)[0]

    def __call__(self, t: Tensor, state):
        y, a = self.state_at(t, state), self.layout.unpack(state)[1]
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            t = t.detach().requires_grad_(self.with_time)
            f = self.user_flat(t, y)
            inputs = (y, *self.params, t) if self.with_time else (y, *self.params)
            # f may depend on none of them (y' = g(t) with adjoint_params=()): then every product is zero
            vjps = torch.autograd.grad(f, inputs, -a, allow_unused=True) if f.requires_grad else [None] * len(inputs)
        vjps = [torch.zeros_like(x) if g is None else g for g, x in zip(vjps, inputs)]
        g_t = vjps.pop().reshape(1).to(y.dtype) if self.with_time else None
        return self.layout.pack(f.detach() if self.layout.carry_y else None, vjps[0], vjps[1:], g_t)


def _as_scalar(value, option: str) -> Tensor:
    """A norm's value as a 0-dim float64 tensor; anything but one number raises naming the option."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(abs(float(value)), dtype=torch.float64)
    if not isinstance(value, Tensor) or value.numel() != 1:
        what = f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{option} must return a scalar (one-element tensor or float), got {what}")
    return value.detach().reshape(()).abs().double()


def _callable_norm(cfg: AdjointConfig, layout: _Layout, unflatten: Callable) -> Callable | None:
    """The backward solve's error norm as a callable on its packed (scaled-error) state, where the kernels'
    segment norms cannot compute it. A callable ``adjoint_options['norm']`` is called as torchdiffeq calls it,
    with ``(t, y, adj_y, *adj_params)`` (``(t, *y, *adj_y, *adj_params)`` for a tuple state; y and adj_y in the
    user's structure, t 0-dim). A callable forward ``options['norm']`` is what the default norm and the
    seminorm apply to the state and to the adjoint (torchdiffeq's ``state_norm``). None: the kernels' norms."""
    if callable(cfg.norm):
        option = "adjoint_options['norm']"

        def measure(t: Tensor, ys, adj, g: list[Tensor]) -> Tensor:
            parts = (*ys, *adj) if isinstance(ys, tuple) else (ys, adj)
            return _as_scalar(cfg.norm((t, *parts, *g)), option)
    elif callable(cfg.state_norm) and cfg.norm in ("mixed", "seminorm"):
        option = "options['norm']"

        def measure(t: Tensor, ys, adj, g: list[Tensor]) -> Tensor:
            values = [_as_scalar(t, option), _as_scalar(cfg.state_norm(adj), option)]
            if ys is not None:  # the interpolated adjoint carries no y
                values.append(_as_scalar(cfg.state_norm(ys), option))
            if cfg.norm == "mixed":
                values += [x.detach().double().pow(2).mean().sqrt() for x in g if x.numel()]
            return torch.stack(values).max()
    else:
        return None

    def norm(state) -> Tensor:
        y, a, g, g_t = layout.unpack(state)
        t = g_t.reshape(()) if g_t is not None else y.new_zeros(())
        value = measure(t, None if y is None else unflatten(y), unflatten(a), g)
        if not math.isfinite(float(value)) and all(bool(torch.isfinite(x).all()) for x in (t, a, *g)):
            raise ValueError(f"{option} returned {float(value)} for a finite input in the adjoint backward pass; it "
                             "must return a finite non-negative number")
        return value

    return norm


def _layout(problem, cfg: AdjointConfig, n_params: int, with_time: bool, carry_y: bool = True) -> _Layout:
    """Split y and a into the forward's tuple components where the norm is the mixed norm over them (a
    tuple state with its default norm and the default adjoint norm or the seminorm)."""
    split = (problem.fn.is_tuple and cfg.state_norm in (None, "mixed") and cfg.norm in ("mixed", "seminorm"))
    offsets = problem.offsets if split else [0, problem.y0.numel()]
    return _Layout([b - a for a, b in itertools.pairwise(offsets)], n_params, with_time, carry_y)


def _interpolates(problem, cfg: AdjointConfig) -> bool:
    """Whether this solve takes the interpolated adjoint: asked for (or the default of its method), and its
    loop can record steps (not per_sample or scipy_solver; there a default falls back to the backsolve)."""
    if cfg.y_mode != "interpolated":
        return False
    if supports(problem.loop, "on_step"):
        return True
    if cfg.y_mode_given:
        raise ValueError(f"adjoint_options['y']='interpolated' needs the forward's dense output, which "
                         f"method={problem.method!r} (or options['per_sample']) does not record; use "
                         "adjoint_options={'y': 'backsolve'}")
    return False


def _augmented_dynamics(problem, params: tuple, layout: _Layout, log) -> _AugmentedDynamics:
    """The backward solve's function: the backsolve's, or with a forward step ``log`` the interpolated one."""
    callbacks = defined_callbacks(problem.fn.func, ADJOINT_SUFFIX)
    if log is None:
        return _AugmentedDynamics(problem.fn.user_time_call, params, layout, callbacks, problem.fn.unflatten)
    from pyode._gradients.adjoint_interpolated import InterpolatedDynamics

    return InterpolatedDynamics(problem.fn.user_time_call, params, layout, log, problem.sign, callbacks,
                                problem.fn.unflatten)


def _solve_backward(aug: _AugmentedDynamics, state: tuple, t_from: Tensor, t_to: Tensor,
                    cfg: AdjointConfig) -> tuple:
    from pyode._solvers.problem import build_problem, integrate

    options = dict(cfg.options)
    if not aug.layout.carry_y:  # the interpolated state is ([g_t], a, *g_θ): no batch rows
        options.pop("jacobian", None)
    custom = _callable_norm(cfg, aug.layout, aug.unflatten)
    norm_segments = None
    if custom is not None:
        options["norm"] = custom
    elif cfg.norm == "rms":
        options["norm"] = "rms"
    elif cfg.norm == "seminorm":
        norm_segments = aug.layout.seminorm_segments
    back = build_problem(aug, state, torch.stack([t_from, t_to]), rtol=cfg.rtol, atol=cfg.atol, method=cfg.method,
                         options=options, norm_segments=norm_segments, stats=cfg.stats)
    try:
        out = integrate(back)
    except ODESolverError as exc:
        raise type(exc)(exc.reason, exc.t_reached, f"adjoint backward pass: {exc.message}") from exc
    return back.fn.unflatten(out[-1])


class AdjointSolve(torch.autograd.Function):
    """ys (T, n) = solve(y0); backward by the continuous adjoint. Inputs: problem, cfg, hooks (the caller's
    :class:`LoopHooks`, watched alongside the interpolated adjoint's step log), y0 (n,), t (T,), *params."""

    @staticmethod
    def forward(ctx, problem, cfg, hooks: LoopHooks, y0, t, *params):  # type: ignore[override]
        from pyode._solvers.problem import integrate

        # the interpolated adjoint keeps every accepted step (its stages) to read y(t) in the backward pass
        ctx.log = StepLog(problem.t_out[0], keep_steps=True) if _interpolates(problem, cfg) else None
        with torch.no_grad():
            ys = integrate(problem, y0, hooks=hooks if ctx.log is None else compose(ctx.log.hooks(), hooks))
        ctx.problem, ctx.cfg = problem, cfg
        ctx.save_for_backward(ys, t, *params)
        return ys

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_ys):  # type: ignore[override]
        ys, t, *params = ctx.saved_tensors
        problem, cfg = ctx.problem, ctx.cfg
        with_time = ctx.needs_input_grad[4]
        layout = _layout(problem, cfg, len(params), with_time, carry_y=ctx.log is None)
        aug = _augmented_dynamics(problem, tuple(params), layout, ctx.log)
        a = grad_ys[-1].clone()
        g = [torch.zeros_like(p) for p in params]
        g_t = ys.new_zeros(1) if with_time else None
        time_vjps = torch.zeros_like(t) if with_time else None
        before = (cfg.stats.nfe, cfg.stats.n_accepted, cfg.stats.n_rejected)
        for i in range(len(t) - 1, 0, -1):
            if with_time:  # dL/dt_i through the output y(t_i) = f(t_i, y_i) . dL/dy_i
                dl_dt = torch.dot(problem.fn.user_time_call(t[i], ys[i]).detach(), grad_ys[i])
                time_vjps[i] = dl_dt
                g_t = g_t - dl_dt
            state = _solve_backward(aug, layout.pack(ys[i], a, g, g_t), t[i], t[i - 1], cfg)
            _, a, g, g_t = layout.unpack(state)
            a = a + grad_ys[i - 1]
        if with_time:
            time_vjps[0] = g_t[0]
        stats = problem.stats
        stats.nfe_backward += cfg.stats.nfe - before[0]
        stats.n_accepted_backward += cfg.stats.n_accepted - before[1]
        stats.n_rejected_backward += cfg.stats.n_rejected - before[2]
        return (None, None, None, a, time_vjps, *g)
