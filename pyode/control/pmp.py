"""Pontryagin's maximum principle (PMP) for residual networks and fixed-step ODE networks.

Training a network is the optimal control problem (Li, Chen, Tai & E, "Maximum Principle Based
Algorithms for Deep Learning", JMLR 18(165), 2018)::

    min_θ  J(θ) = Σ_i [ Φ(x_T^i, y^i) + Σ_t h L(x_t^i, θ_t) ]
    s.t.   x_{t+1} = F_t(x_t, θ_t),   x_0 = x^i                     (one-step map F_t)

For a residual net ``F_t(x, θ) = x + h f_t(x, θ_t)``; for an ODE net ``dx/dt = f(s, x, θ)`` the map
``F_t`` is one step of a fixed-step Runge-Kutta scheme and θ is shared by all steps. The discrete PMP
uses the Hamiltonian of one step::

    H_t(x, p, θ) = p · F_t(x, θ) − h L(x, θ)
    x_{t+1} = ∇_p H_t,    p_t = ∇_x H_t(x_t, p_{t+1}, θ_t),    p_T = −∇_x Φ(x_T, y)

so that ``p_t = −∂J/∂x_t`` and ``∇_{θ_t} J = −∇_θ H_t(x_t, p_{t+1}, θ_t)`` hold *exactly* (the costate
pass is reverse-mode differentiation written in control language). For the Euler residual map,
``H_t = p·x + h H(x, p, θ)`` with the continuous Hamiltonian ``H = p·f − L`` of :class:`Hamiltonian`.

Conventions: costates are per sample and undivided (``J`` is a *sum* over the batch); trainers divide
by the batch size themselves. Shapes: states and costates are ``(batch, *state_shape)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from pyode._solvers import tableaux
from pyode._solvers.explicit_step import explicit_rk_step, tableau_rows

from ._checks import check_callable, check_count, check_number

#: ``running_cost(x, layer) -> (batch,)`` or a scalar: L(x, θ) with θ = ``layer``'s parameters.
RunningCost = Callable[[Tensor, nn.Module], Tensor]
#: ``terminal_loss(x_T, y) -> (batch,)``: the per-sample terminal cost Φ(x_T, y).
TerminalLoss = Callable[[Tensor, Tensor], Tensor]


def _per_sample(values: Tensor, x: Tensor, what: str) -> Tensor:
    """Broadcast a scalar (e.g. weight decay) to ``(batch,)`` and check a per-sample result."""
    if values.dim() == 0:
        return values.expand(x.shape[0])
    if values.shape != (x.shape[0],):
        raise ValueError(f"{what} must return a scalar or shape (batch,) = ({x.shape[0]},), "
                         f"got {tuple(values.shape)}")
    return values


def _batch_dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product of two ``(batch, *shape)`` tensors -> ``(batch,)``."""
    return (a * b).flatten(1).sum(dim=1)


class Hamiltonian:
    """Continuous-time Hamiltonian ``H(x, p, θ) = p · f(x, θ) − L(x, θ)`` (Li et al., JMLR 2018).

    Args:
        dynamics: the module ``f``; ``dynamics(x)`` maps ``(batch, *shape)`` to the same shape.
        running_cost: optional ``L(x, dynamics) -> (batch,)`` or scalar; ``None`` means L = 0.

    Calling it with ``x, p: (batch, *shape)`` returns ``H: (batch,)``; gradients flow to ``x`` and to
    the parameters θ of ``dynamics``.

    Raises:
        TypeError: ``dynamics`` or ``running_cost`` not callable.
        ValueError: on a call, ``p`` and ``x`` of different shapes, or a running cost that is neither a
            scalar nor ``(batch,)``.

    Examples:
        With ``f(x) = x`` and no running cost, ``H = p · x``:

        >>> import torch
        >>> from pyode.control import Hamiltonian
        >>> H = Hamiltonian(torch.nn.Identity())
        >>> H(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]]))
        tensor([11.])
        >>> H_reg = Hamiltonian(torch.nn.Identity(), running_cost=lambda x, layer: 0.5 * (x ** 2).sum(dim=1))
        >>> H_reg(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]]))  # 11 - 2.5
        tensor([8.5000])
    """

    def __init__(self, dynamics: nn.Module, running_cost: RunningCost | None = None):
        check_callable("dynamics", dynamics, "a callable nn.Module mapping x to f(x)")
        if running_cost is not None:
            check_callable("running_cost", running_cost, "a callable L(x, layer) or None")
        self.dynamics = dynamics
        self.running_cost = running_cost

    def __call__(self, x: Tensor, p: Tensor) -> Tensor:
        if p.shape != x.shape:
            raise ValueError(f"costate p has shape {tuple(p.shape)} but state x has shape "
                             f"{tuple(x.shape)}; they must match")
        value = _batch_dot(p, self.dynamics(x))
        if self.running_cost is not None:
            value = value - _per_sample(self.running_cost(x, self.dynamics), x, "running_cost")
        return value


class ControlSystem(nn.Module):
    """A discrete-time control system ``x_{t+1} = F_t(x_t, θ_t)``, ``t = 0..num_steps-1``.

    Subclasses define :meth:`step`, :meth:`control` (the module holding θ_t) and the attributes
    ``num_steps``, ``step_size`` (h, weighting the running cost) and ``running_cost``.
    ``forward(x0)`` runs all steps: ``(batch, *shape) -> (batch, *shape)``.

    Examples:
        A two-step system ``x_{t+1} = x_t + lin(x_t)`` sharing one control:

        >>> import torch
        >>> from pyode.control import ControlSystem
        >>> class Shared(ControlSystem):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.lin = torch.nn.Linear(2, 2)
        ...         self.num_steps, self.step_size, self.running_cost = 2, 1.0, None
        ...     def step(self, t, x):
        ...         return x + self.lin(x)
        ...     def control(self, t):
        ...         return self.lin
        >>> system = Shared()
        >>> system(torch.zeros(3, 2)).shape, [steps for _, steps in system.control_groups()]
        (torch.Size([3, 2]), [[0, 1]])
    """

    num_steps: int
    step_size: float
    running_cost: RunningCost | None

    def step(self, t: int, x: Tensor) -> Tensor:
        """One-step map ``F_t(x, θ_t)``; ``x: (batch, *shape)`` -> same shape.

        Args:
            t (int): step index, ``0 <= t < num_steps``.
            x (Tensor): (batch, *shape) state ``x_t``.

        Returns:
            Tensor: (batch, *shape) state ``x_{t+1}``.
        """
        raise NotImplementedError

    def control(self, t: int) -> nn.Module:
        """The module whose parameters are the control θ_t of step ``t``."""
        raise NotImplementedError

    def control_groups(self) -> list[tuple[nn.Module, list[int]]]:
        """``(module, steps)`` pairs: the steps each distinct control module acts on.

        A residual net has one group per layer; an ODE net one group with all steps (shared θ).
        PMP maximisation is done independently per group.
        """
        groups: dict[int, tuple[nn.Module, list[int]]] = {}
        for t in range(self.num_steps):
            module = self.control(t)
            groups.setdefault(id(module), (module, []))[1].append(t)
        return list(groups.values())

    def forward(self, x0: Tensor) -> Tensor:
        """``x0: (batch, *shape)`` -> ``x_T``: the final state, ``(batch, *shape)``."""
        x = x0
        for t in range(self.num_steps):
            x = self.step(t, x)
        return x

    def step_running_cost(self, t: int, x: Tensor) -> Tensor:
        """``h L(x_t, θ_t)`` per sample, ``(batch,)`` (zeros without a running cost).

        Args:
            t (int): step index.
            x (Tensor): (batch, *shape) state ``x_t``.

        Returns:
            Tensor: (batch,) running cost of the step.
        """
        if self.running_cost is None:
            return x.new_zeros(x.shape[0])
        cost = _per_sample(self.running_cost(x, self.control(t)), x, "running_cost")
        return self.step_size * cost


class ResidualNet(ControlSystem):
    """Residual network ``x_{t+1} = x_t + h f_t(x_t; θ_t)``: one layer module per step.

    Args:
        layers (Sequence[nn.Module]): the ``f_t`` modules, each mapping ``(batch, *shape)`` to the same
            shape, e.g. ``nn.Sequential(nn.Linear(5, 5), nn.Tanh())``.
        step_size (float): h > 0 (default 1.0).
        running_cost (RunningCost | None): optional ``L(x, layer) -> (batch,)`` or scalar (default None:
            L = 0).

    Raises:
        ValueError: an empty ``layers`` or ``step_size <= 0``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import ResidualNet
        >>> net = ResidualNet([nn.Sequential(nn.Linear(5, 5), nn.Tanh()) for _ in range(4)], step_size=0.25)
        >>> net(torch.randn(3, 5)).shape, net.num_steps, len(net.control_groups())
        (torch.Size([3, 5]), 4, 4)
    """

    def __init__(self, layers: Sequence[nn.Module], step_size: float = 1.0,
                 running_cost: RunningCost | None = None):
        super().__init__()
        if len(layers) == 0:
            raise ValueError("layers must contain at least one module")
        self.layers = nn.ModuleList(layers)
        self.num_steps = len(self.layers)
        self.step_size = check_number("step_size", step_size, minimum=0.0)
        self.running_cost = running_cost

    def step(self, t: int, x: Tensor) -> Tensor:
        return x + self.step_size * self.layers[t](x)

    def control(self, t: int) -> nn.Module:
        return self.layers[t]

    def hamiltonian(self, t: int) -> Hamiltonian:
        """The continuous Hamiltonian ``H = p·f_t − L`` of layer ``t``.

        The discrete Hamiltonian of the step is ``H_t = p·x + h H`` (:func:`discrete_hamiltonian`), so
        ``∇_θ H_t = h ∇_θ H``: gradients of this object lack the factor ``h`` that :func:`pmp_gradients`
        and backprop carry (``∇_{θ_t} J = −h ∇_θ H(x_t, p_{t+1}, θ_t)``).
        """
        return Hamiltonian(self.layers[t], self.running_cost)


# The explicit fixed-step schemes the ODE net can use: the solver's tableaux ("rk4" is the classic method here).
_TABLEAUX = {"euler": tableaux.EULER, "midpoint": tableaux.MIDPOINT, "rk4": tableaux.RK4_CLASSIC}


class FixedStepODENet(ControlSystem):
    """ODE network ``dx/ds = f(s, x; θ)`` on ``[t0, t1]`` with ``num_steps`` fixed Runge-Kutta steps.

    θ (the parameters of ``func``) is shared by every step, so the PMP gradient sums
    ``−∇_θ H_t`` over all steps. The costate pass is the discrete adjoint of the chosen scheme, hence
    it matches autograd to rounding (not just to O(h^order)).

    Args:
        func (nn.Module): module called as ``func(s, x)`` with ``s`` a float and ``x: (batch, *shape)``,
            returning ``dx/ds`` of the same shape.
        t0 (float): start of the interval (default 0.0).
        t1 (float): end of the interval, ``t1 > t0`` (default 1.0).
        num_steps (int): number of equal steps (>= 1, default 10); ``step_size = (t1 - t0) / num_steps``.
        method (str): ``"euler"``, ``"midpoint"`` or ``"rk4"`` (default ``"rk4"``).
        running_cost (RunningCost | None): optional ``L(x, func)``, applied at the left end of every step
            (default None).

    Raises:
        ValueError: an unknown ``method``, ``num_steps < 1`` or ``t1 <= t0``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import FixedStepODENet
        >>> class Field(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.lin = nn.Linear(2, 2)
        ...     def forward(self, s, x):
        ...         return torch.tanh(self.lin(x))
        >>> ode_net = FixedStepODENet(Field(), t1=1.0, num_steps=4, method="rk4")
        >>> ode_net(torch.randn(3, 2)).shape, ode_net.step_size
        (torch.Size([3, 2]), 0.25)
        >>> [steps for _, steps in ode_net.control_groups()]  # θ shared by every step
        [[0, 1, 2, 3]]
    """

    def __init__(self, func: nn.Module, t0: float = 0.0, t1: float = 1.0, num_steps: int = 10,
                 method: str = "rk4", running_cost: RunningCost | None = None):
        super().__init__()
        if method not in _TABLEAUX:
            raise ValueError(f"method must be one of {sorted(_TABLEAUX)}, got {method!r}")
        self.num_steps = check_count("num_steps", num_steps)
        self.t0 = check_number("t0", t0)
        if not check_number("t1", t1) > t0:
            raise ValueError(f"need t1 > t0, got t0={t0}, t1={t1}")
        self.func = func
        self.step_size = (float(t1) - float(t0)) / self.num_steps
        self.method = method
        self._tableau = tableau_rows(_TABLEAUX[method])  # (a, b, c) as floats, once
        self.running_cost = running_cost

    def step(self, t: int, x: Tensor) -> Tensor:
        a, b, c = self._tableau
        return explicit_rk_step(self.func, self.t0 + t * self.step_size, x, self.step_size, a, b, c)

    def control(self, t: int) -> nn.Module:
        return self.func


def discrete_hamiltonian(system: ControlSystem, t: int, x: Tensor, p_next: Tensor) -> Tensor:
    """``H_t(x, p_{t+1}, θ_t) = p_{t+1} · F_t(x, θ_t) − h L(x, θ_t)`` per sample, ``(batch,)``.

    ``x, p_next: (batch, *shape)``; gradients flow to ``x`` and θ_t.

    Args:
        system (ControlSystem): the network.
        t (int): step index.
        x (Tensor): (batch, *shape) state ``x_t``.
        p_next (Tensor): (batch, *shape) costate ``p_{t+1}``.

    Returns:
        Tensor: (batch,) ``H_t`` per sample.

    Raises:
        ValueError: ``x`` and ``p_next`` of different shapes.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import ResidualNet, costate_pass, pmp_gradients, state_pass, terminal_costate
        >>> net = ResidualNet([nn.Linear(2, 2) for _ in range(3)], step_size=0.5).double()
        >>> x0, y = torch.randn(4, 2, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64)
        >>> def loss(x, y):
        ...     return ((x - y) ** 2).sum(dim=1)
        >>> states = state_pass(net, x0)
        >>> costates = costate_pass(net, states, terminal_costate(loss, states[-1], y))
        >>> from pyode.control import discrete_hamiltonian
        >>> discrete_hamiltonian(net, 0, states[0], costates[1]).shape
        torch.Size([4])
    """
    if p_next.shape != x.shape:
        raise ValueError(f"costate p_next has shape {tuple(p_next.shape)} but state x has shape "
                         f"{tuple(x.shape)}; they must match")
    return _batch_dot(p_next, system.step(t, x)) - system.step_running_cost(t, x)


@torch.no_grad()
def state_pass(system: ControlSystem, x0: Tensor) -> list[Tensor]:
    """Forward state pass: ``[x_0, ..., x_T]``, each ``(batch, *shape)``, detached.

    Args:
        system (ControlSystem): the network.
        x0 (Tensor): (batch, *shape) initial states.

    Returns:
        list[Tensor]: ``num_steps + 1`` states, each (batch, *shape), computed without autograd.

    Raises:
        ValueError: a step that changes the state's shape.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import ResidualNet, state_pass
        >>> net = ResidualNet([nn.Linear(2, 2) for _ in range(3)], step_size=0.5)
        >>> states = state_pass(net, torch.randn(4, 2))
        >>> len(states), states[-1].shape, states[-1].requires_grad
        (4, torch.Size([4, 2]), False)
    """
    states = [x0.detach()]
    for t in range(system.num_steps):
        states.append(system.step(t, states[-1]))
        if states[-1].shape != x0.shape:
            raise ValueError(f"step {t} maps the state shape {tuple(x0.shape)} to {tuple(states[-1].shape)}; "
                             "each layer of a control system must keep the state shape (pad or embed x0)")
    return states


def terminal_costate(terminal_loss: TerminalLoss, x_final: Tensor, y: Tensor) -> Tensor:
    """``p_T = −∇_x Σ_i Φ(x_T^i, y^i)``: ``x_final: (batch, *shape)`` -> same shape.

    Args:
        terminal_loss (TerminalLoss): ``Φ(x_T, y) -> (batch,)`` (or a scalar).
        x_final (Tensor): (batch, *shape) final states.
        y (Tensor): the targets ``terminal_loss`` takes.

    Returns:
        Tensor: (batch, *shape) terminal costates.

    Examples:
        For ``Φ = |x - y|²``, ``p_T = -2 (x_T - y)``:

        >>> import torch
        >>> from pyode.control import terminal_costate
        >>> def loss(x, y):
        ...     return ((x - y) ** 2).sum(dim=1)
        >>> terminal_costate(loss, torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2))
        tensor([[-2., -4.]])
    """
    x = x_final.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = _per_sample(terminal_loss(x, y), x, "terminal_loss")
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return -grad


def costate_pass(system: ControlSystem, states: Sequence[Tensor], p_final: Tensor) -> list[Tensor]:
    """Backward costate pass ``p_t = ∇_x H_t(x_t, p_{t+1}, θ_t)`` from ``p_T = p_final``.

    Args:
        system (ControlSystem): the network.
        states (Sequence[Tensor]): ``[x_0, ..., x_T]`` from :func:`state_pass`.
        p_final (Tensor): ``p_T: (batch, *shape)``, e.g. from :func:`terminal_costate`.

    Returns:
        list[Tensor]: ``[p_0, ..., p_T]``, each (batch, *shape), detached; ``p_t = −∂J/∂x_t`` with ``J``
        summed over the batch.

    Raises:
        ValueError: ``states`` not ``num_steps + 1`` long, or ``p_final`` not shaped like ``x_T``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import ResidualNet, costate_pass, pmp_gradients, state_pass, terminal_costate
        >>> net = ResidualNet([nn.Linear(2, 2) for _ in range(3)], step_size=0.5).double()
        >>> x0, y = torch.randn(4, 2, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64)
        >>> def loss(x, y):
        ...     return ((x - y) ** 2).sum(dim=1)
        >>> states = state_pass(net, x0)
        >>> costates = costate_pass(net, states, terminal_costate(loss, states[-1], y))
        >>> len(costates), costates[0].shape
        (4, torch.Size([4, 2]))
        >>> x0_leaf = x0.clone().requires_grad_(True)  # p_0 = -dJ/dx_0
        >>> loss(net(x0_leaf), y).sum().backward()
        >>> torch.allclose(costates[0], -x0_leaf.grad)
        True
    """
    if len(states) != system.num_steps + 1:
        raise ValueError(f"states must hold num_steps + 1 = {system.num_steps + 1} tensors "
                         f"[x_0..x_T], got {len(states)}")
    if p_final.shape != states[-1].shape:
        raise ValueError(f"terminal costate has shape {tuple(p_final.shape)} but the final state has "
                         f"shape {tuple(states[-1].shape)}; they must match")
    costates = [p_final.detach()]
    for t in reversed(range(system.num_steps)):
        x = states[t].detach().requires_grad_(True)
        with torch.enable_grad():
            hamiltonian = discrete_hamiltonian(system, t, x, costates[0]).sum()
            (p_t,) = torch.autograd.grad(hamiltonian, x)
        costates.insert(0, p_t)
    return costates


def _parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    return (param for param in module.parameters() if param.requires_grad)


def pmp_gradients(system: ControlSystem, states: Sequence[Tensor],
                  costates: Sequence[Tensor]) -> dict[nn.Parameter, Tensor]:
    """``∇_θ J = −Σ_{t: θ acts on step t} ∇_θ H_t(x_t, p_{t+1}, θ)`` for every trainable parameter.

    Equals backprop's gradient of ``J`` (summed over the batch) to rounding. Returns a dict keyed by
    the parameter objects, so shared parameters (ODE nets) get the sum over their steps.

    Args:
        system (ControlSystem): the network.
        states (Sequence[Tensor]): ``[x_0, ..., x_T]`` from :func:`state_pass`.
        costates (Sequence[Tensor]): ``[p_0, ..., p_T]`` from :func:`costate_pass`.

    Returns:
        dict[nn.Parameter, Tensor]: the gradient of every trainable parameter, shaped like it.

    Raises:
        ValueError: ``states`` or ``costates`` not ``num_steps + 1`` long.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import ResidualNet, costate_pass, pmp_gradients, state_pass, terminal_costate
        >>> net = ResidualNet([nn.Linear(2, 2) for _ in range(3)], step_size=0.5).double()
        >>> x0, y = torch.randn(4, 2, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64)
        >>> def loss(x, y):
        ...     return ((x - y) ** 2).sum(dim=1)
        >>> states = state_pass(net, x0)
        >>> costates = costate_pass(net, states, terminal_costate(loss, states[-1], y))
        >>> from pyode.control import total_cost
        >>> grads = pmp_gradients(net, states, costates)
        >>> total_cost(net, loss, x0, y).backward()
        >>> all(torch.allclose(grads[p], p.grad) for p in net.parameters())
        True
    """
    if len(states) != len(costates) or len(states) != system.num_steps + 1:
        raise ValueError(f"states and costates must each hold num_steps + 1 = {system.num_steps + 1} "
                         f"tensors, got {len(states)} and {len(costates)}")
    grads: dict[nn.Parameter, Tensor] = {}
    for module, steps in system.control_groups():
        params = list(_parameters(module))
        if not params:
            continue
        with torch.enable_grad():
            total = sum(discrete_hamiltonian(system, t, states[t], costates[t + 1]).sum() for t in steps)
            group_grads = torch.autograd.grad(total, params, allow_unused=True)
        for param, grad in zip(params, group_grads):
            grads[param] = -grad if grad is not None else torch.zeros_like(param)
    return grads


def total_cost(system: ControlSystem, terminal_loss: TerminalLoss, x0: Tensor, y: Tensor) -> Tensor:
    """``J = Σ_i [Φ(x_T^i, y^i) + Σ_t h L(x_t^i, θ_t)]`` (a scalar, differentiable by autograd).

    Args:
        system (ControlSystem): the network.
        terminal_loss (TerminalLoss): ``Φ(x_T, y) -> (batch,)`` (or a scalar).
        x0 (Tensor): (batch, *shape) initial states.
        y (Tensor): the targets.

    Returns:
        Tensor: 0-dim cost, summed over the batch.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import ResidualNet, total_cost
        >>> def unit_cost(x, layer):
        ...     return x.new_tensor(1.0)
        >>> net = ResidualNet([nn.Linear(2, 2) for _ in range(2)], running_cost=unit_cost)
        >>> for p in net.parameters():
        ...     _ = nn.init.zeros_(p)  # F_t(x) = x: J = 3 samples x (|x0 - y|² + 2 steps x h L)
        >>> total_cost(net, lambda x, y: ((x - y) ** 2).sum(dim=1), torch.ones(3, 2), torch.zeros(3, 2))
        tensor(12., grad_fn=<AddBackward0>)
    """
    x = x0
    cost = x0.new_zeros(())
    for t in range(system.num_steps):
        cost = cost + system.step_running_cost(t, x).sum()
        x = system.step(t, x)
    return cost + _per_sample(terminal_loss(x, y), x, "terminal_loss").sum()
