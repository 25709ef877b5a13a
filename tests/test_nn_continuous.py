"""Neural ODE layer and Augmented Neural ODE."""

import pytest
import torch
from torch import nn

from pyode.nn.continuous import AugmentedNODE, ODEBlock, TimeMLP

pytestmark = pytest.mark.usefixtures("one_thread")


RK4 = {"method": "rk4", "options": {"step_size": 0.1}}


class LinearField(nn.Module):
    def __init__(self, rate: float):
        super().__init__()
        self.rate = nn.Parameter(torch.tensor(rate, dtype=torch.float64))

    def forward(self, t, y):
        return self.rate * y


def test_ode_block_solves_linear_ode_and_counts_evaluations():
    block = ODEBlock(LinearField(-0.7), t=(0.0, 2.0), rtol=1e-8, atol=1e-10)
    x = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    y = block(x)
    torch.testing.assert_close(y, x * torch.exp(torch.tensor(-1.4, dtype=torch.float64)))
    assert block.nfe_forward > 6  # adaptive dopri5: at least one step of 6 stages
    y.sum().backward()
    # d/d(rate) of x e^{2 rate}
    expected = (2.0 * x * torch.exp(torch.tensor(-1.4, dtype=torch.float64))).sum()
    torch.testing.assert_close(block.field.func.rate.grad, expected, rtol=1e-6, atol=1e-8)


def test_fixed_step_nfe_is_steps_times_stages():
    block = ODEBlock(LinearField(-0.7), **RK4)
    block(torch.ones(3, 1, dtype=torch.float64))
    assert block.nfe_forward == 10 * 4


def test_trajectory_returns_every_time():
    block = ODEBlock(TimeMLP(2, hidden=8).double(), t=torch.linspace(0, 1, 5), **RK4)
    ys = block.trajectory(torch.randn(4, 2, dtype=torch.float64))
    assert ys.shape == (5, 4, 2)


def train_flip(model: nn.Module, steps: int) -> float:
    """Fit g(1) = -1, g(-1) = 1 (Dupont et al. 2019, fig. 1); returns the final MSE."""
    x = torch.tensor([[1.0], [-1.0]])
    target = -x
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return ((model(x) - target) ** 2).mean().item()


def test_anode_fits_the_flip_map_that_a_neural_ode_cannot():
    torch.manual_seed(0)
    node_mse = train_flip(ODEBlock(TimeMLP(1, hidden=16), **RK4), steps=150)
    anode = AugmentedNODE(TimeMLP(2, hidden=16), augment_dim=1, keep_augmented=False, **RK4)
    anode_mse = train_flip(anode, steps=150)
    assert node_mse > 0.95  # 1-D flows preserve order: the best possible is 1 (both points sent to 0)
    assert anode_mse < 0.05


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="augment_dim must be >= 0"):
        AugmentedNODE(TimeMLP(2), augment_dim=-1)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\)"):
        ODEBlock(TimeMLP(3), **RK4)(torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 1\)"):
        AugmentedNODE(TimeMLP(3), augment_dim=2, **RK4)(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="shaped like y"):
        ODEBlock(lambda t, y: y[:, :1], **RK4)(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="t must be a 1-D"):
        ODEBlock(TimeMLP(2), t=[1.0])


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_gradient_modes_pass_through_and_agree_with_backprop(gradient):
    torch.manual_seed(0)
    func = TimeMLP(2, hidden=8).double()
    x = torch.randn(3, 2, dtype=torch.float64)

    def param_grads(mode):
        block = ODEBlock(func, gradient=mode, rtol=1e-7, atol=1e-8)
        func.zero_grad()
        block(x).pow(2).sum().backward()
        return [p.grad.clone() for p in func.parameters()], block

    reference, _ = param_grads("backprop")
    grads, block = param_grads(gradient)
    for g, g_ref in zip(grads, reference):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)
    if gradient == "adjoint":
        assert block.nfe_backward > 0  # the adjoint solves backwards, calling func again


@pytest.mark.parametrize("activation", [nn.Tanh, nn.Tanh(), torch.tanh], ids=["class", "instance", "function"])
def test_time_mlp_accepts_an_activation_class_instance_or_function(activation):
    torch.manual_seed(0)
    reference = TimeMLP(2, hidden=4, activation=nn.Tanh).double()
    torch.manual_seed(0)
    mlp = TimeMLP(2, hidden=4, activation=activation).double()
    y = torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(mlp(torch.tensor(0.5), y), reference(torch.tensor(0.5), y), rtol=0, atol=0)


def test_time_mlp_copies_an_activation_instance_per_layer():
    mlp = TimeMLP(2, hidden=4, n_hidden=2, activation=nn.PReLU())
    prelus = [m for m in mlp.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 2 and prelus[0].weight is not prelus[1].weight  # no silently tied parameters
    with pytest.raises(TypeError, match="activation must be"):
        TimeMLP(2, activation=int)  # a class that is not a module fails at construction


def test_augmented_node_returns_the_input_channels_by_default():
    x = torch.randn(5, 2)
    assert AugmentedNODE(TimeMLP(3, hidden=4), augment_dim=1, **RK4)(x).shape == (5, 2)
    assert AugmentedNODE(TimeMLP(3, hidden=4), augment_dim=1, keep_augmented=True, **RK4)(x).shape == (5, 3)


def test_fixed_grid_method_without_step_size_raises_naming_the_option():
    with pytest.raises(ValueError, match=r"options=\{'step_size': h\}"):
        ODEBlock(TimeMLP(2), method="rk4")
    with pytest.raises(ValueError, match="step_size"):
        AugmentedNODE(TimeMLP(3), augment_dim=1, method="euler", options={})
    with pytest.warns(UserWarning, match="rtol/atol are ignored by the fixed-grid method 'rk4'"):
        ODEBlock(TimeMLP(2), rtol=1e-6, **RK4)
    adaptive = ODEBlock(TimeMLP(2))  # the default tolerances reach odeint for adaptive methods only
    assert (adaptive.solver_kwargs["rtol"], adaptive.solver_kwargs["atol"]) == (1e-3, 1e-4)
    assert "rtol" not in ODEBlock(TimeMLP(2), **RK4).solver_kwargs
