"""torchdiffeq's fixed-grid implicit methods: empirical order (float32/float64, tensor/tuple states,
forward/reverse time), under odeint and odeint_adjoint, and the tableaux's order conditions."""

import itertools
import math

import pytest
import torch

import pyode
from pyode._solvers.implicit_tableaux import IMPLICIT_TABLEAUX

# Tiny tensors: torch's intra-op threads only add contention on a shared machine (tril on a 2x2 matrix, in
# the LU backward, takes ~10 ms with 2 busy threads instead of 1 us).
pytestmark = pytest.mark.usefixtures("one_thread")

FIXED = {"implicit_euler": 1, "implicit_midpoint": 2, "trapezoid": 2, "radauIIA3": 3, "gl4": 4, "radauIIA5": 5,
         "gl6": 6, "sdirk2": 2, "trbdf2": 2}

# y' = λ (y - sin ωt) + ω cos ωt, exact y(t) = sin ωt + C e^{λt}: non-autonomous (checks the nodes c), mildly
# stiff, with the exact solution in both time directions. Components have different λ.
LAM = (-2.0, -0.5)
OMEGA = 3.0


def rhs(t, y):
    lam = torch.tensor(LAM, dtype=y.dtype)
    s = torch.sin(OMEGA * t).to(y.dtype)
    return lam * (y - s) + OMEGA * torch.cos(OMEGA * t).to(y.dtype)


def rhs_tuple(t, ys):
    out = rhs(t, torch.cat(ys))
    return out[:1], out[1:]


def exact(t, t0, y0):
    """(T, 2) solution through (t0, y0) at the times t (float64)."""
    lam = torch.tensor(LAM, dtype=torch.float64)
    c = (y0.double() - math.sin(OMEGA * t0)) * torch.exp(-lam * t0)
    return torch.sin(OMEGA * t.double())[:, None] + c * torch.exp(lam * t.double()[:, None])


def _errors(method, dtype, structure, direction, steps):
    t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    if direction == "reverse":
        t = t.flip(0)
    y0 = torch.tensor([0.5, -1.0], dtype=dtype)
    reference = exact(t, float(t[0]), y0)
    errors = []
    for h in steps:
        if structure == "tuple":
            ys = torch.cat(pyode.odeint(rhs_tuple, (y0[:1], y0[1:]), t, method=method, options={"step_size": h}), -1)
        else:
            ys = pyode.odeint(rhs, y0, t, method=method, options={"step_size": h})
        assert ys.dtype == dtype
        errors.append(float((ys.double() - reference).abs().max()))
    return errors


def _slope(errors, steps):
    return math.log(errors[0] / errors[-1]) / math.log(steps[0] / steps[-1])


def _rounding_slack(errors, steps, dtype):
    """How far rounding can move the measured slope: each error is known only to within r = 4 eps of the dtype
    (|y| <= 1.5, a few steps), so log(e0/e1) to within log(1 + r/e0) + log(1 + r/e1). Negligible in float64 and
    where the errors are far above rounding; gl6 in float32 ends at ~6e-7, a few eps (its measured slope moves by
    ~0.3 between CPUs whose float32 kernels round differently)."""
    r = 4 * torch.finfo(dtype).eps
    return (math.log1p(r / errors[0]) + math.log1p(r / errors[-1])) / math.log(steps[0] / steps[-1])


def _steps(order, dtype):
    """Step sizes (dividing 0.5, so every output time is a grid point) whose errors lie between rounding and the
    asymptotic regime: float64 errors from ~1e-4 down to ~1e-11, float32 from ~1e-2 down to ~1e-5 (a hundred
    times float32's eps, so rounding stays below ~10% of the error). gl6 in float32 reaches rounding after
    two halvings of h = 0.5, so it is measured on two steps."""
    if dtype == torch.float64:
        return (0.1, 0.05, 0.025) if order <= 5 else (0.25, 0.125, 0.0625)
    return (0.1, 0.05, 0.025) if order <= 3 else ((0.5, 0.25, 0.125) if order <= 5 else (0.5, 0.25))


CONFIGS = [(torch.float64, "tensor", "forward"), (torch.float32, "tuple", "reverse"),
           (torch.float64, "tuple", "reverse"), (torch.float32, "tensor", "forward")]


@pytest.mark.parametrize(("method", "config"), list(itertools.product(FIXED, CONFIGS)))
def test_convergence_order(method, config):
    dtype, structure, direction = config
    order = FIXED[method]
    steps = _steps(order, dtype)
    errors = _errors(method, dtype, structure, direction, steps)
    slope = _slope(errors, steps)
    assert abs(slope - order) <= 0.3 + _rounding_slack(errors, steps, dtype), (method, config, errors, slope)


@pytest.mark.parametrize("method", list(FIXED))
def test_odeint_adjoint_gradient_converges(method):
    """odeint_adjoint: same forward as odeint; dL/dy0 (exactly e^{λT}) from the backward solve with the same
    implicit method converges at the method's order."""
    order = FIXED[method]
    steps = _steps(order, torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    lam = torch.tensor(LAM, dtype=torch.float64)
    errors = []
    for h in steps:
        y0 = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
        ys = pyode.odeint_adjoint(rhs, y0, t, method=method, options={"step_size": h}, adjoint_params=())
        assert torch.equal(ys.detach(), pyode.odeint(rhs, y0.detach(), t, method=method, options={"step_size": h}))
        (grad,) = torch.autograd.grad(ys[-1].sum(), y0)
        errors.append(float((grad - torch.exp(lam)).abs().max()))
    slope = _slope(errors, steps)
    assert abs(slope - order) <= 0.3, (method, errors, slope)


def test_cubic_interpolation_between_grid_points():
    """options['interp'] = 'cubic': between grid points the Hermite cubic through (y0, f0), (y1, f1) is within
    its error bound h^4/384 max|y^(4)| (radauIIA5's own error at these h is ~1e-9, negligible); the default
    linear interpolation (bound h^2/8 max|y''|) is far less accurate."""
    t = torch.linspace(0.0, 1.0, 8, dtype=torch.float64)  # outputs off the grid
    y0 = torch.tensor([0.5, -1.0], dtype=torch.float64)
    d4 = OMEGA**4 + 0.5 * LAM[0] ** 4  # |y^(4)| <= ω⁴ |sin| + |C λ⁴ e^{λt}| (largest for the first component)
    for h in (0.1, 0.05):
        errors = {interp: float((pyode.odeint(rhs, y0, t, method="radauIIA5", options={"step_size": h, "interp": interp})
                                 - exact(t, 0.0, y0)).abs().max()) for interp in ("cubic", "linear")}
        assert errors["cubic"] <= h**4 / 384 * d4 * 1.05, (h, errors)
        assert errors["cubic"] < errors["linear"] / 10, (h, errors)

# -- tableaux -------------------------------------------------------------------------------------------------

def _order_conditions(tab, order):
    """Residuals of the order conditions up to ``order`` (rooted trees up to order 6 in matrix form; implicit
    methods need the same conditions as explicit ones, with the full matrix A)."""
    A = torch.tensor(tab.a, dtype=torch.float64)
    b = torch.tensor(tab.b, dtype=torch.float64)
    c = torch.tensor(tab.c, dtype=torch.float64)
    conds = [(b.sum(), 1.0)]
    if order >= 2:
        conds += [(b @ c, 1 / 2)]
    if order >= 3:
        conds += [(b @ c**2, 1 / 3), (b @ A @ c, 1 / 6)]
    if order >= 4:
        conds += [(b @ c**3, 1 / 4), (b @ (c * (A @ c)), 1 / 8), (b @ A @ c**2, 1 / 12), (b @ A @ A @ c, 1 / 24)]
    if order >= 5:
        conds += [(b @ c**4, 1 / 5), (b @ (c**2 * (A @ c)), 1 / 10), (b @ (c * (A @ c**2)), 1 / 15),
                  (b @ (c * (A @ A @ c)), 1 / 30), (b @ (A @ c) ** 2, 1 / 20), (b @ A @ c**3, 1 / 20),
                  (b @ A @ (c * (A @ c)), 1 / 40), (b @ A @ A @ c**2, 1 / 60), (b @ A @ A @ A @ c, 1 / 120)]
    return [float(v) - target for v, target in conds]


@pytest.mark.parametrize("name", list(IMPLICIT_TABLEAUX))
def test_tableau_order_conditions(name):
    tab = IMPLICIT_TABLEAUX[name]
    checked = min(tab.order, 5)
    # Coefficients are given to ~16 digits (kvaerno5: 17 significant, products of up to 5 factors): 1e-12.
    assert max(abs(r) for r in _order_conditions(tab, checked)) < 1e-12
    # ... and the method is not of a higher order than claimed (the slope tests would be meaningless).
    if tab.order < 5:
        assert max(abs(r) for r in _order_conditions(tab, tab.order + 1)) > 1e-6
    if tab.adaptive:  # the embedded method (b - b_err) has order >= order - 1
        hat = type(tab)(tab.name, tab.c, tab.a, [x - e for x, e in zip(tab.b, tab.b_err)], tab.order - 1)
        assert max(abs(r) for r in _order_conditions(hat, tab.order - 1)) < 1e-12


def test_gl4_nodes_are_the_gauss_points():
    tab = IMPLICIT_TABLEAUX["gl4"]
    assert tab.c == pytest.approx((0.5 - math.sqrt(3) / 6, 0.5 + math.sqrt(3) / 6), abs=1e-15)
