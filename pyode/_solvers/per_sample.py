"""Per-sample step sizes: every batch row has its own time, step size, accept/reject decision and status
(torchode's model), so a few stiff rows no longer shrink the steps of the whole batch.

``func(t, y)`` then receives ``t`` of shape (batch,) (each row's own time) and ``y`` (batch, *state). All
rows advance in lock-step rounds: each round evaluates ``func`` once per stage (the ESDIRKs: once per Newton
iteration) on the whole batch, and rows that have finished stop moving (step size 0). What a step is comes from
a row stepper (:func:`row_stepper`): explicit RK here, the stiff methods (kvaerno3/5 with per-row Newton,
rodas5) in :mod:`pyode._solvers.per_sample_implicit`; the rounds, the controller, the checks and the dense output
are this loop's for all. The stage sums, the embedded error and the dense output use the same tableau and
interpolant as the joint loop (its stepper's); step-size control is the same I controller, applied row-wise (the
joint loop's PID controller, :func:`pyode._solvers.controller.step_factor`, with a ratio history per row), under
the joint loop's rules: a rejected step that cannot shrink, a step below the resolution of t and a state that
overflows its dtype (:class:`pyode._solvers.adaptive.StallWatch`) raise. With the compiled CPU backend, an
explicit adaptive tableau and no autograd to record, every row is a row of the C++ solve loop
(:func:`pyode._solvers.core_loop.solve_per_sample`: a RowSolver per row, func called once per stage on the batch);
otherwise the rounds run on tensor ops (differentiable), which take the same steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pyode._solvers import core_loop
from pyode._solvers.adaptive import StallWatch, check_step_resolution, stall_message, step_resolution
from pyode._solvers.callbacks import step_callbacks
from pyode._solvers.controller import (
    TENSOR_OPS,
    initial_step,
    initial_step_error,
    next_history,
    pid_gains,
    predictive_factor,
    step_factor,
    uses_predictive,
    zero_scale_hint,
)
from pyode._solvers.hooks import NO_HOOKS, LoopHooks
from pyode._solvers.rk_step import RKStepper
from pyode.errors import MaxStepsError, NonFiniteStateError, StepSizeUnderflowError


class PerSampleLoop:
    """Adaptive RK (explicit, ESDIRK or Rosenbrock) with per-row step sizes for a state (batch, *state).

    Args:
        stepper: the joint loop's stepper (RKStepper, ImplicitStepper of kvaerno3/5, RosenbrockStepper): its
        tableau, tolerances and function wrapper; :func:`row_stepper` makes its per-row steps; opts: AdaptiveOptions;
        stats: counters (``n_accepted``/``n_rejected`` are summed over rows; per-row counts are kept in
        ``stats.per_sample_accepted`` / ``per_sample_rejected``, the number of rounds in
        ``stats.n_iterations``); time_sign: -1 for decreasing time.
    """

    SUPPORTED_HOOKS: frozenset[str] = frozenset()  # rows step at their own times: no joint step to hand out

    def __init__(self, stepper: RKStepper, opts, stats, time_sign: float):
        if stepper.fn.is_tuple or len(stepper.fn.shapes[0]) < 1:
            raise ValueError("options['per_sample']=True needs y0 as one tensor shaped (batch, *state)")
        self.st, self.opts, self.stats, self.sign = stepper, opts, stats, time_sign
        self.shape = tuple(stepper.fn.shapes[0])
        self.gains = pid_gains(stepper.tableau.order, opts.pcoeff, opts.icoeff, opts.dcoeff, opts.safety,
                               opts.ifactor, opts.dfactor)
        self.predictive = uses_predictive(opts.controller, stepper)
        self.callbacks = step_callbacks(stepper.fn)  # func's callbacks (row times and steps), or None
        self._call_user_time = self._user_caller()
        self.rows = row_stepper(stepper, self._call, self.shape[0])

    def _call(self, t: Tensor, y: Tensor) -> Tensor:
        """func on rows (batch, m) at row times t (batch,) in solver time; returns (batch, m)."""
        user_t = (self.sign * t).to(self.st.fn.t_dtype)
        return self._call_user_time(user_t, y.reshape(self.shape)).reshape(y.shape)

    def _user_caller(self):
        """``_call_user_time(t, y)``: func at the rows' user times t (batch,) for y in the user's shape (batch,
        *state): its checked, contiguous output in the user's shape, in solver time. One closure over its
        constants: the tensor-op rounds and the C++ rows (which call it once per stage) share it."""
        fn = self.st.fn
        func, stats, shape, dtype, check = fn.func, fn.stats, torch.Size(self.shape), fn.dtype, fn._check_output
        negate = self.sign < 0

        def call(t: Tensor, y: Tensor) -> Tensor:
            stats.nfe += 1
            out = func(t, y)
            if type(out) is not Tensor or out.shape != shape or out.dtype != dtype:
                out = check(0, out, shape)  # checked, cast to y0's dtype
            if not out.is_contiguous():
                out = out.contiguous()
            return -out if negate else out

        return call

    def _next_h(self, h: Tensor, ratio: Tensor, accept: Tensor, rows: _RowControl) -> Tensor:
        """Every row's next step size (the joint loop's controller, row-wise); updates the rows' ratio history."""
        factor = step_factor(TENSOR_OPS, self.gains, ratio, rows.prev1, rows.prev2, accept)
        if self.predictive:
            factor, rows.predictive = predictive_factor(TENSOR_OPS, self.gains, self.st.tableau.order, factor, h,
                                                        ratio, accept, rows.predictive)
        rows.prev1, rows.prev2 = next_history(TENSOR_OPS, ratio, rows.prev1, rows.prev2, accept)
        return (h * factor).clamp(min=self.opts.min_step, max=self.opts.max_step)

    def _initial_step(self, t0: float, y: Tensor, f0: Tensor) -> float:
        """Hairer's heuristic on the whole batch, every row probed at the same time: one step for all."""
        batch = y.shape[0]

        def flat_fn(s: float, y_flat: Tensor) -> Tensor:
            t = torch.full((batch,), s, dtype=torch.float64, device=y.device)
            return self._call(t, y_flat.view(batch, -1)).reshape(-1)

        st = self.st
        return initial_step(flat_fn, st.kern, t0, y.reshape(-1), f0.reshape(-1), st.tableau.order, st.rtol, st.atol)

    def _write_outputs(self, out: Tensor, t_out: Tensor, y: Tensor, terms: list[Tensor], t: Tensor, h: Tensor,
                       t_new: Tensor, accept: Tensor) -> None:
        """Fills out[k, row] for every (output k, accepted row) whose time the row just passed, all pairs at
        once: y + h Σ_j W_j(θ) k_j with the step's interpolant at θ = (t_out[k] - t) / h."""
        crossed = accept[:, None] & (t[:, None] < t_out[None, :]) & (t_out[None, :] <= t_new[:, None])
        rows, ks_idx = crossed.nonzero(as_tuple=True)  # (pairs,), (pairs,)
        if rows.numel() == 0:
            return
        theta = (t_out[ks_idx] - t[rows]) / h[rows]
        powers = torch.stack([theta ** (p + 1) for p in range(self.P.shape[0])], 1)   # (pairs, p)
        W = (h[rows, None] * (powers @ self.P)).to(y.dtype)  # (pairs, terms): h W_j(θ), as the compiled rounds
        stacked = torch.stack(terms)[:, rows]                                          # (terms, pairs, m)
        values = y[rows] + torch.einsum("pj,jpm->pm", W, stacked)
        out[ks_idx, rows] = values

    def _rows_ok(self, y: Tensor, f0: Tensor) -> bool:
        """The C++ loop's rows (:func:`core_loop.per_sample_eligible`) and nothing they do not run: no autograd to
        record, no func callbacks (they run between the tensor-op rounds), on_failure "raise"."""
        return (core_loop.per_sample_eligible(self.st, y)
                and not (torch.is_grad_enabled() and (y.requires_grad or f0.requires_grad))
                and self.callbacks is None
                and self.opts.on_failure == "raise")  # "mark" keeps failed rows out of the tensor-op rounds

    def integrate(self, y0: Tensor, t_out: list[float], hooks: LoopHooks = NO_HOOKS) -> list[Tensor]:
        """The states at ``t_out`` as (m, n) blocks (``hooks`` must be empty: see ``SUPPORTED_HOOKS``)."""
        batch = self.shape[0]
        check_step_resolution(self.opts, t_out[0], self.sign)
        if y0.numel() == 0:
            return self._empty_solution(y0, t_out)
        y = y0.reshape(batch, -1)
        t = torch.full((batch,), t_out[0], dtype=torch.float64, device=y.device)
        f0 = self._call(t, y)
        h0 = self.opts.first_step or self._initial_step(t_out[0], y, f0)
        h0 = min(max(h0, self.opts.min_step), self.opts.max_step)  # the bounds hold from the first step on
        if not (math.isfinite(h0) and h0 > 0):
            raise initial_step_error(self.sign * t_out[0], y, f0, self.st.atol, self.st.rtol)
        out = y.new_zeros((len(t_out), *y.shape))
        out[0] = y
        if self._rows_ok(y, f0) and self._integrate_rows(y, f0, float(h0), out, t_out):
            return [out.reshape(len(t_out), -1)]
        return self._integrate_tensor_ops(y, t, f0, float(h0), out, t_out)

    def _empty_solution(self, y0: Tensor, t_out: list[float]) -> list[Tensor]:
        """A state without elements ((0, *state) or (batch, 0, ...)), as the joint solve has: nothing moves; func
        is called once at the start (its output is checked like every other call)."""
        batch = self.shape[0]
        self._call_user_time(torch.full((batch,), self.sign * t_out[0], dtype=self.st.fn.t_dtype, device=y0.device),
                             y0.reshape(self.shape))
        self.stats.t_reached = self.sign * t_out[-1]
        none = torch.zeros(batch, dtype=torch.long, device=y0.device)
        self._record_counts(none, none.clone(), 0)
        return [y0.reshape(1, -1).repeat(len(t_out), 1)]

    def _integrate_rows(self, y: Tensor, f0: Tensor, h0: float, out: Tensor, t_out: list[float]) -> bool:
        """Every row a row of the C++ loop (:func:`core_loop.solve_per_sample`), writing ``out`` (T, batch, m).
        False if func turned out to record autograd, or a row failed: the tensor-op rounds then start over (and
        raise the failure with their diagnosis, as the joint solve reruns the Python loop)."""
        fn = self.st.fn
        t_dtype = torch.float32 if fn.t_dtype == torch.float32 else torch.float64  # the rows write these times
        y_stage = torch.empty(self.shape, dtype=y.dtype)  # every call's input; func's output is copied out at once
        t_stage = torch.empty(self.shape[0], dtype=t_dtype)
        call = self._call_user_time
        if t_dtype != fn.t_dtype:  # float16/bfloat16 times: converted per call
            def call(t: Tensor, y: Tensor, user=self._call_user_time) -> Tensor:
                return user(t.to(fn.t_dtype), y)
        nfe_before = fn.stats.nfe
        result = core_loop.solve_per_sample(self.st, self.opts, self.predictive, t_out, y, f0, h0, out, y_stage,
                                            t_stage, self.sign, call)
        if result is None:
            return False
        _calls, failed, rows = result
        if failed >= 0:
            fn.stats.nfe = nfe_before
            return False
        self.stats.t_reached = self.sign * min(row[1] for row in rows)
        accepted, rejected = torch.tensor([row[2] for row in rows]), torch.tensor([row[3] for row in rows])
        self._record_counts(accepted, rejected, int((accepted + rejected).max()))  # rounds: the most steps of a row
        return True

    def _raise_row_failure(self, kind: int, row: int, t_row: float, y_row: Tensor) -> None:
        """Raises for batch row ``row`` (state ``y_row`` (m,)) at solver time ``t_row``; ``kind`` (the tensor-op
        rounds' failure codes): 1 max_num_steps, 2 step underflow, 3 NaN/inf, 4 a rejected step that
        cannot shrink, 5 the state overflows its dtype (StallWatch). A row stepper whose own solve failed there (an
        implicit method's Newton iteration or matrix) names that instead of the step size (as the joint loop)."""
        t_user = self.sign * t_row
        describe = getattr(self.rows, "failure", None)
        failure = describe(row, t_user) if describe is not None and kind in (2, 3, 4) else None
        if failure is not None:
            raise failure
        if kind == 1:
            raise MaxStepsError("max_num_steps", t_user, f"batch row {row} needed more than max_num_steps="
                                f"{self.opts.max_num_steps} steps; raise options['max_num_steps'] or loosen rtol/atol")
        if kind == 3:
            hint = zero_scale_hint(self.st.atol, self.st.rtol, y_row)
            raise NonFiniteStateError("non_finite", t_user, f"batch row {row}: the state or func's output became "
                                      f"NaN/inf and shrinking the step did not help{'; ' + hint if hint else ''}")
        if kind == 4:
            raise StepSizeUnderflowError(
                "step_underflow", t_user, f"batch row {row}: a step was rejected but the controller cannot shrink "
                f"it (min_step = {self.opts.min_step:g}); lower options['min_step'], check the pcoeff/icoeff/dcoeff "
                "coefficients, or loosen rtol/atol")
        if kind == 5:
            raise NonFiniteStateError("non_finite", t_user, f"batch row {row}: {stall_message(y_row)}")
        raise StepSizeUnderflowError("step_underflow", t_user, f"batch row {row}: step size underflow; the problem "
                                     "may be stiff or singular here")

    def _record_counts(self, accepted: Tensor, rejected: Tensor, rounds: int) -> None:
        stats = self.stats
        stats.n_accepted, stats.n_rejected = int(accepted.sum()), int(rejected.sum())
        stats.per_sample_accepted, stats.per_sample_rejected = accepted, rejected
        stats.n_iterations = rounds  # lock-step rounds: each evaluates func once per stage on the batch

    def _integrate_tensor_ops(self, y: Tensor, t: Tensor, f0: Tensor, h0: float, out: Tensor,
                              t_out: list[float]) -> list[Tensor]:
        """Rounds on differentiable tensor ops, from rows y (batch, m) at times t (batch,) with f0 = f(t, y)."""
        batch = self.shape[0]
        h = torch.full_like(t, h0)
        times = torch.tensor(t_out, dtype=torch.float64, device=y.device)
        self.P = torch.tensor(self.rows.P, dtype=torch.float64, device=y.device)  # interpolant, (powers, terms)
        t_end = t_out[-1]
        accepted = torch.zeros(batch, dtype=torch.long, device=y.device)
        rejected = torch.zeros_like(accepted)
        rows = _RowControl(t)
        rounds = 0
        status = torch.zeros(batch, dtype=torch.long, device=y.device)  # failure codes (on_failure="mark")
        end_resolution = step_resolution(t_end)
        while True:
            active = (t < t_end) & (status == 0)
            if not bool(active.any()):
                break
            rounds += 1
            remaining = t_end - t  # a step that would leave less than the resolution of t stretches to t_end
            h_step = torch.where(active, torch.where(h < remaining - end_resolution, h, remaining), torch.zeros_like(h))
            if self.callbacks is not None:
                self.callbacks.step(t, y, h_step)
            clamped = h_step >= remaining
            t_new = torch.where(clamped, torch.full_like(t, t_end), t + h_step)
            ks, y1, ratio = self.rows.attempt(t, y, f0, h_step, t_new, active)
            # step-size control is not differentiated (as in torchdiffeq): a where() over a detached ratio
            ratio = torch.where(active, ratio, torch.zeros_like(h))
            accept = active & (ratio <= 1.0)
            if self.callbacks is not None and self.callbacks.wants_decisions:
                _decision_hooks(self.callbacks, t, y, h_step, accept, active & ~accept)
            terms, f1 = self.rows.terms(t, y, f0, h_step, t_new, ks, y1)
            self._write_outputs(out, times, y, terms, t, h_step, t_new, accept)
            stalled = rows.watch_stalls(ratio, active, accept, y, y1)
            y = torch.where(accept[:, None], y1, y)
            f0 = torch.where(accept[:, None], f1, f0)
            t = torch.where(accept, t_new, t)
            h = torch.where(active, self._next_h(h_step, ratio, accept, rows), h)
            accepted += accept
            rejected += active & ~accept
            self._check(t, h, h_step, active, accept, ratio, accepted + rejected, stalled, y, status, t < t_end)
        self._record_counts(accepted, rejected, rounds)
        if self.opts.on_failure == "mark":
            self._mark_failures(out, times, t, status)
        return [out.reshape(len(t_out), -1)]

    def _mark_failures(self, out: Tensor, times: Tensor, t: Tensor, status: Tensor) -> None:
        """on_failure="mark": each row's status and time reached into the stats; the outputs a failed row never
        reached become NaN. out (T, batch, m), times (T,) and t (batch,) in solver time, status (batch,) codes."""
        failed = status > 0
        unreached = (times[:, None] > t[None, :]) & failed[None, :]
        if bool(unreached.any()):
            out[unreached] = math.nan
        self.stats.per_sample_status = [ROW_STATUS[int(code)] for code in status.tolist()]
        self.stats.per_sample_t_reached = self.sign * t
        self.stats.t_reached = self.sign * float(t.min())
        if bool(failed.any()):
            self.stats.status = "partial"

    def _check(self, t: Tensor, h: Tensor, h_step: Tensor, active: Tensor, accept: Tensor, ratio: Tensor,
               steps: Tensor, stalled: Tensor, y: Tensor, status: Tensor, running: Tensor) -> None:
        """After a round: raises for the first row (in row order) that failed, with these rounds' codes and
        precedence (see :meth:`_raise_row_failure`); with on_failure="mark", writes the codes into ``status``
        instead (in place: those rows stop). ``running``: the rows short of t_end (a row that reached it is done:
        its step count and next h no longer matter). All arguments are per row, (batch,); y (batch, m)."""
        self.stats.t_reached = self.sign * float(t.min())
        tiny = 4.0 * torch.finfo(torch.float64).eps * t.abs().clamp_min(1.0)
        kind = torch.where(stalled, 5, 0)
        kind = torch.where(~accept & (h >= h_step), 4, kind)  # a rejected step the controller cannot shrink
        kind = torch.where(running & ~(h > tiny), torch.where(torch.isfinite(ratio), 2, 3), kind)  # NaN h: stuck
        kind = torch.where(running & (steps >= self.opts.max_num_steps), 1, kind)
        if self.opts.on_failure == "mark":
            status.copy_(torch.where(active & (kind > 0), kind, status))
            return
        failed = (active & (kind > 0)).nonzero()
        if failed.numel():
            row = int(failed[0])
            self._raise_row_failure(int(kind[row]), row, float(t[row]), y[row])


# Row status names of on_failure="mark", by failure code (see PerSampleLoop._raise_row_failure).
ROW_STATUS = {0: "success", 1: "max_num_steps", 2: "step_underflow", 3: "non_finite", 4: "step_underflow",
              5: "non_finite"}


def _decision_hooks(callbacks, t: Tensor, y: Tensor, h_step: Tensor, accept: Tensor, reject: Tensor) -> None:
    """callback_accept_step / callback_reject_step of one round, each called when some row took that decision,
    with every row's time and state and ``dt`` the row's step where it decided so, 0 elsewhere."""
    zero = torch.zeros_like(h_step)
    for rows, hook in ((accept, callbacks.accept), (reject, callbacks.reject)):
        if bool(rows.any()):
            hook(t, y, torch.where(rows, h_step, zero))


class _RowControl:
    """Per-row controller history and :class:`StallWatch` counters of the tensor-op rounds (the C++ rows
    keep theirs in their RowSolver). ``like``: a (batch,) float64 tensor."""

    def __init__(self, like: Tensor):
        self.prev1, self.prev2 = torch.ones_like(like), torch.ones_like(like)
        self.predictive = (torch.zeros_like(like), torch.ones_like(like), torch.zeros(like.shape, dtype=torch.bool,
                                                                                     device=like.device))
        self.non_finite = torch.zeros(like.shape, dtype=torch.long, device=like.device)
        self.stalled = torch.zeros_like(self.non_finite)

    def watch_stalls(self, ratio: Tensor, active: Tensor, accept: Tensor, y: Tensor, y1: Tensor) -> Tensor:
        """StallWatch for every row at once; returns the rows that stalled ``StallWatch.LIMIT`` times, (batch,)."""
        self.non_finite += active & ~accept & ~torch.isfinite(ratio)
        if not bool(self.non_finite.any()):
            return torch.zeros_like(accept)
        watched = accept & (self.non_finite > 0)
        unchanged = (y1.detach() == y.detach()).all(dim=1)
        self.stalled = torch.where(watched & unchanged, self.stalled + 1, self.stalled)
        changed = watched & ~unchanged
        self.non_finite = torch.where(changed, 0, self.non_finite)
        self.stalled = torch.where(changed, 0, self.stalled)
        return self.stalled >= StallWatch.LIMIT


def row_error_ratio(y0: Tensor, y1: Tensor, err: Tensor, atol: float, rtol: float) -> Tensor:
    """Every row's error ratio, (batch,) float64: the RMS over the row of ``err / (atol + rtol max(|y0|, |y1|))``,
    the joint loop's norm (``rk_finish``) taken row by row, summed as the C++ loop's rows sum it (float32:
    :func:`_float_kernel_rms`). All (batch, m), without autograd."""
    q = err / (atol + rtol * torch.maximum(y0.abs(), y1.abs()))
    return _float_kernel_rms(q) if q.dtype == torch.float32 else q.double().pow(2).mean(dim=1).sqrt()


# How the compiled float32 kernels sum squares (csrc/include/pyode: common.h's kBlock, stream_terms.h's kSumLanes).
_SUM_BLOCK, _SUM_LANES = 2048, 16


def _float_kernel_rms(q: Tensor) -> Tensor:
    """The RMS over each row of float32 ``q`` (batch, m) as the compiled float32 kernels take it (``kernel_rms_f32``
    in core/norms.h): per block of ``_SUM_BLOCK`` elements, squares summed in float in ``_SUM_LANES`` interleaved
    lanes (element i in lane i mod 16, each lane in order), the lanes added in order (again in double where the
    float sum overflows); the block sums added in double. (batch,) float64."""
    batch, m = q.shape
    total = torch.zeros(batch, dtype=torch.float64, device=q.device)
    for lo in range(0, m, _SUM_BLOCK):
        block = q[:, lo:lo + _SUM_BLOCK]
        in_float = _lane_sum(block * block)
        if not bool(torch.isfinite(in_float).all()):
            wide = block.double()
            in_float = torch.where(torch.isfinite(in_float), in_float.double(), _lane_sum(wide * wide))
        total = total + in_float.double()
    return (total / m).sqrt()


def _lane_sum(squares: Tensor) -> Tensor:
    """Σ over each row of ``squares`` (batch, k), k <= _SUM_BLOCK, in the kernels' order and precision (see
    :func:`_float_kernel_rms`); the padding zeros change no sum."""
    lanes = torch.nn.functional.pad(squares, (0, (-squares.shape[1]) % _SUM_LANES)).view(squares.shape[0], -1,
                                                                                      _SUM_LANES)
    acc = lanes[:, 0]
    for g in range(1, lanes.shape[1]):
        acc = acc + lanes[:, g]
    out = acc[:, 0]
    for lane in range(1, _SUM_LANES):
        out = out + acc[:, lane]
    return out


def row_stepper(stepper, call, batch: int):
    """The stepper interface of the per-sample rounds for ``stepper``: explicit RK here, the stiff methods'
    (kvaerno3/5 by per-row Newton, rodas5) in :mod:`pyode._solvers.per_sample_implicit`.

    A row stepper has ``P`` (the interpolant matrix on its terms, (powers, terms) as nested lists) and
    ``attempt(t, y, f0, h, t_new, active) -> (ks, y1, ratio)``: one step of every row from times t (batch,) and
    rows y, f0 (batch, m), of sizes h (batch,; 0 for rows that stay put) ending at t_new (batch,), returning its
    stages, y1 (batch, m) and the error ratio (batch,) float64 (> 1: reject); ``terms(t, y, f0, h, t_new, ks, y1)
    -> (terms, f1)``: the dense-output terms (each (batch, m); ``y + h Σ_j W_j(θ) terms_j``) and f(t_new, y1).
    ``call(t, y)``: func on (batch, m) rows at times t (batch,) in solver time."""
    if isinstance(stepper, RKStepper):
        return RKRows(stepper, call)
    from pyode._solvers.per_sample_implicit import implicit_rows

    return implicit_rows(stepper, call, batch)


class RKRows:
    """The explicit RK stages of a round (see :func:`row_stepper`)."""

    def __init__(self, stepper: RKStepper, call):
        self.st, self.call, self.P = stepper, call, stepper.P

    def attempt(self, t: Tensor, y: Tensor, f0: Tensor, h: Tensor, t_new: Tensor, active: Tensor):
        """All stages of one round (rows with h = 0 stay put); returns ks, y1 and the error ratio."""
        tab = self.st.tableau
        ks = [f0]
        for i in range(1, tab.num_stages):
            yi = row_sum(y, ks, h, tab.a[i][:i])
            ks.append(self.call(t + tab.c[i] * h, yi))
        y1 = yi if self.st.fsal else row_sum(y, ks, h, tab.b)
        err = row_sum(None, ks, h, tab.b_err)
        return ks, y1, row_error_ratio(y.detach(), y1.detach(), err.detach(), self.st.atol, self.st.rtol)

    def terms(self, t: Tensor, y: Tensor, f0: Tensor, h: Tensor, t_new: Tensor, ks: list, y1: Tensor):
        terms = ks if self.st.fsal else ks + [self.call(t_new, y1)]
        return terms, terms[-1]


def row_sum(base: Tensor | None, ks: list[Tensor], h: Tensor, weights) -> Tensor:
    """``base_r + Σ_j (h_r w_j) k_j,r`` for every row r (base None: from 0), ks (batch, m) each, h (batch,) float64:
    each row's weights ``h_r w_j`` rounded to the state's dtype, summed in increasing j with zero weights skipped,
    as the compiled rounds combine (core::combine_terms). Differentiable."""
    out = base
    for k, w in zip(ks, weights):
        if w != 0.0:
            term = (h * w).to(k.dtype)[:, None] * k
            out = term if out is None else out + term
    return torch.zeros_like(ks[0]) if out is None else out
