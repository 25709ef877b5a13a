"""One explicit Runge-Kutta step, built from the kernel API (one fused call per stage)."""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pyode import _tuning
from pyode._kernels.segments import Segments
from pyode._solvers import interpolation, scratch
from pyode._solvers.tableaux import ButcherTableau


@dataclass(slots=True)
class StepResult:
    """An attempted step from ``t0`` to ``t0 + h``.

    Attributes:
        y1: (n,) the new state; ks: the s stage derivatives, each (n,); ratio: the error ratio
        (<= 1 accepts; 0.0 for fixed-step methods); seg_norms: (rows,) float64 per-segment ratios or None.
    """

    t0: float
    h: float
    y0: Tensor
    y1: Tensor
    ks: list
    ratio: float
    seg_norms: Tensor | None = None
    f1: Tensor | None = None


class RKStepper:
    """Takes explicit RK steps for one tableau with one kernel backend.

    Args:
        tableau: the method; fn: the flat function (see :class:`FlatFunc`); kern: a backend module.
        rtol, atol: tolerances of the error ratio; segments: per-row/per-component norm segments;
        norm_segments: with ``segments``, the ratio is the max of the RMS norms of the first
            ``norm_segments`` segments (all of them: torchdiffeq's "mixed" norm for tuple states; the
            leading state and adjoint segments only: the adjoint's seminorm). None: RMS over everything.
        interp: "auto", "quartic" (torchdiffeq's fit through y0, y1, y(h/2), f0, f1; needs ``mid``), "cubic"
            (Hermite), "linear", or "restep" (take a step of size θh from the step's start: the method's own
            order at every output time, for the cost of one extra step per output). "auto" picks "quartic"
            for methods up to order 5 with ``mid``, "restep" above order 5 (a 4th-order interpolant would
            spoil dopri8's accuracy between steps), else "cubic".
    """

    default_controller = "pid"  # options["controller"] = "auto" (pyode._solvers.controller.uses_predictive)

    def __init__(self, tableau: ButcherTableau, fn, kern, rtol: float = 0.0, atol: float = 0.0,
                 segments: Segments | None = None, norm_segments: int | None = None, interp: str = "auto"):
        self.tableau, self.fn, self.kern = tableau, fn, kern
        # func's hot path: one frame per call instead of FlatFunc's layers, with the same calls, counts and checks
        # (FlatFunc.shaped_caller). _shaped_call takes the state in the user's shape, _flat_call flat (n,); a tuple
        # or complex state goes through fn itself for both.
        shaped = None if fn.structured else fn.shaped_caller()
        self._shaped_call = shaped or fn
        self._flat_call = fn if shaped is None else _flat_caller(shaped, fn.shape_args)
        self.rtol, self.atol, self.segments, self.norm_segments = rtol, atol, segments, norm_segments
        self.fsal = tableau.fsal
        self.restep = _resolve_interp(tableau, interp) == "restep"
        self.P = interpolant_matrix(tableau, interp)
        self.num_terms = len(self.P[0])  # the s stages, plus f1 when the tableau does not already end with it
        self.needs_f1 = any(row[-1] != 0.0 for row in self.P) and not self.fsal  # f1 is the last term
        self._workspace = None  # compiled per-solve step state, made on the first fast-path step
        self._ws_step = None  # the step whose stages the workspace holds (dense output reads them there)
        self._last_y1 = None
        self._stage_times = [(i, tableau.c[i]) for i in range(1, tableau.num_stages)]
        self._new_buffer = torch.empty_like  # the fused path takes stage buffers from a scratch pool
        self._error_carry = None  # the workspace's buffer for the error carried by the last stage

    def _fast_path_ok(self, y0: Tensor, f0: Tensor) -> bool:
        """No autograd to record and a compiled backend with a workspace: the fused fast path applies."""
        if not self.kern.fused_workspace:
            return False
        return not (torch.is_grad_enabled() and (y0.requires_grad or f0.requires_grad))

    def _attempt_fused(self, t0: float, y0: Tensor, f0: Tensor, h: float, t_end: float) -> StepResult | None:
        """:meth:`attempt` through the compiled workspace (one call per stage). None if ``func`` turned out
        to record autograd (the caller then takes the differentiable path)."""
        tab = self.tableau
        ws = self._workspace or self._make_workspace(y0)
        ws.set_base(y0)
        # Stage inputs are made in the user's shape and func called without reshaping (the kernels see
        # only addresses); y1 is handed back flat like every other path's. Each stage call also registers
        # the previous stage's derivative.
        call = self._shaped_call
        like = self._shaped_view(y0)
        new_buffer, ks, k, y_last = self._new_buffer, [f0], f0, like
        for i, c in self._stage_times:
            y_last = new_buffer(like)
            ws.stage(i, y_last, h, k)
            k = call(t_end if c == 1.0 else t0 + c * h, y_last)
            if k.requires_grad:
                return None
            ks.append(k)
        y1 = y_last.view(-1) if self.fsal else new_buffer(y0)
        norm = ws.finish(y1, h, self.atol, self.rtol, self.fsal, k)
        seg = None
        if self.segments is not None and tab.b_err is not None:
            seg = ws.segment_norms()
            if self.norm_segments is not None:
                ratios = seg[:self.norm_segments]
                norm = math.nan if any(math.isnan(r) for r in ratios) else max(ratios)  # max() drops NaN
        step = self._ws_step = StepResult(t0, h, y0, y1, ks, norm, seg)
        self._last_y1 = (y1, y_last)  # y1 in the user's shape, for when y1 starts the next step
        return step

    def _shaped_view(self, y0: Tensor) -> Tensor:
        """``y0`` (n,) in the user's shape (a plain-tensor state), without a new view when ``y0`` is the
        last fused step's y1 (it was made from that very buffer)."""
        if self.fn.structured:  # tuple or complex: func gets views made by fn itself
            return y0
        last = self._last_y1
        if last is not None and last[0] is y0 and self.fsal:
            return last[1]
        return y0.view(self.fn.shape_args)

    def _make_workspace(self, y0: Tensor):
        """The compiled per-solve step state: tableau, interpolant, and (large states) pooled buffers."""
        n = y0.numel()
        ws = self._workspace = self.kern.make_workspace(self.tableau, n, y0.dtype, self.segments)
        if not self.restep:
            ws.set_interpolant([float(x) for row in self.P for x in row], self.num_terms)
        nbytes = n * y0.element_size()
        if nbytes >= _tuning.POOL_MIN_BYTES:  # small: torch.empty_like is as cheap as a pool
            self._new_buffer = scratch.POOL.take
        # large: the last stage also writes its partial error (RKWorkspace.set_error_carry; see pyode._tuning)
        if self.fsal and nbytes >= _tuning.ERROR_CARRY_MIN_BYTES:
            carry = scratch.POOL.take(y0)
            if ws.set_error_carry(carry):
                self._error_carry = carry  # held for the solve: the pool must not hand it out meanwhile
        return ws

    def attempt(self, t0: float, y0: Tensor, f0: Tensor, h: float, ends_at_jump: bool = False) -> StepResult:
        """Computes all stages and the error ratio of a step of size ``h`` from ``(t0, y0)``; ``f0 = f(t0, y0)``.

        ``ends_at_jump``: ``f`` is discontinuous at ``t0 + h``; stages there are evaluated just before it
        (the next float down), so the step sees only the left piece of ``f``."""
        tab, lincomb_row = self.tableau, self.kern.lincomb_row
        t_end = self.fn.nudge(t0 + h, -1.0) if ends_at_jump else t0 + h  # one ulp of func's time dtype
        if self._fast_path_ok(y0, f0):
            step = self._attempt_fused(t0, y0, f0, h, t_end)
            if step is not None:
                return step
        ks = [f0]
        y_last = None
        call = self._flat_call
        for i in range(1, tab.num_stages):
            y_last = lincomb_row(y0, ks, [h * a for a in tab.a[i]])
            ks.append(call(t_end if tab.c[i] == 1.0 else t0 + tab.c[i] * h, y_last))
        e = None if tab.b_err is None else [h * x for x in tab.b_err]
        if self.fsal:  # the last stage's input already is y1: only the error is left to compute
            y1, norm, seg = self.kern.rk_finish(y0, y_last, ks, None, e, self.atol, self.rtol, self.segments)
        else:
            b = [h * x for x in tab.b]
            y1, norm, seg = self.kern.rk_finish(y0, None, ks, b, e, self.atol, self.rtol, self.segments)
        if self.norm_segments is not None and seg is not None:
            norm = float(seg[:self.norm_segments].max())
        return StepResult(t0, h, y0, y1, ks, norm, seg)

    def end_derivative(self, step: StepResult) -> Tensor:
        """``f(t1, y1)``: free for FSAL tableaux, one evaluation otherwise (cached on the step)."""
        if step.f1 is None:
            step.f1 = step.ks[-1] if self.fsal else self._flat_call(step.t0 + step.h, step.y1)
        return step.f1

    def dense(self, step: StepResult, thetas: list[float]) -> Tensor:
        """The interpolant at ``t0 + θ h`` for each θ in [0, 1]: (len(thetas), n)."""
        if self.restep:
            return torch.stack([self.attempt(step.t0, step.y0, step.ks[0], theta * step.h).y1 for theta in thetas])
        extra = None if self.fsal else (self.end_derivative(step) if self.needs_f1 else step.ks[0])
        if step is self._ws_step:  # its stages are still registered in the workspace: one call
            out = torch.empty((len(thetas), step.y0.numel()), dtype=step.y0.dtype, device=step.y0.device)
            self._workspace.dense(out, thetas, step.h, extra)
            return out
        terms = step.ks if extra is None else [*step.ks, extra]
        return self.kern.lincomb(step.y0, terms, interpolation.weights_at(self.P, thetas, step.h))


def _flat_caller(shaped, shape: tuple[int, ...]):
    """``(s, y (n,)) -> f (n,)`` around ``shaped``, which takes and returns the user's ``shape``."""
    return lambda s, y: shaped(s, y.view(shape)).view(-1)


def interpolant_matrix(tableau: ButcherTableau, interp: str = "auto"):
    """P of ``tableau``'s interpolant (see :mod:`interpolation`): one row per power of θ, one column per term
    (the s stages, then f(t1) unless the tableau is FSAL), for ``options['interp']`` = ``interp``."""
    num_terms = tableau.num_stages if tableau.fsal else tableau.num_stages + 1
    return _interpolation_matrix(tableau, _resolve_interp(tableau, interp), num_terms, num_terms - 1)


def _resolve_interp(tableau: ButcherTableau, interp: str) -> str:
    if interp == "auto":
        return "restep" if tableau.order > 5 else ("quartic" if tableau.mid is not None else "cubic")
    if interp == "quartic" and tableau.mid is None:
        raise ValueError(f"options['interp']='quartic' needs a method with mid-point weights, not {tableau.name}")
    return interp


@functools.lru_cache(maxsize=64)
def _interpolation_matrix(tableau: ButcherTableau, interp: str, num_terms: int, f1_index: int):
    """P of the interpolant (see :mod:`interpolation`); cached: tableaux are immutable."""
    if interp == "linear":
        return interpolation.linear(tableau.b, num_terms)
    if interp == "quartic":
        return interpolation.quartic_fit(tableau.b, tableau.mid, f1_index, num_terms)
    return interpolation.cubic_hermite(tableau.b, f1_index, num_terms)


def step_outputs(stepper: RKStepper, step: StepResult, t1: float, t_out: list[float], i: int) -> tuple[list, int]:
    """The outputs an accepted step from ``step.t0`` to ``t1`` owes: every ``t_out[k]`` in (t0, t1], from
    ``k = i``. Returns the (m, n) blocks and the index of the next output time. An output exactly at the
    step's end is ``y1`` itself (no interpolation rounding). Used by the loops and by gradient replays,
    so both see the same operations."""
    j = bisect.bisect_right(t_out, t1, lo=i)
    if j == i:
        return [], i
    blocks = []
    last = j - 1 if t_out[j - 1] == t1 else j
    if last > i:
        blocks.append(stepper.dense(step, [(tt - step.t0) / step.h for tt in t_out[i:last]]))
    if last < j:
        blocks.append(step.y1.unsqueeze(0))
    return blocks, j


@dataclass
class StepRecord:
    """What a gradient replay needs to retake an accepted step: start, size, state, discontinuity flags,
    and which outputs the step wrote (``t_out[i:j]``)."""

    t0: float
    h: float
    y0: Tensor
    ends_at_jump: bool
    after_jump: bool
    i: int
    j: int
