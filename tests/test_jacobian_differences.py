"""options["jacobian"] = "differences": the steps' Jacobians by forward differences (RADAU5's step sizes), the same
in the Python and C++ loops, with exact gradients in every mode."""

import pytest
import torch

import pyode
from pyode._solvers.newton import Jacobian

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def robertson(t, y):
    y1, y2, y3 = y[0], y[1], y[2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2, 3e7 * y2 * y2])


@pytest.mark.parametrize("y2", [3e-5, 1e-7])
def test_differences_match_the_exact_jacobian_on_small_components(y2):
    """Robertson's y2 is ~1e-5 and smaller. Its column's truncation error is 3e7 δ (f has 3e7 y2²): a step of
    sqrt(eps) max(|y2|, 1) = 1.5e-8 made that 0.45, 7% of J[2, 1] = 6 at y2 = 1e-7; sqrt(eps max(|y2|, 1e-5))
    = 4.7e-11 makes it 1.4e-3."""
    fn = lambda t, y: robertson(torch.tensor(t, dtype=F64), y)
    y = torch.tensor([0.9, y2, 0.1], dtype=F64)
    exact = Jacobian(fn).exact(0.0, y)[0]
    fd = Jacobian(fn, mode="differences")(0.0, y)[0]
    scale = exact.abs().amax(dim=1, keepdim=True)  # each row's largest entry: what Newton's matrix sees
    truncation = 3e7 * (torch.finfo(F64).eps * max(y2, 1e-5)) ** 0.5  # 3e7 δ
    assert ((fd - exact).abs() - 1.01 * truncation).max() <= 1e-9 * scale.max()
    assert ((fd - exact).abs() / scale).max() < 3e-4


@pytest.mark.parametrize("method", ["rodas5", "kvaerno5"])
def test_cxx_loop_takes_the_python_loops_steps(monkeypatch, method):
    """The C++ loop differences func itself (fd_jacobian), the Python loop through Jacobian._differences: the
    same perturbed states, so the same evaluations, steps and (to LU rounding) outputs."""
    pytest.importorskip("pyode.native")
    y0, t = torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor([0.0, 1e-3, 1.0, 100.0], dtype=F64)
    kw = {"method": method, "rtol": 1e-6, "atol": 1e-10, "options": {"jacobian": "differences"}}
    monkeypatch.setenv("PYODE_CORE_LOOP", "0")
    py = pyode.solve(robertson, y0, t, **kw)
    monkeypatch.setenv("PYODE_CORE_LOOP", "1")
    cxx = pyode.solve(robertson, y0, t, **kw)
    assert (cxx.stats.n_accepted, cxx.stats.n_rejected, cxx.stats.nfe) == \
        (py.stats.n_accepted, py.stats.n_rejected, py.stats.nfe)
    # the LUs differ (torch's LAPACK and the loop's own) by ~cond x eps per solve; measured against the error the
    # solve may make (atol + rtol |y|), the loops agree to 1e-4 of it (1e-9 relative on y2 ~ 3e-5, 3e-4 atol)
    tolerance = 1e-10 + 1e-6 * py.ys.abs()
    assert ((cxx.ys - py.ys).abs() / tolerance).max().item() < 1e-3
    exact = pyode.solve(robertson, y0, t, method=method, rtol=1e-6, atol=1e-10)
    assert ((py.ys - exact.ys).abs() / tolerance).max().item() < 100  # within the global error of the exact-J solve


def test_per_sample_batch_of_one_takes_the_joint_steps():
    y0, t = torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor([0.0, 1e-3, 1.0], dtype=F64)
    options = {"jacobian": "differences"}
    joint = pyode.solve(robertson, y0, t, method="rodas5", rtol=1e-6, atol=1e-10, options=options)
    rows = pyode.solve(lambda t, y: robertson(t, y[0])[None], y0[None], t, method="rodas5", rtol=1e-6, atol=1e-10,
                       options={**options, "per_sample": True})
    assert int(rows.stats.per_sample_accepted[0]) == joint.stats.n_accepted
    torch.testing.assert_close(rows.ys[:, 0], joint.ys, rtol=1e-9, atol=1e-14)


A0 = [[-50.0, 1.0], [0.5, -1.0]]
T = torch.tensor([0.0, 0.2, 0.4], dtype=F64)


def make_rhs(a):
    def rhs(t, y):
        return y @ a.T + 0.1 * torch.sin(y) * torch.cos(t)
    return rhs


@pytest.mark.parametrize("method", ["kvaerno5", "rodas5"])
@pytest.mark.parametrize("gradient", ["backprop", "checkpoint", "adjoint"])
def test_gradients_stay_exact(gradient, method):
    """The differences change the steps' Jacobians only: the implicit function theorem and rodas5's recorded
    steps use the exact one. dL/dy0 of y' = A y is exp(A T)ᵀ 1."""
    a = torch.tensor(A0, dtype=F64)
    t = torch.tensor([0.0, 0.5], dtype=F64)
    y0 = torch.tensor([1.0, -0.5], dtype=F64, requires_grad=True)
    params = {} if gradient == "backprop" else {"adjoint_params": ()}
    ys = pyode.odeint(lambda t, y: y @ a.T, y0, t, method=method, rtol=1e-9, atol=1e-11, gradient=gradient,
                      options={"jacobian": "differences"}, **params)
    (grad,) = torch.autograd.grad(ys[-1].sum(), y0)
    exact = torch.linalg.matrix_exp(a * 0.5).T @ torch.ones(2, dtype=F64)
    assert torch.allclose(grad, exact, rtol=1e-6, atol=1e-8), (grad, exact)


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint"])
def test_gradcheck_fixed_grid(gradient):
    """y0 and func's parameters on a fixed grid, where Newton converges to a few ulps whatever its matrix."""
    def solve(y0, a):
        return pyode.odeint(make_rhs(a), y0, T, method="trbdf2", gradient=gradient,
                            options={"step_size": 0.05, "jacobian": "differences"},
                            adjoint_params=(a,) if gradient != "backprop" else None)

    y0 = torch.tensor([1.0, -0.5], dtype=F64, requires_grad=True)
    a = torch.tensor(A0, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(solve, (y0, a))


def test_unknown_jacobian_option_names_the_choices():
    with pytest.raises(ValueError, match="differences"):
        pyode.solve(robertson, torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                    method="rodas5", options={"jacobian": "numeric"})
