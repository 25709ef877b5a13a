"""pyode.native: the C++ loop with a compiled right-hand side against pyode's Python loop (same steps, same
outputs), exact solutions and SciPy; ensembles, events, failures and bad input."""

import math

import numpy as np
import pytest
import torch

numba = pytest.importorskip("numba")
pytest.importorskip("cffi")

import pyode
import pyode.native as pn
from pyode.errors import MaxStepsError, NonFiniteStateError

try:
    pn._lib.library_path()
except ImportError as exc:  # pragma: no cover - the build always ships it
    pytest.skip(f"native library not built: {exc}", allow_module_level=True)

P = np.array([2.0, 0.3])
T_OUT = [0.0, 0.3, 1.1, 2.0, 3.7, 5.0]


def oscillator(t, y, dy, p):
    """Forced damped oscillator: y'' = -p0 y - p1 y' + sin(t) (smooth, non-chaotic)."""
    dy[0] = y[1]
    dy[1] = -p[0] * y[0] - p[1] * y[1] + math.sin(t)


@pytest.fixture(autouse=True)
def _python_loop_on_the_torch_side(monkeypatch):
    """The parity tests here compare the native solver with the torch path's Python loop (the reference): torch
    solves that record nothing would otherwise run in the same C++ loop (tests/test_core_loop.py pins those)."""
    monkeypatch.setenv("PYODE_CORE_LOOP", "0")


def oscillator_torch(t, y):
    return torch.stack([y[1], -P[0] * y[0] - P[1] * y[1] + torch.sin(t)])


def decay(t, y, dy, p):
    dy[0] = -p[0] * y[0]


def _python_solve(method, t, rtol=1e-7, atol=1e-9, options=None, y0=(1.0, 0.0)):
    return pyode.solve(oscillator_torch, torch.tensor(y0, dtype=torch.float64), torch.tensor(t, dtype=torch.float64),
                       method=method, rtol=rtol, atol=atol, options=options)


# Same steps => the two loops differ only by the summation order inside a stage/finish kernel (a few ulp per
# step); over the ~10-300 steps here, with |y| ~ 1 and a contractive problem, that stays far below 1e-12.
PARITY_TOL = 1e-12


@pytest.mark.parametrize("method,rtol", [("dopri5", 1e-7), ("tsit5", 1e-7), ("dopri8", 1e-7), ("bosh3", 1e-6),
                                         ("fehlberg2", 1e-5), ("adaptive_heun", 1e-5)])
def test_same_steps_as_python_loop(method, rtol):
    py = _python_solve(method, T_OUT, rtol=rtol)
    nat = pn.solve(oscillator, np.array([1.0, 0.0]), np.array(T_OUT), P, method=method, rtol=rtol, atol=1e-9)
    assert (nat.n_accepted[0], nat.n_rejected[0]) == (py.stats.n_accepted, py.stats.n_rejected)
    assert nat.n_feval[0] == py.stats.nfe
    np.testing.assert_allclose(nat.ys, py.ys.numpy(), rtol=PARITY_TOL, atol=PARITY_TOL)


@pytest.mark.parametrize("options", [{"pcoeff": 0.4, "icoeff": 0.3, "dcoeff": 0.1},
                                     {"first_step": 0.05, "max_step": 0.4, "safety": 0.8},
                                     {"interp": "cubic"}])
def test_same_steps_with_controller_options(options):
    py = _python_solve("dopri5", T_OUT, rtol=1e-6, options=options)
    nat = pn.solve(oscillator, np.array([1.0, 0.0]), np.array(T_OUT), P, rtol=1e-6, atol=1e-9, options=options)
    assert (nat.n_accepted[0], nat.n_rejected[0]) == (py.stats.n_accepted, py.stats.n_rejected)
    np.testing.assert_allclose(nat.ys, py.ys.numpy(), rtol=PARITY_TOL, atol=PARITY_TOL)


def kicked(t, y, dy, p):
    """The oscillator with a forcing that switches on at t = 1.5 (a jump in f)."""
    dy[0] = y[1]
    dy[1] = -p[0] * y[0] - p[1] * y[1] + (1.0 if t > 1.5 else 0.0)


def kicked_torch(t, y):
    return torch.stack([y[1], -P[0] * y[0] - P[1] * y[1] + (t > 1.5).to(y.dtype)])


@pytest.mark.parametrize("method", ["dopri5", "fehlberg2", "dopri8"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_step_t_and_jump_t_same_as_python(method, sign):
    t = [sign * x for x in T_OUT]
    options = {"step_t": [sign * 0.7, sign * 3.1], "jump_t": [sign * 1.5]}
    py = pyode.solve(kicked_torch if sign > 0 else lambda s, y: kicked_torch(-s, y), torch.tensor([1.0, 0.0],
                     dtype=torch.float64), torch.tensor(t, dtype=torch.float64), method=method, rtol=1e-6, atol=1e-9,
                     options=options)
    rhs = kicked if sign > 0 else kicked_reversed
    nat = pn.solve(rhs, np.array([1.0, 0.0]), np.array(t), P, method=method, rtol=1e-6, atol=1e-9, options=options)
    assert (nat.n_accepted[0], nat.n_rejected[0], nat.n_feval[0]) == (py.stats.n_accepted, py.stats.n_rejected,
                                                                      py.stats.nfe)
    np.testing.assert_allclose(nat.ys, py.ys.numpy(), rtol=PARITY_TOL, atol=PARITY_TOL)


def kicked_reversed(t, y, dy, p):
    """``kicked`` at -t (its switch at t = -1.5), for solves over negative, decreasing times."""
    dy[0] = y[1]
    dy[1] = -p[0] * y[0] - p[1] * y[1] + (1.0 if -t > 1.5 else 0.0)


def test_reverse_time_same_as_python():
    t = T_OUT[::-1]
    py = _python_solve("tsit5", t)
    nat = pn.solve(oscillator, np.array([1.0, 0.0]), np.array(t), P, method="tsit5", rtol=1e-7, atol=1e-9)
    assert (nat.n_accepted[0], nat.n_rejected[0]) == (py.stats.n_accepted, py.stats.n_rejected)
    np.testing.assert_allclose(nat.ys, py.ys.numpy(), rtol=PARITY_TOL, atol=PARITY_TOL)
    assert nat.t_reached[0] == 0.0


@pytest.mark.parametrize("method,interp", [("euler", "linear"), ("midpoint", "linear"), ("rk4", "linear"),
                                           ("heun3", "cubic")])
def test_fixed_grid_same_as_python(method, interp):
    options = {"step_size": 0.07, "interp": interp}  # does not divide the span: a short last step
    py = _python_solve(method, T_OUT, options=options)
    nat = pn.solve(oscillator, np.array([1.0, 0.0]), np.array(T_OUT), P, method=method, options=options)
    assert nat.n_accepted[0] == py.stats.n_accepted and nat.n_feval[0] == py.stats.nfe
    np.testing.assert_allclose(nat.ys, py.ys.numpy(), rtol=PARITY_TOL, atol=PARITY_TOL)


@pytest.mark.parametrize("method,options", [
    ("explicit_adams", {"step_size": 0.02, "max_order": 5}),
    ("implicit_adams", {"step_size": 0.02}),                       # up to 11 past derivatives, a short last step
    ("alf", {"step_size": 0.05}),
    ("alf", {}),                                                   # one step per output interval
])
def test_adams_and_alf_same_as_python(method, options):
    """The grid kinds that are not a tableau (Adams with its past derivatives, ALF with its v) take the Python
    loop's steps natively too."""
    py = _python_solve(method, T_OUT, options=options, rtol=1e-7, atol=1e-9)
    nat = pn.solve(oscillator, np.array([1.0, 0.0]), np.array(T_OUT), P, method=method, rtol=1e-7, atol=1e-9,
                   options=options)
    assert nat.n_accepted[0] == py.stats.n_accepted and nat.n_feval[0] == py.stats.nfe
    np.testing.assert_allclose(nat.ys, py.ys.numpy(), rtol=PARITY_TOL, atol=PARITY_TOL)
    with pytest.raises(ValueError, match="explicit methods only"):
        pn.solve(oscillator, np.array([1.0, 0.0]), np.array(T_OUT), P, method=method, options=options, device="cuda")


def test_rk4_converges_at_order_four():
    # y' = -y, exact e^-t: the error at t = 1 falls 16x per halving of the step (slope 4 +- 0.3).
    errors = []
    for h in (0.1, 0.05, 0.025):
        ys = pn.solve(decay, np.array([1.0]), np.array([0.0, 1.0]), np.array([1.0]), method="rk4",
                      options={"step_size": h}).ys
        errors.append(abs(ys[-1, 0] - math.exp(-1.0)))
    slopes = np.diff(np.log(errors)) / np.diff(np.log([0.1, 0.05, 0.025]))
    assert np.all(np.abs(slopes - 4.0) < 0.3), slopes


@pytest.mark.parametrize("method", ["dopri5", "dopri8", "tsit5"])
def test_accuracy_exact_and_scipy(method):
    scipy_integrate = pytest.importorskip("scipy.integrate")
    t = np.linspace(0.0, 5.0, 11)
    nat = pn.solve(oscillator, np.array([1.0, 0.0]), t, P, method=method, rtol=1e-10, atol=1e-12)
    ref = scipy_integrate.solve_ivp(lambda s, y: [y[1], -P[0] * y[0] - P[1] * y[1] + math.sin(s)], (0, 5),
                                    [1.0, 0.0], method="DOP853", t_eval=t, rtol=1e-12, atol=1e-14)
    # rtol 1e-10 per step, ~100-1000 steps on a damped problem: the global error stays below ~1e-8.
    np.testing.assert_allclose(nat.ys, ref.y.T, atol=1e-8)
    exact = pn.solve(decay, np.array([1.0]), t, np.array([0.7]), method=method, rtol=1e-10, atol=1e-12).ys[:, 0]
    np.testing.assert_allclose(exact, np.exp(-0.7 * t), rtol=1e-8)


def test_ensemble_rows_are_independent_solves():
    rates = np.linspace(0.1, 5.0, 40)[:, None]
    t = np.array([0.0, 0.5, 2.0])
    ens = pn.solve(decay, np.ones(1), t, rates, rtol=1e-8, atol=1e-10, options={"num_threads": 2})
    assert ens.ys.shape == (3, 40, 1) and ens.success
    np.testing.assert_allclose(ens.ys[:, :, 0], np.exp(-rates[:, 0][None] * t[:, None]), rtol=1e-6)
    # Each row its own step size: counters differ across rows and equal a solve of that row alone, bitwise.
    assert len(set(ens.n_accepted.tolist())) > 1
    for r in (0, 17, 39):
        one = pn.solve(decay, np.ones(1), t, rates[r], rtol=1e-8, atol=1e-10)
        assert one.n_accepted[0] == ens.n_accepted[r]
        np.testing.assert_array_equal(one.ys, ens.ys[:, r])
    single = pn.solve(decay, np.ones(1), t, rates, rtol=1e-8, atol=1e-10, options={"num_threads": 1})
    np.testing.assert_array_equal(single.ys, ens.ys)


def sqrt_decay(t, y, dy, p):
    dy[0] = -math.sqrt(p[0]) * y[0]  # NaN for p < 0


def test_failing_trajectory_does_not_stop_others():
    rates = np.array([[1.0], [-1.0], [2.0]])
    ens = pn.solve(sqrt_decay, np.ones(1), np.array([0.0, 1.0]), rates)
    assert ens.status_names() == ["success", "non_finite", "success"]
    assert np.isnan(ens.ys[1, 1, 0]) and not ens.success
    np.testing.assert_allclose(ens.ys[1, [0, 2], 0], np.exp(-np.sqrt([1.0, 2.0])), rtol=1e-6)
    with pytest.raises(NonFiniteStateError, match="trajectory 1"):
        pn.solve(sqrt_decay, np.ones(1), np.array([0.0, 1.0]), rates, raise_on_failure=True)
    with pytest.raises(NonFiniteStateError) as info:  # one trajectory raises by default
        pn.solve(sqrt_decay, np.ones(1), np.array([0.0, 1.0]), np.array([-1.0]))
    assert info.value.t_reached == 0.0
    with pytest.raises(MaxStepsError):
        pn.solve(oscillator, np.array([1.0, 0.0]), np.array(T_OUT), P, options={"max_num_steps": 5})


def height(t, y, p):
    return y[0]


def fall(t, y, dy, p):
    dy[0] = y[1]
    dy[1] = -p[0]


def test_event_same_as_python_and_per_trajectory():
    g = 9.81

    def fall_torch(t, y):
        return torch.stack([y[1], torch.full_like(y[0], -g)])

    py = pyode.solve(fall_torch, torch.tensor([10.0, 0.0], dtype=torch.float64),
                     torch.tensor([0.0, 5.0], dtype=torch.float64), event_fn=lambda t, y: y[0], atol=1e-9, rtol=1e-7)
    nat = pyode.solve(pn.rhs(fall, params=np.array([g])), torch.tensor([10.0, 0.0], dtype=torch.float64),
                      torch.tensor([0.0, 5.0], dtype=torch.float64), event_fn=height, atol=1e-9, rtol=1e-7)
    assert abs(float(nat.event_t) - float(py.event_t)) < 1e-12
    np.testing.assert_allclose(nat.ys.numpy(), py.ys.numpy(), atol=1e-10)
    assert nat.stats.n_accepted == py.stats.n_accepted
    # An ensemble of drop heights: each trajectory stops at its own time sqrt(2 h / g), outputs after it NaN.
    heights = np.array([[1.0, 0.0], [5.0, 0.0], [20.0, 0.0]])
    ens = pn.solve(fall, heights, np.array([0.0, 0.2, 1.5, 3.0]), np.array([g]), event=height, atol=1e-10)
    np.testing.assert_allclose(ens.event_t, np.sqrt(2 * heights[:, 0] / g), atol=1e-8)
    assert ens.status_names() == ["event"] * 3
    assert np.isnan(ens.ys[2, 0, 0]) and not np.isnan(ens.ys[2, 2, 0])
    np.testing.assert_allclose(ens.y_event[:, 0], 0.0, atol=1e-7)


def test_njit_objective_calls_the_solver():
    from pyode.native.nopython import pack, solve_into

    addr = pn.compile_rhs(oscillator, 2, 2).address
    packed = pack("dopri5", rtol=1e-8, atol=1e-10)
    t = np.array(T_OUT)
    y0 = np.array([1.0, 0.0])

    @numba.njit
    def objective(p):
        ys = np.empty((t.size, 1, 2))
        stats = np.empty((1, 6))
        rc = solve_into(packed, addr, y0, p, t, ys, stats)
        return (ys[:, 0, 0] ** 2).sum(), rc, stats

    value, rc, stats = objective(P)
    ref = pn.solve(oscillator, y0, t, P, rtol=1e-8, atol=1e-10)
    assert rc == 0 and stats[0, 0] == 0 and stats[0, 3] == ref.n_accepted[0]
    assert value == (ref.ys[:, 0] ** 2).sum()

    fall_addr, height_addr = pn.compile_rhs(fall, 2, 1).address, pn.compile_event(height, 2, 1).address
    packed_ev = pack("dopri5", rtol=1e-7, atol=1e-9, options={"max_num_steps": 2**63 - 1})  # no limit
    drops = np.array([[1.0, 0.0], [5.0, 0.0]])

    @numba.njit
    def landing_times(g):
        ys = np.empty((2, 2, 2))
        stats = np.empty((2, 6))
        solve_into(packed_ev, fall_addr, drops, g, np.array([0.0, 10.0]), ys, stats, height_addr)
        return stats[:, 2]

    ref_ev = pn.solve(fall, drops, np.array([0.0, 10.0]), np.array([9.81]), event=height, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(landing_times(np.array([9.81])), ref_ev.event_t)


def test_torch_api_and_types():
    rhs = pn.rhs(oscillator, params=torch.tensor(P))
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.tensor(T_OUT, dtype=torch.float64)
    ys = pyode.odeint(rhs, y0, t)
    ref = pn.solve(oscillator, np.array([1.0, 0.0]), np.array(T_OUT), P, rtol=1e-7, atol=1e-9)
    assert isinstance(ys, torch.Tensor)
    np.testing.assert_array_equal(ys.numpy(), ref.ys)
    y32 = pn.solve(oscillator, torch.tensor([1.0, 0.0]), t, torch.tensor(P)).ys
    assert y32.dtype == torch.float32 and y32.shape == (len(T_OUT), 2)
    with pytest.raises(ValueError, match="adjoint"):
        pyode.odeint(rhs, y0.clone().requires_grad_(), t)
    with pytest.raises(ValueError, match="no autograd"):
        pyode.odeint(rhs, y0, t, gradient="adjoint")


def test_foreign_pointers_checked_before_any_call():
    import cffi

    ffi = cffi.FFI()
    cf = pn.compile_rhs(oscillator, 2, 2).keepalive
    ptr = ffi.cast("void(*)(double, double *, double *, double *)", cf.address)
    a = pn.solve(ptr, np.array([1.0, 0.0]), np.array(T_OUT), P)
    b = pn.solve(cf, np.array([1.0, 0.0]), np.array(T_OUT), P)
    np.testing.assert_array_equal(a.ys, b.ys)
    wrong = ffi.cast("double(*)(double, double *, double *)", cf.address)
    with pytest.raises(TypeError, match="function pointer of type"):
        pn.solve(wrong, np.array([1.0, 0.0]), np.array(T_OUT), P)
    wrong_cf = numba.cfunc("float64(float64, CPointer(float64))")(lambda t, y: t)
    with pytest.raises(TypeError, match="signature"):
        pn.solve(wrong_cf, np.array([1.0, 0.0]), np.array(T_OUT), P)


def not_numba(t, y, dy, p):
    dy[0] = {"a": y}  # a dict of arrays assigned to a float: numba cannot type it


def test_bad_input_messages():
    y0, t = np.array([1.0, 0.0]), np.array(T_OUT)
    with pytest.raises(TypeError, match=r"not_numba.*numba says"):
        pn.solve(not_numba, y0, t)
    with pytest.raises(ValueError, match=r"y0 must have shape \(n,\)"):
        pn.solve(oscillator, np.ones((2, 2, 2)), t, P)
    with pytest.raises(ValueError, match="params has 3 rows but y0 has 2"):
        pn.solve(oscillator, np.ones((2, 2)), t, np.ones((3, 2)))
    with pytest.raises(ValueError, match="strictly increasing"):
        pn.solve(oscillator, y0, np.array([0.0, 1.0, 1.0]), P)
    with pytest.raises(ValueError, match="unknown option"):
        pn.solve(oscillator, y0, t, P, options={"stepsize": 0.1})
    with pytest.raises(ValueError, match="per_sample"):
        pn.solve(oscillator, y0, t, P, options={"per_sample": True})
    with pytest.raises(ValueError, match="step_size"):
        pn.solve(oscillator, y0, t, P, method="rk4")
    with pytest.raises(ValueError, match="unknown method"):
        pn.solve(oscillator, y0, t, P, method="radau")


@pytest.mark.parametrize(("t", "match"), [
    ([0.0, 1.0, 1.0], r"strictly increasing or strictly decreasing \(no repeated times\): t\[1\] = 1, t\[2\] = 1"),
    ([1.0, 0.5, 0.7], r"strictly .*: t\[1\] = 0.5, t\[2\] = 0.69999"),  # direction from the first pair
    ([0.0, 2.0, 1.0, 3.0], r"strictly .*: t\[1\] = 2, t\[2\] = 1"),  # monotonic ends, not between
    ([0.0, 0.0], r"strictly .*: t\[0\] = 0, t\[1\] = 0"),
    ([0.0, math.nan, 1.0], r"t contains NaN or inf \(t\[1\] = nan\)"),  # inside finite, increasing ends
    ([0.0, 1.0, math.inf], r"t contains NaN or inf \(t\[2\] = inf\)"),  # increasing, infinite end
    ([math.inf, 1.0, 0.0], r"t contains NaN or inf \(t\[0\] = inf\)"),
    ([math.nan], r"t contains NaN or inf"),
])
def test_bad_output_times(t, match):
    """The vectorised check of t (ends and differences) against each way t can be bad, with its message."""
    with pytest.raises(ValueError, match=match):
        pn.solve(oscillator, np.array([1.0, 0.0]), np.array(t), P)


def test_stats_layout_matches_header():
    """The record array the C solver fills (and the result's per-trajectory arrays view) has pyode_traj_stats'
    layout: the same size and field offsets as the header's struct."""
    from pyode.native._solve import _STATS_DTYPE

    ffi, _ = pn._lib.load()
    assert _STATS_DTYPE.itemsize == ffi.sizeof("pyode_traj_stats")
    for name in _STATS_DTYPE.names:
        assert _STATS_DTYPE.fields[name][1] == ffi.offsetof("pyode_traj_stats", name), name


def test_c_entry_checks_sizes():
    ffi, lib = pn._lib.load()
    from pyode.native.nopython import pack

    packed = pack("dopri5")

    def d(a):
        return ffi.from_buffer("double[]", a)

    ys, stats = np.zeros(3), np.zeros(6)  # too short for 2 times x 2 states
    addr = pn.compile_rhs(oscillator, 2, 2).address
    rc = lib.pyode_solve_packed(d(packed), packed.size, addr, 0, 1, 2, 2, 0,
                                d(np.ones(2)), 2, d(P.copy()), 2,
                                d(np.array([0.0, 1.0])), 2, d(ys), ys.size,
                                d(stats), stats.size)
    assert rc == -1 and "ys" in ffi.string(lib.pyode_last_error()).decode()
    assert np.all(ys == 0.0)  # nothing written
    rc = lib.pyode_solve_packed(d(packed), 10, addr, 0, 1, 2, 2, 0, ffi.NULL, 0, ffi.NULL, 0,
                                ffi.NULL, 0, ffi.NULL, 0, d(stats), 6)
    assert rc == -1 and "packed" in ffi.string(lib.pyode_last_error()).decode()


def test_cancel_flag_stops_every_trajectory():
    from pyode.native import _solve

    ffi, _ = pn._lib.load()
    prob = pn._arrays.Problem.build(np.array([1.0, 0.0]), np.array(T_OUT), P)
    plan = _solve._build_plan(oscillator, None, None, "dopri5", None, 1e-7, 1e-9, prob)  # uncached: ours alone
    flag = ffi.new("int32_t *", 1)  # already set: the solve stops before its first step
    plan.options.cancel = flag
    out = plan.run(prob)
    assert out.status_names() == ["cancelled"] and out.n_accepted[0] == 0
    np.testing.assert_array_equal(out.ys[0], [1.0, 0.0])
    assert np.isnan(out.ys[1:]).all()


@pytest.mark.parametrize("params", ["(200, 1)", "(1,)"], ids=["ensemble", "single"])
def test_ctrl_c_interrupts_a_long_solve(params):
    import queue
    import signal
    import subprocess
    import sys
    import textwrap
    import threading
    import time

    # 200 trajectories to t = 1e5, or one to t = 1e9, at rtol 1e-12: hours of work. SIGINT must stop the C call
    # with KeyboardInterrupt (the loop checks at every step), and the handler the library wrapped for the call
    # must be Python's again afterwards: a second solve is interrupted too (its SIGINT reaches Python).
    script = textwrap.dedent(f"""
        import numpy as np, pyode.native as pn, signal
        def f(t, y, dy, p):
            dy[0] = y[1]
            dy[1] = -p[0] * y[0]
        pn.solve(f, np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.ones(1))  # compile first
        t_end = 1e5 if {params} != (1,) else 1e9
        for attempt in range(2):
            try:
                print("started", flush=True)
                pn.solve(f, np.array([1.0, 0.0]), np.array([0.0, t_end]), np.ones({params}), rtol=1e-12,
                         atol=1e-14, options={{"max_num_steps": 2**62}})
                print("finished", flush=True)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
        print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in proc.stdout], daemon=True).start()
    try:
        for _ in range(2):
            assert lines.get(timeout=120) == "started"
            time.sleep(0.5)  # let it enter the C call
            proc.send_signal(signal.SIGINT)
            assert lines.get(timeout=120) == "interrupted"  # (a hang here would be the bug: no time limit)
        assert lines.get(timeout=120) == "True"
    finally:
        proc.kill()


def test_no_params_njit_rhs_and_torch_ensembles():
    @numba.njit
    def rotate(t, y, dy, p):
        dy[0] = -y[1]
        dy[1] = y[0]

    t = np.linspace(0.0, 2.0, 5)
    y0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    sol = pn.solve(rotate, y0, torch.tensor(t), rtol=1e-10, atol=1e-12)
    assert isinstance(sol.ys, torch.Tensor) and sol.ys.shape == (5, 2, 2)
    exact = np.stack([np.cos(t), np.sin(t)], axis=1)  # the first row: (cos t, sin t)
    np.testing.assert_allclose(sol.ys[:, 0].numpy(), exact, atol=1e-8)
    np.testing.assert_allclose(sol.ys[:, 1].numpy(), 2 * np.stack([-np.sin(t), np.cos(t)], axis=1), atol=1e-8)


def test_typed_entry_refuses_a_foreign_options_struct():
    from pyode.native import _solve

    prob = pn._arrays.Problem.build(np.array([1.0, 0.0]), np.array(T_OUT), P)
    plan = _solve._build_plan(oscillator, None, None, "dopri5", None, 1e-7, 1e-9, prob)  # uncached: ours alone
    plan.options.struct_size = 8  # a caller compiled against another layout
    with pytest.raises(ValueError, match="struct_size"):
        plan.run(prob)


def test_native_call_checks_every_array_against_the_problem():
    # pyode._C.NativeCall.run is the one door from Python into the solver: each array is checked against the sizes
    # the solver will touch (never read or written out of bounds), its dtype and its layout.
    from pyode.native import _solve

    prob = pn._arrays.Problem.build(np.array([1.0, 0.0]), np.array(T_OUT), P)
    plan = _solve._build_plan(oscillator, None, None, "dopri5", None, 1e-7, 1e-9, prob)
    T = len(T_OUT)

    def run(y0=prob.y0, params=prob.params, t=prob.t, ys=None, stats=None, M=1, n=2):
        ys = np.empty((T, 1, 2)) if ys is None else ys
        stats = np.zeros(1, dtype=_solve._STATS_DTYPE) if stats is None else stats
        return plan.call.run(y0, M, n, params, 2, 0, t, ys, None, stats, False)

    assert run() == 0
    for kwargs, message in [({"ys": np.empty((T - 1, 1, 2))}, "ys is shorter"),
                            ({"y0": np.zeros((1, 1))}, "y0 is shorter"),
                            ({"params": np.zeros(1)}, "params is shorter"),
                            ({"y0": np.zeros((1, 2), dtype=np.float32)}, "y0 must be float64"),
                            ({"t": np.repeat(np.array(T_OUT), 2)[::2]}, "t must be C-contiguous"),
                            ({"stats": np.zeros(1)}, "stats must be"),
                            ({"M": 2}, "y0 is shorter")]:
        with pytest.raises(ValueError, match=message):
            run(**kwargs)
    readonly = np.empty((T, 1, 2))
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="ys must be writable"):
        run(ys=readonly)
