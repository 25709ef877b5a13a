"""What a solve returns besides the trajectory: statistics and the reason it stopped."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class SolverStats:
    """Counters of one solve.

    Attributes:
        nfe (int): evaluations of ``func`` in the forward solve (including the initial-step heuristic).
        nfe_backward (int): evaluations in the backward pass (adjoint / checkpoint / reversible), once it
            ran.
        n_accepted (int): accepted steps (fixed-grid solvers accept every step).
        n_rejected (int): rejected steps.
        n_accepted_backward (int): accepted steps of the adjoint's backward solve, once it ran.
        n_rejected_backward (int): rejected steps of the adjoint's backward solve, once it ran.
        t_reached (float): the last time reached, in the caller's time direction (per-sample: the earliest
            row's).
        status (str): ``"success"``, ``"event"`` (a terminal event stopped the solve), or ``"partial"``
            (per-sample with ``on_failure="mark"``: some rows failed).
        per_sample_status (list[str] | None): per-sample with ``on_failure="mark"``: each row's
            ``"success"``, ``"max_num_steps"``, ``"step_underflow"`` or ``"non_finite"``; else None.
        per_sample_t_reached (Tensor | None): with ``on_failure="mark"``: the time each row reached,
            (batch,); else None.

    Examples:
        >>> import torch, pyode
        >>> sol = pyode.solve(lambda t, y: -y, torch.ones(2, dtype=torch.float64),
        ...                   torch.tensor([0.0, 1.0], dtype=torch.float64))
        >>> stats = sol.stats
        >>> stats.status, stats.t_reached, stats.nfe > 0
        ('success', 1.0, True)
        >>> stats.n_steps == stats.n_accepted + stats.n_rejected
        True
    """

    nfe: int = 0
    nfe_backward: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    n_accepted_backward: int = 0
    n_rejected_backward: int = 0
    t_reached: float = float("nan")
    status: str = "success"
    per_sample_status: list | None = None
    per_sample_t_reached: Tensor | None = None

    @property
    def n_steps(self) -> int:
        """Attempted steps: accepted plus rejected."""
        return self.n_accepted + self.n_rejected


@dataclass
class Solution:
    """Result of :func:`pyode.solve`.

    Attributes:
        ys (Tensor | tuple[Tensor, ...]): (len(t), *y0.shape), or a tuple of such for a tuple ``y0``; with
            an event, (2, *y0.shape): the initial state and the state at the event.
        t (Tensor): the output times (1-D); with an event, ``[t0, event_t]``.
        event_t (Tensor | None): the event time (0-dim tensor) or None.
        stats (SolverStats): the solve's counters.
        ts (Tensor | None): with ``solve(..., dense=True)`` or ``save_steps=True``: t0 and the end time of
            every accepted step, (n_steps + 1,); else None.
        dense (object | None): the continuous extension behind :meth:`evaluate` (``dense=True``), else None.

    Examples:
        >>> import torch, pyode
        >>> t = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
        >>> sol = pyode.solve(lambda t, y: -y, torch.ones(3, dtype=torch.float64), t)
        >>> sol.ys.shape, sol.t.shape, sol.event_t is None, sol.ts is None
        (torch.Size([5, 3]), torch.Size([5]), True, True)
        >>> round(float(sol.ys[-1, 0]), 5)  # exp(-1)
        0.36788
    """

    ys: Tensor | tuple[Tensor, ...]
    t: Tensor
    stats: SolverStats = field(default_factory=SolverStats)
    event_t: Tensor | None = None
    ts: Tensor | None = None
    dense: object = field(default=None, repr=False)

    def evaluate(self, t) -> Tensor | tuple[Tensor, ...]:
        """The state at times ``t`` (float or tensor of any shape, within the solved interval) from the
        method's continuous extension: shaped ``(*t.shape, *y0.shape)`` (a tuple for a tuple ``y0``).
        Differentiable with respect to ``y0`` and the parameters after a ``gradient="backprop"`` solve.

        Args:
            t (float | Tensor): times of any shape inside the solved interval.

        Returns:
            Tensor | tuple[Tensor, ...]: (*t.shape, *y0.shape) states.

        Raises:
            ValueError: the solve was not made with ``dense=True``.

        Examples:
            >>> import torch, pyode
            >>> sol = pyode.solve(lambda t, y: -y, torch.ones(2, dtype=torch.float64),
            ...                   torch.tensor([0.0, 1.0], dtype=torch.float64), dense=True)
            >>> sol.evaluate(torch.tensor([0.25, 0.5], dtype=torch.float64)).shape
            torch.Size([2, 2])
            >>> round(float(sol.evaluate(0.5)[0]), 5)  # exp(-0.5)
            0.60653
        """
        if self.dense is None:
            raise ValueError("evaluate() needs the solve's dense output: call pyode.solve(..., dense=True)")
        return self.dense.evaluate(t)
