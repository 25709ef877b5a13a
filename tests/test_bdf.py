"""method="bdf": the variable-order NDF/BDF (pyode/_solvers/bdf.py, its C++ twin core/bdf.h). It is SciPy's BDF
algorithm, so it is checked against SciPy's own solves (steps and states), the C++ loop against the Python loop
(the same steps and outputs), accuracy against exact solutions, and every gradient input in every mode."""

import math
import os
import random

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import pyode
from bench.stiff import robertson_numpy as robertson_np
from bench.stiff import robertson_torch as robertson
from bench.stiff import vdp_numpy as vdp_np
from bench.stiff import vdp_torch as vdp
from pyode._solvers import core_loop

F64 = torch.float64
EPS = torch.finfo(F64).eps

pytestmark = pytest.mark.usefixtures("one_thread")
WATCHDOG_S = 30  # the fuzz cases: milliseconds to a few seconds each; past this one is a hang


# (torch func, NumPy func, y0, t1, rtol, atol): Robertson over its fast transient and slow phase, Van der Pol
# (mu = 1000) through its first fast jump (t ~ 807).
CASES = {
    "robertson": (robertson, robertson_np, [1.0, 0.0, 0.0], 1e3, 1e-6, 1e-10),
    "vdp1000": (vdp, vdp_np, [2.0, 0.0], 1000.0, 1e-5, 1e-6),
}


# The C++ loop needs the native library and the compiled kernels (not the pure-torch reference backend).
CORE_LOOP = core_loop.available() and os.environ.get("PYODE_BACKEND") != "reference"


def _solve(monkeypatch, core: bool, func, y0, t, **kwargs):
    """A no-grad solve in the C++ loop (core) or the Python loop; checks the C++ loop ran and finished."""
    if core and not CORE_LOOP:
        pytest.skip("the C++ loop is not built here (or PYODE_BACKEND=reference)")
    monkeypatch.setenv("PYODE_CORE_LOOP", "1" if core else "0")
    ran = []
    original = core_loop.CoreSolver.integrate

    def integrate(self, *args, **kw):
        ran.append(original(self, *args, **kw))
        return ran[-1]

    monkeypatch.setattr(core_loop.CoreSolver, "integrate", integrate)
    with torch.no_grad():
        sol = pyode.solve(func, y0, t, method="bdf", **kwargs)
    if core:
        assert ran and all(r is not None for r in ran), "the C++ loop did not run (or failed and was rerun)"
    else:
        assert not ran
    return sol


@pytest.mark.parametrize("core", [False, True], ids=["python", "cpp"])
@pytest.mark.parametrize("case", list(CASES))
def test_takes_scipys_bdf_steps(monkeypatch, case, core):
    """The same algorithm as SciPy's BDF (NDF formulas, its Newton test, order and step selection, its Jacobian
    reuse): the same number of steps and the same final state to well below the tolerance. Both Jacobians are
    forward differences, as SciPy's. (Rounding differs, in the LU above all, so a step decision may flip on another
    CPU: the count is allowed 2 steps either way.)"""
    func, func_np, y0, t1, rtol, atol = CASES[case]
    ref = solve_ivp(func_np, (0.0, t1), y0, method="BDF", rtol=rtol, atol=atol)
    sol = _solve(monkeypatch, core, func, torch.tensor(y0, dtype=F64), torch.tensor([0.0, t1], dtype=F64),
                 rtol=rtol, atol=atol, options={"jacobian": "differences"})
    assert abs(sol.stats.n_accepted - (len(ref.t) - 1)) <= 2, (sol.stats.n_accepted, len(ref.t) - 1)
    y, y_ref = sol.ys[-1].numpy(), ref.y[:, -1]
    # measured: 5e-12 relative; a step decision flipped by rounding would move it by about the tolerance
    assert np.max(np.abs(y - y_ref) / (atol + np.abs(y_ref))) < 10 * rtol, (y, y_ref)


@pytest.mark.parametrize("jacobian", ["dense", "differences"])
@pytest.mark.parametrize("case", list(CASES))
def test_cpp_loop_takes_the_python_loops_steps(monkeypatch, case, jacobian):
    """The C++ twin: the same accepted and rejected steps and evaluations, outputs (interior ones from the
    interpolant) equal to rounding accumulated over the steps."""
    func, _, y0, t1, rtol, atol = CASES[case]
    t = torch.tensor([0.0, 1e-3 * t1, 0.37 * t1, t1], dtype=F64)
    y0 = torch.tensor(y0, dtype=F64)
    kwargs = {"rtol": rtol, "atol": atol, "options": {"jacobian": jacobian}}
    ref = _solve(monkeypatch, False, func, y0, t, **kwargs)
    got = _solve(monkeypatch, True, func, y0, t, **kwargs)
    assert (got.stats.n_accepted, got.stats.n_rejected, got.stats.nfe) == \
        (ref.stats.n_accepted, ref.stats.n_rejected, ref.stats.nfe)
    scale = ref.ys.abs().amax(0)
    assert ((got.ys - ref.ys).abs() / scale).max().item() <= 1e4 * ref.stats.n_steps * EPS


A_STIFF = [[-50.0, 1.0], [0.5, -1.0]]


def _linear_exact(t1: float) -> tuple:
    a = torch.tensor(A_STIFF, dtype=F64)
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    return a, y0, torch.linalg.matrix_exp(a * t1) @ y0


@pytest.mark.parametrize("max_order", [1, 2, 3, 5])
def test_convergence_order(max_order):
    """The order of the formulas: on y' = A y (stiffness ratio 50; exact solution exp(A t) y0) the error falls
    like N^-p in the number of steps N when the order is capped at p (measured 1.00, 2.06, 3.10, 5.26 between
    rtol 1e-6 and 1e-8; order 1 between 1e-5 and 1e-7, at a tenth of the steps)."""
    a, y0, exact = _linear_exact(2.0)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    errors, steps = [], []
    for rtol in ((1e-5, 1e-7) if max_order == 1 else (1e-6, 1e-8)):
        sol = pyode.solve(lambda t, y: a @ y, y0, t, method="bdf", rtol=rtol, atol=rtol,
                          options={"max_order": max_order})
        errors.append((sol.ys[-1] - exact).abs().max().item())
        steps.append(sol.stats.n_accepted)
    observed = math.log(errors[0] / errors[1]) / math.log(steps[1] / steps[0])
    assert max_order - 0.25 <= observed <= max_order + 1.0, (errors, steps, observed)


def test_float32_tuple_state_and_reverse_time():
    """A float32 tuple state integrated backwards (Python loop: the C++ kind is float64) agrees with the float64
    solve to float32's tolerance."""
    def rhs(t, y):
        u, v = y
        return (v, -u - 0.1 * v)

    t = torch.tensor([2.0, 1.0, 0.0])
    y0 = (torch.tensor([1.0]), torch.tensor([0.5]))
    got = pyode.odeint(rhs, y0, t, method="bdf", rtol=1e-5, atol=1e-7)
    ref = pyode.odeint(rhs, tuple(x.double() for x in y0), t.double(), method="dopri5", rtol=1e-10, atol=1e-12)
    assert got[0].dtype == torch.float32
    for g, r in zip(got, ref):
        assert torch.allclose(g.double(), r, rtol=0, atol=2e-4), (g, r)


def test_dense_output_is_the_outputs_interpolant():
    """``solve(dense=True)`` evaluates the same polynomials the outputs come from."""
    a, y0, _ = _linear_exact(1.0)
    t = torch.tensor([0.0, 0.3, 0.71, 1.0], dtype=F64)
    sol = pyode.solve(lambda t, y: a @ y, y0, t, method="bdf", rtol=1e-6, atol=1e-8, dense=True)
    assert torch.allclose(sol.evaluate(t), sol.ys, rtol=1e-12, atol=1e-14)
    assert len(sol.ts) == sol.stats.n_accepted + 1


# -- gradients ---------------------------------------------------------------------------------------------------

def make_rhs(a):
    def rhs(t, y):
        return y @ a.T + 0.1 * torch.sin(y) * torch.cos(t)
    return rhs


def _inputs():
    y0 = torch.tensor([1.0, -0.5], dtype=F64, requires_grad=True)
    a = torch.tensor(A_STIFF, dtype=F64, requires_grad=True)
    return y0, a


def test_backprop_gradcheck():
    """Backprop through the solve (the implicit function theorem per step, Newton not differentiated) is the
    gradient of the discrete solve: at rtol 1e-10 Newton's residual and the steps' sensitivity to the
    perturbation stay below central differences' resolution (eps 1e-6), so gradcheck holds at atol 1e-5."""
    t = torch.tensor([0.0, 0.2, 0.4], dtype=F64)

    def solve(y0, a):
        return pyode.odeint(make_rhs(a), y0, t, method="bdf", rtol=1e-10, atol=1e-12)

    assert torch.autograd.gradcheck(solve, _inputs(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_gradient_of_a_linear_problem_is_exact(gradient):
    """y' = A y: dL/dy0 of L = sum(y(T)) is exp(A T)ᵀ 1; dL/dA against the derivative of the matrix exponential
    (torch's, by autograd); both modes land within the solve's tolerance."""
    t = torch.tensor([0.0, 0.5], dtype=F64)
    y0, a = _inputs()
    params = {} if gradient == "backprop" else {"adjoint_params": (a,)}
    ys = pyode.odeint(lambda t, y: a @ y, y0, t, method="bdf", rtol=1e-9, atol=1e-11, gradient=gradient, **params)
    g_y0, g_a = torch.autograd.grad(ys[-1].sum(), (y0, a))
    y0e, ae = _inputs()
    e_y0, e_a = torch.autograd.grad((torch.linalg.matrix_exp(ae * 0.5) @ y0e).sum(), (y0e, ae))
    assert torch.allclose(g_y0, e_y0, rtol=1e-6, atol=1e-8), (g_y0, e_y0)
    assert torch.allclose(g_a, e_a, rtol=1e-5, atol=1e-7), (g_a, e_a)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_gradients_to_the_times(gradient):
    """dL/dt for every output time and for t0 (L = Σ w·y(t_i)), against central differences of the solve
    (h = 1e-4 on O(1) times, the solve at rtol 1e-10: differences accurate to ~1e-7)."""
    a = torch.tensor(A_STIFF, dtype=F64)
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    w = torch.tensor([[0.3, -1.0], [0.7, 0.2], [1.1, 0.4]], dtype=F64)
    rhs = make_rhs(a)
    params = {} if gradient == "backprop" else {"adjoint_params": ()}

    def loss(t):
        return (pyode.odeint(rhs, y0, t, method="bdf", rtol=1e-10, atol=1e-12, gradient=gradient, **params) * w).sum()

    t = torch.tensor([0.1, 0.35, 0.6], dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(loss(t), t)
    h = 1e-4
    fd = []
    for i in range(3):
        e = torch.zeros(3, dtype=F64)
        e[i] = h
        with torch.no_grad():
            fd.append((loss(t.detach() + e) - loss(t.detach() - e)).item() / (2 * h))
    assert torch.allclose(g, torch.tensor(fd, dtype=F64), rtol=1e-5, atol=1e-6), (g, fd)


def test_adjoint_agrees_with_backprop_on_a_nonlinear_problem():
    """The continuous adjoint (its backward solve is bdf too, reading y from the forward's interpolant) and the
    discrete gradient agree to the solves' tolerance, for y0 and the parameters."""
    t = torch.tensor([0.0, 0.4], dtype=F64)
    grads = {}
    for gradient in ("backprop", "adjoint"):
        y0, a = _inputs()
        params = {} if gradient == "backprop" else {"adjoint_params": (a,)}
        ys = pyode.odeint(make_rhs(a), y0, t, method="bdf", rtol=1e-9, atol=1e-11, gradient=gradient, **params)
        grads[gradient] = torch.autograd.grad((ys[-1] ** 2).sum(), (y0, a))
    for b, j in zip(grads["backprop"], grads["adjoint"]):
        assert torch.allclose(b, j, rtol=1e-5, atol=1e-7), (b, j)


def test_checkpoint_mode_is_refused_clearly():
    y0, a = _inputs()
    with pytest.raises(ValueError, match="checkpoint"):
        pyode.odeint(make_rhs(a), y0, torch.tensor([0.0, 0.1], dtype=F64), method="bdf", gradient="checkpoint",
                     adjoint_params=(a,))


# -- bad input and failures ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, kwargs, error, match", [
    ({"max_order": 0}, {}, ValueError, "max_order"),
    ({"max_order": 6}, {}, ValueError, "max_order"),
    ({"jacobian": "gmres"}, {}, ValueError, "jacobian"),
    ({"norm": "mixed"}, {}, ValueError, "norm"),
    ({"step_size": 0.1}, {}, ValueError, "unknown option"),
    ({}, {"rtol": torch.tensor([1e-6, 1e-6], dtype=F64)}, ValueError, "float tolerances"),
])
def test_bad_options_raise_naming_the_argument(options, kwargs, error, match):
    y0 = torch.ones(2, dtype=F64)
    with pytest.raises(error, match=match):
        pyode.odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=F64), method="bdf", options=options, **kwargs)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_terminal_event_and_its_gradients(gradient):
    """y' = -k y from y0 stops where y = y0 / 4 (event_fn y - 1/4 with y0 = 1): t* = ln(4 y0) / k, located on the
    interpolant to atol; the gradients of t* to y0 and k are 1 / (k y0) and -ln(4 y0) / k^2."""
    k = torch.tensor(3.0, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    params = {} if gradient == "backprop" else {"adjoint_params": (k,)}
    t_event, ys = pyode.odeint_event(lambda t, y: -k * y, y0, torch.tensor(0.0, dtype=F64),
                                     event_fn=lambda t, y: y[0] - 0.25, method="bdf", rtol=1e-10, atol=1e-12,
                                     gradient=gradient, **params)
    exact = math.log(4.0) / 3.0
    assert abs(t_event.item() - exact) < 1e-8, (t_event.item(), exact)
    assert abs(ys[-1, 0].item() - 0.25) < 1e-8
    g_y0, g_k = torch.autograd.grad(t_event, (y0, k))
    assert abs(g_y0.item() - 1.0 / 3.0) < 1e-6 and abs(g_k.item() + math.log(4.0) / 9.0) < 1e-6, (g_y0, g_k)


def test_half_precision_is_refused():
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(TypeError, match="float32 or float64"):
        pyode.odeint(lambda t, y: -y, torch.ones(1, dtype=torch.float16), t.half(), method="bdf")


@pytest.mark.parametrize("core", [False, True], ids=["python", "cpp"])
def test_failures_raise_pyode_errors_with_the_time(monkeypatch, core):
    """Too many steps, and a func that turns NaN at t > 0.5 (every step size tried there fails): pyode errors
    naming the time reached, from either loop (a failed C++ solve is rerun by the Python loop for the diagnosis)."""
    monkeypatch.setenv("PYODE_CORE_LOOP", "1" if core else "0")
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(pyode.MaxStepsError) as info:
        pyode.odeint(vdp, torch.tensor([2.0, 0.0], dtype=F64), t, method="bdf", options={"max_num_steps": 5})
    assert 0.0 < info.value.t_reached < 1.0

    def poisoned(t, y):
        return -y + (float("nan") if float(t) > 0.5 else 0.0)

    with pytest.raises(pyode.NonFiniteStateError) as info:
        pyode.odeint(poisoned, torch.ones(2, dtype=F64), t, method="bdf")
    assert 0.4 < info.value.t_reached <= 0.5 + 1e-9
    assert math.isfinite(info.value.t_reached)


def test_step_callbacks_see_every_attempt():
    """torchdiffeq's callbacks: callback_step before every attempt, callback_accept_step / callback_reject_step
    after each decision, with the step's start and size (such a func runs in the Python loop)."""
    class Vdp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = {"step": 0, "accept": 0, "reject": 0}
            self.starts = []

        def forward(self, t, y):
            return vdp(t, y)

        def callback_step(self, t0, y0, dt):
            self.seen["step"] += 1
            assert dt > 0

        def callback_accept_step(self, t0, y0, dt):
            self.seen["accept"] += 1
            self.starts.append(float(t0))

        def callback_reject_step(self, t0, y0, dt):
            self.seen["reject"] += 1

    func = Vdp()
    sol = pyode.solve(func, torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.0, 100.0], dtype=F64),
                      method="bdf", rtol=1e-5, atol=1e-6)
    assert func.seen == {"step": sol.stats.n_accepted + sol.stats.n_rejected, "accept": sol.stats.n_accepted,
                         "reject": sol.stats.n_rejected}
    assert sol.stats.n_rejected > 0 and func.starts == sorted(func.starts) and func.starts[0] == 0.0


# -- pyode.native: compiled right-hand sides ---------------------------------------------------------------------

def _native():
    pytest.importorskip("numba")
    pytest.importorskip("cffi")
    if not CORE_LOOP:
        pytest.skip("the native library is not built here (or PYODE_BACKEND=reference)")
    import pyode.native as pn
    from bench.native_stiff import robertson as rob_native
    from bench.native_stiff import robertson_jac, vdp, vdp_jac

    return pn, rob_native, robertson_jac, vdp, vdp_jac


@pytest.mark.parametrize("with_jac", [False, True])
def test_native_bdf_takes_the_torch_paths_steps(monkeypatch, with_jac):
    """``pyode.native.solve(method="bdf")`` with a numba right-hand side runs the same kind as the torch path's C++
    loop: with forward differences on both sides, or a compiled jac against autograd's, the same steps and
    evaluations, outputs equal to rounding."""
    pn, rob_native, robertson_jac, _, _ = _native()
    y0, t = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 100.0, 1e4])
    nat = pn.solve(rob_native, y0, t, method="bdf", rtol=1e-6, atol=1e-10, jac=robertson_jac if with_jac else None)
    options = {} if with_jac else {"jacobian": "differences"}
    ref = _solve(monkeypatch, True, robertson, torch.tensor(y0), torch.tensor(t), rtol=1e-6, atol=1e-10,
                 options=options)
    assert (nat.n_accepted[0], nat.n_rejected[0]) == (ref.stats.n_accepted, ref.stats.n_rejected)
    if not with_jac:
        assert nat.n_feval[0] == ref.stats.nfe
    np.testing.assert_allclose(nat.ys, ref.ys.numpy(), rtol=1e-9, atol=1e-18)


def test_native_bdf_ensemble_and_refusals():
    """An ensemble of Van der Pol oscillators (mu from 1 to 1000), each row its own steps, bit for bit the single
    solves; events and options that do not apply are refused by name."""
    pn, _, _, vdp_native, vdp_jac = _native()
    mus, y0, t = np.array([[1.0], [100.0], [1000.0]]), np.array([2.0, 0.0]), np.linspace(0.0, 30.0, 4)
    ens = pn.solve(vdp_native, y0, t, mus, method="bdf", rtol=1e-6, atol=1e-6, jac=vdp_jac,
                   options={"num_threads": 2, "max_order": 4})
    assert ens.success
    for r, mu in enumerate(mus):
        one = pn.solve(vdp_native, y0, t, mu, method="bdf", rtol=1e-6, atol=1e-6, jac=vdp_jac,
                       options={"max_order": 4})
        np.testing.assert_array_equal(ens.ys[:, r], one.ys)
    assert ens.n_accepted[0] > 3 * ens.n_accepted[2]
    with pytest.raises(ValueError, match="event"):
        pn.solve(vdp_native, y0, t, mus[0], method="bdf", event=lambda t, y, p: y[0])
    with pytest.raises(ValueError, match="max_order"):
        pn.solve(vdp_native, y0, t, mus[0], method="bdf", options={"max_order": 7})
    with pytest.raises(ValueError, match="jacobian"):
        pn.solve(vdp_native, y0, t, mus[0], method="bdf", options={"jacobian": "differences"})


def test_row_jacobian_blocks_for_a_batch_of_independent_rows():
    """``jacobian="rows"`` on a (batch, state) y0 of independent trajectories: one (m, m) block per row instead of
    a dense (batch m)^2 matrix, the same steps and values as the dense Jacobian (whose off-diagonal blocks are
    zero), and the same gradient."""
    mu = torch.tensor([[1.0], [10.0], [100.0], [300.0]], dtype=F64)

    def batch_vdp(t, y):
        return torch.cat([y[:, 1:], mu * (1.0 - y[:, :1] ** 2) * y[:, 1:] - y[:, :1]], dim=1)

    t = torch.linspace(0.0, 5.0, 6, dtype=F64)
    sols, grads = {}, {}
    for jac in ("dense", "rows"):
        y0 = torch.tensor([[2.0, 0.0]] * 4, dtype=F64, requires_grad=True)
        sols[jac] = pyode.solve(batch_vdp, y0, t, method="bdf", rtol=1e-7, atol=1e-9, options={"jacobian": jac})
        (grads[jac],) = torch.autograd.grad(sols[jac].ys[-1].pow(2).sum(), y0)
    assert sols["rows"].stats.n_accepted == sols["dense"].stats.n_accepted
    assert torch.allclose(sols["rows"].ys, sols["dense"].ys, rtol=1e-9, atol=1e-12)
    assert torch.allclose(grads["rows"], grads["dense"], rtol=1e-7, atol=1e-10)
    with pytest.raises(ValueError, match="rows"):
        pyode.odeint(lambda t, y: -y, torch.ones(3, dtype=F64), t, method="bdf", options={"jacobian": "rows"})


FUZZ_FUNCS = {
    "decay": lambda t, y: -y,
    "stiff": lambda t, y: -1e4 * (y - torch.cos(t)),
    "grow": lambda t, y: y,
    "blowup": lambda t, y: y * y,
    "nan_late": lambda t, y: -y + (float("nan") if float(t) > 0.5 else 0.0),
    "const": lambda t, y: torch.ones_like(y),
    "inf": lambda t, y: y * float("inf"),
}


def _fuzz_case(seed: int):
    """A random bdf solve (function, dtype, shape, scale, times, options, tolerances) under the suite's fuzz rules
    (tests/test_fuzz.py): tolerances the dtype and order can meet; a stiff decay only forwards (backwards it is an
    exponential blow-up at rate 1e4, ill-posed); at most 2000 steps (order 1 on y' = y over 100 time units in
    float32 takes ~10k steps to overflow: slow in the recording Python loop, not a finding)."""
    rng = random.Random(seed)
    name = rng.choice(sorted(FUZZ_FUNCS))
    dtype = rng.choice([torch.float64, torch.float32])
    options = {k: v() for k, v in {"first_step": lambda: rng.choice([1e-12, 1e-3, 10.0]),
                                    "max_num_steps": lambda: rng.choice([1, 5, 100]),
                                    "max_order": lambda: rng.choice([1, 3, 5]),
                                    "jacobian": lambda: rng.choice(["differences", "dense", "rows"])}.items()
               if rng.random() < 0.3}
    options.setdefault("max_num_steps", 2000)
    low_order = dtype == torch.float32 or options.get("max_order", 5) <= 2
    rtol, atol = rng.choice([(1e-3, 1e-5), (1e-4, 1e-6)] if low_order else [(1e-6, 1e-8), (1e-9, 1e-11)])
    t0, span = rng.choice([0.0, 1.0, -5.0]), rng.choice([1.0, -1.0, 1e-9, 100.0])
    span = abs(span) if name == "stiff" else span
    y0 = torch.ones(rng.choice([(2,), (3, 2), (1,)]), dtype=dtype) * rng.choice([1.0, 1e-3, 1e30, 0.0, -2.0])
    t = torch.tensor([t0, t0 + span / 2, t0 + span], dtype=dtype)
    return FUZZ_FUNCS[name], y0.requires_grad_(rng.random() < 0.3), t, rtol, atol, options


@pytest.mark.parametrize("seed", range(40))
def test_fuzz_no_crash_hang_or_silent_nan(seed, watchdog):
    """Random solves end in finite outputs (and gradients) or a pyode error / ValueError / TypeError with a message:
    never another exception, a hang or NaN outputs without an error."""
    func, y0, t, rtol, atol, options = _fuzz_case(seed)
    try:
        ys = pyode.odeint(func, y0, t, method="bdf", rtol=rtol, atol=atol, options=options)
        if y0.requires_grad:
            ys.sum().backward()
    except (pyode.ODESolverError, ValueError, TypeError) as exc:
        assert len(str(exc)) > 20, exc
        return
    assert bool(torch.isfinite(ys).all()), ys
