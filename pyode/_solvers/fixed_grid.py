"""Fixed-grid solvers: explicit Runge-Kutta on a grid, and Adams-Bashforth(-Moulton) multistep."""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass

from torch import Tensor

from pyode._solvers.rk_step import RKStepper, StepRecord, step_outputs
from pyode._solvers.tableaux import RK4
from pyode._validation import all_finite
from pyode.errors import MaxStepsError, NonFiniteStateError
from pyode.solution import SolverStats


@dataclass
class FixedOptions:
    """Options of the fixed-grid solvers (torchdiffeq's names)."""

    step_size: float | None = None
    grid_constructor: object = None
    interp: str = "linear"       # "linear" or "cubic" between grid points
    perturb: bool = False        # accepted for compatibility; the grid is always exact here
    max_iters: int = 1           # corrector iterations of implicit_adams
    max_num_steps: int = 2**31 - 1  # checked before the grid is built: a tiny step_size fails at once


def check_step_count(t_out: list[float], step_size: float | None, max_num_steps: int, sign: float,
                     per_interval: bool = False) -> None:
    """Raises before a grid is built when ``step_size`` is too small to make progress or needs more than
    ``max_num_steps`` steps (a list of 1e300 grid points would never finish). ``per_interval``: each output
    interval is split on its own (ALF) instead of the whole span (:func:`make_grid`)."""
    if step_size is None or len(t_out) < 2:
        return
    resolution = 4.0 * math.ulp(max(abs(t_out[0]), abs(t_out[-1]), 1e-300))
    if step_size <= resolution:
        raise ValueError(f"options['step_size'] = {step_size:g} is below the resolution of the times near "
                         f"t = {sign * t_out[0]:g}; use a larger step_size")
    spans = [b - a for a, b in itertools.pairwise(t_out)] if per_interval else [t_out[-1] - t_out[0]]
    # Past the resolution check span / step_size < 2**52, so the count is exact and ceil cannot overflow.
    needed = sum(max(1.0, math.ceil(span / step_size - 1e-9)) for span in spans)
    if needed > max_num_steps:
        raise MaxStepsError("max_num_steps", sign * t_out[0],
                            f"step_size={step_size:g} needs {needed:.3g} steps to cover t = {sign * t_out[0]:g} .. "
                            f"{sign * t_out[-1]:g}, more than max_num_steps={max_num_steps}; use a larger "
                            "step_size or raise options['max_num_steps']")


def make_grid(t_out: list[float], step_size: float | None) -> list[float]:
    """torchdiffeq's grid: ``t0 + k * step_size`` while below the end, then the end; or ``t_out`` itself."""
    if step_size is None:
        return list(t_out)
    t0, t1 = t_out[0], t_out[-1]
    n_steps = max(1, math.ceil((t1 - t0) / step_size - 1e-9))
    return [t0 + k * step_size for k in range(n_steps)] + [t1]


def check_finite(y: Tensor, t: float, sign: float) -> None:
    if not all_finite(y):
        raise NonFiniteStateError("non_finite", sign * t, "the state became NaN/inf (try a smaller step_size)")


class FixedGridLoop:
    """Steps through a grid with an explicit RK method; outputs by linear (or cubic) interpolation."""

    def __init__(self, stepper: RKStepper, grid: list[float], stats: SolverStats, time_sign: float):
        self.stepper, self.grid, self.stats, self.time_sign = stepper, grid, stats, time_sign
        self.recorder = None  # called with a StepRecord per step (checkpointed gradients)

    def integrate(self, y0: Tensor, t_out: list[float]) -> list[Tensor]:
        st, stats = self.stepper, self.stats
        outputs, i = [y0.unsqueeze(0)], 1
        y = y0
        for t0, t1 in zip(self.grid[:-1], self.grid[1:]):
            step = st.attempt(t0, y, st.fn(t0, y), t1 - t0)
            stats.n_accepted += 1
            stats.t_reached = self.time_sign * t1
            check_finite(step.y1, t1, self.time_sign)
            blocks, j = step_outputs(st, step, t1, t_out, i)
            outputs.extend(blocks)
            if self.recorder is not None:
                self.recorder(StepRecord(t0, t1 - t0, y.detach(), False, False, i, j))
            i, y = j, step.y1
        return outputs


# Adams-Bashforth (explicit) and Adams-Moulton (implicit) coefficients of order 4, newest first.
_AB4 = (55 / 24, -59 / 24, 37 / 24, -9 / 24)
_AM4 = (9 / 24, 19 / 24, -5 / 24, 1 / 24)


class AdamsLoop:
    """Fourth-order Adams-Bashforth (``explicit_adams``) or Adams-Bashforth-Moulton PE(CE)^m
    (``implicit_adams``/``fixed_adams``) on a uniform grid. The first three steps, and any step whose
    size differs from the uniform one (the last step of a grid that does not divide the interval), are
    taken with RK4 (3/8 rule), so the method keeps its fourth order."""

    def __init__(self, fn, kern, grid: list[float], stats: SolverStats, time_sign: float, corrector_iters: int):
        self.fn, self.kern, self.grid, self.stats, self.time_sign = fn, kern, grid, stats, time_sign
        self.corrector_iters = corrector_iters
        self.rk = RKStepper(RK4, fn, kern, interp="linear")

    def _adams_step(self, y: Tensor, history: list[Tensor], t1: float, h: float) -> Tensor:
        y1 = self.kern.lincomb_row(y, history, [h * c for c in _AB4])
        for _ in range(self.corrector_iters):
            f1 = self.fn(t1, y1)
            y1 = self.kern.lincomb_row(y, [f1] + history[:3], [h * c for c in _AM4])
        return y1

    def integrate(self, y0: Tensor, t_out: list[float]) -> list[Tensor]:
        outputs, i, y, history = [y0.unsqueeze(0)], 1, y0, []  # history: f at previous grid points, newest first
        h_uniform = self.grid[1] - self.grid[0] if len(self.grid) > 1 else 0.0
        for t0, t1 in zip(self.grid[:-1], self.grid[1:]):
            h = t1 - t0
            history.insert(0, self.fn(t0, y))
            del history[4:]
            if len(history) == 4 and math.isclose(h, h_uniform, rel_tol=1e-9):
                y1 = self._adams_step(y, history, t1, h)
            else:
                y1 = self.rk.attempt(t0, y, history[0], h).y1
            self.stats.n_accepted += 1
            self.stats.t_reached = self.time_sign * t1
            check_finite(y1, t1, self.time_sign)
            j = bisect.bisect_right(t_out, t1, lo=i)
            if j > i:  # linear interpolation between grid points
                thetas = [(tt - t0) / h for tt in t_out[i:j]]
                outputs.append(self.kern.lincomb(y, [y1, y], [[th, -th] for th in thetas]))
                i = j
            y = y1
        return outputs
