"""Loop hooks (pyode._solvers.hooks): gradient modes and output options watch the steps through hooks passed to
the loop, compose without knowing about each other, and a hooked solve runs in the Python loop. Plus the layering
rule: nothing under pyode/_solvers or pyode/_kernels imports pyode._gradients."""

import ast
import pathlib

import pytest
import torch

import pyode
from pyode._solvers import core_loop, hooks
from pyode._solvers.adaptive import AdaptiveLoop
from pyode._solvers.alf import AlfLoop
from pyode._solvers.fixed_grid import AdamsLoop, FixedGridLoop
from pyode._solvers.per_sample import PerSampleLoop
from pyode._solvers.problem import build_problem, integrate
from pyode._solvers.scipy_wrapper import ScipyLoop

F64 = torch.float64
PACKAGE = pathlib.Path(pyode.__file__).parent
LOOPS = (AdaptiveLoop, FixedGridLoop, AdamsLoop, PerSampleLoop, AlfLoop, ScipyLoop)


class Rotation(torch.nn.Module):
    """y' = A y with a learnable 2x2 A (a damped rotation)."""

    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=F64))

    def forward(self, t, y):
        return y @ self.A.T


def _imports(path: pathlib.Path) -> set[str]:
    """Every module a file imports, at any depth (function-local imports included), as dotted names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("layer", ["_solvers", "_kernels"])
def test_lower_layers_never_import_gradients(layer):
    files = sorted((PACKAGE / layer).glob("*.py"))
    assert files
    edges = {f.name: sorted(m for m in _imports(f) if m == "pyode._gradients" or m.startswith("pyode._gradients."))
             for f in files}
    assert {name: found for name, found in edges.items() if found} == {}


def test_every_loop_declares_its_hooks_and_has_no_hook_attributes():
    for loop in LOOPS:
        assert "SUPPORTED_HOOKS" in vars(loop), loop.__name__
        assert loop.SUPPORTED_HOOKS <= set(hooks.KINDS), loop.__name__
    problem = build_problem(lambda t, y: -y, torch.ones(2, dtype=F64), torch.linspace(0, 1, 3, dtype=F64))
    assert not any(hasattr(problem.loop, name) for name in ("recorder", "step_log"))


def test_compose_calls_each_hook_of_a_kind_in_order():
    calls = []
    both = hooks.compose(hooks.LoopHooks(on_step=lambda *a: calls.append(("first", a))),
                         hooks.NO_HOOKS,
                         hooks.LoopHooks(on_step=lambda *a: calls.append(("second", a)),
                                         on_accept=lambda r: calls.append(("accept", r))))
    assert both.kinds == {"on_step", "on_accept"} and bool(both) and not hooks.NO_HOOKS
    both.on_step(0.0, 1.0, "step", "evaluator")
    both.on_accept("record")
    assert calls == [("first", (0.0, 1.0, "step", "evaluator")), ("second", (0.0, 1.0, "step", "evaluator")),
                     ("accept", "record")]


def test_a_hook_the_loop_never_calls_is_refused():
    y0, t = torch.ones(3, 2, dtype=F64), torch.linspace(0, 1, 3, dtype=F64)
    problem = build_problem(lambda t, y: -y, y0, t, options={"per_sample": True})
    with pytest.raises(ValueError, match="PerSampleLoop does not call the on_step hook"):
        integrate(problem, hooks=hooks.LoopHooks(on_step=lambda *a: None))
    adams = build_problem(lambda t, y: -y, y0, t, method="explicit_adams", options={"step_size": 0.1})
    assert hooks.supports(adams.loop, "on_step") and not hooks.supports(adams.loop, "on_accept")
    with pytest.raises(ValueError, match="unknown hook kind"):
        hooks.supports(adams.loop, "on_reject")


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_checkpoint_records_and_dense_output_compose(method):
    """gradient='checkpoint' (on_accept) and dense=True (on_step) watch the same solve: its step times, dense
    output and gradient equal backprop's. Not bitwise: the no-grad forward runs the fused kernels and backprop
    torch's ops (same arithmetic, another summation order), and the controller turns the error ratio's rounding
    (~1e-16 / rtol = 1e-9 relative) into step sizes that differ by about that; hence 1e-9 on values of order 1."""
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    options = {"step_size": 0.05} if method == "rk4" else None
    results = {}
    for mode in ("backprop", "checkpoint"):
        func = Rotation()
        y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
        sol = pyode.solve(func, y0, t, method=method, options=options, gradient=mode, dense=True)
        sol.ys[-1].sum().backward()
        results[mode] = (sol, y0.grad, func.A.grad)
    (ref, gy_ref, gA_ref), (chk, gy, gA) = results["backprop"], results["checkpoint"]
    assert ref.ts.shape == chk.ts.shape and ref.ts.numel() > 3
    torch.testing.assert_close(chk.ts, ref.ts, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(chk.ys.detach(), ref.ys.detach(), rtol=1e-9, atol=1e-9)
    probe = torch.linspace(0.0, 2.0, 17, dtype=F64)
    torch.testing.assert_close(chk.evaluate(probe).detach(), ref.evaluate(probe).detach(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gy, gy_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gA, gA_ref, rtol=1e-9, atol=1e-9)


def test_interpolated_adjoint_and_progress_compose():
    """The interpolated adjoint's step log (on_step) and a progress meter (on_step) on one solve: the meter sees
    every accepted step (its increments sum to the span) and the adjoint's gradient is that of backprop to the
    tolerances (rtol 1e-9 on a smooth problem: agreement to 1e-6)."""

    class Meter:
        def __init__(self):
            self.total, self.updates, self.closed = 0.0, 0, False

        def update(self, dt):
            self.total, self.updates = self.total + dt, self.updates + 1

        def close(self):
            self.closed = True

    t = torch.linspace(0.0, 1.0, 3, dtype=F64)
    grads, meter = {}, Meter()
    for mode in ("backprop", "adjoint"):
        y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
        extra = {"adjoint_params": (), "adjoint_options": {"y": "interpolated"}, "progress": meter}
        sol = pyode.solve(lambda t, y: torch.stack([y[1], -torch.sin(y[0])]), y0, t, method="kvaerno5", rtol=1e-9,
                          atol=1e-12, gradient=mode, **(extra if mode == "adjoint" else {}))
        (grads[mode],) = torch.autograd.grad(sol.ys[-1].sum(), y0)
    assert meter.closed and meter.updates == sol.stats.n_accepted
    assert abs(meter.total - 1.0) < 1e-12
    torch.testing.assert_close(grads["adjoint"], grads["backprop"], rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not core_loop.available(), reason="the native library is not built")
def test_a_hooked_solve_runs_in_the_python_loop(monkeypatch):
    """No hook: the C++ loop runs the no-grad solve. Any hook (dense output here): the Python loop, which gives
    the same outputs (the step-parity tests pin the two together)."""
    calls = []
    real = core_loop.CoreSolver.integrate

    def spy(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(core_loop.CoreSolver, "integrate", spy)
    y0, t = torch.tensor([1.0, 0.5], dtype=F64), torch.linspace(0.0, 2.0, 5, dtype=F64)
    with torch.no_grad():
        plain = pyode.solve(Rotation(), y0, t)
        assert calls == [1]
        hooked = pyode.solve(Rotation(), y0, t, dense=True)
        assert calls == [1]
    torch.testing.assert_close(hooked.ys, plain.ys, rtol=1e-13, atol=1e-13)
    assert hooked.stats.n_accepted == plain.stats.n_accepted


@pytest.mark.parametrize("gradient", ["checkpoint", "reversible"])
def test_replayed_evaluations_count_as_backward(gradient):
    """A backward pass that replays steps through func counts them in ``nfe_backward`` (FlatFunc's
    backward_counting), leaving the forward count as it was when the forward pass ended."""
    lin = torch.nn.Linear(2, 2).double()
    kwargs = {"method": "alf", "options": {"step_size": 0.1}} if gradient == "reversible" else {}
    y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
    sol = pyode.solve(lambda t, y: lin(y), y0, torch.tensor([0.0, 1.0], dtype=torch.float64), gradient=gradient,
                      adjoint_params=tuple(lin.parameters()), **kwargs)
    forward = sol.stats.nfe
    assert sol.stats.nfe_backward == 0
    sol.ys.sum().backward()
    assert sol.stats.nfe == forward
    # checkpoint replays every accepted step from its recorded start: dopri5's 7 stages, f(t0, y0) included;
    # ALF: one evaluation per step inverse and one per step VJP (10 steps), plus f(t0, y0)
    expected = 7 * sol.stats.n_accepted if gradient == "checkpoint" else 2 * 10 + 1
    assert sol.stats.nfe_backward == expected
