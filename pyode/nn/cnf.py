"""Continuous normalising flows (Chen et al. 2018) and FFJORD (Grathwohl et al. 2019).

A CNF moves base samples ``z(0) ~ N(0, I)`` along ``dz/dt = f(t, z)`` to data ``x = z(t1)``. The
instantaneous change of variables ``d log p(z(t))/dt = -tr(∂f/∂z)`` gives

    log p(x) = log N(z(0)) - ∫_0^{t1} tr(∂f/∂z(t)) dt,

computed by solving the joint system ``(z, a)`` with ``da/dt = -tr(∂f/∂z)`` backwards from ``(x, 0)``.
The trace is exact (``dim`` vector-Jacobian products, fine for small ``dim``) or Hutchinson's unbiased
estimate ``εᵀ (∂f/∂z) ε`` with one noise draw ``ε`` per solve (FFJORD).
"""

from __future__ import annotations

import math

import torch
from torch import nn

import pyode

from ._checks import check_choice, check_feature_shape, check_positive
from .continuous import CountingField, _solver_kwargs

Tensor = torch.Tensor

__all__ = [
    "CNF",
    "FFJORD",
    "NOISE_TYPES",
    "TRACE_ESTIMATORS",
    "divergence_exact",
    "divergence_hutchinson",
    "sample_noise",
    "standard_normal_log_prob",
]

TRACE_ESTIMATORS = ("exact", "hutchinson")
NOISE_TYPES = ("rademacher", "gaussian")


def divergence_exact(dz: Tensor, z: Tensor, create_graph: bool = False) -> Tensor:
    """``tr(∂dz/∂z)`` per sample by one vector-Jacobian product per dimension.

    ``dz, z: (batch, dim)`` with ``dz`` computed from ``z`` -> ``(batch,)``. Costs ``dim`` backward passes.

    Args:
        dz (Tensor): (batch, dim) the field's output, computed from ``z``.
        z (Tensor): (batch, dim) its input, requiring grad.
        create_graph (bool): keep the result differentiable, for training (default False).

    Returns:
        Tensor: (batch,) the Jacobian trace of each sample.

    Examples:
        >>> import torch
        >>> from pyode.nn import divergence_exact
        >>> z = torch.randn(3, 2, requires_grad=True)
        >>> A = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> divergence_exact(z @ A.T, z)  # tr A = 5
        tensor([5., 5., 5.])
    """
    columns = []
    for i in range(z.shape[1]):
        grad_i = torch.autograd.grad(dz[:, i].sum(), z, create_graph=create_graph, retain_graph=True)[0]
        columns.append(grad_i[:, i])
    return torch.stack(columns, dim=1).sum(dim=1)


def divergence_hutchinson(dz: Tensor, z: Tensor, eps: Tensor, create_graph: bool = False) -> Tensor:
    """Hutchinson's estimate ``εᵀ (∂dz/∂z) ε`` per sample (Hutchinson 1989; FFJORD).

    ``dz, z, eps: (batch, *shape)`` -> ``(batch,)``. Unbiased when ``E[εεᵀ] = I``; its variance is
    ``2‖S‖²_F`` for Gaussian and ``2(‖S‖²_F - Σ S_ii²)`` for Rademacher noise (``S`` the symmetric part of
    the Jacobian), which is why Rademacher is the default.

    Args:
        dz (Tensor): (batch, *shape) the field's output, computed from ``z``.
        z (Tensor): (batch, *shape) its input, requiring grad.
        eps (Tensor): (batch, *shape) noise with ``E[εεᵀ] = I`` (:func:`sample_noise`).
        create_graph (bool): keep the result differentiable, for training (default False).

    Returns:
        Tensor: (batch,) one estimate per sample (one vector-Jacobian product in all).

    Examples:
        >>> import torch
        >>> from pyode.nn import divergence_hutchinson
        >>> z = torch.randn(2, 2, requires_grad=True)
        >>> A = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> divergence_hutchinson(z @ A.T, z, torch.tensor([[1.0, 1.0], [1.0, -1.0]]))  # 1+2+3+4, 1-2-3+4
        tensor([10.,  0.])
    """
    vjp = torch.autograd.grad(dz, z, eps, create_graph=create_graph, retain_graph=True)[0]
    return (vjp * eps).flatten(1).sum(dim=1)


def sample_noise(like: Tensor, noise: str = "rademacher", generator: torch.Generator | None = None) -> Tensor:
    """Noise shaped like ``like`` with ``E[εεᵀ] = I``: ``'rademacher'`` (±1, the default, as in
    :func:`divergence_hutchinson`) or ``'gaussian'``.

    Args:
        like (Tensor): any shape; the noise takes its shape, dtype and device.
        noise (str): ``'rademacher'`` (default) or ``'gaussian'``.
        generator (torch.Generator | None): random generator (default None: torch's global one).

    Returns:
        Tensor: shaped like ``like``.

    Raises:
        ValueError: an unknown ``noise``.

    Examples:
        >>> import torch
        >>> from pyode.nn import sample_noise
        >>> eps = sample_noise(torch.zeros(4, 3))
        >>> eps.shape, sorted(eps.unique().tolist())
        (torch.Size([4, 3]), [-1.0, 1.0])
    """
    check_choice("noise", noise, NOISE_TYPES)
    if noise == "gaussian":
        return torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)
    bits = torch.randint(0, 2, like.shape, device=like.device, generator=generator)
    return bits.to(like.dtype) * 2 - 1


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` per sample: ``(batch, dim) -> (batch,)``.

    Args:
        z (Tensor): (batch, *shape) points; every non-batch dimension counts.

    Returns:
        Tensor: (batch,) log-densities in nats.

    Examples:
        >>> import torch
        >>> from pyode.nn import standard_normal_log_prob
        >>> standard_normal_log_prob(torch.zeros(2, 3, dtype=torch.float64))  # -3/2 log(2 pi)
        tensor([-2.7568, -2.7568], dtype=torch.float64)
    """
    return -0.5 * (z.pow(2).flatten(1).sum(dim=1) + z[0].numel() * math.log(2 * math.pi))


class _CNFDynamics(nn.Module):
    """Joint field ``(z, a) -> (f(t, z), -tr ∂f/∂z)`` for a state tuple ``(z: (batch, dim), a: (batch,))``."""

    def __init__(self, field: CountingField, trace_estimator: str):
        super().__init__()
        self.field = field
        self.trace_estimator = trace_estimator
        self.eps: Tensor | None = None  # Hutchinson noise, set once per solve by the CNF

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        z = state[0]
        create_graph = torch.is_grad_enabled()  # keep the trace differentiable only when training
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.field(t, z)
            if self.trace_estimator == "exact":
                div = divergence_exact(dz, z, create_graph)
            else:
                div = divergence_hutchinson(dz, z, self.eps, create_graph)
        if not create_graph:
            dz = dz.detach()
        return dz, -div


class CNF(nn.Module):
    """Continuous normalising flow ``x = z(t1)``, ``dz/dt = field(t, z)``, ``z(0) ~ N(0, I)``.

    Args:
        field (nn.Module): vector field ``field(t, z)`` on ``(batch, dim)`` states (e.g.
            :class:`~pyode.nn.TimeMLP`).
        dim (int): data dimension.
        t1 (float): flow time (default 1.0).
        trace_estimator (str): ``'exact'`` (default) or ``'hutchinson'``.
        noise (str): Hutchinson noise, ``'rademacher'`` (default) or ``'gaussian'``.
        method (str): a :data:`pyode.METHODS` name (default ``'dopri5'``).
        rtol (float | None): default None: 1e-5 for adaptive methods.
        atol (float | None): default None: 1e-5 for adaptive methods.
        options (dict | None): solver options (default None); a fixed-grid method needs
            ``options={'step_size': h}`` (as for :class:`~pyode.nn.ODEBlock`).
        gradient (str): gradient mode of :func:`pyode.odeint` (default ``'backprop'``).

    ``forward(x)`` is :meth:`log_prob` (so training loops and DDP call it as ``model(x)``):
    ``(batch, dim) -> (batch,)``. ``nfe`` counts evaluations of ``field`` in the last solve.

    Raises:
        ValueError: a non-positive ``dim`` or ``t1``, an unknown ``trace_estimator`` or ``noise``, ``x`` not
            ``(batch, dim)``.

    Examples:
        >>> import torch
        >>> from pyode.nn import CNF, TimeMLP
        >>> flow = CNF(TimeMLP(2, hidden=8), dim=2)
        >>> flow(torch.randn(5, 2)).shape  # log p(x)
        torch.Size([5])
        >>> x, log_p = flow.sample_with_log_prob(3)
        >>> x.shape, log_p.shape
        (torch.Size([3, 2]), torch.Size([3]))
    """

    def __init__(self, field: nn.Module, dim: int, *, t1: float = 1.0, trace_estimator: str = "exact",
                 noise: str = "rademacher", method: str = "dopri5", rtol: float | None = None,
                 atol: float | None = None,
                 options: dict | None = None, gradient: str = "backprop"):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.t1 = check_positive("t1", t1)
        self.trace_estimator = check_choice("trace_estimator", trace_estimator, TRACE_ESTIMATORS)
        self.noise = check_choice("noise", noise, NOISE_TYPES)
        self.dynamics = _CNFDynamics(CountingField(field), trace_estimator)
        self.solver_kwargs = _solver_kwargs(method, rtol, atol, options, gradient, 1e-5, 1e-5,
                                           torch.tensor([0.0, self.t1]))
        self.nfe = 0

    def _solve(self, z: Tensor, t_start: float, t_end: float) -> tuple[Tensor, Tensor]:
        """Solve the joint system from ``(z, 0)``; returns ``(z(t_end), a(t_end))``."""
        if self.trace_estimator == "hutchinson":
            self.dynamics.eps = sample_noise(z, self.noise)  # one draw per solve, as FFJORD prescribes
        t = torch.tensor([t_start, t_end], dtype=z.dtype, device=z.device)
        start = self.dynamics.field.nfe
        zs, as_ = pyode.odeint(self.dynamics, (z, z.new_zeros(z.shape[0])), t, **self.solver_kwargs)
        self.nfe = self.dynamics.field.nfe - start
        return zs[-1], as_[-1]

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` in nats: ``(batch, dim) -> (batch,)``.

        Args:
            x (Tensor): (batch, dim) data points.

        Returns:
            Tensor: (batch,) log-densities.
        """
        check_feature_shape("x", x, (self.dim,))
        z0, a0 = self._solve(x, self.t1, 0.0)
        # a(0) = ∫_0^{t1} tr(∂f/∂z) dt because da/dt = -tr and a(t1) = 0.
        return standard_normal_log_prob(z0) - a0

    def forward(self, x: Tensor) -> Tensor:
        return self.log_prob(x)

    def sample_with_log_prob(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` samples ``(n, dim)`` and their model log-densities ``(n,)``.

        Args:
            n (int): number of samples.
            generator (torch.Generator | None): for the base samples (default None: torch's global one).

        Returns:
            tuple[Tensor, Tensor]: samples (n, dim) and log-densities (n,), in the parameters' dtype.
        """
        param = next(self.parameters(), torch.empty(0))
        z0 = torch.randn(n, self.dim, dtype=param.dtype, device=param.device, generator=generator)
        x, a1 = self._solve(z0, 0.0, self.t1)
        return x, standard_normal_log_prob(z0) + a1

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples from the model: ``(n, dim)``, without gradients.

        Args:
            n (int): number of samples.
            generator (torch.Generator | None): for the base samples (default None).

        Returns:
            Tensor: (n, dim).
        """
        return self.sample_with_log_prob(n, generator)[0]


class FFJORD(CNF):
    """FFJORD (Grathwohl et al. 2019): a :class:`CNF` with Hutchinson's trace estimator by default,
    which makes the cost of a log-density linear instead of quadratic in ``dim``.

    Args:
        field (nn.Module): vector field ``field(t, z)`` on ``(batch, dim)`` states.
        dim (int): data dimension.
        **kwargs: as for :class:`CNF` (``trace_estimator`` defaults to ``'hutchinson'``).

    Examples:
        >>> import torch
        >>> from pyode.nn import FFJORD, TimeMLP
        >>> flow = FFJORD(TimeMLP(2, hidden=8), dim=2, noise="gaussian")
        >>> flow.trace_estimator, flow(torch.randn(5, 2)).shape
        ('hutchinson', torch.Size([5]))
    """

    def __init__(self, field: nn.Module, dim: int, **kwargs):
        kwargs.setdefault("trace_estimator", "hutchinson")
        super().__init__(field, dim, **kwargs)
