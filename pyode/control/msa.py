"""Method of successive approximations (MSA) and extended MSA (E-MSA) trainers.

Li, Chen, Tai & E, "Maximum Principle Based Algorithms for Deep Learning", JMLR 18(165), 2018.
One iteration:

1. state pass ``x_{t+1} = F_t(x_t, θ_t)`` and costate pass ``p_t = ∇_x H_t`` at the current θ^k;
2. for every control (layer) independently, maximise the augmented Hamiltonian averaged over the batch::

       H̃_t(θ) = H_t(x_t, p_{t+1}, θ) − ½ρ ‖x_{t+1} − F_t(x_t, θ)‖² − ½ρ ‖p_t − ∇_x H_t(x_t, p_{t+1}, θ)‖²

   with a few L-BFGS iterations started from θ_t^k (x, p frozen at θ^k).

ρ = 0 is the basic MSA, which maximises H alone and may diverge: the penalties keep the new θ where
the frozen trajectories are still accurate, which is what makes E-MSA a descent method for ρ large
enough (the paper's error estimate). ρ is per sample here: costates are undivided per-sample
quantities and H̃ is averaged over the batch, so ρ does not depend on the batch size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_callable, check_count, check_number
from .pmp import (
    ControlSystem,
    TerminalLoss,
    costate_pass,
    discrete_hamiltonian,
    state_pass,
    terminal_costate,
)


def augmented_hamiltonian(system: ControlSystem, t: int, x: Tensor, p_next: Tensor, x_next: Tensor,
                          p: Tensor, rho: float) -> Tensor:
    """E-MSA's augmented Hamiltonian ``H̃_t`` per sample, ``(batch,)``, differentiable in θ_t.

    Args:
        system (ControlSystem): the network; θ_t is ``system.control(t)``'s parameters.
        t (int): step index.
        x (Tensor): ``x_t`` at the previous iterate, ``(batch, *shape)``.
        p_next (Tensor): ``p_{t+1}`` at the previous iterate, ``(batch, *shape)``.
        x_next (Tensor): ``x_{t+1}`` at the previous iterate (a feasibility target), ``(batch, *shape)``.
        p (Tensor): ``p_t`` at the previous iterate (a feasibility target), ``(batch, *shape)``.
        rho (float): penalty weight ρ >= 0; 0 gives the plain Hamiltonian ``H_t``.

    Returns:
        Tensor: (batch,) ``H̃_t`` per sample.

    Raises:
        ValueError: ``rho < 0`` or tensors of different shapes.

    Examples:
        At the iterate the states and costates came from, both penalties vanish: ``H̃_t = H_t``.

        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import (ResidualNet, augmented_hamiltonian, costate_pass, discrete_hamiltonian,
        ...                            state_pass, terminal_costate)
        >>> net = ResidualNet([nn.Linear(2, 2) for _ in range(3)], step_size=0.5).double()
        >>> x0, y = torch.randn(4, 2, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64)
        >>> states = state_pass(net, x0)
        >>> p_final = terminal_costate(lambda x, y: ((x - y) ** 2).sum(1), states[-1], y)
        >>> costates = costate_pass(net, states, p_final)
        >>> h_aug = augmented_hamiltonian(net, 0, states[0], costates[1], states[1], costates[0], rho=1.0)
        >>> h_aug.shape, torch.allclose(h_aug, discrete_hamiltonian(net, 0, states[0], costates[1]))
        (torch.Size([4]), True)
    """
    if rho < 0:
        raise ValueError(f"rho must be >= 0 (0 = basic MSA), got {rho}")
    for name, other in (("p_next", p_next), ("x_next", x_next), ("p", p)):
        if other.shape != x.shape:
            raise ValueError(f"{name} has shape {tuple(other.shape)} but x has shape {tuple(x.shape)}; "
                             "states and costates must all match")
    if rho == 0:
        return discrete_hamiltonian(system, t, x, p_next)
    x = x.detach().requires_grad_(True)
    x_mapped = system.step(t, x)
    hamiltonian = (p_next * x_mapped).flatten(1).sum(1) - system.step_running_cost(t, x)
    # ∇_x H_t depends on θ, so keep its graph (double backprop) for the L-BFGS gradient.
    (grad_x,) = torch.autograd.grad(hamiltonian.sum(), x, create_graph=True)
    state_gap = (x_next - x_mapped).flatten(1).pow(2).sum(1)
    costate_gap = (p - grad_x).flatten(1).pow(2).sum(1)
    return hamiltonian - 0.5 * rho * (state_gap + costate_gap)


class MSATrainer:
    """Train a :class:`~pyode.control.pmp.ControlSystem` with (E-)MSA (Li et al., JMLR 2018).

    Args:
        system (ControlSystem): e.g. :class:`~pyode.control.pmp.ResidualNet` or
            :class:`~pyode.control.pmp.FixedStepODENet`; its parameters are updated in place.
        terminal_loss (TerminalLoss): ``Φ(x_T, y) -> (batch,)`` per-sample loss (include any fixed
            read-out here).
        rho (float): augmentation weight ρ >= 0 (default 1.0); ``rho=0`` is basic MSA.
        lbfgs_iters (int): L-BFGS iterations per control and MSA iteration (>= 1); the default 10 is the
            setting of the measured results in ``docs/control_results.md``.
        lbfgs_lr (float): L-BFGS initial step length (> 0, default 1.0).
        line_search (bool): use strong-Wolfe line search in L-BFGS (default True, robust; ``False`` takes
            raw steps).

    Raises:
        TypeError: ``system`` not a :class:`~pyode.control.ControlSystem`, ``terminal_loss`` not callable.
        ValueError: ``rho < 0``, ``lbfgs_iters < 1`` or ``lbfgs_lr <= 0``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import MSATrainer, ResidualNet
        >>> net = ResidualNet([nn.Sequential(nn.Linear(3, 3), nn.Tanh()) for _ in range(3)], 0.25).double()
        >>> x0 = torch.randn(16, 3, dtype=torch.float64)
        >>> y = torch.sin(x0[:, 0])
        >>> trainer = MSATrainer(net, lambda xT, y: 0.5 * (xT.mean(1) - y) ** 2, rho=1.0, lbfgs_iters=3)
        >>> losses = [trainer.step(x0, y) for _ in range(3)]
        >>> losses[-1] < losses[0]
        True
    """

    def __init__(self, system: ControlSystem, terminal_loss: TerminalLoss, rho: float = 1.0,
                 lbfgs_iters: int = 10, lbfgs_lr: float = 1.0, line_search: bool = True):
        if not isinstance(system, ControlSystem):
            raise TypeError("system must be a pyode.control ControlSystem (ResidualNet or "
                            f"FixedStepODENet), got {type(system).__name__}")
        check_callable("terminal_loss", terminal_loss, "a callable (x_T, y) -> per-sample loss")
        self.system = system
        self.terminal_loss = terminal_loss
        self.rho = check_number("rho", rho, minimum=0.0, strict=False, hint=" (0 = basic MSA)")
        self.lbfgs_iters = check_count("lbfgs_iters", lbfgs_iters)
        self.lbfgs_lr = check_number("lbfgs_lr", lbfgs_lr, minimum=0.0)
        self.line_search = "strong_wolfe" if line_search else None

    def step(self, x0: Tensor, y: Tensor) -> float:
        """One (E-)MSA iteration on the batch ``x0: (batch, *shape)``, ``y: (batch, ...)``.

        Args:
            x0 (Tensor): (batch, *shape) inputs (initial states).
            y (Tensor): (batch, ...) targets.

        Returns:
            float: the mean cost ``J / batch`` at the parameters *before* the update.

        Raises:
            ValueError: ``x0`` and ``y`` with different batch sizes.
        """
        if x0.shape[0] != y.shape[0]:
            raise ValueError(f"x0 holds {x0.shape[0]} samples but y holds {y.shape[0]}; they must match")
        states = state_pass(self.system, x0)
        loss = self._mean_cost(states, y)
        costates = costate_pass(self.system, states, terminal_costate(self.terminal_loss, states[-1], y))
        for module, steps in self.system.control_groups():
            self._maximise(module, steps, states, costates)
        return loss

    @torch.no_grad()
    def _mean_cost(self, states: list[Tensor], y: Tensor) -> float:
        """``J / batch`` (terminal plus running cost) along precomputed states."""
        running = sum(self.system.step_running_cost(t, states[t]).sum() for t in range(len(states) - 1))
        return float((self.terminal_loss(states[-1], y).sum() + running) / states[0].shape[0])

    def _maximise(self, module: nn.Module, steps: list[int], states: list[Tensor],
                  costates: list[Tensor]) -> None:
        """Maximise the batch-averaged ``Σ_{t in steps} H̃_t`` over ``module``'s parameters."""
        params = [param for param in module.parameters() if param.requires_grad]
        if not params:
            return
        batch = states[0].shape[0]
        optimizer = torch.optim.LBFGS(params, lr=self.lbfgs_lr, max_iter=self.lbfgs_iters,
                                      line_search_fn=self.line_search)

        def negative_objective() -> Tensor:
            optimizer.zero_grad()
            objective = sum(augmented_hamiltonian(self.system, t, states[t], costates[t + 1],
                                                  states[t + 1], costates[t], self.rho).sum()
                            for t in steps) / batch
            (-objective).backward()
            return -objective

        with torch.enable_grad():
            optimizer.step(negative_objective)
        optimizer.zero_grad(set_to_none=True)
