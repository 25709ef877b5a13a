"""torchdiffeq parity of the forward solve: complex states, scipy_solver, func's output dtype, events on
fixed grids, callable norms, perturb, grid_constructor, the Adams options, min_step/max_step.

Where torchdiffeq is installed (the bench extra) its own results are the reference; every method is also
checked against an exact solution.
"""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

import pyode
from pyode._solvers.perturb import Perturb

torchdiffeq = pytest.importorskip("torchdiffeq")

F64, C128, C64 = torch.float64, torch.complex128, torch.complex64
ADAPTIVE = ["dopri5", "tsit5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"]
FIXED_ORDER = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4, "explicit_adams": 4,
               "implicit_adams": 4}
ADAMS_4TH = {"explicit_adams": {"max_order": 5}, "implicit_adams": {"max_order": 4}}  # 4th order exactly


def rotate(t, y):
    """y' = -i y: y(t) = exp(-i t) y0."""
    return -1j * y


def exact_rotation(y0, t):
    return torch.exp(-1j * t.to(F64)).to(y0.dtype).reshape(-1, *([1] * y0.dim())) * y0


# ---------------------------------------------------------------------------------------------- complex


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("dtype", [C128, C64])
def test_complex_adaptive_methods_match_the_exact_solution(method, dtype):
    """cos 1 - i sin 1 at t = 1. The global error of a tolerance-controlled solve is a small multiple of
    rtol (here 1e-9 in complex128, 1e-7 for the 2nd-order pairs to keep their step count small; complex64 at
    rtol 1e-5, above its 6e-8 resolution)."""
    rtol = (1e-7 if method in ("fehlberg2", "adaptive_heun") else 1e-9) if dtype == C128 else 1e-5
    y0 = torch.tensor([1.0 + 0.0j, 0.5 - 2.0j], dtype=dtype)
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    ys = pyode.odeint(rotate, y0, t, method=method, rtol=rtol, atol=rtol * 1e-2)
    assert ys.dtype == dtype
    torch.testing.assert_close(ys, exact_rotation(y0, t), rtol=0, atol=200 * rtol)
    torch.testing.assert_close(ys[-1, 0], torch.tensor(complex(math.cos(1.0), -math.sin(1.0)), dtype=dtype),
                               rtol=0, atol=200 * rtol)


@pytest.mark.parametrize("method", list(FIXED_ORDER))
def test_complex_fixed_grid_methods_converge_at_their_order(method):
    """Halving h divides the error at t = 2 by 2^order (log2 ratio within 0.3 of the order)."""
    y0 = torch.tensor([1.0 + 0.0j], dtype=C128)
    t = torch.tensor([0.0, 2.0], dtype=F64)
    errs = []
    for h in (0.05, 0.025):
        ys = pyode.odeint(rotate, y0, t, method=method, options={"step_size": h, **ADAMS_4TH.get(method, {})})
        errs.append(float((ys[-1] - exact_rotation(y0, t)[-1]).abs().max()))
    assert abs(math.log2(errs[0] / errs[1]) - FIXED_ORDER[method]) < 0.3, errs


def test_complex_norm_is_torchdiffeqs():
    """The error ratio uses complex magnitudes as torchdiffeq does: the same steps (nfe) and, away from the
    final time (pyode ends its last step on t[-1], torchdiffeq interpolates there), the same outputs."""
    def f(t, y):
        return torch.stack([-1j * y[0] * (1 + t), (0.3 - 2j) * y[1]])

    t = torch.linspace(0, 3, 7, dtype=F64)
    y0 = torch.tensor([1 + 0.5j, 0.2 - 1j], dtype=C128)
    sol = pyode.solve(f, y0, t, rtol=1e-6, atol=1e-8)
    calls = []
    ref = torchdiffeq.odeint(lambda t, y: calls.append(1) or f(t, y), y0, t, rtol=1e-6, atol=1e-8)
    assert sol.stats.nfe == len(calls)
    torch.testing.assert_close(sol.ys[:-1], ref[:-1], rtol=0, atol=1e-12)


def test_complex_tuple_state_and_reverse_time():
    y0 = (torch.tensor([1.0 + 1.0j], dtype=C64), torch.tensor([[2.0 - 1.0j]], dtype=C64))
    t = torch.tensor([1.0, 0.5, -1.0])
    ys = pyode.odeint(lambda t, y: (-1j * y[0], 2j * y[1]), y0, t, rtol=1e-6, atol=1e-8)
    dt = (t - 1.0).to(F64)
    torch.testing.assert_close(ys[0], (torch.exp(-1j * dt).reshape(3, 1) * y0[0]).to(C64), rtol=0, atol=1e-4)
    torch.testing.assert_close(ys[1], (torch.exp(2j * dt).reshape(3, 1, 1) * y0[1]).to(C64), rtol=0, atol=1e-4)


def _complex_problem(gradient):
    w = torch.tensor([0.7, -0.3], dtype=F64, requires_grad=True)

    def run(y0, w):
        func = lambda t, y: (-1j * w[0] + w[1]) * y * (1 + 0.5 * t)
        kwargs = {"adjoint_params": (w,)} if gradient != "backprop" else {}
        if gradient == "reversible":  # the asynchronous leapfrog on a fixed grid
            kwargs["options"] = {"step_size": 0.05}
        return pyode.odeint(func, y0, torch.tensor([0.0, 0.4, 1.0], dtype=F64), rtol=1e-9, atol=1e-10,
                            gradient=gradient, **kwargs)

    y0 = torch.tensor([1.0 + 0.5j, -0.2 + 1.0j], dtype=C128, requires_grad=True)
    return run, y0, w


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint", "adjoint", "reversible"])
def test_complex_gradcheck(gradient):
    """gradcheck in complex128 (Wirtinger calculus, as torch defines it) through y0 and a real parameter.
    The adjoint's gradient is accurate to its tolerances (1e-9), far below the check's atol of 1e-6."""
    run, y0, w = _complex_problem(gradient)
    assert torch.autograd.gradcheck(run, (y0, w), atol=1e-6, rtol=1e-5)


def test_complex_gradient_matches_the_analytic_one():
    """d/dw of Re y(1) for y' = -i w y: y(1) = exp(-i w) y0, dy/dw = -i y(1)."""
    w = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0 + 0.5j], dtype=C128)
    for gradient in ("backprop", "adjoint"):
        kwargs = {"adjoint_params": (w,)} if gradient == "adjoint" else {}
        ys = pyode.odeint(lambda t, y: -1j * w * y, y0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-11,
                          atol=1e-12, gradient=gradient, **kwargs)
        (grad,) = torch.autograd.grad(ys[-1].real.sum(), w)
        expected = (-1j * torch.exp(-1j * w.detach()) * y0).real.sum()
        torch.testing.assert_close(grad, expected, rtol=1e-8, atol=1e-9)


# ----------------------------------------------------------------------------------------- scipy_solver

A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=F64)


def linear(t, y):
    return A @ y


@pytest.mark.parametrize("solver", ["RK45", "DOP853", "Radau", "BDF", "LSODA"])
def test_scipy_solver_matches_the_exact_solution(solver):
    """y' = A y: y(t) = expm(A t) y0; scipy at rtol 1e-10 stays within 1e-6 (BDF/LSODA are multistep
    methods of variable order whose global error runs a few hundred times the tolerance)."""
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    t = torch.linspace(0, 2, 5, dtype=F64)
    ys = pyode.odeint(linear, y0, t, method="scipy_solver", rtol=1e-10, atol=1e-12, options={"solver": solver})
    exact = torch.stack([torch.from_numpy(scipy.linalg.expm(A.numpy() * float(s)) @ y0.numpy()) for s in t])
    torch.testing.assert_close(ys, exact, rtol=0, atol=1e-6)


def test_scipy_solver_is_torchdiffeqs_wrapper():
    """Same outputs as torchdiffeq's scipy_solver (both call solve_ivp), reverse time, float32 and tuple states."""
    y0 = torch.tensor([1.0, 0.5])
    t = torch.tensor([1.0, 0.5, 0.0])
    opts = {"solver": "DOP853"}
    ys = pyode.odeint(lambda t, y: A.float() @ y, y0, t, method="scipy_solver", options=opts)
    ref = torchdiffeq.odeint(lambda t, y: A.float() @ y, y0, t, method="scipy_solver", options=opts)
    assert ys.dtype == torch.float32
    torch.testing.assert_close(ys, ref, rtol=1e-6, atol=1e-6)
    tup = pyode.odeint(lambda t, y: (y[1], -y[0]), (y0[:1], y0[1:]), t, method="scipy_solver",
                       rtol=1e-9, atol=1e-9, options=opts)
    torch.testing.assert_close(tup[0][:, 0], y0[0] * torch.cos(t - 1) + y0[1] * torch.sin(t - 1), rtol=0, atol=1e-5)


def test_scipy_solver_has_no_gradient_and_bad_options_raise():
    """As torchdiffeq's wrapper: the outputs do not require grad (documented); the adjoint still works."""
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    assert not pyode.odeint(linear, y0, t, method="scipy_solver").requires_grad
    with pytest.raises(ValueError, match=r"options\['solver'\] must be one of"):
        pyode.odeint(linear, y0, t, method="scipy_solver", options={"solver": "RK99"})
    with pytest.raises(ValueError, match="unknown option"):
        pyode.odeint(linear, y0, t, method="scipy_solver", options={"step_size": 0.1})


def test_scipy_solver_adjoint_gradient():
    """The adjoint's backward pass is a scipy solve of its own: d y(1)/d y0 = expm(A)."""
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    mod = torch.nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        mod.weight.copy_(A)
    ys = pyode.odeint_adjoint(lambda t, y: mod(y), y0, torch.tensor([0.0, 1.0], dtype=F64), method="scipy_solver",
                              rtol=1e-10, atol=1e-12, options={"solver": "DOP853"}, adjoint_params=tuple(mod.parameters()))
    (g,) = torch.autograd.grad(ys[-1, 0], y0)
    torch.testing.assert_close(g, torch.from_numpy(scipy.linalg.expm(A.numpy()))[0], rtol=1e-7, atol=1e-8)


# ----------------------------------------------------------------------------------- func's output dtype


@pytest.mark.parametrize("method", ["dopri5", "rk4", "implicit_adams"])
def test_func_returning_float64_for_a_float32_state_is_cast(method):
    """torchdiffeq stores func's result in y0's dtype; the outputs match it to float32 precision."""
    def f(t, y):
        return -y.double() * torch.cos(t.double())

    y0 = torch.tensor([1.0, 2.0])
    t = torch.linspace(0.0, 2.0, 5)
    opts = {"step_size": 0.05} if method != "dopri5" else None
    ys = pyode.odeint(f, y0, t, method=method, options=opts, rtol=1e-6, atol=1e-8)
    ref = torchdiffeq.odeint(f, y0, t, method=method, options=opts, rtol=1e-6, atol=1e-8)
    assert ys.dtype == torch.float32
    torch.testing.assert_close(ys, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ys, y0 * torch.exp(-torch.sin(t))[:, None], rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------------------------- fixed-grid events


def falling(t, y):  # y = (height, velocity): height 1 - t^2 / 2 reaches 0 at sqrt(2)
    return torch.stack([y[1], -torch.ones_like(y[1])])


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4", "explicit_adams", "implicit_adams"])
def test_fixed_grid_event_matches_torchdiffeq(method):
    """torchdiffeq steps t0 + k h and bisects the step's linear interpolant to atol: the same event time.
    Against the exact sqrt(2): rk4 is exact on a quadratic, the linear interpolant is off by at most h^2/8
    in height (1.25e-5 for h = 0.01), i.e. 1e-5 in time at speed sqrt(2)."""
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t0 = torch.tensor(0.0, dtype=F64)
    opts = {"step_size": 0.01, **({"max_order": 5} if "adams" in method else {})}
    kwargs = {"method": method, "options": opts, "atol": 1e-10}
    event_t, ys = pyode.odeint_event(falling, y0, t0, event_fn=lambda t, y: y[0], **kwargs)
    ref_t, ref_ys = torchdiffeq.odeint_event(falling, y0, t0, event_fn=lambda t, y: y[0], **kwargs)
    torch.testing.assert_close(event_t, ref_t.to(F64), rtol=0, atol=1e-9)
    torch.testing.assert_close(ys[-1], ref_ys[-1], rtol=0, atol=1e-8)
    if method != "euler":
        assert abs(float(event_t) - math.sqrt(2.0)) < 2e-5


def test_fixed_grid_event_gradient_and_reverse_time():
    """d(event time)/d(initial height) = 1 / (speed at the event) = 1/sqrt(2) (rk4 is exact here, up to the
    linear interpolant's curvature error, ~h/2 relative); reverse time finds the event at -sqrt(2)."""
    y0 = torch.tensor([1.0, 0.0], dtype=F64, requires_grad=True)
    event_t, _ = pyode.odeint_event(falling, y0, 0.0, event_fn=lambda t, y: y[0], method="rk4",
                                    options={"step_size": 0.001}, atol=1e-12)
    (g,) = torch.autograd.grad(event_t, y0)
    assert abs(float(g[0]) - 1 / math.sqrt(2.0)) < 1e-3
    back_t, _ = pyode.odeint_event(lambda t, y: torch.stack([-y[1], torch.ones_like(y[1])]), y0.detach(), 0.0,
                                   event_fn=lambda t, y: y[0], method="rk4", options={"step_size": 0.01},
                                   reverse_time=True, atol=1e-12)
    assert abs(float(back_t) + math.sqrt(2.0)) < 2e-5


def test_multi_valued_event_fn_stops_at_the_first_sign_change():
    """torchdiffeq's combine_event_functions: several event values, the first to change sign ends the solve
    (here the height reaching 0.3 at t = 0.5 + sqrt(1.65)); the gradient flows through the active one."""
    f = lambda t, y: torch.stack([y[1], -torch.ones_like(y[0])])
    ev = lambda t, y: torch.stack([y[0] - 0.3, 2.0 - t, y[0] + 5])
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    t0 = torch.tensor(0.0, dtype=F64)
    event_t, _ = pyode.odeint_event(f, y0, t0, event_fn=ev, atol=1e-10)
    ref_t, _ = torchdiffeq.odeint_event(f, y0, t0, event_fn=ev, atol=1e-10)
    assert float(event_t) == pytest.approx(0.5 + math.sqrt(1.65), abs=1e-9)
    torch.testing.assert_close(torch.autograd.grad(event_t, y0)[0], torch.autograd.grad(ref_t, y0)[0],
                               rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------------------------------ callable norm


def max_norm(x):
    return x.abs().max()


class StepCounter(torch.nn.Module):
    """torchdiffeq calls ``callback_step`` once per attempted step: its step count."""

    def __init__(self, f):
        super().__init__()
        self.f, self.steps = f, 0

    def forward(self, t, y):
        return self.f(t, y)

    def callback_step(self, t0, y0, dt):
        self.steps += 1


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "adaptive_heun"])
def test_callable_norm_matches_torchdiffeq(method):
    """options={'norm': callable}: the same steps as torchdiffeq with the same norm (and, for dopri5, whose
    interpolant both libraries share, the same outputs away from the final time, where pyode ends its
    last step and torchdiffeq interpolates)."""
    y0 = torch.tensor([1.0, 0.0, -0.5], dtype=F64)
    t = torch.linspace(0, 4, 6, dtype=F64)
    f = lambda t, y: torch.stack([y[1], -y[0] * (1 + 0.1 * t), -y[2]])
    tol = 1e-6 if method == "dopri5" else 1e-4  # fewer steps for the low-order pairs
    sol = pyode.solve(f, y0, t, method=method, rtol=tol, atol=tol * 1e-2, options={"norm": max_norm})
    counter = StepCounter(f)
    ref = torchdiffeq.odeint(counter, y0, t, method=method, rtol=tol, atol=tol * 1e-2, options={"norm": max_norm})
    # Steps clamped onto the output times differ at the ends (pyode never steps past t[-1]): a step or two of
    # hundreds; the RMS norm instead of the max norm takes 9-20% fewer steps on this problem.
    assert abs(sol.stats.n_steps - counter.steps) <= max(1, 0.01 * counter.steps)
    if method == "dopri5":
        torch.testing.assert_close(sol.ys[:-1], ref[:-1], rtol=0, atol=1e-12)
    # The RMS norm given as a callable takes exactly the default's steps.
    rms = pyode.solve(f, y0, t, method=method, rtol=tol, atol=tol * 1e-2, options={"norm": lambda x: x.pow(2).mean().sqrt()})
    default = pyode.solve(f, y0, t, method=method, rtol=tol, atol=tol * 1e-2)
    assert rms.stats.nfe == default.stats.nfe
    torch.testing.assert_close(rms.ys, default.ys, rtol=0, atol=1e-13)


def test_callable_norm_on_tuple_states():
    """The norm receives the tuple; a norm on only the first component ignores the second's error."""
    seen = []

    def first_only(ys):
        seen.append(type(ys))
        return ys[0].abs().pow(2).mean().sqrt()

    y0 = (torch.tensor([1.0], dtype=F64), torch.tensor([1.0], dtype=F64))
    t = torch.tensor([0.0, 5.0], dtype=F64)
    f = lambda t, y: (-y[0], -50 * y[1] * torch.cos(10 * t))
    loose = pyode.solve(f, y0, t, rtol=1e-8, atol=1e-10, options={"norm": first_only})
    full = pyode.solve(f, y0, t, rtol=1e-8, atol=1e-10)
    assert seen and all(s is tuple for s in seen)
    assert loose.stats.nfe < full.stats.nfe
    torch.testing.assert_close(loose.ys[0][-1], torch.exp(torch.tensor([-5.0], dtype=F64)), rtol=1e-6, atol=0)


def test_bad_norms_raise_naming_the_option():
    y0, t = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match=r"options\['norm'\] must return a scalar"):
        pyode.odeint(lambda t, y: -y, y0, t, options={"norm": lambda x: x.abs()})
    with pytest.raises(ValueError, match=r"options\['norm'\] returned nan"):
        pyode.odeint(lambda t, y: -y, y0, t, options={"norm": lambda x: x.sum() * math.nan})
    with pytest.raises(TypeError, match=r"options\['norm'\] must return a scalar tensor or float"):
        pyode.odeint(lambda t, y: -y, y0, t, options={"norm": lambda x: "small"})
    with pytest.raises(ValueError, match=r"options\['norm'\] must be one of"):
        pyode.odeint(lambda t, y: -y, y0, t, options={"norm": "max"})


# ------------------------------------------------------------------------ per-component tolerances


def test_per_component_and_per_element_tolerances_match_torchdiffeq():
    """rtol/atol as a tuple (one per tuple component) or a tensor broadcast over y0: torchdiffeq's error
    ratio elementwise, so the same steps and (away from t[-1]) the same outputs."""
    y0 = (torch.tensor([1.0, 0.5], dtype=F64), torch.tensor([2.0], dtype=F64))
    f = lambda t, y: (torch.stack([y[0][1], -y[0][0]]), -0.5 * y[1] * t)
    t = torch.linspace(0, 3, 4, dtype=F64)
    kwargs = {"rtol": (1e-7, 1e-3), "atol": (1e-9, 1e-5)}
    sol = pyode.solve(f, y0, t, **kwargs)
    counter = StepCounter(f)
    ref = torchdiffeq.odeint(counter, y0, t, **kwargs)
    assert sol.stats.n_steps == counter.steps
    for a, b in zip(sol.ys, ref):
        torch.testing.assert_close(a[:-1], b[:-1], rtol=0, atol=1e-12)
    rates = torch.tensor([1.0, 30.0], dtype=F64)
    rtol = torch.tensor([1e-8, 1e-3], dtype=F64)
    sol = pyode.solve(lambda t, y: -rates * y, y0[0], t, rtol=rtol, atol=1e-9)
    counter = StepCounter(lambda t, y: -rates * y)
    ref = torchdiffeq.odeint(counter, y0[0], t, rtol=rtol, atol=1e-9)
    assert sol.stats.n_steps == counter.steps
    torch.testing.assert_close(sol.ys[:-1], ref[:-1], rtol=0, atol=1e-12)


def test_per_component_tolerances_on_fixed_grids_and_scipy():
    y0 = (torch.tensor([1.0], dtype=F64), torch.tensor([0.0], dtype=F64))
    f = lambda t, y: (y[1], -y[0])
    t = torch.linspace(0, 1, 3, dtype=F64)
    opts = {"step_size": 0.05}
    ys = pyode.odeint(f, y0, t, method="implicit_adams", rtol=(1e-9, 1e-6), atol=(1e-10, 1e-8), options=opts)
    ref = torchdiffeq.odeint(f, y0, t, method="implicit_adams", rtol=(1e-9, 1e-6), atol=(1e-10, 1e-8), options=opts)
    for a, b in zip(ys, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    ys = pyode.odeint(lambda t, y: torch.stack([y[1], -y[0]]), torch.tensor([1.0, 0.0], dtype=F64), t,
                      method="scipy_solver", rtol=torch.tensor([1e-10, 1e-10], dtype=F64), atol=1e-12,
                      options={"solver": "DOP853"})
    torch.testing.assert_close(ys[:, 0], torch.cos(t), rtol=0, atol=1e-8)


def test_bad_per_component_tolerances_raise():
    y0 = (torch.tensor([1.0], dtype=F64), torch.tensor([0.0], dtype=F64))
    f = lambda t, y: (y[1], -y[0])
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(ValueError, match="rtol has 3 entries but y0 has 2 tuple components"):
        pyode.odeint(f, y0, t, rtol=(1e-6, 1e-6, 1e-6))
    with pytest.raises(ValueError, match=r"atol\[1\] must be finite and >= 0"):
        pyode.odeint(f, y0, t, atol=(1e-6, -1.0))
    with pytest.raises(ValueError, match="does not broadcast"):
        pyode.odeint(lambda t, y: -y, torch.ones(3, dtype=F64), t, rtol=torch.tensor([1e-6, 1e-7]))
    with pytest.raises(ValueError, match="pass adjoint_rtol and adjoint_atol"):
        pyode.odeint_adjoint(f, y0, t, rtol=(1e-6, 1e-7), adjoint_params=())
    with pytest.raises(ValueError, match="per_sample"):
        pyode.odeint(lambda t, y: -y, torch.ones(3, 2, dtype=F64), t, rtol=torch.full((3, 2), 1e-6),
                     options={"per_sample": True})


# ---------------------------------------------------------------------------------------------- perturb


class Staircase:
    """f(t) = ceil(t / h): on each step (t_k, t_k+1) of the grid it is k + 1, but AT t_k it is k (the
    value of the step to the left). Records every time it is called at."""

    def __init__(self, h):
        self.h, self.times = h, []

    def __call__(self, t, y):
        self.times.append(float(t))
        return torch.ceil(t / self.h).to(y.dtype) * torch.ones_like(y)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4", "implicit_adams"])
@pytest.mark.parametrize("t_dtype", [F64, torch.float32])
def test_perturb_never_evaluates_func_at_a_grid_point(method, t_dtype):
    """With perturb=True every step sees only its own piece: y(1) = h * sum(k + 1) exactly (for every
    method: f is constant on each step); func is never called exactly at a grid point (in func's own time
    dtype). Without it, the step start sees the left piece (torchdiffeq's behaviour too)."""
    h, n = 0.125, 8  # binary fractions: the grid is exact in float32 and float64
    t = torch.tensor([0.0, 1.0], dtype=t_dtype)
    f = Staircase(h)
    ys = pyode.odeint(f, torch.zeros(1, dtype=F64), t, method=method, options={"step_size": h, "perturb": True})
    if "adams" not in method:  # Adams extrapolates past pieces' derivatives: exact only for one-step methods
        assert float(ys[-1]) == pytest.approx(h * sum(k + 1 for k in range(n)), abs=1e-12)
    grid = {k * h for k in range(n + 1)}
    assert not grid & set(f.times)
    ref = torchdiffeq.odeint(Staircase(h), torch.zeros(1, dtype=F64), t, method=method,
                             options={"step_size": h, "perturb": True})
    torch.testing.assert_close(ys, ref, rtol=0, atol=1e-6)
    if method == "euler":
        plain = pyode.odeint(Staircase(h), torch.zeros(1, dtype=F64), t, method="euler", options={"step_size": h})
        assert float(plain[-1]) == pytest.approx(h * sum(range(n)), abs=1e-12)


def test_perturb_with_cubic_interpolation_takes_f1_from_the_left():
    """interp='cubic' needs f(t1) of each step (non-FSAL rk4): with perturb it comes from the step's own
    piece too, so no call lands on a grid point; f is constant on each step, so the outputs between grid
    points are exact: y(t) = y(t_k) + (k + 1)(t - t_k)."""
    h = 0.125
    f = Staircase(h)
    t = torch.tensor([0.0, 0.0625, 0.3125, 1.0], dtype=F64)
    ys = pyode.odeint(f, torch.zeros(1, dtype=F64), t, method="rk4",
                      options={"step_size": h, "perturb": True, "interp": "cubic"})
    assert not {k * h for k in range(9)} & set(f.times)
    torch.testing.assert_close(ys[:, 0], torch.tensor([0.0, 0.0625, 0.125 + 2 * 0.125 + 3 * 0.0625, 4.5],
                                                      dtype=F64), rtol=0, atol=1e-12)


def test_func_with_a_perturb_keyword_is_told_the_side():
    calls = []

    def f(t, y, *, perturb=Perturb.NONE):
        calls.append(perturb)
        return -y

    pyode.odeint(f, torch.ones(1, dtype=F64), torch.tensor([0.0, 0.5], dtype=F64), method="rk4",
                 options={"step_size": 0.25, "perturb": True})
    # rk4 (3/8 rule): 4 stages per step, the first one after t0, the last one before t1.
    assert calls == [Perturb.NEXT, Perturb.NONE, Perturb.NONE, Perturb.PREV] * 2

    def g(t, y, **kwargs):  # a **kwargs is not a perturb keyword (torchdiffeq never passes one)
        assert not kwargs
        return -y

    pyode.odeint(g, torch.ones(1, dtype=F64), torch.tensor([0.0, 0.5], dtype=F64), method="rk4",
                 options={"step_size": 0.25, "perturb": True})


def test_whether_func_declares_perturb_is_read_per_function():
    """The answer is remembered per function (a module's forward, a method's function): two modules of different
    classes, two methods of one class and a partial each get their own, whichever is asked first."""
    import functools

    from pyode._solvers.perturb import accepts_perturb

    class Plain(torch.nn.Module):
        def forward(self, t, y):
            return -y

    class Sided(torch.nn.Module):
        def forward(self, t, y, perturb=Perturb.NONE):
            return -y

    class Both:
        def plain(self, t, y):
            return -y

        def sided(self, t, y, *, perturb=Perturb.NONE):
            return -y

    def sided(t, y, scale, perturb=Perturb.NONE):
        return -scale * y

    for _ in range(2):  # the second round reads what the first one remembered
        assert not accepts_perturb(Plain()) and accepts_perturb(Sided())
        assert not accepts_perturb(Both().plain) and accepts_perturb(Both().sided)
        assert accepts_perturb(functools.partial(sided, scale=2.0)) and not accepts_perturb(torch.neg)


@pytest.mark.parametrize("method", ["dopri5", "adaptive_heun", "bosh3"])
@pytest.mark.parametrize("t_dtype", [F64, torch.float32])
def test_jump_t_never_evaluates_func_at_the_jump(method, t_dtype):
    """f = 1 before the jump at 0.5 and 2 from it on: y(1) = 1.5 exactly (every stage sees one piece),
    and the jump itself is never an evaluation time (non-FSAL adaptive_heun interpolates with f(t1),
    which must come from the left piece too)."""
    times = []

    def f(t, y):
        times.append(float(t))
        return torch.where(t >= 0.5, 2.0, 1.0).to(y.dtype) * torch.ones_like(y)

    t = torch.tensor([0.0, 0.3, 0.5, 0.7, 1.0], dtype=t_dtype)
    ys = pyode.odeint(f, torch.zeros(1, dtype=F64), t, method=method, options={"jump_t": [0.5]})
    torch.testing.assert_close(ys[:, 0], torch.tensor([0.0, 0.3, 0.5, 0.9, 1.5], dtype=F64), rtol=0, atol=1e-6)
    assert 0.5 not in times


# -------------------------------------------------------------------------------------- grid_constructor


def test_grid_constructor_is_used():
    """fn(func, y0, t) -> grid: the steps are the grid's, the result that of stepping it by hand."""
    seen = []

    def grid_fn(func, y0, t):
        seen.append((func, y0, t))
        return torch.tensor([0.0, 0.1, 0.3, 0.6, 1.0], dtype=t.dtype)

    f = lambda t, y: -y
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    sol = pyode.solve(f, y0, t, method="euler", options={"grid_constructor": grid_fn})
    assert len(seen) == 1 and seen[0][0] is f and seen[0][1] is y0
    assert sol.stats.n_accepted == 4
    expected = (1 - 0.1) * (1 - 0.2) * (1 - 0.3) * (1 - 0.4)
    assert float(sol.ys[-1]) == pytest.approx(expected, abs=1e-14)
    ref = torchdiffeq.odeint(f, y0, t, method="euler", options={"grid_constructor": grid_fn})
    torch.testing.assert_close(sol.ys, ref, rtol=0, atol=1e-14)


def test_grid_constructor_in_reverse_time_and_bad_grids():
    f = lambda t, y: -y
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([1.0, 0.0], dtype=F64)
    ys = pyode.odeint(f, y0, t, method="rk4", options={"grid_constructor": lambda f, y, t: torch.linspace(1, 0, 11,
                                                                                                           dtype=F64)})
    assert float(ys[-1]) == pytest.approx(math.e, rel=1e-6)
    with pytest.raises(ValueError, match="mutually exclusive"):
        pyode.odeint(f, y0, t, method="euler", options={"grid_constructor": lambda f, y, t: t, "step_size": 0.1})
    with pytest.raises(ValueError, match=r"grid_constructor'\] must return a grid from"):
        pyode.odeint(f, y0, t, method="euler", options={"grid_constructor": lambda f, y, t: torch.tensor([1.0, 0.5])})
    with pytest.raises(ValueError, match="strictly monotonic"):
        pyode.odeint(f, y0, t, method="euler",
                     options={"grid_constructor": lambda f, y, t: torch.tensor([1.0, 0.2, 0.5, 0.0])})


# ---------------------------------------------------------------------------------------- Adams options


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams", "fixed_adams"])
@pytest.mark.parametrize("max_order", [2, 4, 6, 12])  # torchdiffeq fails on max_order=1 (an empty deque)
def test_adams_options_match_torchdiffeq(method, max_order):
    """max_order (variable order up to it) and max_iters have torchdiffeq's meaning: the same outputs (to
    rounding: the weights differ in the last bit, and explicit Adams of order 11 is unstable at this step,
    growing ~1e6 times, so they agree to ~1e-9 relative there)."""
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    f = lambda t, y: torch.stack([y[1], -y[0] - 0.1 * y[1] * t])
    for max_iters in (1, 4):
        opts = {"step_size": 0.02, "max_order": max_order, "max_iters": max_iters}
        with warnings.catch_warnings():  # both warn (max_order < 4, unconverged corrector): compare outputs
            warnings.simplefilter("ignore")
            ys = pyode.odeint(f, y0, t, method=method, options=opts)
            ref = torchdiffeq.odeint(f, y0, t, method=method, options=opts)
        torch.testing.assert_close(ys, ref, rtol=1e-7, atol=1e-12)


def test_adams_order_rises_with_max_order():
    """A higher max_order is more accurate on a smooth problem at a stable step (y' = -y, h = 0.01)."""
    y0, t = torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    errs = [float((pyode.odeint(lambda t, y: -y, y0, t, method="implicit_adams",
                                options={"step_size": 0.01, "max_order": k})[-1] - math.exp(-1)).abs())
            for k in (4, 6)]
    assert errs[1] < errs[0] / 10, errs
    with pytest.raises(ValueError, match=r"options\['max_order'\] must be at most 12"):
        pyode.odeint(lambda t, y: -y, y0, t, method="explicit_adams", options={"step_size": 0.1, "max_order": 13})


# ------------------------------------------------------------------------------------- min_step/max_step


def test_max_step_and_min_step_bound_every_step_including_the_first():
    f = lambda t, y: -y
    y0, t = torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    sol = pyode.solve(f, y0, t, options={"first_step": 0.5, "max_step": 0.05}, dense=True, save_steps=True)
    steps = np.diff(sol.ts.numpy())
    assert steps.max() <= 0.05 + 1e-15 and len(steps) >= 20
    sol = pyode.solve(f, y0, t, rtol=1e-3, atol=1e-6, options={"first_step": 1e-6, "min_step": 0.1},
                      dense=True, save_steps=True)
    steps = np.diff(sol.ts.numpy())
    assert steps[:-1].min() >= 0.1 - 1e-15  # the last step may be shorter: it ends on t[-1]


@pytest.mark.parametrize("gradient", ["backprop", "adjoint"])
def test_func_sees_t_in_y0s_dtype_as_torchdiffeq(gradient):
    """torchdiffeq's cnf.py solves float32 states on a float64 grid (np.linspace) with a func that feeds t to a
    float32 nn.Linear: func must get t in y0's real dtype (torchdiffeq casts it to y.abs().dtype)."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    torch.manual_seed(0)
    hyper = torch.nn.Linear(1, 2)
    seen = []

    def func(t, y):
        seen.append(t.dtype)
        return torch.tanh(hyper(t.reshape(1, 1))) * y

    y0 = torch.ones(3, 2)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    kwargs = {"adjoint_params": tuple(hyper.parameters())} if gradient == "adjoint" else {}
    solve = pyode.odeint_adjoint if gradient == "adjoint" else pyode.odeint
    ys = solve(func, y0, t, rtol=1e-6, atol=1e-8, **kwargs)
    assert set(seen) == {torch.float32} and ys.dtype == torch.float32
    ys.sum().backward()
    theirs = (torchdiffeq.odeint_adjoint if gradient == "adjoint" else torchdiffeq.odeint)(func, y0, t, rtol=1e-6,
                                                                                           atol=1e-8, **kwargs)
    torch.testing.assert_close(ys.detach(), theirs.detach(), rtol=1e-5, atol=1e-6)  # both to rtol 1e-6, float32
    complex_seen = []
    pyode.odeint(lambda t, y: complex_seen.append(t.dtype) or -y, torch.ones(2, dtype=torch.complex64), t)
    assert set(complex_seen) == {torch.float32}  # a complex64 state's real dtype
