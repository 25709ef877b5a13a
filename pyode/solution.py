"""What a solve returns besides the trajectory: statistics and the reason it stopped."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class SolverStats:
    """Counters of one solve.

    Attributes:
        nfe: evaluations of ``func`` in the forward solve (including the initial-step heuristic).
        nfe_backward: evaluations in the backward pass (adjoint / checkpoint / reversible), once it ran.
        n_accepted / n_rejected: accepted and rejected steps (fixed-grid solvers accept every step).
        n_accepted_backward / n_rejected_backward: the same for the adjoint's backward solve, once it ran.
        t_reached: the last time reached, in the caller's time direction.
        status: ``"success"`` or ``"event"`` (a terminal event stopped the solve).
    """

    nfe: int = 0
    nfe_backward: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    n_accepted_backward: int = 0
    n_rejected_backward: int = 0
    t_reached: float = float("nan")
    status: str = "success"

    @property
    def n_steps(self) -> int:
        """Attempted steps: accepted plus rejected."""
        return self.n_accepted + self.n_rejected


@dataclass
class Solution:
    """Result of :func:`pyode.solve`.

    Attributes:
        ys: (len(t), *y0.shape), or a tuple of such for a tuple ``y0``; with an event, (2, *y0.shape):
            the initial state and the state at the event.
        t: the output times (1-D); with an event, ``[t0, event_t]``.
        event_t: the event time (0-dim tensor) or None.
        stats: :class:`SolverStats`.
    """

    ys: Tensor | tuple[Tensor, ...]
    t: Tensor
    stats: SolverStats = field(default_factory=SolverStats)
    event_t: Tensor | None = None

