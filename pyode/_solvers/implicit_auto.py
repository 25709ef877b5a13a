"""``method="auto"``: tsit5 while the problem is not stiff, kvaerno5 while it is, switching both ways, as
LSODA and DifferentialEquations.jl's ``AutoTsit5(Kvaerno5())`` do. Both are 5th-order pairs, so one step-size
controller serves both and the switch keeps the step size. A stepper kind of the adaptive loop (the loop sees
one stepper), delegating each step to the active method.

Detection (Hairer & Wanner, *Solving ODEs I*, II.10 / the DOPRI5 code): after an accepted explicit step,
``ρ = |k_s - k_{s-1}| / |Y_s - Y_{s-1}|`` from the last two stages (both at ``c = 1``) estimates the dominant
eigenvalue's modulus along the solution; ``h ρ`` beyond the explicit method's stability boundary on
``STIFF_STEPS`` steps (without ``NONSTIFF_RESET`` calm ones in a row in between) means the step size is limited
by stability, not accuracy: switch to the stiff method. Since that estimate can miss a stiff mode the stages
hardly excite, a window of explicit steps with many rejections also computes the Jacobian and tests
``h ρ(J)``. Back: once ``h ρ(J)`` (the spectral radius of the held Jacobian, by power iteration) stays below
``NONSTIFF_LIMIT`` for ``NONSTIFF_STEPS`` consecutive steps, the explicit method would be stable at that step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from pyode._solvers.rk_step import StepResult

# The pair "auto" switches between: an explicit pair ending in two stages at c = 1, and a stiff pair of its order.
AUTO_PAIR = ("tsit5", "kvaerno5")

# tsit5 is unstable on the negative real axis beyond h|λ| = 3.51 (|R(z)| = 1 there; dopri5: 3.31, for which
# Hairer's code tests 3.25). On a stiff problem the controller cycles h around that boundary and the two-stage
# estimate of h ρ cycles with it, between ~2 and ~3.2 (Robertson at rtol 1e-8); an accuracy-limited step of a
# 5th-order pair has h|λ| ~ (720 rtol)^(1/6) <= 1.5 even at rtol 1e-2. So the test is at 2.5.
STABILITY_BOUNDARY = 2.5
STIFF_STEPS = 15            # stability-limited explicit steps before switching (DOPRI5's count) ...
NONSTIFF_RESET = 6          # ... reset only after this many consecutive steps that were not (DOPRI5's rule)
NONSTIFF_LIMIT = 1.5        # h ρ(J) well inside the explicit stability region ...
NONSTIFF_STEPS = 15         # ... on this many consecutive stiff steps before switching back
POWER_ITERATIONS = 8
CHECK_WINDOW = 25           # explicit steps per window of the rejection check ...
CHECK_RETRIES = 5           # ... which computes the Jacobian when the window saw this many rejected attempts


def spectral_radius(J: Tensor) -> float:
    """The largest spectral radius of the blocks (B, m, m), by power iteration (an estimate: enough to tell
    ``h ρ`` of order 1 from one of order 100)."""
    with torch.no_grad():
        v = torch.ones(J.shape[:2], dtype=J.dtype, device=J.device)
        rho = torch.zeros(J.shape[0], dtype=J.dtype, device=J.device)
        for _ in range(POWER_ITERATIONS):
            w = (J @ v.unsqueeze(-1)).squeeze(-1)
            rho = torch.linalg.vector_norm(w, dim=-1)  # |J v| for unit v, per block
            v = w / rho.clamp_min(torch.finfo(J.dtype).tiny).unsqueeze(-1)
        rho = float(rho.max())
    return rho if math.isfinite(rho) else float("inf")


class AutoSwitchStepper:
    """Runs ``explicit`` (an RKStepper whose last two stages are at ``c = 1``) or ``stiff`` (an implicit
    stepper holding a Jacobian ``_J``), whichever the detection chose. Same interface as both.

    Attributes:
        switches: ``(t, "stiff" | "nonstiff")`` for every switch, in the caller's time.
    """

    default_controller = "pid"  # options["controller"] = "auto" (pyode._solvers.controller.uses_predictive)

    def __init__(self, explicit, stiff, time_sign: float):
        self.explicit, self.stiff, self.time_sign = explicit, stiff, time_sign
        self.tableau, self.fn, self.kern = explicit.tableau, explicit.fn, explicit.kern
        self.rtol, self.atol = explicit.rtol, explicit.atol
        tab = explicit.tableau
        if not (tab.c[-1] == 1.0 and tab.c[-2] == 1.0 and stiff.tableau.order == tab.order):
            raise ValueError("auto switching needs an explicit pair ending in two stages at c = 1 and a stiff pair of "
                             "the same order")
        last, before = list(tab.a[-1]), list(tab.a[-2]) + [0.0] * (len(tab.a[-1]) - len(tab.a[-2]))
        self._stage_diff = [x - y for x, y in zip(last, before)]  # Y_s - Y_{s-1} = h Σ_j (a_sj - a_{s-1,j}) k_j
        self.active, self.count, self.calm, self.switches = explicit, 0, 0, []
        self.window = self.retries = 0  # explicit steps and rejected attempts in the current check window
        self._mode_at: dict[float, object] = {}  # the method of the step started at t (checkpoint replays)
        self._owner: dict[int, object] = {}      # id(step) -> the stepper that made it (its dense output)
        self._last: StepResult | None = None

    @property
    def needs_f1(self) -> bool:
        return self.active.needs_f1

    # -- detection -----------------------------------------------------------------------------------------
    def _explicit_stiffness(self, step: StepResult) -> float:
        """``h ρ`` from the last two stages of an explicit step."""
        with torch.no_grad():
            dk = torch.linalg.vector_norm(step.ks[-1] - step.ks[-2])
            dy = torch.linalg.vector_norm(self.kern.lincomb_row(None, step.ks[:len(self._stage_diff)],
                                                                [step.h * x for x in self._stage_diff]))
        dy = float(dy)
        return step.h * float(dk) / dy if dy > 0.0 else 0.0

    def _implicit_stiffness(self, step: StepResult) -> float:
        """``h ρ(J)`` with the stiff method's held Jacobian."""
        J = self.stiff._J
        return float("inf") if J is None else step.h * spectral_radius(J)

    def _jacobian_stiffness(self, step: StepResult) -> float:
        """``h ρ(J)`` with a Jacobian computed at the step's end (m products: used sparingly)."""
        J = self.stiff.jac(step.t0 + step.h, step.y1.detach())
        return step.h * spectral_radius(J)

    def _after_accepted(self, step: StepResult) -> None:
        """Updates the detection with an accepted step; switches the active method when it says so."""
        if self.active is self.stiff:
            quiet = self._implicit_stiffness(step) < NONSTIFF_LIMIT
            self.count = self.count + 1 if quiet else 0
            if self.count >= NONSTIFF_STEPS:
                self._switch(step, self.explicit, "nonstiff")
            return
        if self._explicit_stiffness(step) > STABILITY_BOUNDARY:
            self.count, self.calm = self.count + 1, 0
        else:
            self.calm += 1
            if self.calm >= NONSTIFF_RESET:
                self.count = 0
        self.window += 1
        if self.window >= CHECK_WINDOW:
            # Many rejections in a window: the two-stage estimate can miss a stiff mode its stages hardly excite
            # (Robertson at rtol 1e-8: estimates ~0.9 while h|λ| ~ 3.3); ask the Jacobian itself.
            if self.retries >= CHECK_RETRIES and self._jacobian_stiffness(step) > STABILITY_BOUNDARY:
                self.count = STIFF_STEPS
            self.window = self.retries = 0
        if self.count >= STIFF_STEPS:
            self._switch(step, self.stiff, "stiff")

    def _switch(self, step: StepResult, to, label: str) -> None:
        self.active, self.count, self.calm = to, 0, 0
        self.switches.append((self.time_sign * (step.t0 + step.h), label))

    def _accepted_previous(self, t0: float, y0: Tensor) -> None:
        """The loop does not report acceptance: a step that starts where the last attempt ended, from its y1,
        means that attempt was accepted."""
        last = self._last
        if last is not None and last.t0 + last.h == t0 and last.y1.data_ptr() == y0.data_ptr():
            self._last = None
            self._after_accepted(last)

    # -- the stepper interface -----------------------------------------------------------------------------
    def attempt(self, t0: float, y0: Tensor, f0: Tensor, h: float, ends_at_jump: bool = False) -> StepResult:
        stepper = self._mode_at.get(t0)
        if stepper is None:  # a new step of the solve (not a retry after a rejection, nor a checkpoint replay)
            self._accepted_previous(t0, y0)
            stepper = self._mode_at[t0] = self.active
        elif self._last is not None and self._last.t0 == t0:
            self.retries += 1
        step = stepper.attempt(t0, y0, f0, h, ends_at_jump)
        self._last = step
        if len(self._owner) > 8:  # only the latest steps are interpolated
            self._owner = dict(list(self._owner.items())[-4:])
        self._owner[id(step)] = stepper
        return step

    def _of(self, step: StepResult):
        return self._owner.get(id(step), self.active)

    def dense(self, step: StepResult, thetas: list[float]) -> Tensor:
        return self._of(step).dense(step, thetas)

    def end_derivative(self, step: StepResult) -> Tensor:
        return self._of(step).end_derivative(step)

    def failure_error(self, t_reached: float):
        return self.stiff.failure_error(t_reached) if self.active is self.stiff else None
