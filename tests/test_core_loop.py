"""The torch path's solves in the C++ loop (pyode._solvers.core_loop): the same steps and outputs as the Python
loops, exceptions and Ctrl-C propagating, failures diagnosed by the reference loop, and no state left behind.

``PYODE_CORE_LOOP=0`` makes a solve take the Python loop (read when the problem is built), which is how each
test gets the reference to compare against."""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch

import pyode
from pyode import _tuning
from pyode._solvers import core_loop
from pyode._solvers.problem import build_problem, integrate
from pyode._solvers.tableaux import get_tableau
from pyode.native._methods import ADAPTIVE, FIXED, FIXED_DIRK, STIFF

pytestmark = pytest.mark.skipif(not core_loop.available() or os.environ.get("PYODE_BACKEND") == "reference",
                                reason="the C++ loop needs the native library and the compiled backend")
F64 = torch.float64
EPS = torch.finfo(F64).eps
F32 = torch.float32
EPS32 = torch.finfo(F32).eps


def spiral(t, y):
    """A nonlinear 2-D field with explicit time dependence (so t reaches func correctly or the test fails)."""
    return torch.stack([-0.1 * y[0] ** 3 + 2.0 * y[1] ** 3, -2.0 * y[0] ** 3 - 0.1 * y[1] ** 3 + 0.1 * torch.sin(t)])


def robertson(t, y):
    y1, y2, y3 = y[0], y[1], y[2]
    return torch.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2 * y2, 3e7 * y2 * y2])


def solve_both(monkeypatch, func, y0, t, **kwargs):
    """(Python loop's solution, C++ loop's solution), both without autograd; checks the C++ loop ran and
    finished: a C++ solve that fails is rerun by the Python loop, which would make the comparison vacuous."""
    monkeypatch.setenv("PYODE_CORE_LOOP", "0")
    with torch.no_grad():
        ref = pyode.solve(func, y0, t, **kwargs)
    monkeypatch.setenv("PYODE_CORE_LOOP", "1")
    results = []
    original = core_loop.CoreSolver.integrate

    def integrate(self, *args):
        results.append(original(self, *args))
        return results[-1]

    monkeypatch.setattr(core_loop.CoreSolver, "integrate", integrate)
    with torch.no_grad():
        got = pyode.solve(func, y0, t, **kwargs)
    assert results, "the C++ loop did not run this solve"
    assert all(r is not None for r in results), "the C++ loop failed and the Python loop reran the solve"
    return ref, got


def assert_same_solve(ref, got, steps: int, stages: int):
    """Same accepted/rejected steps and evaluations; outputs equal to rounding in their dtype (eps). Both loops
    do the same operations; only the order of the stage sums may differ (float64: the C++ loop's combine vs the
    fused kernels; float32: the same order as lincomb_cpu<float>, unless a compiler evaluates a sum differently,
    e.g. contracts a product into an FMA), so each stage can differ by a few ulps, carried through the flow:
    steps x stages x 8 eps relative to each component's largest magnitude, growth of the flow over the test
    intervals < 10."""
    assert got.ys.dtype == ref.ys.dtype
    assert (got.stats.n_accepted, got.stats.n_rejected, got.stats.nfe) == \
        (ref.stats.n_accepted, ref.stats.n_rejected, ref.stats.nfe)
    info = torch.finfo(ref.ys.dtype)
    bound = 10 * max(steps, 1) * stages * 8 * info.eps
    scale = ref.ys.abs().amax(0).clamp_min(info.tiny)
    assert ((got.ys - ref.ys).abs() / scale).max().item() <= bound
    assert got.stats.t_reached == ref.stats.t_reached


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("reverse", [False, True])
def test_adaptive_methods_take_the_python_loops_steps(monkeypatch, method, reverse):
    t = torch.linspace(0.0, 3.0, 7, dtype=F64)
    t = t.flip(0) if reverse else t
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    ref, got = solve_both(monkeypatch, spiral, y0, t, rtol=1e-7, atol=1e-9, method=method,
                          options={"step_t": [1.234 * (-1 if reverse else 1)], "max_step": 0.4})
    assert_same_solve(ref, got, ref.stats.n_steps, 13)


@pytest.mark.parametrize("method", FIXED)
def test_fixed_grid_methods_take_the_python_loops_steps(monkeypatch, method):
    t = torch.tensor([0.0, 0.37, 1.0, 2.05], dtype=F64)
    ref, got = solve_both(monkeypatch, spiral, torch.tensor([1.0, 0.5], dtype=F64), t, method=method,
                          options={"step_size": 0.05})
    assert_same_solve(ref, got, ref.stats.n_steps, 4)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("method,options", [
    ("explicit_adams", {"step_size": 0.02, "max_order": 5}),
    ("implicit_adams", {"step_size": 0.01}),                                 # up to 11 past derivatives
    ("fixed_adams", {"step_size": 0.05, "max_order": 4, "max_iters": 1}),    # correctors that do not converge
])
def test_adams_methods_take_the_python_loops_steps(monkeypatch, method, options, reverse):
    """The Adams stepper kind (fixed_grid.py's AdamsLoop): the RK4 start, the predictor, the corrector's
    iterations and its failures (the oldest derivative dropped, the warning), the restart at the shorter last step,
    linear outputs between grid points."""
    t = torch.tensor([0.0, 0.37, 1.0, 2.05], dtype=F64)
    t = -t if reverse else t
    func = (lambda s, y: -spiral(-s, y)) if reverse else spiral
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref, got = solve_both(monkeypatch, func, torch.tensor([1.0, 0.5], dtype=F64), t, method=method, rtol=1e-7,
                              atol=1e-9, options=options)
    unconverged = [w for w in caught if "did not converge" in str(w.message)]
    assert bool(unconverged) == (options.get("max_iters") == 1)
    assert_same_solve(ref, got, ref.stats.n_steps, 12)


def van_der_pol_10_forced(t, y):
    return torch.stack([y[1], 10.0 * (1.0 - y[0] * y[0]) * y[1] - y[0] + 0.1 * torch.sin(t)])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("options", [{}, {"interp": "cubic"}, {"jacobian": "differences", "max_iters": 7}])
@pytest.mark.parametrize("method", FIXED_DIRK)
def test_implicit_fixed_grid_dirks_take_the_python_loops_steps(monkeypatch, method, options, reverse):
    """torchdiffeq's diagonally implicit grid methods as the ESDIRK kind (an implicit first stage behind an explicit
    f0 stage): the same Newton iterations (fixed-grid tolerances), Jacobian refreshes and outputs (linear, or cubic
    with f(t1) for the methods that are not stiffly accurate)."""
    t = torch.tensor([0.0, 0.37, 1.0, 2.05], dtype=F64)
    t = -t if reverse else t
    func = (lambda s, y: -van_der_pol_10_forced(-s, y)) if reverse else van_der_pol_10_forced
    ref, got = solve_both(monkeypatch, func, torch.tensor([2.0, 0.0], dtype=F64), t, method=method,
                          options={"step_size": 0.02, **options})
    assert_same_solve(ref, got, ref.stats.n_steps, 3)


def test_a_failed_implicit_grid_step_raises_the_python_loops_error(monkeypatch):
    """A Newton solve that fails on a fixed grid stops the C++ loop; the Python loop reruns the solve and raises its
    ImplicitSolveError (naming the method and what to try), the same as without the C++ loop."""
    y0, t = torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor([0.0, 10.0], dtype=F64)
    messages = []
    for core in ("0", "1"):
        monkeypatch.setenv("PYODE_CORE_LOOP", core)
        with pytest.raises(pyode.ImplicitSolveError) as info, torch.no_grad():
            pyode.solve(robertson, y0, t, method="sdirk2", options={"step_size": 1.0, "max_iters": 2})
        messages.append(str(info.value))
    assert messages[0] == messages[1] and "sdirk2" in messages[0]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("options", [{"step_size": 0.03}, {}])
def test_alf_takes_the_python_loops_steps(monkeypatch, options, reverse):
    """The ALF kind (alf.py's AlfLoop): ceil(Δt / step_size) equal steps per output interval (one without a
    step_size), the same outputs to rounding."""
    t = torch.tensor([0.0, 0.37, 1.0, 2.05], dtype=F64)
    t = -t if reverse else t
    func = (lambda s, y: -spiral(-s, y)) if reverse else spiral
    ref, got = solve_both(monkeypatch, func, torch.tensor([1.0, 0.5], dtype=F64), t, method="alf", options=options)
    assert_same_solve(ref, got, ref.stats.n_steps, 3)


def test_reversible_gradient_starts_from_the_cpp_loops_final_v(monkeypatch):
    """gradient="reversible" runs its forward ALF solve in the C++ loop (no autograd records it) and reconstructs the
    steps backwards from the loop's final v: the gradients of the Python loop's solve, to rounding."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 2).double()
    params = tuple(lin.parameters())
    t = torch.linspace(0.0, 1.0, 4, dtype=F64)
    grads, runs, original = [], [], core_loop.CoreSolver.integrate

    def integrate(self, *args):
        runs.append(core)
        return original(self, *args)

    monkeypatch.setattr(core_loop.CoreSolver, "integrate", integrate)
    for core in ("0", "1"):
        monkeypatch.setenv("PYODE_CORE_LOOP", core)
        y0 = torch.tensor([0.3, -0.2], dtype=F64, requires_grad=True)
        ys = pyode.odeint(lambda s, y: torch.tanh(lin(y)), y0, t, method="alf", options={"step_size": 0.05},
                          gradient="reversible", adjoint_params=params)
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(ys.square().sum(), (y0, *params))]))
    assert runs == ["1"]  # the forward solve of the second pass only
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", STIFF)
def test_stiff_methods_take_the_python_loops_steps(monkeypatch, method):
    """Robertson with the Python path's exact Jacobian: the same Newton iterations and steps. The LU differs
    (torch's LAPACK vs the loop's own), each solve by ~cond x eps; Robertson's Newton matrices have condition
    numbers up to ~1e4, so outputs agree to ~1e4 x steps x eps relative, not to the explicit methods' bound."""
    t = torch.tensor([0.0, 1e-3, 1.0, 100.0], dtype=F64)
    ref, got = solve_both(monkeypatch, robertson, torch.tensor([1.0, 0.0, 0.0], dtype=F64), t, rtol=1e-6,
                          atol=1e-10, method=method)
    assert (got.stats.n_accepted, got.stats.n_rejected, got.stats.nfe) == \
        (ref.stats.n_accepted, ref.stats.n_rejected, ref.stats.nfe)
    scale = ref.ys.abs().amax(0)
    assert ((got.ys - ref.ys).abs() / scale).max().item() <= 1e4 * ref.stats.n_steps * EPS


def fading_stiffness(t, y):
    """y' = -λ(t) (y - cos t) - sin t with λ falling from 1e4 to 0.5 by t ~ 3: stiff, then not."""
    return -(1e4 * torch.exp(-4.0 * t) + 0.5) * (y - torch.cos(t)) - torch.sin(t)


def van_der_pol_100(t, y):
    return torch.stack([y[1], 100.0 * (1.0 - y[0] * y[0]) * y[1] - y[0]])


AUTO_CASES = {  # (func, y0, t, rtol, atol, the switches the Python loop makes)
    "robertson": (robertson, [1.0, 0.0, 0.0], [0.0, 1e-3, 1.0, 100.0], 1e-6, 1e-10, ["stiff"]),
    "fading": (fading_stiffness, [2.0], [0.0, 2.5, 5.0, 10.0], 1e-7, 1e-9, ["stiff", "nonstiff"]),
    "fading reversed": (lambda t, y: -fading_stiffness(-t, y), [2.0], [0.0, -2.5, -5.0, -10.0], 1e-7, 1e-9,
                        ["stiff", "nonstiff"]),
    "van der pol": (van_der_pol_100, [2.0, 0.0], [0.0, 50.0, 100.0], 1e-6, 1e-8, ["stiff", "nonstiff", "stiff"]),
}


@pytest.mark.parametrize("jacobian", [None, "differences"])
@pytest.mark.parametrize("case", AUTO_CASES)
def test_auto_switches_at_the_python_loops_steps(monkeypatch, case, jacobian):
    """method="auto" in the C++ loop (core/auto_switch.h): the same switches at the same steps as the Python loop's
    AutoSwitchStepper (its window's Jacobian checks included: every case makes some), seen as the same accepted and
    rejected steps and evaluations; outputs as test_stiff_methods_take_the_python_loops_steps's."""
    func, y0, t, rtol, atol, switches = AUTO_CASES[case]
    y0, t = torch.tensor(y0, dtype=F64), torch.tensor(t, dtype=F64)
    options = {} if jacobian is None else {"jacobian": jacobian}
    monkeypatch.setenv("PYODE_CORE_LOOP", "0")
    problem = build_problem(func, y0, t, method="auto", rtol=rtol, atol=atol, options=options)
    with torch.no_grad():
        integrate(problem)
    assert [label for _, label in problem.loop.stepper.switches][:3] == switches
    ref, got = solve_both(monkeypatch, func, y0, t, rtol=rtol, atol=atol, method="auto", options=options)
    assert (got.stats.n_accepted, got.stats.n_rejected, got.stats.nfe) == \
        (ref.stats.n_accepted, ref.stats.n_rejected, ref.stats.nfe)
    scale = ref.ys.abs().amax(0)
    assert ((got.ys - ref.ys).abs() / scale).max().item() <= 1e4 * ref.stats.n_steps * EPS


def test_a_last_step_that_lands_within_ulps_of_t_end_finishes_the_solve(monkeypatch):
    """Van der Pol (mu = 1000) with kvaerno5 to t = 3000: the last full step ended at 3000 - 4.5e-13, a sliver step
    of 4.5e-13 followed, the predictive controller proposed 9e-14 for a step never taken, and the C++ loop flagged
    a step underflow at t = 3000 (the Python loop, a few ulps apart, happened to land exactly and reran the
    solve: twice the evaluations). A remainder below the resolution of t now joins the step before it, and a row
    at t_end is not checked for the next step's size."""
    def vdp(t, y):
        return torch.stack([y[1], 1000.0 * (1.0 - y[0] * y[0]) * y[1] - y[0]])

    ref, got = solve_both(monkeypatch, vdp, torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.0, 3000.0], dtype=F64),
                          rtol=1e-6, atol=1e-6, method="kvaerno5", options={"jacobian": "differences"})
    assert got.stats.status == "success" and got.stats.t_reached == 3000.0
    assert (got.stats.n_accepted, got.stats.n_rejected) == (ref.stats.n_accepted, ref.stats.n_rejected)


def test_a_func_that_solves_inside_the_loop_gets_its_own_workspace(monkeypatch):
    """A one-trajectory solve reuses its thread's workspace from the previous solve; a func that itself solves
    (an inner ODE per evaluation) re-enters the loop in the same thread while the outer solve holds that
    workspace, so the inner one must get fresh buffers. Outer and inner steps equal to the Python loops'. Both
    solves are capped at 1000 steps (they take tens), so shared buffers fail the test instead of hanging it."""
    inner_t = torch.tensor([0.0, 0.3], dtype=F64)
    cap = {"max_num_steps": 1000}

    def inner_flow(y):  # y after 0.3 of the spiral: nonlinear in y, so the outer field depends on the inner solve
        return pyode.solve(spiral, y, inner_t, rtol=1e-8, atol=1e-10, options=cap).ys[-1]

    def outer(t, y):
        return inner_flow(y) - y

    t = torch.linspace(0.0, 1.0, 4, dtype=F64)
    ref, got = solve_both(monkeypatch, outer, torch.tensor([1.0, 0.5], dtype=F64), t, rtol=1e-7, atol=1e-9,
                          options=cap)
    # each evaluation's inner solve carries its own rounding (bounded as above) into the outer field
    assert_same_solve(ref, got, ref.stats.n_steps * 50, 7)


def test_tuple_state_with_rms_norm_and_batched_module(monkeypatch):
    lin = torch.nn.Linear(3, 3).double()
    y0 = (torch.ones(4, 3, dtype=F64), torch.zeros(2, dtype=F64))

    def func(t, y):
        return torch.tanh(lin(y[0])), -y[1] + t

    t = torch.linspace(0, 1, 5, dtype=F64)
    ref, got = solve_both(monkeypatch, func, y0, t, options={"norm": "rms"})
    assert ref.stats.n_accepted == got.stats.n_accepted
    for a, b in zip(ref.ys, got.ys):
        torch.testing.assert_close(b, a, rtol=0, atol=1e3 * EPS)


def test_recorded_solves_and_gradient_modes_use_the_python_loop(monkeypatch):
    """A solve autograd records (parameters with grad) runs the Python loop; its gradients stay exact."""
    calls = []
    monkeypatch.setattr(core_loop.CoreSolver, "integrate", lambda self, *a: calls.append(1))
    w = torch.tensor(0.7, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    ys = pyode.odeint(lambda t, y: -w * y, y0, torch.tensor([0.0, 1.0], dtype=F64))
    ys[-1].sum().backward()
    assert not calls
    torch.testing.assert_close(w.grad, -torch.exp(-w.detach()), rtol=1e-6, atol=0)


class Boom(Exception):
    pass


# Each configuration: (solve kwargs, whether y0 requires grad and the loss is backpropagated).
RAISE_CONFIGS = {
    "dopri5": ({}, False),
    "rk4": ({"method": "rk4", "options": {"step_size": 0.01}}, False),
    "rodas5": ({"method": "rodas5"}, False),
    "kvaerno5": ({"method": "kvaerno5"}, False),
    "reverse time": ({"reverse": True}, False),
    "event": ({"event_fn": lambda t, y: y[0] - 0.25}, False),
    "per-sample": ({"options": {"per_sample": True}, "batch": True}, False),
    "backprop": ({"gradient": "backprop"}, True),
    "adjoint": ({"gradient": "adjoint", "adjoint_params": ()}, True),
    "checkpoint": ({"gradient": "checkpoint", "adjoint_params": ()}, True),
}


def _raise_setup(name: str):
    kwargs, grad = RAISE_CONFIGS[name]
    kwargs = dict(kwargs)
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    if kwargs.pop("reverse", False):
        t = t.flip(0)
    y0 = torch.tensor([1.0, 0.5], dtype=F64)
    if kwargs.pop("batch", False):
        y0 = torch.stack([y0, 0.5 * y0])
    return kwargs, grad, t, y0


def _field(t, y):
    return spiral(t, y) if y.dim() == 1 else torch.stack([spiral(t_i, y_i) for t_i, y_i in zip(t, y)])


def _run(func, y0, t, kwargs, grad):
    y0 = y0.clone().requires_grad_(grad)
    sol = pyode.solve(func, y0, t, **kwargs)
    if grad:
        sol.ys.square().sum().backward()
        return sol, y0.grad
    return sol, None


@pytest.mark.parametrize("name", list(RAISE_CONFIGS))
def test_an_exception_from_func_propagates_as_is_and_leaves_no_state(name):
    """func raises at a random evaluation (forward, or backward for the gradient modes): the same exception
    object comes out, and the next solve in the process is bitwise equal to a fresh one (no stale workspace,
    view, pool buffer or counter)."""
    kwargs, grad, t, y0 = _raise_setup(name)
    fresh, fresh_grad = _run(_field, y0, t, kwargs, grad)
    total = fresh.stats.nfe + fresh.stats.nfe_backward
    rng = torch.Generator().manual_seed(0)
    for _ in range(3):
        raise_at = int(torch.randint(2, max(total - 1, 3), (1,), generator=rng))
        count, error = [0], Boom("from func")

        def func(t, y, count=count, raise_at=raise_at, error=error):
            count[0] += 1
            if count[0] == raise_at:
                raise error
            return _field(t, y)

        with torch.set_grad_enabled(grad), pytest.raises(Boom) as info:
            _run(func, y0, t, kwargs, grad)
        assert info.value is error
        again, again_grad = _run(_field, y0, t, kwargs, grad)
        assert torch.equal(again.ys, fresh.ys) and again.stats == fresh.stats
        assert (again_grad is None) == (fresh_grad is None)
        if grad:
            assert torch.equal(again_grad, fresh_grad)


def test_a_failing_solve_raises_the_reference_loops_error(monkeypatch):
    """max_num_steps in the C++ loop: the Python loop reruns it and raises its own error at the same time."""
    t = torch.tensor([0.0, 10.0], dtype=F64)
    errors = []
    for flag in ("0", "1"):
        monkeypatch.setenv("PYODE_CORE_LOOP", flag)
        with torch.no_grad(), pytest.raises(pyode.MaxStepsError) as info:
            pyode.solve(spiral, torch.tensor([1.0, 0.5], dtype=F64), t, options={"max_num_steps": 7})
        errors.append(info.value)
    assert str(errors[0]) == str(errors[1]) and errors[0].t_reached == errors[1].t_reached


def test_ctrl_c_stops_a_long_solve_within_a_second():
    """SIGINT while the C++ loop runs a torch func: KeyboardInterrupt comes out of pyode.solve in < 1 s."""
    script = textwrap.dedent("""
        import sys, time, torch, pyode
        def func(t, y):
            return torch.stack([y[1], -y[0]])
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        start = None
        try:
            with torch.no_grad():
                pyode.solve(func, torch.tensor([1.0, 0.0], dtype=torch.float64),
                            torch.tensor([0.0, 1e7], dtype=torch.float64), rtol=1e-10, atol=1e-12,
                            options={"max_num_steps": 10**9})
        except KeyboardInterrupt:
            sys.stdout.write("interrupted %.3f\\n" % time.perf_counter()); sys.stdout.flush()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)  # inside the solve by now
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    line = proc.stdout.readline().split()
    proc.wait(timeout=30)
    assert line and line[0] == "interrupted", "the solve did not stop on SIGINT"
    assert float(line[1]) - sent < 1.0


def _rss_kb() -> int:
    """Resident memory after a collection, with freed heap pages returned to the system (glibc keeps freed
    multi-megabyte blocks mapped at its discretion, which would read as growth that is not live memory)."""
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def test_many_solves_leave_rss_flat(monkeypatch):
    """10 000 small solves and 200 large ones after a warm-up: RSS within 5 % (no leaked callbacks, views or
    workspaces). The large ones run in the C++ loop too (above its default size limit)."""
    monkeypatch.setattr(_tuning, "CORE_LOOP_MAX_ELEMENTS", 1 << 20)
    small, t = torch.tensor([1.0, 0.5], dtype=F64), torch.tensor([0.0, 0.5], dtype=F64)
    large = torch.rand(100_000, dtype=F64)
    t_large = torch.linspace(0, 0.1, 5, dtype=F64)

    def decay(t, y):
        return -y

    def run(count_small, count_large):
        with torch.no_grad():
            for _ in range(count_small):
                pyode.solve(decay, small, t)
            for _ in range(count_large):
                pyode.solve(decay, large, t_large)

    run(1000, 20)
    before = _rss_kb()
    run(10_000, 200)
    after = _rss_kb()
    assert after <= 1.05 * before, f"RSS grew from {before} kB to {after} kB"


def test_many_per_sample_solves_leave_rss_flat(monkeypatch):
    """Per-sample rows in C++ (a RowSolver per row, their buffers in one arena per solve): 2 000 solves of 8 rows
    and 30 of 10 000 rows after a warm-up leave RSS within 5 %."""
    from pyode._solvers import per_sample

    def not_here(*args):
        raise AssertionError("the per-sample solve left the C++ rows")

    monkeypatch.setattr(per_sample.PerSampleLoop, "_integrate_tensor_ops", not_here)
    small, large = torch.rand(8, 2, dtype=F64), torch.rand(10_000, 2, dtype=F64)
    t = torch.tensor([0.0, 0.5], dtype=F64)

    def run(count_small, count_large):
        with torch.no_grad():
            for _ in range(count_small):
                pyode.solve(lambda t, y: -y, small, t, options={"per_sample": True})
            for _ in range(count_large):
                pyode.solve(lambda t, y: -y, large, t, options={"per_sample": True})

    run(200, 3)
    before = _rss_kb()
    run(2000, 30)
    after = _rss_kb()
    assert after <= 1.05 * before, f"RSS grew from {before} kB to {after} kB"


def test_core_solver_is_built_only_where_it_runs():
    """float32 stiff methods, float32 jump_t, states over CORE_LOOP_MAX_ELEMENTS and callable norms keep the Python
    loops; float32 explicit methods (adaptive and fixed grid), the auto-switching method and float64 Adams run in the
    C++ loop."""
    t = torch.tensor([0.0, 1.0])
    assert build_problem(spiral, torch.ones(2), t).loop.core is not None  # float32, explicit
    assert build_problem(spiral, torch.ones(2), t, method="rk4", options={"step_size": 0.1}).loop.core is not None
    assert build_problem(spiral, torch.ones(2), t, method="rodas5").loop.core is None  # float32, stiff
    assert build_problem(spiral, torch.ones(2), t, options={"jump_t": [0.5]}).loop.core is None  # float32 times
    limit = _tuning.CORE_LOOP_MAX_ELEMENTS
    for dtype in (F32, F64):
        assert build_problem(spiral, torch.ones(limit, dtype=dtype), t.to(dtype)).loop.core is not None
        assert build_problem(spiral, torch.ones(limit + 1, dtype=dtype), t.to(dtype)).loop.core is None  # fused
    assert build_problem(spiral, torch.ones(2, dtype=F64), t.double()).loop.core is not None
    assert build_problem(spiral, torch.ones(2, dtype=F64), t.double(), options={"norm": lambda y: y.abs().max()}
                         ).loop.core is None
    assert build_problem(spiral, torch.ones(2, dtype=F64), t.double(), method="auto").loop.core is not None
    adams = {"method": "implicit_adams", "options": {"step_size": 0.1}}
    assert build_problem(spiral, torch.ones(2, dtype=F64), t.double(), **adams).loop.core is not None
    assert build_problem(spiral, torch.ones(2), t, **adams).loop.core is None  # float32 Adams: the Python loop


@pytest.mark.parametrize("core", ["0", "1"])
def test_a_result_held_only_as_a_numpy_view_is_never_overwritten(monkeypatch, core):
    """A large no-grad solution kept only through ``.numpy()`` (the tensor itself dropped) keeps its values
    through later solves of the same size (results are never pooled buffers)."""
    monkeypatch.setenv("PYODE_CORE_LOOP", core)
    monkeypatch.setattr(_tuning, "CORE_LOOP_MAX_ELEMENTS", 1 << 20)  # the large state in the C++ loop too
    y0, t = torch.ones(50_000, dtype=F64), torch.linspace(0, 1, 4, dtype=F64)
    with torch.no_grad():
        kept = pyode.odeint(lambda t, y: -y, y0, t).numpy()
        expected = kept.copy()
        for _ in range(3):
            pyode.odeint(lambda t, y: 2 * y, y0, t)
    assert (kept == expected).all()


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rodas5"])
def test_terminal_events_are_located_as_the_python_loop_does(monkeypatch, method):
    """odeint_event without gradients: the same event time and state as the Python loop's bisection (the same
    operations on the same interpolant), and the C++ loop ran."""
    def event_fn(t, y):
        return y[0] - 0.25

    results = []
    for flag in ("0", "1"):
        monkeypatch.setenv("PYODE_CORE_LOOP", flag)
        calls = []
        original = core_loop.CoreSolver.integrate
        monkeypatch.setattr(core_loop.CoreSolver, "integrate",
                            lambda self, *a, calls=calls, original=original, **k: calls.append(1) or original(self, *a, **k))
        with torch.no_grad():
            results.append(pyode.odeint_event(spiral, torch.tensor([1.0, 0.5], dtype=F64), 0.0,
                                              event_fn=event_fn, method=method, rtol=1e-8, atol=1e-10))
        assert bool(calls) == (flag == "1")
        monkeypatch.setattr(core_loop.CoreSolver, "integrate", original)
    (t_ref, y_ref), (t_got, y_got) = results
    # Explicit methods: the same operations, so the same bisection. rodas5's LU (the loop's own vs LAPACK) rounds
    # differently, the states differ by ~1e-12 after ~50 steps, and a bisection midpoint can fall on the other
    # side: the event times then differ by at most the event tolerance (atol = 1e-10), the states by |y'| times it.
    tol = 0.0 if method != "rodas5" else 1e-10
    assert abs(float(t_got) - float(t_ref)) <= tol
    torch.testing.assert_close(y_got, y_ref, rtol=0, atol=1e3 * EPS + 10 * tol)


# ---- float32 states (pyode_solve_f32): the C++ loop computes each step as the compiled float32 kernels do
# (stage sums in float, weights h a_ij rounded to float, the error norm summed in float lanes per block), so the
# accepted/rejected steps and evaluations are the Python float32 loop's.


def assert_same_solve_f32(ref, got, method: str):
    """:func:`assert_same_solve` for a float32 solve with ``method`` (its stages, the reference's steps)."""
    assert got.ys.dtype == F32
    assert_same_solve(ref, got, ref.stats.n_steps, get_tableau(method).num_stages)


@pytest.mark.parametrize("method", ADAPTIVE)
@pytest.mark.parametrize("reverse", [False, True])
def test_float32_adaptive_methods_take_the_python_loops_steps(monkeypatch, method, reverse):
    t = torch.linspace(0.0, 3.0, 7, dtype=F32)
    t = t.flip(0) if reverse else t
    ref, got = solve_both(monkeypatch, spiral, torch.tensor([1.0, 0.5], dtype=F32), t, rtol=1e-5, atol=1e-7,
                          method=method, options={"step_t": [1.234 * (-1 if reverse else 1)], "max_step": 0.4})
    assert_same_solve_f32(ref, got, method)


@pytest.mark.parametrize("method", FIXED)
def test_float32_fixed_grid_methods_take_the_python_loops_steps(monkeypatch, method):
    t = torch.tensor([0.0, 0.37, 1.0, 2.05], dtype=F32)
    ref, got = solve_both(monkeypatch, spiral, torch.tensor([1.0, 0.5], dtype=F32), t, method=method,
                          options={"step_size": 0.05})
    assert_same_solve_f32(ref, got, method)


def test_float32_state_over_several_kernel_blocks(monkeypatch):
    """n = 5000: the error norm sums three kernel blocks (2048 elements each, float lanes within a block, double
    across), so its summation order is the kernels' only if the loop blocks the sum as they do. The stage sums
    take combine's blocked path (n >= 64)."""
    monkeypatch.setattr(_tuning, "CORE_LOOP_MAX_ELEMENTS", 1 << 20)  # above the default limit
    y0 = torch.rand(5000, generator=torch.Generator().manual_seed(0))

    def decay(t, y):
        return -y * (1 + 0.5 * torch.sin(3 * t + y))

    ref, got = solve_both(monkeypatch, decay, y0, torch.linspace(0, 2, 5), rtol=1e-6, atol=1e-8)
    assert ref.stats.n_rejected > 0  # the norm decided a rejection, too
    assert_same_solve_f32(ref, got, "dopri5")


def test_float32_tuple_state_and_batched_module(monkeypatch):
    """A tuple state (RMS norm over everything) of a batched module: flattened, viewed as float32 per call."""
    lin = torch.nn.Linear(3, 3)
    y0 = (torch.ones(4, 3), torch.zeros(2))

    def func(t, y):
        return torch.tanh(lin(y[0])), -y[1] + t

    ref, got = solve_both(monkeypatch, func, y0, torch.linspace(0, 1, 5), options={"norm": "rms"}, rtol=1e-5,
                          atol=1e-7)
    assert (got.stats.n_accepted, got.stats.n_rejected, got.stats.nfe) == \
        (ref.stats.n_accepted, ref.stats.n_rejected, ref.stats.nfe)
    bound = 10 * ref.stats.n_steps * 7 * 8 * EPS32  # as assert_same_solve_f32, dopri5's 7 stages, |y| <= ~2
    for a, b in zip(ref.ys, got.ys):
        assert b.dtype == F32
        torch.testing.assert_close(b, a, rtol=0, atol=2 * bound)


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_float32_terminal_events_are_located_as_the_python_loop_does(monkeypatch, method):
    """The same float32 interpolant and the same bisection: the same event time; the state at it equal to the
    float32 rounding of assert_same_solve_f32."""
    ref, got = solve_both(monkeypatch, spiral, torch.tensor([1.0, 0.5], dtype=F32), torch.tensor([0.0, 5.0], dtype=F32),
                          event_fn=lambda t, y: y[0] - 0.25, method=method, rtol=1e-5, atol=1e-7)
    assert got.event_t is not None and float(got.event_t) == float(ref.event_t)
    assert_same_solve_f32(ref, got, method)


def test_float32_exception_from_func_propagates_and_leaves_no_state():
    """func raises mid-solve in the float32 loop: the same exception object, then a solve equal to a fresh one."""
    t, y0 = torch.linspace(0.0, 2.0, 5), torch.tensor([1.0, 0.5])
    fresh = pyode.solve(spiral, y0, t)
    error, count = Boom("from func"), [0]

    def func(t, y):
        count[0] += 1
        if count[0] == fresh.stats.nfe // 2:
            raise error
        return spiral(t, y)

    calls = []
    original = core_loop.CoreSolver.integrate
    with pytest.MonkeyPatch.context() as mp, pytest.raises(Boom) as info:
        mp.setattr(core_loop.CoreSolver, "integrate", lambda self, *a: calls.append(1) or original(self, *a))
        pyode.solve(func, y0, t)
    assert info.value is error and calls
    again = pyode.solve(spiral, y0, t)
    assert torch.equal(again.ys, fresh.ys) and again.stats == fresh.stats


def test_float32_stall_at_the_edge_of_the_range_raises_the_python_loops_error(monkeypatch):
    """y' = 100 y from 1e30 in float32: once f overflows, the steps that stay finite no longer change y. The C++
    loop's stall rule (pyode's StallWatch) stops the row, and the Python loop's rerun raises its error."""
    errors = []
    for flag in ("0", "1"):
        monkeypatch.setenv("PYODE_CORE_LOOP", flag)
        with torch.no_grad(), pytest.raises(pyode.NonFiniteStateError, match="overflows torch.float32") as info:
            pyode.solve(lambda t, y: 100 * y, torch.full((4,), 1e30), torch.tensor([0.0, 0.3]))
        errors.append(info.value)
    assert str(errors[0]) == str(errors[1]) and errors[0].t_reached == errors[1].t_reached


def test_float32_entry_refuses_stiff_methods_and_short_buffers():
    """pyode_solve_f32 checks its arguments as pyode_solve_jac does, and refuses the stiff kinds (double only)."""
    ffi, lib = core_loop._native()
    t = torch.tensor([0.0, 1.0], dtype=F64)
    explicit = build_problem(spiral, torch.ones(2), t.float()).loop.core
    stiff = build_problem(spiral, torch.ones(2, dtype=F64), t, method="rodas5").loop.core
    rhs = ffi.callback("pyode_rhs_f32_fn", lambda *a: None)
    stats = ffi.new("pyode_traj_stats[]", 1)
    problem, _, _ = core_loop._problem(ffi, torch.ones(2), [0.0, 1.0], False)
    assert lib.pyode_solve_f32(stiff.method, stiff.opts, rhs, ffi.NULL, problem.struct, stats, 1) == -1
    assert "explicit method" in ffi.string(lib.pyode_last_error()).decode()
    problem.struct.ys_len = 3  # (T, n) needs 4
    assert lib.pyode_solve_f32(explicit.method, explicit.opts, rhs, ffi.NULL, problem.struct, stats, 1) == -1
    assert "ys is NULL or shorter" in ffi.string(lib.pyode_last_error()).decode()


@pytest.mark.parametrize("dtype", [F64, F32])
def test_a_func_that_returns_or_keeps_its_input_sees_the_python_loops_values(monkeypatch, dtype):
    """TorchRhs hands func one tensor of the solve (the loop's state copied in) and copies func's output out: a
    func returning its input (y' = y) and one that keeps the tensors it was given (reading them only while it
    runs) give the Python loop's steps and outputs."""
    seen = []

    def growth(t, y):
        seen.append(y)
        return y

    y0, t = torch.tensor([1.0, -2.0], dtype=dtype), torch.linspace(0.0, 1.0, 4, dtype=dtype)
    ref, got = solve_both(monkeypatch, growth, y0, t, method="dopri5", rtol=1e-6, atol=1e-9)
    assert_same_solve(ref, got, steps=int(ref.stats.n_accepted + ref.stats.n_rejected), stages=6)
    assert torch.allclose(got.ys[-1], y0 * torch.e, rtol=1e-4)


def test_torch_rhs_and_the_native_entry_check_their_arguments():
    """The _C side of the torch right-hand side refuses what would make it read or write out of bounds."""
    from pyode import _C

    ffi, _ = core_loop._native()
    flag = ffi.new("int32_t *", 0)
    cancel = int(ffi.cast("uintptr_t", flag))
    y_in = torch.zeros(3, dtype=F64)

    def call(s):
        return y_in

    with pytest.raises(ValueError, match="fewer than n values"):
        _C.TorchRhs(call=call, y_in=y_in, n=4, item_size=8, cancel=cancel)
    with pytest.raises(ValueError, match="item_size 4 or 8"):
        _C.TorchRhs(call=call, y_in=y_in, n=3, item_size=2, cancel=cancel)
    with pytest.raises(ValueError, match="cancel flag"):
        _C.TorchRhs(call=call, y_in=y_in, n=3, item_size=8, cancel=0)
    with pytest.raises(ValueError, match="must not be NULL"):
        _C.run_native_solve(solve=0, f32=False, method=0, options=0, rhs=0, jac=0, event=0, problem=0, stats=0,
                            stats_len=1)


def test_small_solves_in_two_threads_match_sequential_ones():
    """The C++ loop runs with the GIL released and TorchRhs takes it per call: two threads solving small problems
    at once (each in its own thread's workspace) give bitwise the results of the same solves one after another."""
    import threading

    def make(dtype, method):
        y0 = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=dtype)
        t = torch.linspace(0.0, 3.0, 7, dtype=dtype)

        def run():
            with torch.no_grad():
                return pyode.solve(lambda s, y: torch.tanh(y) * torch.sin(s) - 0.3 * y, y0, t, method=method,
                                   rtol=1e-7, atol=1e-9).ys

        return run

    runs = [make(F64, "dopri5"), make(F32, "tsit5")]
    want = [run() for run in runs]
    got: list[list[torch.Tensor]] = [[], []]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(i):
        try:
            barrier.wait()
            for _ in range(50):
                got[i].append(runs[i]())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for i in range(2):
        assert len(got[i]) == 50 and all(torch.equal(ys, want[i]) for ys in got[i])
