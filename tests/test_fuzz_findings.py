"""Every case the fuzzer of issue 20 found (two hangs, two uninitialised outputs, backend disagreements, unclear
errors), each on the compiled and on the reference backend, and per-sample in both its fused and tensor-op rounds.

A hang fails fast: every test runs under the ``watchdog`` fixture (SIGALRM, ``WATCHDOG_S``); the loops are Python
between kernel calls, so the alarm interrupts them. The random search itself is ``tests/test_fuzz.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

import pyode
from pyode import _kernels
from pyode._kernels import reference

WATCHDOG_S = 20  # each case takes well under a second; a hang would run for hours
F64, F32 = torch.float64, torch.float32
T3 = torch.linspace(0, 1, 3, dtype=F64)
COMPILED = pyode.backend_info()["cpu_backend"] == "cpu"

pytestmark = pytest.mark.usefixtures("watchdog")


@pytest.fixture(params=["cpu", "reference"])
def backend(request, monkeypatch):
    """Runs the test on the compiled backend and on the pure-torch reference."""
    if request.param == "cpu" and not COMPILED:
        pytest.skip("compiled CPU backend not built")
    monkeypatch.setenv("PYODE_BACKEND", request.param)
    return request.param


@pytest.fixture(params=["fused", "tensor_ops"])
def rounds(request, monkeypatch):
    """Per-sample solves through the fused C++ rounds (where the backend has them) and the tensor-op rounds."""
    from pyode._solvers import per_sample

    if request.param == "tensor_ops":
        monkeypatch.setattr(per_sample.PerSampleLoop, "_rows_ok", lambda self, *args: False)
    return request.param


def per_sample(**options):
    return {"per_sample": True, **options}


# ---- hangs --------------------------------------------------------------------------------------------------

def grows(t, y):
    return 100 * y


@pytest.mark.parametrize("max_num_steps", [None, 2**70])
def test_float32_state_that_overflows_raises_instead_of_creeping(backend, max_num_steps):
    """y' = 100 y from 1e30 in float32: f overflows once y passes 3.4e36 (t = 0.1504). Steps small enough to keep
    f finite no longer change y in float32, so t crept on by ~1e-10 per step for ever; it must raise there."""
    options = {} if max_num_steps is None else {"max_num_steps": max_num_steps}
    with pytest.raises(pyode.NonFiniteStateError, match="overflows torch.float32") as info:
        pyode.odeint(grows, torch.full((4,), 1e30), T3, options=options)
    assert info.value.reason == "non_finite"
    assert abs(info.value.t_reached - math.log(3.4028e38 / 100 / 1e30) / 100) < 1e-3  # where f overflows


def test_float32_overflow_per_sample_raises_naming_the_row(backend, rounds):
    """Per sample the stage sums (sum_j a_ij k_j, then times h) overflow a little earlier than the joint loop's
    weights (h a_ij): the row fails at t ~ 0.127 on both backends, both rounds, as a NaN/inf state."""
    y0 = torch.tensor([[1.0], [1e30], [1.0]])
    with pytest.raises(pyode.NonFiniteStateError, match="batch row 1: ") as info:
        pyode.odeint(grows, y0, T3, options=per_sample())
    assert 0.12 < info.value.t_reached < 0.16


def wall(t, y):
    """y' = 1 until y reaches 1, then inf: y stops at the last float below 1 and creeps no further."""
    return torch.where(y < 1, torch.ones_like(y), torch.full_like(y, math.inf))


@pytest.mark.parametrize("options", [{}, per_sample()], ids=["joint", "per_sample"])
def test_state_stuck_below_a_singularity_raises(backend, rounds, options):
    """The StallWatch rule on every path: steps that change y make f inf, smaller ones leave y unchanged."""
    with pytest.raises(pyode.NonFiniteStateError, match="cannot make progress") as info:
        pyode.odeint(wall, torch.full((2, 1), 0.9), T3, options=options)
    assert 0.0999 < info.value.t_reached <= 0.1


def stiff_decay(t, y):
    return -500 * y


def test_per_sample_rejected_step_that_cannot_shrink_raises_like_the_joint_solve(backend, rounds):
    """min_step = 0.4 on y' = -500 y: every step is rejected and cannot shrink. Per-sample rows looped for ever
    (t_reached 0 after 100 000 rounds); the joint solve raises at once."""
    y0 = torch.ones(3, 2, dtype=F64)
    with pytest.raises(pyode.StepSizeUnderflowError, match="cannot shrink"):
        pyode.odeint(stiff_decay, y0, T3, options={"min_step": 0.3})
    with pytest.raises(pyode.StepSizeUnderflowError, match="batch row 0: .*cannot shrink") as info:
        pyode.odeint(stiff_decay, y0, T3, options=per_sample(min_step=0.4, max_step=0.5))
    assert info.value.t_reached == 0.0


# ---- the PID controller per sample ---------------------------------------------------------------------------

def van_der_pol(t, y):
    x, v = y[:, 0], y[:, 1]
    return torch.stack([v, 5.0 * (1 - x * x) * v - x], -1)


PID = {"pcoeff": 0.2, "icoeff": 0.4, "dcoeff": 0.1}


def test_per_sample_rows_use_the_pid_coefficients(backend, rounds):
    """pcoeff/icoeff/dcoeff were ignored per sample. A batch of one now takes exactly the joint solve's steps
    with the same controller (same accepts and rejects), and other coefficients take other steps."""
    y0 = torch.tensor([[2.0, 0.0]], dtype=F64)
    t = torch.linspace(0, 4, 9, dtype=F64)
    kw = {"rtol": 1e-7, "atol": 1e-9}
    for options in ({}, PID):
        joint = pyode.solve(lambda t, y: van_der_pol(t.expand(1), y), y0, t, options=options, **kw)
        rows = pyode.solve(van_der_pol, y0, t, options=per_sample(**options), **kw)
        assert (rows.stats.n_accepted, rows.stats.n_rejected) == (joint.stats.n_accepted, joint.stats.n_rejected)
        # the same steps in another summation order: a few ulps per step, over ~100 steps of an O(1) state
        torch.testing.assert_close(rows.ys, joint.ys, rtol=1e-10, atol=1e-10)
    default = pyode.solve(van_der_pol, y0, t, options=per_sample(), **kw)
    assert (default.stats.n_accepted, default.stats.n_rejected) != (rows.stats.n_accepted, rows.stats.n_rejected)


@pytest.mark.skipif(not COMPILED, reason="compiled CPU backend not built")
def test_fused_rounds_apply_the_same_pid_controller_as_the_tensor_op_rounds(monkeypatch):
    """The C++ controller (controller.h) against the Python formula (controller.step_factor): same steps per row."""
    from pyode._solvers import per_sample as module

    y0 = torch.tensor([[2.0, 0.0], [1.0, 1.0], [-1.5, 0.5]], dtype=F64)
    t = torch.linspace(0, 4, 9, dtype=F64)
    fused = pyode.solve(van_der_pol, y0, t, rtol=1e-7, atol=1e-9, options=per_sample(**PID))
    monkeypatch.setattr(module.PerSampleLoop, "_rows_ok", lambda self, *args: False)
    ops = pyode.solve(van_der_pol, y0, t, rtol=1e-7, atol=1e-9, options=per_sample(**PID))
    assert torch.equal(fused.stats.per_sample_accepted, ops.stats.per_sample_accepted)
    assert torch.equal(fused.stats.per_sample_rejected, ops.stats.per_sample_rejected)
    torch.testing.assert_close(fused.ys, ops.ys, rtol=1e-12, atol=1e-12)


def test_controller_formula_on_floats_and_tensors_agrees():
    """step_factor is written once over two arithmetic namespaces; both give the same factors, ratios of 0,
    NaN and 1e300 included, and no gain within the validated range overflows."""
    from pyode._solvers.controller import FLOAT_OPS, TENSOR_OPS, pid_gains, step_factor

    ratios = [0.0, 1e-12, 0.3, 1.0, 1.7, 1e300, math.nan, math.inf]
    for coefficients in [(0.0, 1.0, 0.0), (0.2, 0.4, 0.1), (10.0, -10.0, 10.0), (-10.0, 10.0, 10.0)]:
        gains = pid_gains(5, *coefficients)
        for prev1, prev2 in [(1.0, 1.0), (1e-10, 0.5)]:
            for accepted in (True, False):
                want = [step_factor(FLOAT_OPS, gains, r, prev1, prev2, accepted) for r in ratios]
                r = torch.tensor(ratios, dtype=F64)
                got = step_factor(TENSOR_OPS, gains, r, torch.full_like(r, prev1), torch.full_like(r, prev2),
                                  torch.full(r.shape, accepted))
                # torch's vectorised log/exp may differ from libm's by an ulp
                torch.testing.assert_close(got, torch.tensor(want, dtype=F64), rtol=4e-16, atol=0)
                assert all(gains.dfactor <= f <= gains.ifactor for f in want)


def test_rejected_step_shrinks_at_least_ten_percent_even_with_safety_one():
    """safety = 1 gave factor 1 - 4e-13 after a rejection whose ratio sat a hair above 1 (float32 noise): the
    reference backend retried the same step for ever while the compiled one escaped by luck. Rejected steps
    now shrink by at least min(safety, 0.9), as diffrax's controller does, unless dfactor says otherwise."""
    from pyode._solvers.controller import FLOAT_OPS, pid_gains, step_factor

    assert step_factor(FLOAT_OPS, pid_gains(5, 0.0, 1.0, 0.0, safety=1.0), 1.0 + 7e-13, 1.0, 1.0, False) == 0.9
    assert step_factor(FLOAT_OPS, pid_gains(5, 0.0, 1.0, 0.0, dfactor=0.95), 1.5, 1.0, 1.0, False) == 0.95
    assert step_factor(FLOAT_OPS, pid_gains(5, 0.0, 1.0, 0.0, safety=1.0), 0.5, 1.0, 1.0, True) > 1.0


def test_float32_stiff_solve_with_safety_one_finishes(backend, rounds):
    def stiff(t, y):
        t = t.reshape(-1, 1) if t.dim() else t  # per sample: one time per row
        return -1e3 * (y - torch.cos(t))

    y0 = torch.full((2, 3), 1e30)
    t = torch.tensor([0.0, 0.2], dtype=F64)
    for options in ({"safety": 1.0}, per_sample(safety=1.0)):
        ys = pyode.odeint(stiff, y0, t, method="adaptive_heun", rtol=1e-3, atol=1e-5, options=options)
        # y -> cos(t) + O(1e-3): 1e30 decays by e^-200 on the way; float32 and rtol 1e-3 bound the error
        torch.testing.assert_close(ys[-1], torch.full((2, 3), math.cos(0.2)), rtol=0, atol=2e-2)


def test_a_step_shortened_to_a_step_t_point_lands_on_it_exactly(backend):
    """From t = 0.0100935912..., t + (0.15 - t) is 0.15 - 2.8e-17: the solver landed one ulp short of the
    step_t point, then took a 2.8e-17 step and restarted from there (8 extra steps; with a small ifactor the next
    step fell below the resolution of t and raised StepSizeUnderflowError: fuzz case 2026/4819)."""
    t = torch.tensor([0.0, 1.0], dtype=F64)
    options = {"first_step": 0.01009359120320126, "ifactor": 100.0, "step_t": [0.15]}
    sol = pyode.solve(lambda t, y: torch.zeros_like(y), torch.ones(2, dtype=F64), t, options=options)
    assert sol.stats.n_accepted == 3  # 0 -> 0.0101 -> 0.15 -> 1 (f = 0: every step is accepted, grows 100x)


def test_a_step_that_would_leave_a_sliver_before_t_end_stretches_to_it(backend, rounds):
    """f = 1 with steps of 0.1 (first_step = max_step) to t = 0.8: seven steps reach 0.7999999999999999, one ulp
    short, and an eighth step of 1.1e-16 followed (with a shrinking controller the step after such a sliver is
    a step underflow at t_end). The seventh step now stretches to 0.8: 8 steps, the same in every loop."""
    t = torch.tensor([0.0, 0.8], dtype=F64)
    options = {"first_step": 0.1, "max_step": 0.1}
    sol = pyode.solve(lambda t, y: torch.ones_like(y), torch.zeros(2, dtype=F64), t, options=options)
    assert sol.stats.n_accepted == 8 and sol.stats.t_reached == 0.8
    batch = pyode.solve(lambda t, y: torch.ones_like(y), torch.zeros(3, 2, dtype=F64), t,
                        options={**options, "per_sample": True})
    assert batch.stats.n_accepted == 3 * 8 and batch.stats.t_reached == 0.8
    torch.testing.assert_close(batch.ys[-1], torch.full((3, 2), 0.8, dtype=F64), rtol=0, atol=4 * 2.0 ** -52)


# ---- uninitialised memory -----------------------------------------------------------------------------------

def test_lincomb_op_refuses_meta_and_complex_weights_naming_them():
    k = torch.ones(4, dtype=F64)
    with pytest.raises(ValueError, match="weights is a meta tensor"):
        torch.ops.pyode.lincomb(None, [k], torch.ones(1, 1, dtype=F64, device="meta"))
    with pytest.raises(TypeError, match="weights must be a real floating-point"):
        torch.ops.pyode.lincomb(None, [k], torch.ones(1, 1, dtype=torch.complex128))
    with pytest.raises(TypeError, match="weights must be a real floating-point"):
        torch.ops.pyode.lincomb(None, [k], torch.ones(1, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="base is torch.float64 .* on meta"):
        torch.ops.pyode.lincomb(torch.ones(4, dtype=F64, device="meta"), [k], torch.ones(1, 1, dtype=F64))
    # meta terms with host weights: shape inference (a meta result), never values read from nowhere
    out = torch.ops.pyode.lincomb(None, [k.to("meta")], torch.ones(2, 1, dtype=F64))
    assert out.is_meta and out.shape == (2, 4)


def test_rk_finish_without_terms_returns_y0(backend):
    """No terms: y1 = y0. The compiled backend read the empty b as "y1 given" and returned a fresh, unwritten
    buffer (3.1e23 seen)."""
    y0 = torch.arange(1.0, 5.0, dtype=F64)
    y1, norm, seg = _kernels.rk_finish(y0, [], [], None, 1e-8, 1e-6)
    assert torch.equal(y1, y0) and y1.data_ptr() != y0.data_ptr() and norm == 0.0 and seg is None
    y1, norm, seg = _kernels.rk_finish(y0, [], [], [], 1e-8, 1e-6, _kernels.Segments([0, 1, 4]))
    assert torch.equal(y1, y0) and norm == 0.0 and torch.equal(seg, torch.zeros(2, dtype=F64))


def test_every_empty_kernel_path_writes_its_output(backend):
    """The audit of the same class of bug: every zero-size path (no terms, no rows, no elements) gives what
    the reference gives, exactly."""
    x = torch.arange(4.0, dtype=F64)
    empty = torch.zeros(0, dtype=F64)
    cases = [
        lambda kern: kern.lincomb(None, [x], [[0.0]] * 3),
        lambda kern: kern.lincomb(x, [], [[], []]),
        lambda kern: kern.lincomb(None, [x], []),
        lambda kern: kern.lincomb(empty, [empty], [[2.0]]),
        lambda kern: kern.rk_finish(x, None, [], [], [], 1e-6, 1e-6, None),
        lambda kern: kern.rk_finish(empty, None, [empty], [1.0], [1.0], 1e-6, 1e-6, None),
        lambda kern: kern.rk_finish(x, None, [x], [0.5], [0.1], 1e-6, 1e-6, _kernels.Segments([0, 0, 4, 4])),
        lambda kern: kern.scaled_norm(empty, None, empty, 1e-6, 1e-6),
    ]
    kern = _kernels.get_backend(torch.device("cpu"))
    for case in cases:
        got, want = case(kern), case(reference)
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            if isinstance(w, torch.Tensor):
                assert g.shape == w.shape and torch.equal(g, w)
            else:
                assert g == w


def test_float32_error_norm_whose_squares_overflow_matches_the_reference(backend):
    """A float32 scaled error of 1e20 squares to inf in float32; the norm must be its finite double value
    (the compiled kernels summed squares in float32 and disagreed with the reference: NaN-like rejections)."""
    y = torch.zeros(64)
    a = torch.full((64,), 1e11)
    norm = _kernels.get_backend(torch.device("cpu")).scaled_norm(a, None, y, 1e-9, 1e-6)
    assert norm == pytest.approx(reference.scaled_norm(a, None, y, 1e-9, 1e-6), rel=1e-6)
    assert norm == pytest.approx(1e20, rel=1e-6)
    ks = [a, torch.zeros(64)]
    _, norm, _ = _kernels.rk_finish(y, ks, [0.0, 0.0], [1.0, 0.0], 1e-9, 1e-6)
    assert norm == pytest.approx(1e20, rel=1e-6)


# ---- backend and mode disagreements -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 0), (0,), (0, 5)])
def test_per_sample_empty_states_give_the_joint_solves_empty_result(backend, rounds, shape):
    y0 = torch.ones(shape, dtype=F64)
    joint = pyode.odeint(lambda t, y: -y, y0, T3)
    sol = pyode.solve(lambda t, y: -y, y0, T3, options=per_sample())
    assert sol.ys.shape == joint.shape == (3, *shape)
    assert sol.stats.per_sample_accepted.shape == (shape[0],) and sol.stats.t_reached == 1.0


def test_per_sample_empty_state_still_checks_func():
    with pytest.raises(ValueError, match="func output has shape"):
        pyode.odeint(lambda t, y: torch.zeros(3), torch.ones(4, 0, dtype=F64), T3, options=per_sample())


@pytest.mark.parametrize("limit", [2**70, 1e30])
def test_huge_max_num_steps_is_capped_on_every_path(backend, rounds, limit):
    """2**70 made the compiled per-sample workspace fail with pybind's "incompatible constructor arguments"."""
    y0 = torch.ones(3, 2, dtype=F64)
    want = torch.exp(-T3)[:, None, None].expand(3, 3, 2)
    for method, options in [("dopri5", per_sample()), ("dopri5", {}), ("rk4", {"step_size": 0.1})]:
        ys = pyode.odeint(lambda t, y: -y, y0, T3, method=method, options={**options, "max_num_steps": limit},
                          rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(ys, want, rtol=1e-6, atol=1e-6)  # rk4 with h = 0.1: error ~ h^4 / 120


# ---- unclear errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("options", "match"), [
    ({"dcoeff": 1e300}, r"options\['dcoeff'\] must be finite and in \[-10, 10\]"),
    ({"pcoeff": 1e6, "icoeff": -1e6, "dcoeff": 1e6}, r"options\['pcoeff'\] must be finite and in"),
    ({"pcoeff": 0.0, "icoeff": -0.5, "dcoeff": 0.0}, "pcoeff \\+ icoeff \\+ dcoeff must be > 0"),
])
def test_pid_coefficients_are_validated(backend, options, match):
    """They raised OverflowError (34, 'Numerical result out of range') from inside the controller."""
    for extra in ({}, per_sample()):
        with pytest.raises(ValueError, match=match):
            pyode.odeint(lambda t, y: -y, torch.ones(3, 2, dtype=F64), T3, options={**options, **extra})


def test_zero_tolerance_scale_is_named_not_func(backend, rounds):
    """atol = 0 with a zero state: the error ratio is 0/0. It read "func returned NaN/inf at the initial time"."""
    for options in ({}, per_sample()):
        with pytest.raises(ValueError, match="atol = 0 .* tolerance scale atol \\+ rtol\\*\\|y\\|"):
            pyode.odeint(lambda t, y: -y, torch.zeros(4, 2), T3, atol=0, options=options)
        with pytest.raises(pyode.NonFiniteStateError, match="atol = 0"):
            pyode.odeint(lambda t, y: -y, torch.zeros(4, 2), T3, atol=0, options={**options, "first_step": 0.1})


def test_func_that_returns_nan_at_the_start_is_still_blamed(backend):
    with pytest.raises(pyode.NonFiniteStateError, match="func returned NaN/inf at the initial time"):
        pyode.odeint(lambda t, y: y * math.nan, torch.ones(3, dtype=F64), T3)
