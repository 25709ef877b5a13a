"""Architectures as ODE discretisations: convergence orders, exact reversibility, stability."""

import math

import numpy as np
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
    RungeKuttaBlock,
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


# ---------------------------------------------------------------------------------------------------
# Convergence on a nonlinear field with f(0) != 0 (a bias): every block, against scipy's DOP853 at
# rtol = atol = 1e-13. Errors at the coarsest N are >= 1e-7 (RK4 at N = 20: ~1e-6), so the reference's
# ~1e-12 error and float64 rounding (~1e-15 per step) do not bend the slopes. The slope is the
# least-squares fit of log(error) against log(h) over the listed N; ±0.3 leaves room for the
# pre-asymptotic curvature of the coarsest step, not for a wrong order (which is off by >= 1).
# ---------------------------------------------------------------------------------------------------

T_BIAS = 1.5
X0_BIAS = torch.tensor([[0.5, -0.3, 0.2], [-0.4, 0.1, 0.7]], dtype=torch.float64)


def biased_mlp(dim: int = 3, seed: int = 0) -> nn.Sequential:
    """``f(x) = W2 tanh(W1 x + b1) + b2`` with fixed weights and a bias ``b2`` that makes ``f(0) != 0``."""
    generator = torch.Generator().manual_seed(seed)
    f = nn.Sequential(nn.Linear(dim, 8), nn.Tanh(), nn.Linear(8, dim)).double()
    with torch.no_grad():
        for param in f.parameters():
            param.copy_(0.6 * torch.randn(param.shape, generator=generator, dtype=torch.float64))
        f[2].bias.copy_(torch.tensor([0.8, -0.5, 0.3], dtype=torch.float64)[:dim])
    return f


def reference_solution(rhs, y0: torch.Tensor, t_end: float = T_BIAS) -> torch.Tensor:
    """``y(t_end)`` of ``y' = rhs(y)`` per row of ``y0: (batch, n)`` by scipy's DOP853 (rtol = atol = 1e-13)."""
    from scipy.integrate import solve_ivp

    def fun(_t, y):
        with torch.no_grad():
            return rhs(torch.from_numpy(y).reshape(1, -1)).reshape(-1).numpy()

    rows = [solve_ivp(fun, (0.0, t_end), row.numpy(), method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]
            for row in y0]
    return torch.tensor(np.array(rows))


def fitted_order(ns, errors) -> float:
    """Slope of ``log(error)`` against ``log(h)``, ``h = T / N`` (least squares over all N)."""
    return -float(np.polyfit(np.log(ns), np.log(errors), 1)[0])


def assert_order(ns, error_at, order: float) -> None:
    errors = [error_at(n) for n in ns]
    slope = fitted_order(ns, errors)
    assert abs(slope - order) <= 0.3, (slope, errors)


def test_biased_field_is_nonzero_at_the_origin():
    f0 = biased_mlp()(torch.zeros(1, 3, dtype=torch.float64))
    assert f0.abs().max().item() > 0.5  # the fields below really have f(0) != 0


@pytest.mark.parametrize(
    "make_block, ns, order",
    [(ResNetBlock, (10, 20, 40, 80), 1), (RK2Block, (10, 20, 40), 2), (RK4Block, (5, 10, 20), 4),
     (lambda f, h: RungeKuttaBlock(f, h, a=[[], [0.5]], b=[0.0, 1.0]), (10, 20, 40), 2),  # explicit midpoint
     (lambda f, h: PolyNetBlock(f, h, n_terms=1), (10, 20, 40, 80), 1),
     (PolyNetBlock, (10, 20, 40, 80), 1), (lambda f, h: PolyNetBlock(f, h, n_terms=3), (10, 20, 40, 80), 1)],
    ids=["resnet", "rk2", "rk4", "rk-midpoint", "polynet-1", "polynet-2", "polynet-3"],
)
def test_one_step_blocks_converge_on_a_field_with_bias(make_block, ns, order):
    f = biased_mlp()
    exact = reference_solution(f, X0_BIAS)

    def error(n):
        x = X0_BIAS
        with torch.no_grad():
            for _ in range(n):
                x = make_block(f, T_BIAS / n)(x)
        return (x - exact).abs().max().item()

    assert_order(ns, error, order)


def test_polynet_is_picard_iteration_of_backward_euler():
    # Linear F: x + F(x + F(x)) is exactly PolyNet's x + F x + F² x (the truncated Neumann series).
    f, h = linear_field(), 0.1
    expected = X0 + h * X0 @ A.T + h**2 * X0 @ (A @ A).T
    torch.testing.assert_close(PolyNetBlock(f, h)(X0), expected, rtol=1e-14, atol=1e-15)
    # Nonlinear f with bias: one block is within O(h^(n_terms + 1)) of the backward-Euler step, whose
    # fixed point is converged here to rounding by 60 Picard iterations (contraction factor h Lip(f) < 0.1).
    f = biased_mlp()

    def gap(n_terms, h):
        with torch.no_grad():
            z = X0_BIAS
            for _ in range(60):
                z = X0_BIAS + h * f(z)
            return (PolyNetBlock(f, h, n_terms)(X0_BIAS) - z).abs().max().item()

    for n_terms in (1, 2, 3):
        hs = (0.05, 0.025, 0.0125)
        slope = float(np.polyfit(np.log(hs), np.log([gap(n_terms, h) for h in hs]), 1)[0])
        assert abs(slope - (n_terms + 1)) <= 0.3, (n_terms, slope)


@pytest.mark.parametrize("k", [0.0, -0.05, 0.1])
def test_lm_resnet_converges_to_the_time_rescaled_ode(k):
    # With a fixed k the two-step scheme is consistent with (1 + k) x' = f(x) (see LMResNetBlock).
    f = biased_mlp()
    exact = reference_solution(lambda x: f(x) / (1 + k), X0_BIAS)

    def error(n):
        net = LMResNet([f] * n, h=T_BIAS / n)
        for block in net.blocks:
            with torch.no_grad():
                block.k.fill_(k)
        with torch.no_grad():
            return (net.double()(X0_BIAS) - exact).abs().max().item()

    assert_order((10, 20, 40, 80), error, 1)


def test_midpoint_block_is_second_order_on_a_field_with_bias():
    f = biased_mlp()
    exact = reference_solution(f, X0_BIAS)

    def error(n):
        h = T_BIAS / n
        with torch.no_grad():
            x_prev, x = X0_BIAS, RK2Block(f, h)(X0_BIAS)  # start step accurate to O(h³)
            for _ in range(n - 1):
                x_prev, x = MidpointBlock(f, h)(x_prev, x)
        return (x - exact).abs().max().item()

    assert_order((10, 20, 40, 80), error, 2)


def test_leapfrog_block_is_second_order_for_a_symmetric_force_with_bias():
    torch.manual_seed(0)
    block0 = LeapfrogBlock.symmetric(3, width=8).double()
    force = block0.f
    with torch.no_grad():
        force.linear.bias.copy_(torch.tensor([0.5, -0.4, 0.3, 0.2, -0.6, 0.1, 0.7, -0.2]))
    assert force(torch.zeros(1, 3, dtype=torch.float64)).abs().max().item() > 0.1  # f(0) != 0
    v0 = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.4, -0.5]], dtype=torch.float64)
    # x'' = f(x) as the first-order system (x, v)' = (v, f(x)).
    exact = reference_solution(lambda s: torch.cat([s[:, 3:], force(s[:, :3])], 1), torch.cat([X0_BIAS, v0], 1))

    def error(n):
        h = T_BIAS / n
        block = LeapfrogBlock(force, h)
        with torch.no_grad():  # second starting value from Taylor, accurate to O(h³)
            x_prev, x = X0_BIAS, X0_BIAS + h * v0 + 0.5 * h**2 * force(X0_BIAS)
            for _ in range(n - 1):
                x_prev, x = block(x_prev, x)
        return (x - exact[:, :3]).abs().max().item()

    assert_order((10, 20, 40, 80), error, 2)


def _pair_error(make_block, exact):
    """Error at T of N reversible pair blocks from (X0, X0 flipped); exact: (batch, 6) reference."""

    def error(n):
        a, b = X0_BIAS, X0_BIAS.flip(1)
        block = make_block(T_BIAS / n)
        with torch.no_grad():
            for _ in range(n):
                a, b = block(a, b)
        return (torch.cat([a, b], 1) - exact).abs().max().item()
    return error


def test_hamiltonian_block_is_first_order_with_biases():
    torch.manual_seed(0)
    template = HamiltonianBlock(3, width=8).double()
    s1, s2 = template.F.module, template.G.module  # Y' = S1(Z), Z' = -S2(Y)
    assert s1(torch.zeros(1, 3, dtype=torch.float64)).abs().max().item() > 0.01  # biases make f(0) != 0

    def make(h):
        block = HamiltonianBlock(3, width=8, h=h).double()
        block.load_state_dict(template.state_dict())
        return block

    rhs = lambda s: torch.cat([s1(s[:, 3:]), -s2(s[:, :3])], 1)
    exact = reference_solution(rhs, torch.cat([X0_BIAS, X0_BIAS.flip(1)], 1))
    assert_order((10, 20, 40, 80), _pair_error(make, exact), 1)


def test_revnet_block_with_scaled_fields_is_first_order():
    f1, f2 = biased_mlp(seed=1), biased_mlp(seed=2)  # a' = f1(b), b' = f2(a): symplectic-Euler coupling
    exact = reference_solution(lambda s: torch.cat([f1(s[:, 3:]), f2(s[:, :3])], 1),
                               torch.cat([X0_BIAS, X0_BIAS.flip(1)], 1))
    make = lambda h: RevNetBlock(_ScaledBy(f1, h), _ScaledBy(f2, h))
    assert_order((10, 20, 40, 80), _pair_error(make, exact), 1)


def test_antisymmetric_block_is_first_order_with_bias():
    torch.manual_seed(0)
    template = AntisymmetricBlock(3, gamma=0.1).double()
    with torch.no_grad():
        template.bias.copy_(torch.tensor([0.6, -0.4, 0.2]))

    def make(h):
        block = AntisymmetricBlock(3, h=h, gamma=0.1).double()
        block.load_state_dict(template.state_dict())
        return block

    exact = reference_solution(lambda x: torch.tanh(x @ template.matrix().T + template.bias), X0_BIAS)

    def error(n):
        block, x = make(T_BIAS / n), X0_BIAS
        with torch.no_grad():
            for _ in range(n):
                x = block(x)
        return (x - exact).abs().max().item()

    assert_order((10, 20, 40, 80), error, 1)


class _ScaledBy(nn.Module):
    def __init__(self, module, scale):
        super().__init__()
        self.module, self.scale = module, scale

    def forward(self, x):
        return self.scale * self.module(x)


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


def test_hamiltonian_block_takes_one_size():
    torch.manual_seed(0)
    block = HamiltonianBlock(4, width=6, h=0.1).double()
    a, b = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    with torch.no_grad():
        a_out, b_out = block(a, b)
        torch.testing.assert_close(a_out, a + 0.1 * block.F.module(b), rtol=1e-15, atol=1e-15)
        torch.testing.assert_close(b_out, b - 0.1 * block.G.module(a_out), rtol=1e-15, atol=1e-15)
    assert HamiltonianBlock(4, 4, 6).F.module.linear.weight.shape == (6, 4)  # equal two-size form still works
    with pytest.raises(ValueError, match="pass one size"):
        HamiltonianBlock(4, 5, 6)
    with pytest.raises(TypeError, match="width"):
        HamiltonianBlock(4)


def test_symmetric_layer_sign_gives_chang_leapfrog_force():
    torch.manual_seed(0)
    layer = SymmetricLayer(3, 5).double()
    force = SymmetricLayer(3, 5, sign=-1).double()
    force.load_state_dict(layer.state_dict())
    y = torch.randn(4, 3, dtype=torch.float64)
    k, bias = layer.linear.weight, layer.linear.bias
    torch.testing.assert_close(force(y), -torch.tanh(y @ k.T + bias) @ k, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(force(y), -layer(y), rtol=0, atol=0)
    block = LeapfrogBlock.symmetric(3, width=5, h=0.2)
    assert isinstance(block.f, SymmetricLayer) and block.f.sign == -1.0 and block.h == 0.2
    with pytest.raises(ValueError, match="sign must be 1 or -1"):
        SymmetricLayer(3, 5, sign=2)
