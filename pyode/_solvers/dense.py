"""Watching the accepted steps of a solve: their times (``Solution.ts``), their continuous extension
(``Solution.evaluate``, diffrax's ``SaveAt(dense=True)``) and a progress bar.

A :class:`StepLog` watches a solve through the loop's ``on_step`` hook (:mod:`pyode._solvers.hooks`): the
loop calls it once per accepted step with the step's start and end (solver time), the step
(:class:`StepResult`) and the object whose ``dense(step, thetas)`` evaluates it.
"""

from __future__ import annotations

import bisect
import math
import sys

import torch
from torch import Tensor

from pyode._solvers.hooks import LoopHooks, supports


class StepLog:
    """Collects the accepted steps of one solve.

    Args:
        t0: the start (solver time); keep_steps: keep each step's stages for :class:`DenseOutput` (memory:
            the stages of every step); progress: None, True (a tqdm bar, silent when stderr is not a
            terminal) or an object with ``update(dt)`` and ``close()``; span: |t[-1] - t[0]| for the bar.
    """

    def __init__(self, t0: float, keep_steps: bool, progress=None, span: float = 0.0):
        self.starts: list[float] = []
        self.ends: list[float] = [t0]
        self.steps: list = []
        self.evaluators: list = []
        self.keep_steps = keep_steps
        self.bar = _progress_bar(progress, span)

    def __call__(self, t0: float, t1: float, step, evaluator) -> None:
        self.starts.append(t0)
        self.ends.append(t1)
        if self.keep_steps:
            self.steps.append(step)
            self.evaluators.append(evaluator)
        if self.bar is not None:
            self.bar.update(t1 - t0)

    def hooks(self) -> LoopHooks:
        """This log as the loop's ``on_step`` hook."""
        return LoopHooks(on_step=self)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _progress_bar(progress, span: float):
    if progress is None or progress is False:
        return None
    if progress is True:
        from tqdm.auto import tqdm

        # disable=None: tqdm stays silent when the stream is not a terminal (logs, CI).
        return tqdm(total=span, unit="t", disable=None, file=sys.stderr, leave=False,
                    bar_format="{l_bar}{bar}| t {n:.4g}/{total:.4g} [{elapsed}<{remaining}]")
    if not (callable(getattr(progress, "update", None)) and callable(getattr(progress, "close", None))):
        raise TypeError("progress must be True/False or a progress meter with update(dt) and close() (e.g. a "
                        f"tqdm bar), got {type(progress).__name__}")
    return progress


class DenseOutput:
    """The solution at any time of the solved interval, from each accepted step's continuous extension
    (the interpolant the method uses for its outputs: quartic for dopri5/tsit5, Hermite, linear, ...).

    Differentiable where the solve recorded a graph (``gradient="backprop"``): gradients flow to ``y0``
    and the parameters through the stored stages (not to the evaluation times).
    """

    def __init__(self, log: StepLog, fn, sign: float):
        self.log, self.fn, self.sign = log, fn, sign
        self.t_start, self.t_end = log.ends[0], log.ends[-1]

    def evaluate(self, t) -> Tensor | tuple[Tensor, ...]:
        """The state at times ``t`` (a float, or a tensor of any shape, in the caller's time direction):
        shaped ``(*t.shape, *y0.shape)`` (a tuple of such for a tuple ``y0``)."""
        times = torch.as_tensor(t, dtype=torch.float64)
        s = [self.sign * v for v in times.reshape(-1).tolist()]
        lo, hi = self.t_start, self.t_end
        bad = [v for v in s if not (math.isfinite(v) and lo <= v <= hi)]
        if bad:
            raise ValueError(f"evaluate(t): t = {self.sign * bad[0]:g} is outside the solved interval "
                             f"[{self.sign * lo:g}, {self.sign * hi:g}]")
        if not s:
            raise ValueError("evaluate(t): t is empty")
        flat = self._evaluate_flat(s)
        out = self.fn.unflatten(flat)
        shape = tuple(times.shape)
        if isinstance(out, tuple):
            return tuple(o.reshape(shape + o.shape[1:]) for o in out)
        return out.reshape(shape + out.shape[1:])

    def _evaluate_flat(self, s: list[float]) -> Tensor:
        """(len(s), n): groups the times by step, one interpolant call per step touched."""
        starts, steps = self.log.starts, self.log.steps
        if not steps:  # a zero-length solve: only t0 exists
            raise ValueError("evaluate(t): the solve took no step; nothing to interpolate")
        groups: dict[int, list[int]] = {}
        for i, v in enumerate(s):
            k = min(max(bisect.bisect_right(starts, v) - 1, 0), len(steps) - 1)
            groups.setdefault(k, []).append(i)
        rows: list = [None] * len(s)
        for k, idx in groups.items():
            step, evaluator = steps[k], self.log.evaluators[k]
            thetas = [min(max((s[i] - step.t0) / step.h, 0.0), 1.0) for i in idx]
            values = evaluator.dense(step, thetas)
            for j, i in enumerate(idx):
                rows[i] = values[j]
        return torch.stack(rows)


def step_log_for(problem, dense: bool, save_steps: bool, progress) -> StepLog | None:
    """A :class:`StepLog` for ``problem``'s solve when it asked for dense output, step times or a progress bar
    (pass ``log.hooks()`` to the solve); None otherwise. ValueError where the loop has no ``on_step`` hook."""
    if not (dense or save_steps or (progress is not None and progress is not False)):
        return None
    if not supports(problem.loop, "on_step"):
        raise ValueError(f"dense, save_steps and progress are not available with method={problem.method!r} "
                         "(nor with options['per_sample'])")
    if len(problem.t_out) < 2:
        span = 0.0
    else:
        span = problem.t_out[-1] - problem.t_out[0]
    return StepLog(problem.t_out[0], keep_steps=dense, progress=progress, span=span)


def dense_fields(problem, log: StepLog | None, dense: bool) -> dict:
    """The :class:`pyode.Solution` fields ``ts`` (user time, in t's dtype) and ``dense`` of a logged solve."""
    if log is None:
        return {}
    ts = torch.tensor([problem.sign * v for v in log.ends], dtype=problem.t.dtype, device=problem.t.device)
    return {"ts": ts, "dense": DenseOutput(log, problem.fn, problem.sign) if dense else None}
