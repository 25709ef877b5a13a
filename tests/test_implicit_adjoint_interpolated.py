"""The interpolated adjoint (``adjoint_options={"y": "interpolated"}``, the default of implicit methods): y(t)
from the forward's dense output, only the adjoint integrated backwards with a stiff method. Checked by float64
gradcheck on a small stiff problem, against backprop on Robertson to t = 10 (where the backsolve, which
re-integrates y backwards, does not finish), and for the option's defaults and errors."""

import pytest
import torch

import pyode
from pyode._gradients.adjoint import make_config

pytestmark = pytest.mark.usefixtures("one_thread")


def make_rhs(a):
    def rhs(t, y):
        return y @ a.T + 0.1 * torch.sin(y) * torch.cos(t)
    return rhs


def test_gradcheck_stiff_kvaerno5():
    """Eigenvalues near -50 and -1 on [0, 0.4]. The adjoint's gradient is the continuous one up to the forward
    and backward solves' errors (rtol 1e-10: ~1e-9 relative) and the cubic Hermite interpolant of y between
    forward steps (local error O(h⁴|y''''|), below the step's own error at this tolerance), so it matches
    gradcheck's central differences (eps 1e-6, truncation ~1e-12 |y'''|) to well within atol 1e-6."""
    T = torch.tensor([0.0, 0.2, 0.4], dtype=torch.float64)

    def solve(y0, a):
        return pyode.odeint(make_rhs(a), y0, T, method="kvaerno5", rtol=1e-10, atol=1e-12, gradient="adjoint",
                            adjoint_params=(a,))

    y0 = torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([[-50.0, 1.0], [0.5, -1.0]], dtype=torch.float64, requires_grad=True)
    # fast_mode: one random projection of the Jacobian (two solves and one backward pass instead of 12 and 6)
    assert torch.autograd.gradcheck(solve, (y0, a), atol=1e-6, rtol=1e-5, fast_mode=True)


class Robertson(torch.nn.Module):
    """Robertson's chemical kinetics (stiffness ~1e4 at t = 10) with its rate constants as parameters."""

    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor([0.04, 3e7, 1e4], dtype=torch.float64))

    def forward(self, t, y):
        k1, k2, k3 = self.k
        y1, y2, y3 = y.unbind(-1)
        return torch.stack([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k2 * y2**2 - k3 * y2 * y3, k2 * y2**2], -1)


def _robertson_grads(method, gradient):
    f = Robertson()
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0, 10.0], dtype=torch.float64)
    ys = pyode.odeint(f, y0, t, method=method, rtol=1e-8, atol=1e-12, gradient=gradient)
    # y2 ~ 1e-5: weight it like the others (Kim et al.'s scaling)
    loss = (ys[1:] * torch.tensor([1.0, 1e4, 1.0], dtype=torch.float64)).sum()
    return torch.autograd.grad(loss, (f.k, y0))


@pytest.mark.parametrize("method", ["kvaerno5", "rodas5"])
def test_robertson_matches_backprop(method):
    """Backprop differentiates the discrete forward solve, the adjoint the continuous one: both are the exact
    gradient up to the solves' errors (rtol 1e-8, amplified by the conditioning of dL/dk, ~1e2 for k2 whose
    gradient is 1e-9 against a state of 1), so they agree to 1e-4 relative (measured 1e-5)."""
    for got, want in zip(_robertson_grads(method, "adjoint"), _robertson_grads(method, "backprop")):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=0.0)


def test_robertson_central_differences():
    """dL/dk1 (the slow reaction) against central differences of the forward solve at rtol 1e-10 (step
    1e-6 k1: truncation ~1e-12, solve noise ~1e-10/1e-6 relative = 1e-4 of the difference)."""
    g = _robertson_grads("kvaerno5", "adjoint")[0][0]
    f = Robertson()
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 10.0], dtype=torch.float64)
    w = torch.tensor([1.0, 1e4, 1.0], dtype=torch.float64)
    values = []
    with torch.no_grad():
        for d in (1e-6 * 0.04, -1e-6 * 0.04):
            f.k[0] = 0.04 + d
            values.append((pyode.odeint(f, y0, t, method="kvaerno5", rtol=1e-10, atol=1e-14)[1:] * w).sum())
    fd = (values[0] - values[1]) / (2e-6 * 0.04)
    torch.testing.assert_close(g, fd, rtol=1e-3, atol=0.0)


def test_tuple_state_and_time_gradients_match_backprop():
    """The interpolated path also for an explicit method (asked for explicitly), a tuple state, and t
    requiring grad (dL/dt_i through y(t_i) and g_t): same gradients as backprop at rtol 1e-10 to 1e-6."""
    a = torch.tensor([[-2.0, 1.0], [0.5, -1.0]], dtype=torch.float64, requires_grad=True)

    def rhs(t, state):
        y, z = state
        return (y @ a.T + torch.cos(t) * z, -0.5 * z * y.sum())

    def grads(gradient, **kw):
        y0 = (torch.tensor([1.0, -0.5], dtype=torch.float64, requires_grad=True),
              torch.tensor([0.3], dtype=torch.float64, requires_grad=True))
        t = torch.tensor([0.0, 0.5, 1.5], dtype=torch.float64, requires_grad=True)
        ys, zs = pyode.odeint(rhs, y0, t, method="dopri5", rtol=1e-10, atol=1e-12, gradient=gradient, **kw)
        loss = (ys ** 2).sum() + zs.sum()
        return torch.autograd.grad(loss, (*y0, t, a))

    got = grads("adjoint", adjoint_params=(a,), adjoint_options={"y": "interpolated"})
    for g, w in zip(got, grads("backprop")):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-8)


def test_defaults_and_errors():
    """Adaptive implicit methods and auto interpolate by default, explicit and fixed-grid ones backsolve; bad values raise, naming
    the option."""
    def mode(method, options=None):
        return make_config(1e-6, 1e-8, method, None, None, None, None, options).y_mode

    assert [mode(m) for m in ("kvaerno3", "kvaerno5", "rodas5", "auto")] == ["interpolated"] * 4
    assert [mode(m) for m in ("dopri5", "radauIIA5")] == ["backsolve"] * 2
    assert mode("kvaerno5", {"y": "backsolve"}) == "backsolve"
    with pytest.raises(ValueError, match=r"adjoint_options\['y'\]"):
        mode("kvaerno5", {"y": "interpolating"})
    with pytest.raises(ValueError, match="callable adjoint_options"):
        mode("kvaerno5", {"norm": lambda x: x[1].abs().max()})
