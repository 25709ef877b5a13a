"""Checkpointed gradients (the adaptive checkpoint adjoint, ACA: Zhuang et al., ICML 2020).

The forward solve keeps no graph, only each accepted step's start state (O(steps x state)). The
backward pass retakes the steps in reverse, each with a local graph (the same operations as the
forward, via the same stepper and output writer), and backpropagates through that one step. The
gradients therefore equal direct backpropagation through the solver, with the memory of one step's
graph instead of all of them.
"""

from __future__ import annotations

import torch

from pyode._solvers.hooks import LoopHooks, compose, supports
from pyode._solvers.rk_step import StepRecord, step_outputs


def _replay(problem, rec: StepRecord, params, a, grad_ys):
    """Retakes one step with a graph; returns d(L)/d(y0 of the step) and the parameter gradients."""
    stepper = problem.loop.stepper
    with torch.enable_grad():
        y0 = rec.y0.detach().requires_grad_(True)
        f0_t = stepper.fn.nudge(rec.t0, 1.0) if rec.after_jump else rec.t0  # as the forward step: func's ulp
        step = stepper.attempt(rec.t0, y0, stepper.fn(f0_t, y0), rec.h, rec.ends_at_jump)
        blocks, _ = step_outputs(stepper, step, rec.t0 + rec.h, problem.t_out, rec.i)
        outputs, grads = [step.y1], [a]
        if blocks:
            outputs.append(torch.cat(blocks))
            grads.append(grad_ys[rec.i:rec.j])
        vjps = torch.autograd.grad(outputs, (y0, *params), grads, allow_unused=True)
    return vjps[0], vjps[1:]


class CheckpointSolve(torch.autograd.Function):
    """ys (T, n) = solve(y0) with checkpointed backward. Inputs: problem, hooks (the caller's own
    :class:`LoopHooks`, watched alongside the records), y0 (n,), *params."""

    @staticmethod
    def forward(ctx, problem, hooks: LoopHooks, y0, *params):  # type: ignore[override]
        from pyode._solvers.problem import integrate

        if not supports(problem.loop, "on_accept"):
            raise ValueError(f"gradient='checkpoint' supports Runge-Kutta methods, not {problem.method!r}")
        records: list[StepRecord] = []
        with torch.no_grad():
            ys = integrate(problem, y0, hooks=compose(hooks, LoopHooks(on_accept=records.append)))
        ctx.problem, ctx.records = problem, records
        ctx.save_for_backward(*params)
        return ys

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_ys):  # type: ignore[override]
        params = ctx.saved_tensors
        a = torch.zeros_like(grad_ys[0])
        g = [torch.zeros_like(p) for p in params]
        with ctx.problem.fn.backward_counting():  # replays count as backward evaluations
            for rec in reversed(ctx.records):
                a, g_step = _replay(ctx.problem, rec, params, a, grad_ys)
                g = [acc if d is None else acc + d for acc, d in zip(g, g_step)]
        return (None, None, a + grad_ys[0], *g)
