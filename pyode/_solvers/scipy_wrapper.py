"""``method="scipy_solver"``: the solve handed to :func:`scipy.integrate.solve_ivp` (torchdiffeq's
``ScipyWrapperODESolver``).

``options={"solver": "RK45" | "RK23" | "DOP853" | "Radau" | "BDF" | "LSODA"}`` (default "LSODA", as
torchdiffeq; an ``scipy.integrate.OdeSolver`` subclass works too), ``min_step``, ``max_step``. The state
travels to numpy as float64 on the CPU and back in ``y0``'s dtype and device; ``func`` is called without
autograd. So no gradient flows through the forward solve (as in torchdiffeq): the outputs do not require
grad. ``gradient="adjoint"`` still works, because its backward pass is a solve of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pyode import _validation as check
from pyode._solvers.hooks import NO_HOOKS, LoopHooks
from pyode.errors import ODESolverError
from pyode.solution import SolverStats

SCIPY_SOLVERS = ("RK23", "RK45", "DOP853", "Radau", "BDF", "LSODA")


@dataclass
class ScipyOptions:
    """Options of ``scipy_solver`` (torchdiffeq's names; ``norm``, ``grid_points`` and ``eps`` are accepted
    and unused, as there)."""

    solver: object = "LSODA"
    min_step: float = 0.0
    max_step: float = math.inf
    norm: object = None
    grid_points: object = None
    eps: object = None


def check_options(opts: ScipyOptions) -> None:
    """Validates ``opts`` in place."""
    solver = opts.solver
    if isinstance(solver, str):
        if solver not in SCIPY_SOLVERS:
            raise ValueError(f"options['solver'] must be one of {SCIPY_SOLVERS} (or a scipy.integrate.OdeSolver "
                             f"subclass), got {solver!r}")
    else:
        from scipy.integrate import OdeSolver

        if not (isinstance(solver, type) and issubclass(solver, OdeSolver)):
            raise TypeError(f"options['solver'] must be a name such as 'RK45' or a scipy.integrate.OdeSolver "
                            f"subclass, got {type(solver).__name__}")
    opts.min_step = check.positive("min_step", opts.min_step, allow_none=False, allow_zero=True)
    opts.max_step = check.positive("max_step", opts.max_step, allow_none=False, allow_inf=True)


class ScipyLoop:
    """Integrates through the output times with ``solve_ivp``; the loop contract of the other loops.

    Args:
        fn: the :class:`FlatFunc` (solver time, flat real state); opts: :class:`ScipyOptions`;
        rtol, atol: tolerances handed to scipy; stats: counters (``nfe`` is counted by ``fn``; scipy does not
            report its steps, so ``n_accepted`` stays 0);
        time_sign: -1 for decreasing time.
    """

    SUPPORTED_HOOKS: frozenset[str] = frozenset()  # solve_ivp does not hand its steps out

    def __init__(self, fn, opts: ScipyOptions, rtol: float, atol: float, stats: SolverStats, time_sign: float):
        self.fn, self.opts, self.rtol, self.atol, self.stats, self.time_sign = fn, opts, rtol, atol, stats, time_sign

    def _rhs(self, y0: Tensor):
        fn, device, dtype = self.fn, y0.device, y0.dtype

        def rhs(s: float, y):
            with torch.no_grad():
                out = fn(float(s), torch.from_numpy(y).to(device=device, dtype=dtype))
            return out.detach().to("cpu", torch.float64).numpy()

        return rhs

    def integrate(self, y0: Tensor, t_out: list[float], hooks: LoopHooks = NO_HOOKS) -> list[Tensor]:
        """Returns the states at ``t_out`` as one (T, n) block (no autograd graph; ``hooks`` must be empty)."""
        from scipy.integrate import solve_ivp

        extra = {"max_step": self.opts.max_step}
        if self.opts.min_step > 0 or self.opts.solver == "LSODA":  # the other solvers warn on min_step
            extra["min_step"] = self.opts.min_step
        y_np = y0.detach().to("cpu", torch.float64).numpy()
        sol = solve_ivp(self._rhs(y0), (t_out[0], t_out[-1]), y_np, method=self.opts.solver, t_eval=t_out,
                        rtol=self.rtol, atol=self.atol, **extra)
        reached = float(sol.t[-1]) if len(sol.t) else t_out[0]
        self.stats.t_reached = self.time_sign * reached
        if not sol.success or sol.y.shape[1] != len(t_out):
            raise ODESolverError("scipy", self.time_sign * reached, f"scipy_solver ({self.opts.solver}): {sol.message}")
        return [torch.from_numpy(sol.y.T.copy()).to(device=y0.device, dtype=y0.dtype)]
