"""Gradients through implicit steps: the implicit function theorem (no differentiation of Newton's iterations),
checked by float64 gradcheck on a small stiff problem in the backprop, checkpoint and adjoint modes."""

import pytest
import torch

import pyode
from pyode._solvers.implicit_grad import _stage_matrix

# Tiny tensors: torch's intra-op threads only add contention on a shared machine (tril on a 2x2 matrix, in
# the LU backward, takes ~10 ms with 2 busy threads instead of 1 us).
pytestmark = pytest.mark.usefixtures("one_thread")

# A small stiff, nonlinear, non-autonomous problem: eigenvalues of A near -50 and -1 (stiffness ratio 50 on
# an interval of 0.4, with h*|λ| up to 2.5 at h = 0.05: explicit Euler at this step would be unstable).
A0 = [[-50.0, 1.0], [0.5, -1.0]]


def make_rhs(a):
    def rhs(t, y):
        return y @ a.T + 0.1 * torch.sin(y) * torch.cos(t)
    return rhs


T = torch.tensor([0.0, 0.2, 0.4], dtype=torch.float64)


def _inputs():
    y0 = torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True)
    a = torch.tensor(A0, dtype=torch.float64, requires_grad=True)
    return y0, a


@pytest.mark.parametrize("method", ["trbdf2", "radauIIA5"])
@pytest.mark.parametrize("gradient", ["backprop", "checkpoint"])
def test_gradcheck_fixed_grid(method, gradient):
    """Exact for the discrete solve: Newton converges to a few ulps on a fixed grid, so central differences
    of the solve (eps 1e-6) agree with the analytic gradient to ~1e-8, within gradcheck's defaults."""
    def solve(y0, a):
        return pyode.odeint(make_rhs(a), y0, T, method=method, options={"step_size": 0.05}, gradient=gradient,
                            adjoint_params=(a,) if gradient != "backprop" else None)

    assert torch.autograd.gradcheck(solve, _inputs())


def test_gradcheck_adjoint():
    """The adjoint's gradient is that of the continuous solution, up to the backward solve's discretisation
    error. Its backward pass also reconstructs y by integrating the stiff system backwards, where the fast mode
    grows like e^{50 t}; with radauIIA5 that error converges at order 5 (against a backprop solve at h = 0.0025:
    9.4e-5, 2.8e-6, 8.7e-8 at h = 0.02, 0.01, 0.005), so at h = 0.01 atol = 1e-5 leaves a 3x margin."""
    def solve(y0, a):
        return pyode.odeint(make_rhs(a), y0, T, method="radauIIA5", options={"step_size": 0.01}, gradient="adjoint",
                            adjoint_params=(a,))

    assert torch.autograd.gradcheck(solve, _inputs(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["kvaerno5", "rodas5"])
@pytest.mark.parametrize("gradient", ["backprop", "checkpoint", "adjoint"])
def test_adaptive_modes_agree_with_exact_gradient(gradient, method):
    """A linear stiff problem y' = A y: dL/dy0 for L = sum(y(T)) is exp(A T)ᵀ 1 exactly. Every mode lands
    within the solve's tolerance (rtol 1e-9 on O(1) values, the global error a few times that). (rodas5 has no
    Newton iteration: autograd differentiates its linear solves directly.)"""
    a = torch.tensor(A0, dtype=torch.float64)
    t = torch.tensor([0.0, 0.5], dtype=torch.float64)
    y0 = torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True)
    params = {} if gradient == "backprop" else {"adjoint_params": ()}
    ys = pyode.odeint(lambda t, y: y @ a.T, y0, t, method=method, rtol=1e-9, atol=1e-11, gradient=gradient,
                      **params)
    (grad,) = torch.autograd.grad(ys[-1].sum(), y0)
    exact = torch.linalg.matrix_exp(a * 0.5).T @ torch.ones(2, dtype=torch.float64)
    assert torch.allclose(grad, exact, rtol=1e-6, atol=1e-8), (grad, exact)


def test_newton_iterations_are_not_recorded():
    """The graph of a backprop solve holds one re-evaluation of the stages per step, however many Newton
    iterations ran: the implicit-function-theorem node (StageAdjoint) appears once per step."""
    y0, a = _inputs()
    ys = pyode.odeint(make_rhs(a), y0, T, method="radauIIA5", options={"step_size": 0.05})
    seen, stack, count = set(), [ys.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += type(node).__name__ == "StageAdjointBackward"
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    assert count == 8  # 0.4 / 0.05 steps


def test_stage_matrix_blocks():
    """M = I - h [a_ij J_i]: row block i uses stage i's Jacobian (checked against an explicit Kronecker form
    when every stage has the same Jacobian)."""
    from pyode._solvers.implicit_tableaux import RADAU_IIA3

    jac = torch.tensor([[-3.0, 1.0], [0.5, -2.0]], dtype=torch.float64)
    m = _stage_matrix(RADAU_IIA3, [jac[None], jac[None]], 0.1)
    expected = torch.eye(4, dtype=torch.float64) - 0.1 * torch.kron(torch.tensor(RADAU_IIA3.a, dtype=torch.float64), jac)
    assert torch.allclose(m[0], expected, rtol=0, atol=1e-15)


def test_gradcheck_rodas5_steps():
    """rodas5 backprop differentiates its steps exactly, the Jacobian's own derivative (second derivatives of
    func, through a Jacobian built with create_graph) included: gradcheck on a fixed step sequence."""
    from pyode._solvers.fixed_grid import FixedGridLoop
    from pyode._solvers.implicit_rosenbrock import RosenbrockStepper
    from pyode._solvers.implicit_tableaux import RODAS5
    from pyode._solvers.problem import build_problem, integrate

    def solve(y0, a):
        problem = build_problem(make_rhs(a), y0, T, method="implicit_euler")
        stepper = RosenbrockStepper(RODAS5, problem.fn, problem.loop.stepper.kern, 1.0, rtol=1e-6, atol=1e-9)
        grid = [0.05 * k for k in range(9)]
        problem.loop = FixedGridLoop(stepper, grid, problem.stats, 1.0)
        return integrate(problem, y0)

    assert torch.autograd.gradcheck(solve, _inputs())


@pytest.mark.parametrize("method", ["trbdf2", "radauIIA5"])
def test_gradcheck_row_jacobian(method):
    """The implicit-function-theorem solve with block-diagonal Jacobians (options['jacobian'] = 'rows'): a batch
    of independent stiff 2-state systems with a shared parameter matrix, exact for the discrete solve."""
    def solve(y0, a):
        return pyode.odeint(lambda t, y: y @ a.T + 0.1 * torch.sin(y), y0, T, method=method,
                            options={"step_size": 0.05, "jacobian": "rows"})

    y0 = torch.tensor([[1.0, -0.5], [0.3, 0.8], [-1.0, 0.2]], dtype=torch.float64, requires_grad=True)
    a = torch.tensor(A0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(solve, (y0, a))
