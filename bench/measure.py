"""Same-run yardsticks and per-run metrics.

- :func:`eager_op_seconds`: the time of one eager ``torch.add`` on 1024 floats, the unit of the
  "eager-op equivalents" (what one tiny tensor op costs on this machine right now).
- :func:`triad_bandwidth`: STREAM-triad bandwidth ``a = b + s*c`` measured with torch on N floats
  (McCalpin 1995, "Memory bandwidth and machine balance"); 3 arrays of N elements are moved.
- :func:`reference_solutions`: float64 tight-tolerance (or exact) solutions and gradients.
- :func:`run_metrics` / :func:`summarise`: the numbers one run yields, and medians with min-max.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import Tensor

from bench.peers import RunResult
from bench.problems import Case, make_cases

REFERENCE_METHOD = "dopri8"


def _per_call_seconds(fn, repeats: int, inner: int) -> list[float]:
    """Per-call time of ``fn`` in each of ``repeats`` blocks of ``inner`` calls."""
    blocks = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        blocks.append((time.perf_counter() - start) / inner)
    return blocks


def eager_op_seconds(size: int = 1024) -> float:
    """Seconds per eager ``torch.add(a, b)`` on ``size`` float32 elements (allocating its output)."""
    a, b = torch.rand(size), torch.rand(size)
    for _ in range(100):  # warm the allocator and the dispatcher
        torch.add(a, b)
    return statistics.median(_per_call_seconds(lambda: torch.add(a, b), repeats=7, inner=300))


def triad_bandwidth(n: int, dtype: torch.dtype = torch.float32) -> float:
    """Bytes per second of ``a = b + s*c`` on ``n`` elements (3 n elements moved per triad)."""
    a, b, c = torch.empty(n, dtype=dtype), torch.rand(n, dtype=dtype), torch.rand(n, dtype=dtype)

    def triad() -> None:
        torch.add(b, c, alpha=3.0, out=a)

    triad()
    # the best block, as STREAM reports: the bandwidth the machine can give, not what a noisy moment left
    seconds = min(_per_call_seconds(triad, repeats=10, inner=max(1, int(2e7 // max(n, 1)))))
    return 3 * n * a.element_size() / seconds


def reference_solutions(cases: list[Case], quick: bool) -> None:
    """Fills ``case.reference`` (T, *state) and ``case.reference_grad`` (n_params,) in float64.

    The exact solution where the case has one (P3), else torchdiffeq's dopri8 at rtol = atol =
    ``case.reference_tol`` (1e-10; 1e-8 for P4) on a float64 copy of the case built from the same seed (torchdiffeq is the established library;
    at this tolerance its error is far below the float32 runs being judged).
    """
    import torchdiffeq

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small states: a second thread only adds spin-waits on a busy machine
    try:
        _fill_references(cases, quick, torchdiffeq)
    finally:
        torch.set_num_threads(threads)


def _fill_references(cases: list[Case], quick: bool, torchdiffeq) -> None:
    by_problem: dict[str, list[Case]] = {}
    for case in cases:
        by_problem.setdefault(case.problem, []).append(case)
    for problem, group in by_problem.items():
        twins = make_cases([problem], quick, dtype=torch.float64)
        for case, twin in zip(group, twins):
            if case.exact_solution is not None:
                case.reference = case.exact_solution()
                continue
            params = [p.requires_grad_(case.needs_grad) for p in twin.params]
            with torch.set_grad_enabled(case.needs_grad):
                tol = max(case.reference_tol, 1e-8) if quick else case.reference_tol
                ys = torchdiffeq.odeint(twin.func, twin.y0, twin.t, rtol=tol, atol=tol, method=REFERENCE_METHOD)
                if case.needs_grad:
                    grads = torch.autograd.grad(twin.loss(ys), params, allow_unused=True)
                    case.reference_grad = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                                     for g, p in zip(grads, params)])
            case.reference = ys.detach()


def relative_error(value: Tensor, reference: Tensor | None, kind: str) -> float | None:
    """``max|v - r| / max|r|`` (kind "max") or ``||v - r||_2 / ||r||_2`` (kind "l2"), in float64."""
    if reference is None or value is None:
        return None
    diff = value.double() - reference.double()
    if kind == "max":
        return (diff.abs().max() / reference.abs().max().clamp_min(1e-300)).item()
    return (diff.norm() / reference.norm().clamp_min(1e-300)).item()


def run_metrics(case: Case, result: RunResult, eager_s: float, triad_bps: float | None) -> dict:
    """The figures of one run (times in seconds; None where the library does not report a count)."""
    steps, back = result.steps_fwd, result.steps_bwd
    loop_fwd = result.wall_fwd - result.func_fwd
    metrics = {"wall_s": result.wall_fwd + result.wall_bwd, "wall_fwd_s": result.wall_fwd,
               "wall_bwd_s": result.wall_bwd, "func_fwd_s": result.func_fwd, "func_bwd_s": result.func_bwd,
               "loop_fwd_s": loop_fwd, "nfe_fwd": result.nfe_fwd, "nfe_bwd": result.nfe_bwd,
               "accepted_fwd": steps.accepted, "rejected_fwd": steps.rejected, "iterations_fwd": steps.iterations,
               "accepted_bwd": back.accepted if back else None, "rejected_bwd": back.rejected if back else None,
               "iterations_bwd": back.iterations if back else None}
    per_step = loop_fwd / steps.iterations if steps.iterations else None
    metrics["loop_per_step_s"] = per_step
    metrics["loop_per_step_eager_ops"] = per_step / eager_s if per_step else None
    metrics["bandwidth_fraction"] = (case.bytes_per_step / triad_bps / per_step
                                     if per_step and case.bytes_per_step and triad_bps else None)
    # the adjoint's backward is a solve of its own; backprop's backward replays the graph (no steps)
    metrics["loop_per_step_bwd_s"] = ((result.wall_bwd - result.func_bwd) / back.iterations
                                      if back and back.iterations else None)
    # L2 over the whole trajectory: a max-norm is dominated by the phase of a single sharp transition
    # (Van der Pol at mu = 25 jumps by ~4 within ~1/mu)
    metrics["sol_err"] = relative_error(result.ys, case.reference, "l2")
    metrics["grad_err"] = relative_error(result.grad, case.reference_grad, "l2")
    return metrics


def summarise(runs: list[dict]) -> dict:
    """``{metric: {"median", "min", "max"}}`` over runs, skipping metrics some run lacks."""
    summary = {}
    for key in runs[0]:
        values = [run[key] for run in runs if run[key] is not None]
        if len(values) == len(runs):
            summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return summary
