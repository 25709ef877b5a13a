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

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pyode.errors import ODESolverError
from pyode.solution import SolverStats

_ADJOINT_NORMS = ("mixed", "seminorm", "rms")


@dataclass
class AdjointConfig:
    """Settings of the backward solve; ``stats`` collects its counters (backward NFE, steps)."""

    rtol: float
    atol: float
    method: str
    options: dict
    norm: str
    stats: SolverStats = field(default_factory=SolverStats)


def make_config(rtol, atol, method, options, adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options):
    """torchdiffeq's defaults: the backward solve inherits the forward settings (its options only when
    the method is the same)."""
    method = method or "dopri5"
    adjoint_method = adjoint_method or method
    if adjoint_options is None:
        adjoint_options = dict(options or {}) if adjoint_method == method else {}
    if not isinstance(adjoint_options, dict):
        raise TypeError("adjoint_options must be a dict")
    adjoint_options = dict(adjoint_options)
    norm = adjoint_options.pop("norm", "mixed")
    if norm not in _ADJOINT_NORMS:
        raise ValueError(f"adjoint_options['norm'] must be one of {_ADJOINT_NORMS}, got {norm!r}")
    return AdjointConfig(rtol if adjoint_rtol is None else adjoint_rtol, atol if adjoint_atol is None else adjoint_atol,
                         adjoint_method, adjoint_options, norm)


class _AugmentedDynamics:
    """``(t, (y, a, *g_θ, [g_t])) -> (f, -aᵀf_y, *(-aᵀf_θ), [-aᵀf_t])`` with one VJP per call."""

    def __init__(self, user_flat, params: tuple[Tensor, ...], with_time: bool):
        self.user_flat, self.params, self.with_time = user_flat, params, with_time

    def __call__(self, t: Tensor, state):
        y, a = state[0], state[1]
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            t = t.detach().requires_grad_(self.with_time)
            f = self.user_flat(t, y)
            inputs = (y, *self.params, t) if self.with_time else (y, *self.params)
            vjps = torch.autograd.grad(f, inputs, -a, allow_unused=True)
        vjps = [torch.zeros_like(x) if g is None else g for g, x in zip(vjps, inputs)]
        if self.with_time:
            vjps[-1] = vjps[-1].reshape(1).to(y.dtype)
        return (f.detach(), *vjps)


def _solve_backward(problem, aug, state: tuple, t_from: Tensor, t_to: Tensor, cfg: AdjointConfig) -> tuple:
    from pyode._solvers.problem import build_problem, integrate

    norm_segments = 2 if cfg.norm == "seminorm" else None
    options = dict(cfg.options)
    if cfg.norm == "rms":
        options["norm"] = "rms"
    back = build_problem(aug, state, torch.stack([t_from, t_to]), rtol=cfg.rtol, atol=cfg.atol, method=cfg.method,
                         options=options, norm_segments=norm_segments, stats=cfg.stats)
    try:
        out = integrate(back)
    except ODESolverError as exc:
        raise type(exc)(exc.reason, exc.t_reached, f"adjoint backward pass: {exc.args[0]}") from exc
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
        aug = _AugmentedDynamics(problem.fn.user_time_call, tuple(params), with_time)
        a = grad_ys[-1].clone()
        g = [torch.zeros_like(p) for p in params]
        g_t = ys.new_zeros(1)
        time_vjps = torch.zeros_like(t) if with_time else None
        before = (cfg.stats.nfe, cfg.stats.n_accepted, cfg.stats.n_rejected)
        for i in range(len(t) - 1, 0, -1):
            if with_time:  # dL/dt_i through the output y(t_i) = f(t_i, y_i) . dL/dy_i
                dl_dt = torch.dot(problem.fn.user_time_call(t[i], ys[i]).detach(), grad_ys[i])
                time_vjps[i] = dl_dt
                g_t = g_t - dl_dt
            state = (ys[i], a, *g, g_t) if with_time else (ys[i], a, *g)
            state = _solve_backward(problem, aug, state, t[i], t[i - 1], cfg)
            a = state[1] + grad_ys[i - 1]
            g = list(state[2:2 + len(params)])
            if with_time:
                g_t = state[-1]
        if with_time:
            time_vjps[0] = g_t[0]
        stats = problem.stats
        stats.nfe_backward += cfg.stats.nfe - before[0]
        stats.n_accepted_backward += cfg.stats.n_accepted - before[1]
        stats.n_rejected_backward += cfg.stats.n_rejected - before[2]
        return (None, None, a, time_vjps, *g)
