"""Clear failures of implicit methods: a singular or non-finite Jacobian, Newton failing at the minimum step,
and max_iters exhausted raise pyode's errors naming the time reached and what to try."""

import pytest
import torch

import pyode
from pyode._solvers.newton import ImplicitSolveError, Jacobian

# Tiny tensors: torch's intra-op threads only add contention on a shared machine (tril on a 2x2 matrix, in
# the LU backward, takes ~10 ms with 2 busy threads instead of 1 us).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_singular_newton_matrix():
    """implicit_euler on y' = 2y with h = 0.5: I - h J = 1 - 0.5 * 2 = 0 exactly."""
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(ImplicitSolveError, match="singular.*smaller step") as info:
        pyode.odeint(lambda t, y: 2.0 * y, torch.ones(2, dtype=torch.float64), t, method="implicit_euler",
                     options={"step_size": 0.5})
    assert info.value.reason == "singular_jacobian"
    assert info.value.t_reached == 0.0
    assert isinstance(info.value, pyode.ODESolverError)


def test_non_finite_jacobian():
    """d sqrt(y)/dy is infinite at y = 0."""
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(ImplicitSolveError, match="Jacobian of func is NaN/inf.*float64") as info:
        pyode.odeint(lambda t, y: torch.sqrt(y), torch.zeros(1, dtype=torch.float64), t, method="kvaerno5")
    assert info.value.reason == "non_finite_jacobian"


def test_max_iters_exhausted_on_a_fixed_grid():
    """One Newton iteration cannot solve a nonlinear stage to a few ulps: the step fails, naming max_iters."""
    def rhs(t, y):
        return -y**3

    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(ImplicitSolveError, match=r"max_iters=1 .*step_size=0\.25.*smaller step_size") as info:
        pyode.odeint(rhs, torch.ones(1, dtype=torch.float64), t, method="trbdf2",
                     options={"step_size": 0.25, "max_iters": 1})
    assert info.value.reason == "newton" and info.value.t_reached == 0.0
    # The default (100, torchdiffeq's) converges.
    pyode.odeint(rhs, torch.ones(1, dtype=torch.float64), t, method="trbdf2", options={"step_size": 0.25})


def _nan_after_one(t, y):
    """-y until t = 1, then NaN: no step past t = 1 can succeed, however small."""
    return -y if float(t) < 1.0 else torch.full_like(y, float("nan"))


def test_newton_failure_at_the_minimum_step():
    """Every step past t = 1 fails in Newton; the step shrinks to the resolution of t and the solve raises the
    Newton failure (not a generic NaN message) at t = 1."""
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    with pytest.raises(ImplicitSolveError, match="Newton.*minimum step size.*float64") as info:
        pyode.odeint(_nan_after_one, torch.ones(1, dtype=torch.float64), t, method="kvaerno3")
    assert info.value.t_reached == pytest.approx(1.0, abs=1e-6)


def test_newton_failure_at_min_step_option():
    """With options['min_step'] the controller cannot shrink below it: the Newton failure is raised there."""
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    with pytest.raises(ImplicitSolveError, match="Newton") as info:
        pyode.odeint(_nan_after_one, torch.ones(1, dtype=torch.float64), t, method="kvaerno5",
                     options={"min_step": 1e-3})
    assert 0.99 <= info.value.t_reached <= 1.0


def test_jacobian_falls_back_to_differences():
    """A func torch autograd cannot differentiate (it leaves the graph through numpy) gets a forward-difference
    Jacobian: within sqrt(eps) relative of the exact one."""
    def rhs(t, y):
        return torch.from_numpy(-3.0 * y.detach().numpy() ** 2)

    jac = Jacobian(rhs)
    y = torch.tensor([1.0, 2.0], dtype=torch.float64)
    J = jac(0.0, y)
    assert jac.mode == "differences"
    assert torch.allclose(J, torch.diag(-6.0 * y), rtol=1e-6, atol=0)


@pytest.mark.parametrize("method", ["kvaerno5", "rodas5", "auto", "gl4"])
def test_half_precision_refused(method):
    """torch has no LU in float16/bfloat16: a clear TypeError instead of a NotImplementedError from inside."""
    options = {"step_size": 0.1} if method == "gl4" else None
    with pytest.raises(TypeError, match="float32 or float64"):
        pyode.odeint(lambda t, y: -y, torch.ones(2, dtype=torch.float16), torch.tensor([0.0, 1.0]), method=method,
                     options=options)


def test_singular_newton_matrix_shrinks_an_adaptive_step():
    """y' = y (growing): I - h γ J = 1 - h γ is singular at h = 1/γ. An adaptive method rejects that step (the
    failure names the singular matrix) and retries smaller instead of failing; the solve is accurate."""
    from pyode._solvers.implicit_tableaux import KVAERNO5
    from pyode._solvers.problem import build_problem

    h = 1.0 / KVAERNO5.a[-1][-1]
    y0 = torch.ones(1, dtype=torch.float64)
    t = torch.tensor([0.0, 5.0], dtype=torch.float64)
    stepper = build_problem(lambda t, y: y, y0, t, method="kvaerno5").loop.stepper
    step = stepper.attempt(0.0, y0, y0.clone(), h)
    assert step.ratio > 1.0 and stepper.failure.reason == "singular_jacobian"
    sol = pyode.solve(lambda t, y: y, y0, t, method="kvaerno5", rtol=1e-8, atol=1e-9, options={"first_step": h})
    assert sol.stats.n_rejected >= 1
    assert float((sol.ys[-1, 0] - torch.e**5).abs()) <= 1e-5 * torch.e**5  # global error ~ a few rtol


@pytest.mark.parametrize("method", ["kvaerno3", "kvaerno5", "rodas5", "auto", "bdf", "implicit_euler", "trbdf2",
                                    "radauIIA5", "gl6"])
@pytest.mark.parametrize("shape", [(0,), (3, 0)])
def test_a_state_without_elements_solves_and_differentiates(method, shape):
    """An empty state (as the explicit methods allow): nothing moves, no Jacobian or LU of size 0 is refused (they
    raised IndexError / RuntimeError from torch before), and backprop gives an empty gradient."""
    y0 = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    options = {"step_size": 0.25} if method in ("implicit_euler", "trbdf2", "radauIIA5", "gl6") else None
    ys = pyode.odeint(lambda t, y: -y, y0, t, method=method, options=options)
    assert ys.shape == (3, *shape)
    ys.sum().backward()
    assert y0.grad.shape == shape
