"""Network architectures read as time-discretisations of ``dx/dt = f(x, θ_t)``.

A residual network is forward Euler with step ``h`` (E 2017; Haber & Ruthotto 2017; Lu et al. 2018,
"Beyond finite layer neural networks: bridging deep architectures and numerical differential equations").
Every block here takes the vector field ``f`` (an ``nn.Module`` mapping a state to a tensor of the same
shape) and a step ``h``; stacking ``N`` blocks with ``h = T / N`` integrates the ODE on ``[0, T]``.

Reversible blocks act on a *pair* of tensors ``(a, b) -> (a', b')`` and expose ``inverse``;
:class:`ReversibleSequence` chains them and trains without storing intermediate activations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pyode._solvers import tableaux
from pyode._solvers.explicit_step import explicit_rk_step, tableau_rows

from ._checks import (
    check_feature_shape,
    check_finite,
    check_finite_sequence,
    check_positive,
    check_positive_int,
    eval_same_shape,
)

Tensor = torch.Tensor
Pair = tuple[Tensor, Tensor]

__all__ = [
    "AntisymmetricBlock",
    "HamiltonianBlock",
    "LMResNet",
    "LMResNetBlock",
    "LeapfrogBlock",
    "MidpointBlock",
    "PolyNetBlock",
    "RK2Block",
    "RK4Block",
    "ResNetBlock",
    "RevNetBlock",
    "ReversibleBlock",
    "ReversibleSequence",
    "RungeKuttaBlock",
    "SymmetricLayer",
]


class RungeKuttaBlock(nn.Module):
    """One explicit Runge-Kutta step of ``dx/dt = f(x)`` as a layer.

    ``x: (batch, *state) -> (batch, *state)``. The Butcher tableau is given by ``a`` (strictly lower
    triangular rows, ``a[i]`` has ``i`` entries) and weights ``b``. Subclasses fix the tableau.

    Args:
        f (nn.Module): the vector field, ``f(x)`` shaped like ``x``.
        h (float): step size (> 0).
        a (Sequence[Sequence[float]]): the tableau's rows, ``a[i]`` of length ``i``.
        b (Sequence[float]): the weights, ``len(b) == len(a)``.

    Raises:
        TypeError: ``f`` not callable.
        ValueError: a tableau of the wrong shape, non-finite coefficients, ``h <= 0``; in ``forward``, ``f``
            returning a tensor not shaped like its input.

    Examples:
        The explicit midpoint rule on ``dx/dt = x``, one step of 0.1 from 1: ``1 + h + h²/2``.

        >>> import torch
        >>> from pyode.nn import RungeKuttaBlock
        >>> block = RungeKuttaBlock(torch.nn.Identity(), 0.1, a=[[], [0.5]], b=[0.0, 1.0])
        >>> block(torch.ones(2, 3, dtype=torch.float64))[0, 0].item()
        1.105
    """

    def __init__(self, f: nn.Module, h: float, a: Sequence[Sequence[float]], b: Sequence[float]):
        super().__init__()
        if not callable(f):
            raise TypeError(f"f must be a callable nn.Module mapping x to dx/dt, got {type(f).__name__}")
        if len(a) != len(b) or any(len(row) != i for i, row in enumerate(a)):
            raise ValueError("Butcher tableau: a must be strictly lower triangular with len(a) == len(b)")
        self.f = f
        self.h = check_positive("h", h)
        self.a = [check_finite_sequence(f"a[{i}]", row) for i, row in enumerate(a)]
        self.b = check_finite_sequence("b", b)
        self._c = [0.0] * len(self.b)  # an autonomous layer: its f never sees the stage times

    def forward(self, x: Tensor) -> Tensor:
        return explicit_rk_step(self._field, 0.0, x, self.h, self.a, self.b, self._c)

    def _field(self, t: float, x: Tensor) -> Tensor:
        return eval_same_shape("f", self.f, x)  # autonomous: a layer's f sees only x


class ResNetBlock(RungeKuttaBlock):
    """ResNet block ``x + h f(x)`` = forward Euler, order 1 (He et al. 2016; E 2017).

    Args:
        f (nn.Module): the residual branch / vector field, ``(batch, *state) -> (batch, *state)``.
        h (float): step size (default 1.0, the plain ResNet block).

    Examples:
        >>> import torch
        >>> from pyode.nn import ResNetBlock
        >>> ResNetBlock(torch.nn.Identity(), h=0.1)(torch.ones(2, 3, dtype=torch.float64))[0, 0].item()
        1.1
    """

    def __init__(self, f: nn.Module, h: float = 1.0):
        super().__init__(f, h, *tableau_rows(tableaux.EULER)[:2])


class RK2Block(RungeKuttaBlock):
    """Heun's second-order step ``x + h/2 (f(x) + f(x + h f(x)))``.

    Two parallel paths averaged, the reading of FractalNet (Larsson et al. 2017) as RK2 in Lu et al. 2018.

    Args:
        f (nn.Module): the vector field, ``(batch, *state) -> (batch, *state)``.
        h (float): step size (default 1.0).

    Examples:
        >>> import torch
        >>> from pyode.nn import RK2Block
        >>> RK2Block(torch.nn.Identity(), h=0.1)(torch.ones(2, 3, dtype=torch.float64))[0, 0].item()
        1.105
    """

    def __init__(self, f: nn.Module, h: float = 1.0):
        super().__init__(f, h, *tableau_rows(tableaux.HEUN2)[:2])


class RK4Block(RungeKuttaBlock):
    """Classical fourth-order Runge-Kutta step as a layer (order 4).

    Args:
        f (nn.Module): the vector field, ``(batch, *state) -> (batch, *state)``.
        h (float): step size (default 1.0).

    Examples:
        One step of ``dx/dt = x`` agrees with ``exp(0.1) = 1.1051709...`` to ``O(h⁵)``:

        >>> import torch
        >>> from pyode.nn import RK4Block
        >>> round(RK4Block(torch.nn.Identity(), h=0.1)(torch.ones(2, 3, dtype=torch.float64))[0, 0].item(), 7)
        1.1051708
    """

    def __init__(self, f: nn.Module, h: float = 1.0):
        super().__init__(f, h, *tableau_rows(tableaux.RK4_CLASSIC)[:2])


class PolyNetBlock(nn.Module):
    """PolyNet block (Zhang et al. 2017) read as backward Euler solved by fixed-point iteration.

    PolyNet's poly-2 unit is ``x + F(x) + F(F(x))``; Lu et al. 2018 read ``I + F + F²`` (``F = h f``) as
    backward Euler ``x_{n+1} = (I - F)^{-1} x_n`` with the inverse's Neumann series truncated after two
    powers. Taken literally that holds for linear ``F`` only: for a field with ``f(0) != 0`` the term
    ``F(F(x)) ≈ h f(0)`` adds a spurious ``h f(0)`` per step, so a stack of such blocks does not converge.

    The nonlinear counterpart of the truncated Neumann series, used here, is ``n_terms`` fixed-point
    (Picard) iterations of backward Euler ``x_{n+1} = x_n + h f(x_{n+1})`` started from ``x_n``::

        z_0 = x,   z_{k+1} = x + F(z_k),   output z_{n_terms}

    ``n_terms=2`` is ``x + F(x + F(x))``, the same composition of ``I`` and ``F``, which for linear ``F``
    expands to exactly ``x + F x + F² x``; ``n_terms=1`` is :class:`ResNetBlock`. For every smooth ``f``
    each iteration gains a factor ``h·Lip(f)``, so one block agrees with backward Euler to
    ``O(h^{n_terms+1})`` and a stack of ``N`` blocks with ``h = T/N`` converges at order 1 (the order of
    backward Euler). ``x: (batch, *state) -> (batch, *state)``.

    Args:
        f (nn.Module): the vector field, ``(batch, *state) -> (batch, *state)``.
        h (float): step size (default 1.0).
        n_terms (int): fixed-point iterations (>= 1, default 2: PolyNet's poly-2 unit).

    Raises:
        ValueError: ``n_terms < 1`` or ``h <= 0``.

    Examples:
        With ``f(x) = x``, ``h = 0.1``: ``1 + 0.1 (1 + 0.1) = 1.11`` (backward Euler: ``1/0.9 = 1.111...``).

        >>> import torch
        >>> from pyode.nn import PolyNetBlock
        >>> block = PolyNetBlock(torch.nn.Identity(), h=0.1)
        >>> round(block(torch.ones(2, 3, dtype=torch.float64))[0, 0].item(), 12)
        1.11
    """

    def __init__(self, f: nn.Module, h: float = 1.0, n_terms: int = 2):
        super().__init__()
        if isinstance(n_terms, bool) or not isinstance(n_terms, int) or n_terms < 1:
            raise ValueError(f"n_terms must be an int >= 1, got {n_terms!r}")
        self.f = f
        self.h = check_positive("h", h)
        self.n_terms = n_terms

    def forward(self, x: Tensor) -> Tensor:
        z = x
        for _ in range(self.n_terms):
            z = x + self.h * eval_same_shape("f", self.f, z)
        return z


class LMResNetBlock(nn.Module):
    """Linear multi-step block of LM-ResNet (Lu et al. 2018), with a learnable ``k`` per layer.

    ``x_{n+1} = (1 - k) x_n + k x_{n-1} + h f(x_n)``; maps ``(x_prev, x) -> (x, x_next)``,
    both ``(batch, *state)``. ``k = 0`` is a ResNet block. Lu et al. initialise ``k ~ U(-0.1, 0)``.

    Taylor expansion gives ``h (1 + k) x' + O(h²) = h f``: with a fixed ``k`` the stack is an order-1
    discretisation of ``(1 + k) dx/dt = f(x)`` (zero-stable for ``|k| < 1``: the roots of
    ``ζ² - (1 - k) ζ - k`` are 1 and ``-k``), so a learned ``k`` also rescales time.

    Args:
        f (nn.Module): the vector field, ``(batch, *state) -> (batch, *state)``.
        h (float): step size (default 1.0).
        k_init (float | None): initial ``k`` (default None: drawn from ``U(-0.1, 0)``).

    Raises:
        ValueError: ``h <= 0``, a non-finite ``k_init``, or ``x_prev`` and ``x`` of different shapes.

    Examples:
        >>> import torch
        >>> from pyode.nn import LMResNetBlock
        >>> block = LMResNetBlock(torch.nn.Identity(), h=0.1, k_init=0.0)  # k = 0: a ResNet block
        >>> x = torch.ones(2, 3, dtype=torch.float64)
        >>> x_now, x_next = block(x, x)
        >>> x_next[0, 0].item()
        1.1
    """

    def __init__(self, f: nn.Module, h: float = 1.0, k_init: float | None = None):
        super().__init__()
        self.f = f
        self.h = check_positive("h", h)
        k0 = torch.empty(()).uniform_(-0.1, 0.0) if k_init is None else torch.tensor(check_finite("k_init", k_init))
        self.k = nn.Parameter(k0)

    def forward(self, x_prev: Tensor, x: Tensor) -> Pair:
        if x_prev.shape != x.shape:
            raise ValueError(f"x_prev and x must have the same shape, got {tuple(x_prev.shape)} and "
                             f"{tuple(x.shape)}")
        x_next = (1 - self.k) * x + self.k * x_prev + self.h * eval_same_shape("f", self.f, x)
        return x, x_next


class LMResNet(nn.Module):
    """A stack of LM-ResNet layers: one forward-Euler start step, then :class:`LMResNetBlock` s.

    ``fs`` holds one vector field per layer. ``x: (batch, *state) -> (batch, *state)``.

    Args:
        fs (Sequence[nn.Module]): one vector field per layer (at least one); the first drives the
            forward-Euler start step.
        h (float): step size of every layer (default 1.0).

    Raises:
        ValueError: an empty ``fs`` or ``h <= 0``.

    Examples:
        >>> import torch
        >>> from pyode.nn import LMResNet
        >>> net = LMResNet([torch.nn.Linear(3, 3) for _ in range(4)], h=0.25)
        >>> net(torch.randn(2, 3)).shape, len(net.blocks)
        (torch.Size([2, 3]), 3)
    """

    def __init__(self, fs: Sequence[nn.Module], h: float = 1.0):
        super().__init__()
        if len(fs) < 1:
            raise ValueError("fs must contain at least one vector field")
        self.start = ResNetBlock(fs[0], h)
        self.blocks = nn.ModuleList(LMResNetBlock(f, h) for f in fs[1:])

    def forward(self, x: Tensor) -> Tensor:
        x_prev, x = x, self.start(x)
        for block in self.blocks:
            x_prev, x = block(x_prev, x)
        return x


class ReversibleBlock(nn.Module):
    """A layer ``(a, b) -> (a', b')`` with an exact inverse ``inverse(a', b') -> (a, b)``.

    The base class of the blocks :class:`ReversibleSequence` chains; subclasses define ``forward`` and
    ``inverse``.

    Examples:
        >>> import torch
        >>> from pyode.nn import ReversibleBlock
        >>> class Shear(ReversibleBlock):
        ...     def forward(self, a, b):
        ...         return a + b, b
        ...     def inverse(self, a, b):
        ...         return a - b, b
        >>> Shear().inverse(*Shear()(torch.ones(1), torch.ones(1)))
        (tensor([1.]), tensor([1.]))
    """

    def forward(self, a: Tensor, b: Tensor) -> Pair:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, a: Tensor, b: Tensor) -> Pair:  # pragma: no cover - abstract
        raise NotImplementedError


class RevNetBlock(ReversibleBlock):
    """Additive coupling of RevNet (Gomez et al. 2017): ``a' = a + F(b)``, ``b' = b + G(a')``.

    ``F`` maps ``b``-shaped to ``a``-shaped tensors and ``G`` the reverse. The inverse subtracts the same
    increments in reverse order, so it is exact up to floating-point rounding.

    Args:
        F (nn.Module): ``(batch, *b_shape) -> (batch, *a_shape)``.
        G (nn.Module): ``(batch, *a_shape) -> (batch, *b_shape)``.

    Examples:
        >>> import torch
        >>> from pyode.nn import RevNetBlock
        >>> block = RevNetBlock(torch.nn.Linear(2, 3), torch.nn.Linear(3, 2))
        >>> a, b = torch.randn(4, 3), torch.randn(4, 2)
        >>> a2, b2 = block(a, b)
        >>> a_back, b_back = block.inverse(a2, b2)
        >>> torch.allclose(a_back, a, atol=1e-6), torch.allclose(b_back, b, atol=1e-6)
        (True, True)
    """

    def __init__(self, F: nn.Module, G: nn.Module):
        super().__init__()
        self.F, self.G = F, G

    def forward(self, a: Tensor, b: Tensor) -> Pair:
        a_next = a + self.F(b)
        return a_next, b + self.G(a_next)

    def inverse(self, a: Tensor, b: Tensor) -> Pair:
        b_prev = b - self.G(a)
        return a - self.F(b_prev), b_prev


class SymmetricLayer(nn.Module):
    """``y -> sign · Kᵀ σ(K y + b)``, the layer of Chang et al. 2018's Hamiltonian networks.

    ``y: (batch, dim) -> (batch, dim)``; ``K: (width, dim)``. Its Jacobian ``sign · Kᵀ diag(σ') K`` is
    symmetric. ``sign=-1`` gives the force ``f(y) = -Kᵀσ(K y + b)`` of Chang et al.'s leapfrog network
    (see :meth:`LeapfrogBlock.symmetric`): minus the gradient of the potential ``V(y) = Σ_i S(K_i y + b_i)``
    with ``S' = σ`` (convex for a monotone σ), so ``y'' = f(y)`` conserves the energy ``½|y'|² + V(y)``.

    Args:
        dim (int): state dimension.
        width (int): rows of ``K`` (hidden width).
        activation (Callable[[Tensor], Tensor]): σ (default ``torch.tanh``).
        sign (float): ``1.0`` (default) or ``-1.0``.

    Raises:
        ValueError: a non-positive ``dim``/``width``, a ``sign`` other than ±1, ``y`` not ``(batch, dim)``.

    Examples:
        >>> import torch
        >>> from pyode.nn import SymmetricLayer
        >>> layer = SymmetricLayer(3, width=5)
        >>> layer(torch.randn(2, 3)).shape
        torch.Size([2, 3])
        >>> J = torch.autograd.functional.jacobian(lambda y: layer(y[None])[0], torch.randn(3))
        >>> torch.allclose(J, J.T)  # a symmetric Jacobian
        True
    """

    def __init__(self, dim: int, width: int, activation: Callable[[Tensor], Tensor] = torch.tanh,
                 sign: float = 1.0):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.linear = nn.Linear(dim, check_positive_int("width", width))
        self.activation = activation
        if sign not in (1, -1) or isinstance(sign, bool):
            raise ValueError(f"sign must be 1 or -1 (-1 gives Chang et al.'s force -Kᵀσ(Ky + b)), got {sign!r}")
        self.sign = float(sign)

    def forward(self, y: Tensor) -> Tensor:
        check_feature_shape("y", y, (self.dim,))
        out = self.activation(self.linear(y)) @ self.linear.weight
        return out if self.sign > 0 else -out


class _Scaled(nn.Module):
    """``x -> scale * module(x)`` (a fixed, non-learned step size or sign)."""

    def __init__(self, module: nn.Module, scale: float):
        super().__init__()
        self.module, self.scale = module, scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.module(x)


class HamiltonianBlock(RevNetBlock):
    """Hamiltonian reversible block (Chang et al. 2018, "Reversible architectures for arbitrarily deep
    residual neural networks"): symplectic Euler (Verlet) on ``dY/dt = σ-layer(Z)``, ``dZ/dt = -σ-layer(Y)``.

    ``Y' = Y + h K1ᵀσ(K1 Z + b1)``, ``Z' = Z - h K2ᵀσ(K2 Y' + b2)``; ``Y, Z: (batch, dim)``, ``K: (width, dim)``.
    Order 1 in ``h`` (symplectic Euler).

    ``K1ᵀσ(K1 Z)`` is ``Z``-shaped and is added to ``Y`` (Y and Z are the position and momentum of one
    Hamiltonian system), so both halves have one size: ``HamiltonianBlock(dim, width=..., h=...)``. The older
    two-size form ``HamiltonianBlock(dim_y, dim_z, width)`` is still accepted when the sizes are equal.

    Args:
        dim (int): size of ``Y`` and of ``Z``.
        dim_z (int | None): the older two-size form; must equal ``dim`` (default None).
        width (int | None): rows of ``K1`` and ``K2`` (required).
        h (float): step size (default 1.0).
        activation (Callable[[Tensor], Tensor]): σ (default ``torch.tanh``).

    Raises:
        TypeError: ``width`` missing.
        ValueError: ``dim_z != dim`` or ``h <= 0``.

    Examples:
        >>> import torch
        >>> from pyode.nn import HamiltonianBlock
        >>> block = HamiltonianBlock(3, width=8, h=0.1)
        >>> y, z = torch.randn(2, 3), torch.randn(2, 3)
        >>> y_back, z_back = block.inverse(*block(y, z))
        >>> torch.allclose(y_back, y, atol=1e-6), torch.allclose(z_back, z, atol=1e-6)
        (True, True)
    """

    def __init__(self, dim: int, dim_z: int | None = None, width: int | None = None, h: float = 1.0,
                 activation: Callable[[Tensor], Tensor] = torch.tanh):
        if dim_z is not None and dim_z != dim:
            raise ValueError(f"dim_y and dim_z (the sizes of Y and Z) must be equal for the Kᵀσ(K·) layers, "
                             f"got {dim}, {dim_z}; pass one size: HamiltonianBlock(dim, width=...)")
        if width is None:
            raise TypeError("HamiltonianBlock needs the hidden width of its Kᵀσ(K·) layers: "
                            "HamiltonianBlock(dim, width=...)")
        h = check_positive("h", h)
        super().__init__(_Scaled(SymmetricLayer(dim, width, activation), h),
                         _Scaled(SymmetricLayer(dim, width, activation), -h))


class MidpointBlock(ReversibleBlock):
    """Two-step explicit midpoint (leap-frog for first-order ODEs) block of Chang et al. 2018.

    ``x_{n+1} = x_{n-1} + 2h f(x_n)``; maps ``(x_prev, x) -> (x, x_next)`` and back exactly. Chang et al.
    use it with the Hamiltonian field ``f(Y, Z) = (σ(K Z + b), -σ(Kᵀ Y + b))``; any ``f`` works here.

    Args:
        f (nn.Module): the vector field, ``(batch, *state) -> (batch, *state)``.
        h (float): step size (default 1.0).

    Examples:
        >>> import torch
        >>> from pyode.nn import MidpointBlock
        >>> block = MidpointBlock(torch.nn.Identity(), h=0.1)
        >>> x = torch.ones(2, 3, dtype=torch.float64)
        >>> x_now, x_next = block(x, x)  # x + 2 h x
        >>> x_next[0, 0].item(), torch.equal(block.inverse(x_now, x_next)[0], x)
        (1.2, True)
    """

    def __init__(self, f: nn.Module, h: float = 1.0):
        super().__init__()
        self.f = f
        self.h = check_positive("h", h)

    def forward(self, x_prev: Tensor, x: Tensor) -> Pair:
        return x, x_prev + 2 * self.h * eval_same_shape("f", self.f, x)

    def inverse(self, x: Tensor, x_next: Tensor) -> Pair:
        return x_next - 2 * self.h * eval_same_shape("f", self.f, x), x


class LeapfrogBlock(ReversibleBlock):
    """Leapfrog block for the second-order ODE ``d²x/dt² = f(x)`` (Chang et al. 2018).

    ``x_{n+1} = 2 x_n - x_{n-1} + h² f(x_n)``; maps ``(x_prev, x) -> (x, x_next)``, both
    ``(batch, *state)``; order 2 when the second starting value is accurate to ``O(h³)``. Chang et al. take
    ``f(x) = -Kᵀσ(K x + b)``: ``SymmetricLayer(dim, width, sign=-1)``, or build the block with
    :meth:`symmetric`.

    Args:
        f (nn.Module): the force, ``(batch, *state) -> (batch, *state)``.
        h (float): step size (default 1.0).

    Examples:
        >>> import torch
        >>> from pyode.nn import LeapfrogBlock
        >>> block = LeapfrogBlock(torch.nn.Identity(), h=0.1)
        >>> x = torch.ones(2, 3, dtype=torch.float64)
        >>> round(block(x, x)[1][0, 0].item(), 12)  # 2x - x + h² x
        1.01
        >>> LeapfrogBlock.symmetric(3, width=8, h=0.1)(torch.zeros(2, 3), torch.ones(2, 3))[1].shape
        torch.Size([2, 3])
    """

    def __init__(self, f: nn.Module, h: float = 1.0):
        super().__init__()
        self.f = f
        self.h = check_positive("h", h)

    @classmethod
    def symmetric(cls, dim: int, width: int, h: float = 1.0,
                  activation: Callable[[Tensor], Tensor] = torch.tanh) -> LeapfrogBlock:
        """Chang et al.'s leapfrog block: ``f = SymmetricLayer(dim, width, activation, sign=-1)``.

        Args:
            dim (int): state dimension.
            width (int): hidden width of the :class:`SymmetricLayer`.
            h (float): step size (default 1.0).
            activation (Callable[[Tensor], Tensor]): σ (default ``torch.tanh``).

        Returns:
            LeapfrogBlock: on ``(batch, dim)`` states.
        """
        return cls(SymmetricLayer(dim, width, activation, sign=-1.0), h)

    def forward(self, x_prev: Tensor, x: Tensor) -> Pair:
        return x, 2 * x - x_prev + self.h**2 * eval_same_shape("f", self.f, x)

    def inverse(self, x: Tensor, x_next: Tensor) -> Pair:
        return 2 * x - x_next + self.h**2 * eval_same_shape("f", self.f, x), x


class _ReversibleFunction(torch.autograd.Function):
    """Runs reversible blocks without recording a graph; backward rebuilds each block's inputs with
    ``inverse`` and backpropagates through one block at a time (Gomez et al. 2017), so the memory for
    activations is O(1) in depth instead of O(depth)."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, blocks: nn.ModuleList, *params: Tensor) -> Pair:
        with torch.no_grad():
            for block in blocks:
                a, b = block(a, b)
        a, b = a.clone(), b.clone()  # a block may pass an input through unchanged; outputs must be new
        ctx.blocks = blocks
        ctx.params = params
        ctx.save_for_backward(a, b)
        return a, b

    @staticmethod
    def backward(ctx, grad_a: Tensor, grad_b: Tensor):
        a, b = ctx.saved_tensors
        index_of = {id(p): i for i, p in enumerate(ctx.params)}
        param_grads: list[Tensor | None] = [None] * len(ctx.params)
        for block in reversed(ctx.blocks):
            with torch.no_grad():
                a, b = block.inverse(a, b)
            a, b = a.detach().requires_grad_(), b.detach().requires_grad_()
            block_params = [p for p in block.parameters() if id(p) in index_of]
            with torch.enable_grad():
                outputs = block(a, b)
                grads = torch.autograd.grad(outputs, (a, b, *block_params), (grad_a, grad_b),
                                            allow_unused=True)
            grad_a, grad_b = _zeros_if_none(grads[0], a), _zeros_if_none(grads[1], b)
            for p, g in zip(block_params, grads[2:]):
                i = index_of[id(p)]
                if g is not None:
                    param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
            a, b = a.detach(), b.detach()
        return (grad_a, grad_b, None, *param_grads)


def _zeros_if_none(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


class ReversibleSequence(nn.Module):
    """Chain of :class:`ReversibleBlock` s ``(a, b) -> (a', b')`` with ``inverse``.

    With ``memory_efficient=True`` (default) training stores only the final pair: backward reconstructs
    every intermediate pair from the outputs (exact up to rounding), trading one extra forward per block
    for O(1) activation memory in depth.

    Args:
        blocks (Sequence[ReversibleBlock]): the blocks, applied in order.
        memory_efficient (bool): reconstruct activations in backward instead of storing them (default True).

    Raises:
        TypeError: a block that is not a :class:`ReversibleBlock`.

    Examples:
        >>> import torch
        >>> from pyode.nn import ReversibleSequence, RevNetBlock
        >>> blocks = [RevNetBlock(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)) for _ in range(3)]
        >>> seq = ReversibleSequence(blocks)
        >>> a = torch.randn(4, 2, requires_grad=True)
        >>> out_a, out_b = seq(a, torch.randn(4, 2))
        >>> (out_a.sum() + out_b.sum()).backward()
        >>> a.grad.shape
        torch.Size([4, 2])
        >>> with torch.no_grad():
        ...     torch.allclose(seq.inverse(out_a, out_b)[0], a, atol=1e-5)
        True
    """

    def __init__(self, blocks: Sequence[ReversibleBlock], memory_efficient: bool = True):
        super().__init__()
        for i, block in enumerate(blocks):
            if not isinstance(block, ReversibleBlock):
                raise TypeError(f"blocks[{i}] must be a ReversibleBlock, got {type(block).__name__}")
        self.blocks = nn.ModuleList(blocks)
        self.memory_efficient = memory_efficient

    def forward(self, a: Tensor, b: Tensor) -> Pair:
        if self.memory_efficient and torch.is_grad_enabled():
            params = [p for p in self.parameters() if p.requires_grad]
            return _ReversibleFunction.apply(a, b, self.blocks, *params)
        for block in self.blocks:
            a, b = block(a, b)
        return a, b

    def inverse(self, a: Tensor, b: Tensor) -> Pair:
        for block in reversed(self.blocks):
            a, b = block.inverse(a, b)
        return a, b


class AntisymmetricBlock(nn.Module):
    """Stable block of Haber & Ruthotto 2017 ("Stable architectures for deep neural networks"):
    forward Euler on ``dx/dt = σ(K x + b)`` with ``K = W - Wᵀ - γI``.

    ``K`` has eigenvalues ``-γ ± iω`` (ω from the antisymmetric part), so the continuous dynamics neither
    blow up nor decay fast; forward Euler with a linear σ is stable iff ``h(γ² + ω²) ≤ 2γ`` for every ω.
    ``x: (batch, dim) -> (batch, dim)``.

    Args:
        dim (int): state dimension (``W`` is ``(dim, dim)``, initialised ``N(0, 1/dim)``).
        h (float): step size (default 0.1).
        gamma (float): damping ``γ >= 0`` (default 0.01).
        activation (Callable[[Tensor], Tensor]): σ (default ``torch.tanh``).
        bias (bool): learn ``b`` (default True).

    Raises:
        ValueError: a non-positive ``dim``/``h``, a negative ``gamma``, ``x`` not ``(batch, dim)``.

    Examples:
        >>> import torch
        >>> from pyode.nn import AntisymmetricBlock
        >>> block = AntisymmetricBlock(4, h=0.1, gamma=0.01)
        >>> block(torch.randn(2, 4)).shape
        torch.Size([2, 4])
        >>> K = block.matrix()
        >>> torch.allclose(K + K.T, -0.02 * torch.eye(4))  # antisymmetric minus γI
        True
    """

    def __init__(self, dim: int, h: float = 0.1, gamma: float = 0.01,
                 activation: Callable[[Tensor], Tensor] = torch.tanh, bias: bool = True):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        if check_finite("gamma", gamma) < 0:
            raise ValueError(f"gamma must be >= 0 (it damps the dynamics), got {gamma}")
        self.h = check_positive("h", h)
        self.gamma = float(gamma)
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(dim, dim) / dim**0.5)
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def matrix(self) -> Tensor:
        """``K = W - Wᵀ - γI``: ``(dim, dim)``."""
        eye = torch.eye(self.dim, dtype=self.weight.dtype, device=self.weight.device)
        return self.weight - self.weight.T - self.gamma * eye

    def forward(self, x: Tensor) -> Tensor:
        check_feature_shape("x", x, (self.dim,))
        pre = x @ self.matrix().T
        if self.bias is not None:
            pre = pre + self.bias
        return x + self.h * self.activation(pre)
