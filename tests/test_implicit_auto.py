"""method="auto": tsit5 while non-stiff, kvaerno5 while stiff, switching both ways."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import pyode
from pyode._solvers.implicit_auto import CHECK_WINDOW
from pyode._solvers.problem import build_problem, integrate

# Tiny tensors: torch's intra-op threads only add contention on a shared machine.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def python_loop(monkeypatch):
    """The Python loop's AutoSwitchStepper, whose switches these tests read (a solve without autograd otherwise runs
    in the C++ loop; test_core_loop.py checks that it switches at the same steps)."""
    monkeypatch.setenv("PYODE_CORE_LOOP", "0")


def robertson(t, y):
    y1, y2, y3 = y[0], y[1], y[2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2, 3e7 * y2 * y2])


def test_robertson_switches_to_stiff(python_loop):
    """Robertson is stiff after an initial transient (t ~ 1e-2): auto switches once, to kvaerno5, and takes
    about as many steps as kvaerno5 alone (tsit5 alone needs > 1e5 steps to t = 1e3 at these tolerances)."""
    t = torch.tensor([0.0, 1e3], dtype=torch.float64)
    problem = build_problem(robertson, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), t, method="auto",
                            rtol=1e-6, atol=1e-10)
    ys = integrate(problem)
    switches = problem.loop.stepper.switches
    assert [label for _, label in switches] == ["stiff"]
    assert 1e-4 < switches[0][0] < 1.0
    assert problem.stats.n_accepted < 300
    ref = solve_ivp(lambda t, y: robertson(t, torch.from_numpy(y)).numpy(), (0, 1e3), [1.0, 0.0, 0.0],
                    method="Radau", rtol=1e-10, atol=1e-14).y[:, -1]
    assert float(np.max(np.abs(ys[-1].numpy() - ref) / ref)) <= 1e-4


def _decaying_stiffness(t, y):
    """y' = -λ(t) (y - cos t) - sin t, exact y = cos t + C exp(-∫λ): λ falls from 1e4 to 0.5 by t ~ 3."""
    lam = 1e4 * torch.exp(-4.0 * t) + 0.5
    return -lam * (y - torch.cos(t)) - torch.sin(t)


def test_switches_back_when_stiffness_fades(python_loop):
    """Stiff at first (h λ ≫ 3.5 for any useful step), then not: auto goes stiff and back to tsit5, and stays
    accurate (exact solution: y = cos t + C exp(-Λ(t)), Λ' = λ)."""
    t = torch.linspace(0.0, 10.0, 6, dtype=torch.float64)
    y0 = torch.tensor([2.0], dtype=torch.float64)
    problem = build_problem(_decaying_stiffness, y0, t, method="auto", rtol=1e-7, atol=1e-9)
    ys = integrate(problem)
    labels = [label for _, label in problem.loop.stepper.switches]
    assert labels[:2] == ["stiff", "nonstiff"]
    big_lambda = 1e4 / 4.0 * (1 - torch.exp(-4.0 * t)) + 0.5 * t
    exact = torch.cos(t) + (2.0 - 1.0) * torch.exp(-big_lambda)
    assert float((ys[:, 0] - exact).abs().max()) <= 1e-6  # global error a few times rtol on |y| <= 2


def test_non_stiff_problem_stays_explicit():
    """A non-stiff problem never switches: the solve is tsit5's, bit for bit; the only extra evaluations are the
    occasional Jacobian checks (one recorded call each, at most one per CHECK_WINDOW steps)."""
    def rhs(t, y):
        return torch.stack([y[1], -y[0]])

    t = torch.linspace(0.0, 10.0, 5, dtype=torch.float64)
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    auto = pyode.solve(rhs, y0, t, method="auto", rtol=1e-8, atol=1e-10)
    tsit5 = pyode.solve(rhs, y0, t, method="tsit5", rtol=1e-8, atol=1e-10)
    assert torch.equal(auto.ys, tsit5.ys)
    assert 0 <= auto.stats.nfe - tsit5.stats.nfe <= tsit5.stats.n_accepted // CHECK_WINDOW
    assert float((auto.ys[-1, 0] - math.cos(10.0)).abs()) < 1e-6


def test_checkpoint_replays_each_step_with_its_method(python_loop):
    """Checkpointed gradients replay every step with the method that took it (tsit5 or kvaerno5), so they agree
    with backprop's through the same switching solve: to 1e-6 relative, the agreement the single methods show
    here too (tsit5 alone: 1.4e-7 between its two modes; a replay with the wrong method would differ by the
    methods' difference, ~rtol-sized)."""
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)

    def rhs(t, y):
        return a * _decaying_stiffness(t, y)

    t = torch.tensor([0.0, 1.0, 6.0], dtype=torch.float64)
    problem = build_problem(rhs, torch.tensor([2.0], dtype=torch.float64), t, method="auto", rtol=1e-7, atol=1e-9)
    with torch.no_grad():
        integrate(problem)
    assert len(problem.loop.stepper.switches) >= 2  # the solve does use both methods
    grads = []
    for gradient in ("backprop", "checkpoint"):
        y0 = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
        extra = {} if gradient == "backprop" else {"adjoint_params": (a,)}
        ys = pyode.odeint(rhs, y0, t, method="auto", rtol=1e-7, atol=1e-9, gradient=gradient, **extra)
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(ys.sum(), (y0, a))]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-6, atol=0), grads
