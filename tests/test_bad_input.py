"""Every documented bad input raises a clear pyode error: never a crash, a hang or a silent NaN."""

import math

import pytest
import torch

import pyode

T = torch.tensor([0.0, 1.0], dtype=torch.float64)
Y0 = torch.ones(2, dtype=torch.float64)


def decay(t, y):
    return -y


@pytest.mark.parametrize("t,match", [
    (torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64), "strictly"),
    (torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64), "strictly"),
    (torch.zeros(2, 2, dtype=torch.float64), "1-D"),
    (torch.tensor([], dtype=torch.float64), "empty"),
    (torch.tensor([0.0, math.nan], dtype=torch.float64), "NaN"),
])
def test_bad_times(t, match):
    with pytest.raises(ValueError, match=match):
        pyode.odeint(decay, Y0, t)


def test_integer_times_and_state():
    with pytest.raises(TypeError, match="t must be floating"):
        pyode.odeint(decay, Y0, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="y0 must be floating"):
        pyode.odeint(decay, torch.tensor([1, 2]), T)
    with pytest.raises(TypeError, match=r"y0\[0\] must be a torch.Tensor"):
        pyode.odeint(decay, [1.0, 2.0], T)


def test_non_finite_y0():
    with pytest.raises(ValueError, match="NaN or inf"):
        pyode.odeint(decay, torch.tensor([1.0, math.inf]), T)


@pytest.mark.parametrize("kw,match", [
    ({"rtol": -1.0}, "rtol must be finite and >= 0"),
    ({"atol": math.nan}, "atol must be finite"),
    ({"rtol": 0.0, "atol": 0.0}, "cannot both be 0"),
    ({"method": "rk45"}, "unknown method 'rk45'; valid methods: .*dopri5"),
    ({"options": {"firststep": 0.1}}, r"unknown option\(s\) \['firststep'\].*first_step"),
    ({"options": {"max_num_steps": 0}}, "max_num_steps"),
    ({"options": {"first_step": -0.1}}, "first_step"),
    ({"method": "rk4", "options": {"step_size": 0.0}}, "step_size"),
    ({"options": {"norm": "l1"}}, "norm"),
    ({"gradient": "magic"}, "unknown gradient mode"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        pyode.odeint(decay, Y0, T, **kw)


def test_func_wrong_output():
    with pytest.raises(ValueError, match=r"shape \(3,\), expected \(2,\)"):
        pyode.odeint(lambda t, y: torch.zeros(3, dtype=torch.float64), Y0, T)
    with pytest.raises(ValueError, match="dtype torch.int64"):  # another float dtype is cast, as torchdiffeq
        pyode.odeint(lambda t, y: y.long(), Y0, T)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        pyode.odeint(lambda t, y: 1.0, Y0, T)
    with pytest.raises(TypeError, match="func must be callable"):
        pyode.odeint("not a function", Y0, T)


def test_func_exception_propagates_unchanged():
    class Boom(Exception):
        pass

    def f(t, y):
        raise Boom("inside func")

    with pytest.raises(Boom, match="inside func"):
        pyode.odeint(f, Y0, T)


def test_devices_must_match():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device (no GPU here)")
    with pytest.raises(ValueError, match="same device"):
        pyode.odeint(decay, Y0, T.cuda())


def test_nan_during_solve_raises_with_time():
    def f(t, y):
        return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)

    with pytest.raises(pyode.NonFiniteStateError) as info:
        pyode.odeint(f, Y0, T)
    assert 0.4 < info.value.t_reached <= 0.5 + 1e-9
    with pytest.raises(pyode.NonFiniteStateError, match="t reached"):
        pyode.odeint(f, Y0, T, method="rk4", options={"step_size": 0.1})


def test_max_num_steps_exceeded():
    with pytest.raises(pyode.MaxStepsError, match="max_num_steps=5") as info:
        pyode.odeint(decay, Y0, torch.tensor([0.0, 100.0], dtype=torch.float64), options={"max_num_steps": 5})
    assert 0.0 < info.value.t_reached < 100.0


def test_stiff_problem_exhausts_steps_instead_of_hanging():
    def stiff(t, y):
        return -1e7 * (y - torch.cos(t))

    with pytest.raises(pyode.MaxStepsError):
        pyode.odeint(stiff, Y0, torch.tensor([0.0, 10.0], dtype=torch.float64), options={"max_num_steps": 200})


def test_step_underflow_on_blow_up():
    """y' = y² from y0 = 1 blows up at t = 1: the solver reports where it got stuck."""
    with pytest.raises(pyode.ODESolverError) as info:
        pyode.odeint(lambda t, y: y * y, Y0, torch.tensor([0.0, 2.0], dtype=torch.float64), rtol=1e-8, atol=1e-8)
    assert 0.99 < info.value.t_reached < 1.001


def test_backend_cpu_missing_extension_message(monkeypatch):
    from pyode import _kernels

    monkeypatch.setattr(_kernels, "_compiled", None)
    monkeypatch.setattr(_kernels, "_COMPILED_ERROR", "simulated missing build")
    monkeypatch.setenv("PYODE_BACKEND", "cpu")
    with pytest.raises(pyode.BackendUnavailableError, match="pip install"):
        pyode.odeint(decay, Y0, T)
    monkeypatch.setenv("PYODE_BACKEND", "auto")  # auto falls back silently
    assert pyode.odeint(decay, Y0, T).shape == (2, 2)
    monkeypatch.setenv("PYODE_BACKEND", "gpu-please")
    with pytest.raises(ValueError, match="PYODE_BACKEND"):
        pyode.odeint(decay, Y0, T)


def test_nan_at_initial_time_raises_instead_of_hanging():
    with pytest.raises(pyode.NonFiniteStateError, match="initial time"):
        pyode.odeint(lambda t, y: y * math.nan, Y0, T)
