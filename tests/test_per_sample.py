"""Per-sample step sizes: each batch row its own time and step size."""

import math

import numpy as np
import pytest
import scipy.integrate
import torch

import pyode
from pyode._solvers import core_loop

MU = torch.tensor([2.0, 2.0, 25.0, 25.0], dtype=torch.float64)


def van_der_pol(t, y):
    assert t.shape == (y.shape[0],)  # every row its own time
    x, v = y[:, 0], y[:, 1]
    return torch.stack([v, MU * (1 - x * x) * v - x], -1)


def test_rows_match_scipy_and_take_fewer_steps_than_joint_stepping():
    y0 = torch.tensor([[2.0, 0.0]] * 4, dtype=torch.float64)
    t = torch.linspace(0, 8, 17, dtype=torch.float64)
    sol = pyode.solve(van_der_pol, y0, t, rtol=1e-8, atol=1e-8, options={"per_sample": True})
    joint = pyode.solve(lambda t, y: van_der_pol(t.expand(4), y), y0, t, rtol=1e-8, atol=1e-8)
    for row in range(4):
        mu = float(MU[row])
        ref = scipy.integrate.solve_ivp(lambda s, y, mu=mu: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], (0, 8), [2, 0],
                                        method="DOP853", rtol=1e-12, atol=1e-12, t_eval=t.numpy()).y.T
        assert np.abs(sol.ys[:, row].numpy() - ref).max() < 1e-5
    per_row = sol.stats.per_sample_accepted + sol.stats.per_sample_rejected
    assert int(per_row.sum()) < 4 * joint.stats.n_steps  # the mild rows no longer pay for the stiff ones
    assert int(per_row[:2].max()) < joint.stats.n_steps


def test_reverse_time_and_bad_input():
    y0 = torch.tensor([[2.0, 0.0]] * 4, dtype=torch.float64)
    t = torch.tensor([1.0, 0.0], dtype=torch.float64)
    back = pyode.odeint(van_der_pol, y0, t, rtol=1e-9, atol=1e-9, options={"per_sample": True})
    ref = pyode.odeint(lambda t, y: van_der_pol(t.expand(4), y), y0, t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(back, ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="per_sample"):
        pyode.odeint(lambda t, s: s, (y0, y0), t, options={"per_sample": True})
    with pytest.raises(ValueError, match="per_sample"):
        pyode.odeint(van_der_pol, y0, t, options={"per_sample": True, "jump_t": [0.5]})


@pytest.fixture
def tensor_op_rounds(monkeypatch):
    """Forces the tensor-op (unfused) per-sample loop."""
    from pyode._solvers import per_sample

    monkeypatch.setattr(per_sample.PerSampleLoop, "_rows_ok", lambda self, *args: False)


def van_der_pol_any_dtype(t, y):
    x, v = y[:, 0], y[:, 1]
    return torch.stack([v, MU.to(y.dtype) * (1 - x * x) * v - x], -1)


def _per_sample_solve(dtype, method="dopri5"):
    y0 = torch.tensor([[2.0, 0.0], [1.0, 1.0], [2.0, 0.0], [-1.5, 0.5]], dtype=dtype)
    t = torch.linspace(0, 3, 13, dtype=dtype)
    return pyode.solve(van_der_pol_any_dtype, y0, t, method=method, rtol=1e-7, atol=1e-7,
                       options={"per_sample": True})


@pytest.mark.skipif(pyode.backend_info()["cpu_backend"] != "cpu", reason="compiled CPU backend not built")
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_rounds_match_tensor_op_rounds(method, dtype, request, monkeypatch):
    """The fused per-sample rounds (C++) take the same steps and give the same outputs as the tensor-op rounds."""
    from pyode._solvers import per_sample

    def unfused(*args):
        raise AssertionError("the fused per-sample rounds were not taken")

    with monkeypatch.context() as patch:
        patch.setattr(per_sample.PerSampleLoop, "_integrate_tensor_ops", unfused)
        fused = _per_sample_solve(dtype, method)
    request.getfixturevalue("tensor_op_rounds")
    ops = _per_sample_solve(dtype, method)
    assert torch.equal(fused.stats.per_sample_accepted, ops.stats.per_sample_accepted)
    assert torch.equal(fused.stats.per_sample_rejected, ops.stats.per_sample_rejected)
    assert fused.stats.n_iterations == ops.stats.n_iterations and fused.stats.nfe == ops.stats.nfe
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(fused.ys, ops.ys, rtol=tol, atol=tol)


@pytest.mark.skipif(pyode.backend_info()["cpu_backend"] != "cpu", reason="compiled CPU backend not built")
@pytest.mark.parametrize("method", ["adaptive_heun", "fehlberg2", "dopri8"])
def test_rows_without_fsal_and_of_high_order_match_tensor_op_rounds(method, request, monkeypatch):
    """Methods without FSAL run as C++ rows too: an accepted step evaluates f1 and a rejected one does not, so the
    rows stop being in step and the C++ rows skip the tensor-op rounds' f1 of rejected rows (fewer evaluations),
    with the same steps and outputs. dopri8 (restep in a joint solve) takes its cubic Hermite per sample in both."""
    from pyode._solvers import per_sample

    with monkeypatch.context() as patch:
        patch.setattr(per_sample.PerSampleLoop, "_integrate_tensor_ops", None)  # a call would raise TypeError
        rows = _per_sample_solve(torch.float64, method)
    request.getfixturevalue("tensor_op_rounds")
    ops = _per_sample_solve(torch.float64, method)
    assert torch.equal(rows.stats.per_sample_accepted, ops.stats.per_sample_accepted)
    assert torch.equal(rows.stats.per_sample_rejected, ops.stats.per_sample_rejected)
    assert rows.stats.n_iterations == ops.stats.n_iterations
    fsal = method == "dopri8"
    assert rows.stats.nfe == ops.stats.nfe if fsal else rows.stats.nfe < ops.stats.nfe
    torch.testing.assert_close(rows.ys, ops.ys, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fused", [True, False])
def test_per_sample_failures_name_the_row(fused, request):
    if not fused:
        request.getfixturevalue("tensor_op_rounds")
    y0 = torch.tensor([[2.0, 0.0]] * 4, dtype=torch.float64)
    t = torch.tensor([0.0, 8.0], dtype=torch.float64)
    with pytest.raises(pyode.MaxStepsError, match="max_num_steps"):
        pyode.odeint(van_der_pol, y0, t, options={"per_sample": True, "max_num_steps": 5})

    def blows_up(t, y):
        out = van_der_pol(t, y).clone()
        out[2] = torch.where(t[2] > 0.5, torch.nan, 1.0)
        return out

    with pytest.raises(pyode.NonFiniteStateError, match="row 2") as info:
        pyode.odeint(blows_up, y0, t, options={"per_sample": True})
    assert 0.45 < info.value.t_reached <= 0.5  # the row stalls just before its func turns NaN


def test_per_sample_gradients_flow_through_the_tensor_op_rounds():
    """With autograd to record, per-sample stepping runs on tensor ops: gradients match finite differences."""
    y0 = torch.tensor([[2.0, 0.0], [1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)

    def f(t, y):
        return torch.stack([y[:, 1], 2.0 * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], -1)

    def loss(y):
        return pyode.odeint(f, y, t, rtol=1e-10, atol=1e-10, options={"per_sample": True})[-1].sum()

    grad, = torch.autograd.grad(loss(y0), y0)
    eps = 1e-6
    for idx in [(0, 0), (1, 1)]:
        e = torch.zeros_like(y0)
        e[idx] = eps
        with torch.no_grad():
            fd = (loss(y0 + e) - loss(y0 - e)) / (2 * eps)
        assert abs(float(grad[idx]) - float(fd)) < 1e-5 * max(1.0, abs(float(fd)))


def _rows_arguments(**changes):
    """Keyword arguments of ``_C.solve_per_sample`` for 3 rows of width 2 of dopri5 (float64), with ``changes``."""
    from pyode import _C
    from pyode._solvers.rk_step import interpolant_matrix
    from pyode._solvers.tableaux import TABLEAUX

    tab = TABLEAUX["dopri5"]
    s, P = tab.num_stages, interpolant_matrix(tab)
    a = [float(row[j]) if j < len(row) else 0.0 for row in tab.a for j in range(s)]
    method = _C.RowMethod(num_stages=s, order=tab.order, fsal=True, c=list(tab.c), a=a, b=list(tab.b),
                          b_err=list(tab.b_err), P=[x for row in P for x in row], num_terms=s)
    controller = _C.ControllerParams(safety=0.9, ifactor=10.0, dfactor=0.2, pcoeff=0.0, icoeff=1.0, dcoeff=0.0,
                                     min_step=0.0, max_step=float("inf"), predictive=False)
    y = torch.ones(3, 2, dtype=torch.float64)
    y_stage = torch.zeros(3, 2, dtype=torch.float64)
    args = {"method": method, "controller": controller, "rtol": 1e-6, "atol": 1e-6, "max_num_steps": 100,
            "first_step": 0.1, "t_out": [0.0, 1.0], "y0": y, "f0": -y, "out": torch.zeros(2, 3, 2, dtype=torch.float64),
            "y_stage": y_stage, "t_stage": torch.zeros(3, dtype=torch.float64), "dtype": 1, "t_dtype": 1,
            "sign": 1.0, "call": lambda t, y: -y}
    args.update(changes)
    return args


@pytest.mark.skipif(pyode.backend_info()["cpu_backend"] != "cpu", reason="compiled CPU backend not built")
def test_compiled_rows_check_their_arguments():
    """The C++ layer refuses buffers shorter than it would read or write (no out-of-bounds access), a method it
    cannot run and bad times; with good arguments the rows solve y' = -y."""
    from pyode import _C
    from pyode._kernels import compiled
    from pyode._solvers.rk_step import interpolant_matrix
    from pyode._solvers.tableaux import TABLEAUX

    short = torch.zeros(5, dtype=torch.float64)
    bad = {"f0": (short, "f0 and y_stage"), "y_stage": (short, "f0 and y_stage"),
           "out": (torch.zeros(11, dtype=torch.float64), "out num_times"),
           "y0": (torch.zeros(7, dtype=torch.float64), "rows = t_stage"),
           "t_out": ([0.0, 0.0], "must increase"), "first_step": (float("nan"), "first_step"),
           "max_num_steps": (0, "max_num_steps"), "dtype": (3, "unsupported dtype code 3"),
           "t_dtype": (5, "unsupported dtype code 5")}
    for name, (value, message) in bad.items():
        with pytest.raises(ValueError, match=message):
            _C.solve_per_sample(**_rows_arguments(**{name: value}))
    with pytest.raises(TypeError):
        _C.RowMethod(2, 1, True, [0.0, 1.0], [0.0] * 4, [0.5, 0.5], [0.1, -0.1], [1.0, 0.0], 2)
    not_fsal = _C.RowMethod(num_stages=2, order=1, fsal=False, c=[0.0, 1.0], a=[0.0, 0.0, 1.0, 0.0], b=[0.5, 0.5],
                            b_err=[0.1, -0.1], P=[1.0, 0.0], num_terms=2)
    with pytest.raises(ValueError, match="FSAL"):
        _C.solve_per_sample(**_rows_arguments(method=not_fsal))
    args = _rows_arguments()
    with pytest.raises(ValueError, match="fewer values than the batch"):
        _C.solve_per_sample(**{**args, "call": lambda t, y: short})
    args = _rows_arguments()
    calls, failed, rows = _C.solve_per_sample(**args)
    assert failed == -1 and calls % 6 == 0 and all(row[0] == 0 and row[1] == 1.0 for row in rows)
    torch.testing.assert_close(args["out"][1], torch.full((3, 2), math.exp(-1.0), dtype=torch.float64),
                               rtol=1e-5, atol=0)
    tab = TABLEAUX["dopri5"]
    rk = compiled.make_workspace(tab, 6, torch.float64, None)
    rk.set_interpolant([float(x) for row in interpolant_matrix(tab) for x in row], tab.num_stages)
    with pytest.raises(ValueError, match="out shorter"):
        rk.dense(short, [0.5], 0.1)
    with pytest.raises(ValueError, match="set_error_carry: buffer shorter"):
        rk.set_error_carry(short)


def test_compiled_rounds_match_the_tensor_op_rounds_even_when_func_returns_its_input():
    """The C++ rows write every stage input into one batch buffer; a func returning that very tensor (y' = y)
    must not see its derivative overwritten by the next stage's input (each row reads its f before it writes its
    slot). The C++ rows (no autograd) and the differentiable tensor-op rounds (y0 requires grad) take the same
    steps to the same values."""
    y0 = torch.tensor([[1.0], [2.0], [-0.5]], dtype=torch.float64)
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    opts = {"per_sample": True}
    with torch.no_grad():
        fused = pyode.solve(lambda t, y: y, y0, t, rtol=1e-8, atol=1e-10, options=opts)
    recorded = pyode.solve(lambda t, y: y, y0.clone().requires_grad_(True), t, rtol=1e-8, atol=1e-10, options=opts)
    assert torch.equal(fused.stats.per_sample_accepted, recorded.stats.per_sample_accepted)
    assert torch.allclose(fused.ys, recorded.ys.detach(), rtol=1e-13, atol=0)
    assert torch.allclose(fused.ys, y0[None] * torch.exp(t)[:, None, None], rtol=1e-7)


def test_compiled_rounds_propagate_funcs_exception_and_leave_no_state():
    """An exception raised by func inside the C++ rounds is the same object the caller catches; the next solve is
    bitwise a fresh one's."""
    y0 = torch.tensor([[2.0, 0.0], [1.0, 0.5], [2.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    t = torch.linspace(0.0, 3.0, 4, dtype=torch.float64)
    calls, boom = [0], ValueError("boom")

    def failing(t, y):
        calls[0] += 1
        if calls[0] == 17:
            raise boom
        return van_der_pol(t, y)

    with torch.no_grad():
        fresh = pyode.odeint(van_der_pol, y0, t, options={"per_sample": True})
        with pytest.raises(ValueError) as info:
            pyode.odeint(failing, y0, t, options={"per_sample": True})
        assert info.value is boom
        again = pyode.odeint(van_der_pol, y0, t, options={"per_sample": True})
    assert torch.equal(fresh, again)


@pytest.mark.skipif(pyode.backend_info()["cpu_backend"] != "cpu" or not core_loop.available(),
                    reason="compares the compiled per-sample rounds with the C++ joint loop")
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_batch_of_one_is_the_joint_solve_to_the_bit(method, dtype):
    """The compiled per-sample rows are rows of the C++ joint loop (RowSolver, driven a stage at a time): given the
    same first step, a batch of one takes the joint solve's steps to the same bits, in float64 and float32."""
    def vdp(t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, 5.0 * (1 - x * x) * v - x], -1)

    y0 = torch.tensor([[2.0, 0.0]], dtype=dtype)
    t = torch.linspace(0, 6, 13, dtype=dtype)
    with torch.no_grad():
        joint = pyode.solve(vdp, y0, t, method=method, rtol=1e-6, atol=1e-8, options={"first_step": 0.01})
        rows = pyode.solve(vdp, y0, t, method=method, rtol=1e-6, atol=1e-8,
                           options={"first_step": 0.01, "per_sample": True})
    assert (int(rows.stats.per_sample_accepted[0]), int(rows.stats.per_sample_rejected[0])) == \
        (joint.stats.n_accepted, joint.stats.n_rejected)
    assert torch.equal(rows.ys, joint.ys)
