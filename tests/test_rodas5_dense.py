"""rodas5's own continuous extension (``RosenbrockTableau.dense``, OrdinaryDiffEq.jl's H matrix of the same
tableau): its order between the steps' ends, in the torch stepper and the C++ loop, and its relation to y1."""

import itertools
import math

import numpy as np
import pytest
import torch

import pyode
from pyode._solvers.implicit_tableaux import RODAS5
from pyode._solvers.interpolation import weights_at

scipy_integrate = pytest.importorskip("scipy.integrate")

THETAS = (0.25, 0.5, 0.75)  # interior points of the step (binary fractions: t = θh exact)
STEPS = (0.4, 0.2, 0.1, 0.05)


# y0' = -y0 y1 + cos t, y1' = y0 - y1^2 / 2: smooth, nonlinear, non-autonomous (J depends on y and f on t, so
# every term of the Rosenbrock step enters), from y(0) = Y0.
Y0 = (1.0, 0.5)


@pytest.fixture(scope="module")
def reference():
    def f(t, y):
        return [-y[0] * y[1] + math.cos(t), y[0] - 0.5 * y[1] ** 2]

    sol = scipy_integrate.solve_ivp(f, (0.0, max(STEPS)), Y0, method="DOP853", rtol=1e-13, atol=1e-15,
                                    dense_output=True)
    assert sol.success
    return sol.sol


def _observed_orders(errors):
    return [math.log2(a / b) for a, b in itertools.pairwise(errors)]


def _check_local_order(errors):
    # One step of size h: the interpolant of a 4th-order continuous extension is off by O(h^5) inside the step
    # (the step's own error is O(h^6)); the cubic Hermite it replaces is O(h^4). Halving h must divide the
    # error by ~2^5: a slope >= 4.5 separates the two, and the errors (1e-6 down to ~1e-11 here) stay far above
    # the reference's ~1e-14 and float64 rounding.
    observed = _observed_orders(errors)
    assert all(p >= 4.5 for p in observed), (errors, observed)


def test_interpolant_rows_sum_to_the_step_weights():
    # θ = 1 is y1 = y0 + Σ m_i u_i, θ = 0 is y0; rows are exact sums of the published H (few ulps of ~200).
    P = np.array(RODAS5.interpolant)
    assert P.shape == (len(RODAS5.dense) + 1, RODAS5.num_stages)
    np.testing.assert_allclose(P.sum(axis=0), RODAS5.m, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(weights_at(RODAS5.interpolant, [0.0], 1.0)[0], np.zeros(RODAS5.num_stages))


def _torch_single_step(h):
    t = torch.tensor([0.0, *(th * h for th in THETAS), h], dtype=torch.float64)

    def func(s, y):
        return torch.stack([-y[0] * y[1] + torch.cos(s), y[0] - 0.5 * y[1] * y[1]])

    # rtol = atol = 1e3: no step is rejected; first_step = max_step = h: exactly one step.
    return pyode.solve(func, torch.tensor(Y0, dtype=torch.float64), t, method="rodas5", rtol=1e3, atol=1e3,
                       options={"first_step": h, "max_step": h})


def test_torch_stepper_interpolant_is_fourth_order(reference, monkeypatch):
    monkeypatch.setenv("PYODE_CORE_LOOP", "0")  # the Python stepper, not the C++ loop, runs this torch solve
    errors = []
    for h in STEPS:
        sol = _torch_single_step(h)
        assert sol.stats.n_accepted == 1 and sol.stats.n_rejected == 0
        ys = sol.ys.numpy()[1:-1]
        errors.append(float(np.max(np.abs(ys - reference(np.array(THETAS) * h).T))))
    _check_local_order(errors)


def test_native_interpolant_is_fourth_order_and_equals_the_torch_one(reference, monkeypatch):
    pn = pytest.importorskip("pyode.native")
    pytest.importorskip("numba")
    try:
        pn._lib.library_path()
    except ImportError as exc:  # pragma: no cover - the build always ships it
        pytest.skip(f"native library not built: {exc}")
    monkeypatch.setenv("PYODE_CORE_LOOP", "0")

    def rhs(t, y, dy, p):
        dy[0] = -y[0] * y[1] + math.cos(t)
        dy[1] = y[0] - 0.5 * y[1] * y[1]

    def jac(t, y, J, p):
        J[0, 0], J[0, 1] = -y[1], -y[0]
        J[1, 0], J[1, 1] = 1.0, -y[1]

    errors = []
    for h in STEPS:
        t = np.array([0.0, *(th * h for th in THETAS), h])
        sol = pn.solve(rhs, np.array(Y0), t, method="rodas5", rtol=1e3, atol=1e3, jac=jac,
                       options={"first_step": h, "max_step": h})
        assert sol.n_accepted[0] == 1 and sol.n_rejected[0] == 0
        errors.append(float(np.max(np.abs(sol.ys[1:-1] - reference(t[1:-1]).T))))
        # The same weights on the same increments as the torch stepper: equal to the rounding of the stages
        # (autograd's Jacobian and the compiled one agree to a few ulps; u_i ~ 1, weights up to ~400).
        np.testing.assert_allclose(sol.ys, _torch_single_step(h).ys.numpy(), rtol=0, atol=1e-12)
    _check_local_order(errors)
    # interp='cubic' keeps the Hermite interpolant: third order (O(h^4) inside a step), so it fails the check.
    hermite = []
    for h in STEPS:
        t = np.array([0.0, *(th * h for th in THETAS), h])
        sol = pn.solve(rhs, np.array(Y0), t, method="rodas5", rtol=1e3, atol=1e3, jac=jac,
                       options={"first_step": h, "max_step": h, "interp": "cubic"})
        hermite.append(float(np.max(np.abs(sol.ys[1:-1] - reference(t[1:-1]).T))))
    assert all(3.5 <= p < 4.5 for p in _observed_orders(hermite)), hermite
