"""Gustafsson's predictive step-size controller (options["controller"]): its formula against a hand-written
sequence, its twins (float/tensor arithmetic, the C++ loop, per-sample rows) against the Python reference, and the
option's default and validation."""

import math

import numpy as np
import pytest
import torch

import pyode
from pyode._solvers.controller import FLOAT_OPS, TENSOR_OPS, PIDController, pid_gains, predictive_factor

F64 = torch.float64


def test_predictive_step_sequence_from_stub_ratios():
    """Fed stub error ratios, the controller gives the steps of Hairer & Wanner's formula: the PID (here I)
    factor, capped by safety (h/h_acc) (r_acc/r^2)^(1/k) after an accepted step, and by 1 after a rejection."""
    k, safety = 5, 0.9
    ctrl = PIDController(order=k, predictive=True)

    def pid(r, accepted):
        return min(max(safety * r ** (-1 / k), 1.0), 10.0) if accepted else max(min(safety * r ** (-1 / k), 0.9), 0.2)

    h1 = ctrl.next_step(1.0, 0.01, True)  # no earlier accepted step: the I controller alone
    assert h1 == pytest.approx(pid(0.01, True), rel=1e-15)
    # the error estimate jumps up (0.01 -> 0.9) while the step grew 2.26x: the bound shrinks the accepted step,
    # which the PID controller never does
    h2 = ctrl.next_step(h1, 0.9, True)
    bound = safety * (h1 / 1.0) * (0.01 / 0.9 ** 2) ** (1 / k)
    assert h2 == pytest.approx(h1 * bound, rel=1e-14) and bound < 1.0
    h3 = ctrl.next_step(h2, 2.0, False)  # rejected: the PID factor
    assert h3 == pytest.approx(h2 * pid(2.0, False), rel=1e-15)
    h4 = ctrl.next_step(h3, 0.05, True)  # first acceptance after a rejection: no growth
    assert h4 == pytest.approx(h3, rel=1e-15)
    h5 = ctrl.next_step(h4, 0.05, True)  # accepted again: the smaller of PID and the bound
    want = min(pid(0.05, True), max(safety * (h4 / h3) * (0.05 / 0.05 ** 2) ** (1 / k), 0.2))
    assert h5 == pytest.approx(h4 * min(want, 10.0), rel=1e-14)


def test_predictive_factor_on_floats_and_tensors_agrees():
    gains = pid_gains(5, 0.0, 1.0, 0.0)
    cases = [(0.3, True, (0.0, 1.0, False)), (0.9, True, (0.5, 0.01, False)), (0.05, True, (2.0, 0.7, True)),
             (1.5, False, (1.0, 0.3, False)), (math.nan, True, (1.0, 0.3, False)), (0.0, True, (1.0, 0.3, False))]
    for ratio, accepted, state in cases:
        want_f, want_state = predictive_factor(FLOAT_OPS, gains, 5, 1.3, 0.8, ratio, accepted, state)
        t = lambda x: torch.tensor([x], dtype=F64)
        got_f, got_state = predictive_factor(TENSOR_OPS, gains, 5, t(1.3), t(0.8), t(ratio), torch.tensor([accepted]),
                                             (t(state[0]), t(state[1]), torch.tensor([state[2]])))
        torch.testing.assert_close(got_f, t(want_f), rtol=4e-16, atol=0)
        torch.testing.assert_close(got_state[0], t(want_state[0]), rtol=0, atol=0)
        torch.testing.assert_close(got_state[1], t(want_state[1]), rtol=0, atol=0)
        assert bool(got_state[2]) == want_state[2]


def van_der_pol(t, y):
    return torch.stack([y[..., 1], 5.0 * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], dim=-1)


def pendulum(t, y):
    return torch.stack([y[..., 1], -torch.sin(y[..., 0])], dim=-1)


Y0 = torch.tensor([2.0, 0.0], dtype=F64)
T = torch.linspace(0.0, 6.0, 7, dtype=F64)


def _steps(sol):
    return sol.stats.n_accepted, sol.stats.n_rejected


@pytest.mark.parametrize("method", ["dopri5", "kvaerno5", "rodas5"])
def test_default_is_predictive_for_the_stiff_methods_only(method):
    stiff = method != "dopri5"
    default = pyode.solve(van_der_pol, Y0, T, method=method, rtol=1e-6, atol=1e-8)
    same = pyode.solve(van_der_pol, Y0, T, method=method, rtol=1e-6, atol=1e-8,
                       options={"controller": "predictive" if stiff else "pid"})
    other = pyode.solve(van_der_pol, Y0, T, method=method, rtol=1e-6, atol=1e-8,
                        options={"controller": "pid" if stiff else "predictive"})
    assert _steps(default) == _steps(same) and torch.equal(default.ys, same.ys)
    assert _steps(other) != _steps(default)
    torch.testing.assert_close(other.ys, default.ys, rtol=0, atol=1e-4)  # both within their global errors


@pytest.mark.parametrize("method", ["dopri5", "kvaerno5", "rodas5"])
@pytest.mark.parametrize("reverse", [False, True])
def test_cxx_loop_takes_the_python_loops_steps(method, reverse, monkeypatch):
    """The C++ loop (solves autograd does not record) against the Python reference loop, forward and reverse
    time. The stiff methods' LU differs (torch's LAPACK vs the loop's own), so their outputs agree to rounding
    times the Newton matrices' condition, not bitwise."""
    pytest.importorskip("pyode.native")
    options = {"controller": "predictive"}
    # reverse time: a pendulum (Van der Pol leaves its limit cycle backwards and blows up in finite time)
    func, t = (pendulum, T.flip(0)) if reverse else (van_der_pol, T)
    monkeypatch.setenv("PYODE_CORE_LOOP", "0")
    py = pyode.solve(func, Y0, t, method=method, rtol=1e-7, atol=1e-9, options=options)
    monkeypatch.setenv("PYODE_CORE_LOOP", "1")
    cxx = pyode.solve(func, Y0, t, method=method, rtol=1e-7, atol=1e-9, options=options)
    assert _steps(cxx) == _steps(py)
    torch.testing.assert_close(cxx.ys, py.ys, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", ["dopri5", "rodas5"])
def test_per_sample_batch_of_one_takes_the_joint_steps(method):
    options = {"controller": "predictive"}
    joint = pyode.solve(van_der_pol, Y0, T, method=method, rtol=1e-7, atol=1e-9, options=options)
    rows = pyode.solve(van_der_pol, Y0[None], T, method=method, rtol=1e-7, atol=1e-9,
                       options={**options, "per_sample": True})
    assert int(rows.stats.per_sample_accepted[0]) == joint.stats.n_accepted
    assert int(rows.stats.per_sample_rejected[0]) == joint.stats.n_rejected
    torch.testing.assert_close(rows.ys[:, 0], joint.ys, rtol=1e-10, atol=1e-10)


def test_native_solve_takes_the_torch_solves_steps():
    pn = pytest.importorskip("pyode.native")

    def rhs(t, y, dy, p):
        dy[0] = y[1]
        dy[1] = 5.0 * (1 - y[0] ** 2) * y[1] - y[0]

    for options in ({"controller": "predictive"}, {"controller": "pid"}):
        nat = pn.solve(rhs, Y0.numpy(), T.numpy(), method="dopri5", rtol=1e-7, atol=1e-9, options=options)
        ref = pyode.solve(van_der_pol, Y0, T, method="dopri5", rtol=1e-7, atol=1e-9, options=options)
        assert (int(nat.n_accepted[0]), int(nat.n_rejected[0])) == _steps(ref)
        np.testing.assert_allclose(nat.ys, ref.ys.numpy(), rtol=1e-12, atol=1e-12)


def test_unknown_controller_is_refused():
    with pytest.raises(ValueError, match="controller"):
        pyode.solve(van_der_pol, Y0, T, options={"controller": "pi"})


def test_predictive_default_keeps_robertsons_error_within_its_tolerance():
    """Robertson with atol 1e-10 (y2 peaks at 3.6e-5): with the I controller alone, a step in the transient grew
    2.2x as its error estimate dropped, and from rtol 3e-7 on y2 carried ~1.1e-5 of its peak (4 atol); the
    predictive bound (rodas5's default) keeps it near 1e-6 (0.4 atol)."""
    pn = pytest.importorskip("pyode.native")
    pytest.importorskip("scipy")  # bench.native_stiff imports it
    from bench.native_stiff import robertson as rhs  # the benchmark's compiled problem
    from bench.native_stiff import robertson_jac as jac

    t = np.concatenate([[0.0], np.logspace(-4, 5, 37)])
    y0, p = np.array([1.0, 0.0, 0.0]), np.zeros(1)
    ref = pn.solve(rhs, y0, t, p, method="rodas5", rtol=1e-11, atol=1e-16, jac=jac, options={"step_t": list(t)}).ys
    peak = np.abs(ref[:, 1]).max()
    for rtol in (3e-7, 1e-7, 3e-8):
        errors = {}
        for controller in ("pid", "auto"):
            sol = pn.solve(rhs, y0, t, p, method="rodas5", rtol=rtol, atol=1e-10, jac=jac,
                           options={"controller": controller})
            errors[controller] = np.abs(sol.ys[:, 1] - ref[:, 1]).max() / peak
        # the default within 1 atol of y2 (2.8e-6 of its peak); the I controller alone measured beyond it
        assert errors["auto"] < 2.8e-6 < errors["pid"], (rtol, errors)
