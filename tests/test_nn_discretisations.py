"""Architectures as ODE discretisations: convergence orders, exact reversibility, stability."""

import math

import pytest
import torch
from torch import nn

from pyode.nn.discretisations import (
    AntisymmetricBlock,
    HamiltonianBlock,
    LeapfrogBlock,
    LMResNet,
    MidpointBlock,
    PolyNetBlock,
    ResNetBlock,
    ReversibleSequence,
    RevNetBlock,
    RK2Block,
    RK4Block,
    SymmetricLayer,
)

pytestmark = pytest.mark.usefixtures("one_thread")


A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)  # damped rotation
X0 = torch.tensor([[1.0, 0.0], [0.3, -0.7]], dtype=torch.float64)
T = 1.0


def linear_field(matrix: torch.Tensor = A) -> nn.Linear:
    f = nn.Linear(matrix.shape[0], matrix.shape[0], bias=False).double()
    with torch.no_grad():
        f.weight.copy_(matrix)
    return f


def exact_flow(t: float) -> torch.Tensor:
    return X0 @ torch.linalg.matrix_exp(A * t).T


def stacked_error(make_block, n: int) -> float:
    f = linear_field()
    x = X0
    for _ in range(n):
        x = make_block(f, T / n)(x)
    return (x - exact_flow(T)).abs().max().item()


def observed_order(error_at) -> float:
    return math.log2(error_at(16) / error_at(32))


@pytest.mark.parametrize(
    "block_cls, order",
    [(ResNetBlock, 1), (RK2Block, 2), (RK4Block, 4), (PolyNetBlock, 1)],
)
def test_stacked_one_step_blocks_converge_at_scheme_order(block_cls, order):
    p = observed_order(lambda n: stacked_error(block_cls, n))
    assert abs(p - order) < 0.15, p


def test_lm_resnet_with_k_zero_is_first_order_and_k_is_learnable():
    def error(n):
        net = LMResNet([linear_field() for _ in range(n)], h=T / n).double()
        for block in net.blocks:
            with torch.no_grad():
                block.k.zero_()
        return (net(X0) - exact_flow(T)).abs().max().item()

    assert abs(observed_order(error) - 1) < 0.15
    net = LMResNet([linear_field() for _ in range(3)], h=0.3).double()
    net(X0).sum().backward()
    assert all(block.k.grad is not None and block.k.grad != 0 for block in net.blocks)


def test_midpoint_two_step_block_is_second_order():
    def error(n):
        f, h = linear_field(), T / n
        x_prev, x = X0, ResNetBlock(f, h)(X0)  # Euler start step; its O(h²) error keeps order 2
        for _ in range(n - 1):
            x_prev, x = MidpointBlock(f, h)(x_prev, x)
        return (x - exact_flow(T)).abs().max().item()

    assert abs(observed_order(error) - 2) < 0.2


def test_leapfrog_block_is_second_order_for_harmonic_oscillator():
    omega = 3.0  # x'' = -ω² x, x(0) = 1, x'(0) = 0  ->  x(t) = cos(ω t)
    accel = linear_field(torch.tensor([[-(omega**2)]], dtype=torch.float64))

    def error(n):
        h = T / n
        x_prev = torch.ones(1, 1, dtype=torch.float64)
        x = torch.full_like(x_prev, math.cos(omega * h))  # exact second starting value
        for _ in range(n - 1):
            x_prev, x = LeapfrogBlock(accel, h)(x_prev, x)
        return abs(x.item() - math.cos(omega * T))

    assert abs(observed_order(error) - 2) < 0.2


def mlp(dim_in: int, dim_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim_in, 16), nn.Tanh(), nn.Linear(16, dim_out)).double()


def reversible_stacks():
    torch.manual_seed(0)
    return {
        "revnet": [RevNetBlock(mlp(3, 3), mlp(3, 3)) for _ in range(6)],
        "hamiltonian": [HamiltonianBlock(3, 3, width=8, h=0.2).double() for _ in range(6)],
        "midpoint": [MidpointBlock(mlp(3, 3), h=0.05) for _ in range(6)],
        "leapfrog": [LeapfrogBlock(_Negated(SymmetricLayer(3, 8).double()), h=0.2) for _ in range(6)],
    }


class _Negated(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return -self.module(x)


@pytest.mark.parametrize("kind", ["revnet", "hamiltonian", "midpoint", "leapfrog"])
def test_reversible_blocks_reconstruct_inputs_to_float64_rounding(kind):
    seq = ReversibleSequence(reversible_stacks()[kind])
    a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    with torch.no_grad():
        a_out, b_out = seq(a, b)
        a_rec, b_rec = seq.inverse(a_out, b_out)
    assert not torch.allclose(a_out, a)
    scale = max(a.abs().max().item(), b.abs().max().item(), a_out.abs().max().item())
    assert (a_rec - a).abs().max().item() < 1e-13 * scale * 10
    assert (b_rec - b).abs().max().item() < 1e-13 * scale * 10


@pytest.mark.parametrize("kind", ["revnet", "hamiltonian", "midpoint", "leapfrog"])
def test_memory_efficient_backward_matches_autograd(kind):
    blocks = reversible_stacks()[kind]
    a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)

    def grads(memory_efficient):
        seq = ReversibleSequence(blocks, memory_efficient=memory_efficient)
        seq.zero_grad()
        a_out, b_out = seq(a, b)
        loss = (a_out**2).sum() + (b_out * torch.arange(3.0, dtype=torch.float64)).sum()
        inputs = (a, b, *seq.parameters())
        return torch.autograd.grad(loss, inputs)

    for g_fast, g_ref in zip(grads(True), grads(False)):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-11)


def count_saved_tensors(seq, a, b) -> int:
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        seq(a, b)
    return len(saved)


def test_memory_efficient_mode_stores_no_activations_per_block():
    a = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    counts = {}
    for depth in (2, 8):
        blocks = [RevNetBlock(mlp(3, 3), mlp(3, 3)) for _ in range(depth)]
        counts[depth] = (count_saved_tensors(ReversibleSequence(blocks), a, b),
                         count_saved_tensors(ReversibleSequence(blocks, memory_efficient=False), a, b))
    assert counts[2][0] == counts[8][0] == 2  # only the output pair
    assert counts[8][1] > counts[2][1] > 2  # plain autograd grows with depth


def rotation_block(omega: float, gamma: float, h: float) -> AntisymmetricBlock:
    block = AntisymmetricBlock(2, h=h, gamma=gamma, activation=lambda z: z, bias=False).double()
    with torch.no_grad():  # W - Wᵀ = [[0, ω], [-ω, 0]]  ->  eigenvalues -γ ± iω
        block.weight.copy_(torch.tensor([[0.0, omega / 2], [-omega / 2, 0.0]]))
    return block


@pytest.mark.parametrize(
    "omega, gamma, h",
    [(1.0, 0.1, 0.1), (2.0, 0.5, 0.2), (1.0, 0.0, 0.1), (2.0, 0.05, 0.2), (4.0, 1.0, 0.2), (4.0, 1.0, 0.05),
     (1.0, 0.1, 0.19), (1.0, 0.1, 0.21)],  # the last two sit just either side of the boundary
)
def test_antisymmetric_block_stability_criterion(omega, gamma, h):
    block = rotation_block(omega, gamma, h)
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        for _ in range(3000):
            x = block(x)
    norm = x.norm().item()
    if h * (gamma**2 + omega**2) <= 2 * gamma:
        assert norm <= 1.0 + 1e-12
    else:
        assert norm > 10.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="h must be > 0"):
        ResNetBlock(nn.Identity(), h=-0.1)
    with pytest.raises(ValueError, match="shape"):
        AntisymmetricBlock(3)(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="shaped like its input"):
        RK4Block(nn.Linear(3, 2), h=0.1)(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="ReversibleBlock"):
        ReversibleSequence([nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="gamma"):
        AntisymmetricBlock(2, gamma=-1.0)
