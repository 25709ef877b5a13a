"""The continuous adjoint method (Chen, Rubanova, Bettencourt & Duvenaud, NeurIPS 2018), with
torchdiffeq's semantics, and the seminorm of Kidger, Chen & Lyons (ICML 2021).

The forward solve keeps no graph. The backward pass integrates the augmented state
``[y, a, g_θ (one block per parameter tensor), g_t]`` from ``t[-1]`` back to ``t[0]``:

    dy/dt = f,   da/dt = -aᵀ ∂f/∂y,   dg_θ/dt = -aᵀ ∂f/∂θ,   dg_t/dt = -aᵀ ∂f/∂t,

as ONE flat state: each stage of the backward solve is one fused kernel call over all of it (every
parameter gradient included), and one vector-Jacobian product per evaluation yields all parameter
blocks at once. Memory is O(state + parameters) whatever the number of steps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pyode._solvers.callbacks import ADJOINT_SUFFIX, defined_callbacks
from pyode.errors import ODESolverError
from pyode.solution import SolverStats

_ADJOINT_NORMS = ("mixed", "seminorm", "rms")


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
    return AdjointConfig(rtol if adjoint_rtol is None else adjoint_rtol, atol if adjoint_atol is None else adjoint_atol,
                         adjoint_method, adjoint_options, norm, state_norm)


class _Layout:
    """The order of the backward solve's tuple state: ``([g_t], y parts, a parts, *g_θ)``, as torchdiffeq's
    ``(vjp_t, y, adj_y, *vjp_params)``. The state and adjoint are split into the forward's tuple components
    (``sizes``) where the error norm is torchdiffeq's mixed norm over them, so the kernels' per-segment
    norms compute it; otherwise each is one flat block (``sizes == [n]``).

    Args:
        sizes: element counts of the blocks of y (and of a); n_params: parameter blocks; with_time: g_t is
        carried (the times require grad).
    """

    def __init__(self, sizes: list[int], n_params: int, with_time: bool):
        self.sizes, self.n_params, self.with_time = sizes, n_params, with_time
        self.lead = 1 if with_time else 0

    def pack(self, y: Tensor, a: Tensor, g, g_t: Tensor | None) -> tuple:
        parts = (y, a) if len(self.sizes) == 1 else (*y.split(self.sizes), *a.split(self.sizes))
        return ((g_t,) if self.with_time else ()) + parts + tuple(g)

    def unpack(self, state) -> tuple[Tensor, Tensor, list[Tensor], Tensor | None]:
        """(y (n,), a (n,), [g_θ], g_t (1,) or None) from a packed state."""
        m, k = len(self.sizes), self.lead
        if m == 1:
            y, a = state[k], state[k + 1]
        else:
            y, a = torch.cat(state[k:k + m]), torch.cat(state[k + m:k + 2 * m])
        return y, a, list(state[k + 2 * m:]), state[0] if self.with_time else None

    @property
    def seminorm_segments(self) -> int:
        """The leading blocks a seminorm measures: g_t (torchdiffeq's), y and a."""
        return self.lead + 2 * len(self.sizes)


def _torchdiffeq_order(layout: _Layout, unflatten: Callable, state) -> tuple:
    """A packed backward state as torchdiffeq hands it to adjoint norms and callbacks: ``(t, y, adj_y,
    *adj_params)`` with y and adj_y in the user's structure (``(t, *y, *adj_y, *adj_params)`` for a tuple
    state) and t 0-dim (zero when the times do not require grad)."""
    y, a, g, g_t = layout.unpack(state)
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
        self.user_flat, self.params, self.layout = user_flat, params, layout
        self.with_time = layout.with_time
        found = callbacks or {}
        self.callback_step = self._adjoint_callback(found.get("callback_step"), unflatten)
        self.callback_accept_step = self._adjoint_callback(found.get("callback_accept_step"), unflatten)
        self.callback_reject_step = self._adjoint_callback(found.get("callback_reject_step"), unflatten)

    def _adjoint_callback(self, user: Callable | None, unflatten: Callable | None) -> Callable | None:
        if user is None:
            return None

        def callback(t0: Tensor, state, dt: Tensor):
            return user(t0, _torchdiffeq_order(self.layout, unflatten, state), dt)

        return callback

    def __call__(self, t: Tensor, state):
        y, a, _, _ = self.layout.unpack(state)
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            t = t.detach().requires_grad_(self.with_time)
            f = self.user_flat(t, y)
            inputs = (y, *self.params, t) if self.with_time else (y, *self.params)
            # f may depend on none of them (y' = g(t) with adjoint_params=()): then every product is zero
            vjps = torch.autograd.grad(f, inputs, -a, allow_unused=True) if f.requires_grad else [None] * len(inputs)
        vjps = [torch.zeros_like(x) if g is None else g for g, x in zip(vjps, inputs)]
        g_t = vjps.pop().reshape(1).to(y.dtype) if self.with_time else None
        return self.layout.pack(f.detach(), vjps[0], vjps[1:], g_t)


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
            values = [_as_scalar(t, option), _as_scalar(cfg.state_norm(ys), option),
                      _as_scalar(cfg.state_norm(adj), option)]
            if cfg.norm == "mixed":
                values += [x.detach().double().pow(2).mean().sqrt() for x in g if x.numel()]
            return torch.stack(values).max()
    else:
        return None

    def norm(state) -> Tensor:
        y, a, g, g_t = layout.unpack(state)
        t = g_t.reshape(()) if g_t is not None else y.new_zeros(())
        value = measure(t, unflatten(y), unflatten(a), g)
        if not math.isfinite(float(value)) and all(bool(torch.isfinite(x).all()) for x in (t, y, a, *g)):
            raise ValueError(f"{option} returned {float(value)} for a finite input in the adjoint backward pass; it "
                             "must return a finite non-negative number")
        return value

    return norm


def _layout(problem, cfg: AdjointConfig, n_params: int, with_time: bool) -> _Layout:
    """Split y and a into the forward's tuple components where the norm is the mixed norm over them (a
    tuple state with its default norm and the default adjoint norm or the seminorm)."""
    split = (problem.fn.is_tuple and cfg.state_norm in (None, "mixed") and cfg.norm in ("mixed", "seminorm"))
    offsets = problem.offsets if split else [0, problem.y0.numel()]
    return _Layout([b - a for a, b in itertools.pairwise(offsets)], n_params, with_time)


def _solve_backward(problem, aug: _AugmentedDynamics, state: tuple, t_from: Tensor, t_to: Tensor,
                    cfg: AdjointConfig) -> tuple:
    from pyode._solvers.problem import build_problem, integrate

    options = dict(cfg.options)
    custom = _callable_norm(cfg, aug.layout, problem.fn.unflatten)
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
    """ys (T, n) = solve(y0); backward by the continuous adjoint. Inputs: problem, cfg, y0 (n,), t (T,),
    *params."""

    @staticmethod
    def forward(ctx, problem, cfg, y0, t, *params):  # type: ignore[override]
        from pyode._solvers.problem import integrate

        with torch.no_grad():
            ys = integrate(problem, y0)
        ctx.problem, ctx.cfg = problem, cfg
        ctx.save_for_backward(ys, t, *params)
        return ys

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_ys):  # type: ignore[override]
        ys, t, *params = ctx.saved_tensors
        problem, cfg = ctx.problem, ctx.cfg
        with_time = ctx.needs_input_grad[3]
        layout = _layout(problem, cfg, len(params), with_time)
        aug = _AugmentedDynamics(problem.fn.user_time_call, tuple(params), layout,
                                 defined_callbacks(problem.fn.func, ADJOINT_SUFFIX), problem.fn.unflatten)
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
            state = _solve_backward(problem, aug, layout.pack(ys[i], a, g, g_t), t[i], t[i - 1], cfg)
            _, a, g, g_t = layout.unpack(state)
            a = a + grad_ys[i - 1]
        if with_time:
            time_vjps[0] = g_t[0]
        stats = problem.stats
        stats.nfe_backward += cfg.stats.nfe - before[0]
        stats.n_accepted_backward += cfg.stats.n_accepted - before[1]
        stats.n_rejected_backward += cfg.stats.n_rejected - before[2]
        return (None, None, a, time_vjps, *g)
