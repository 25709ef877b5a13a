"""Bad-input battery (issue 7): every public entry point against a list of bad inputs.

Each bad input must raise a pyode error -- a ``ValueError``/``TypeError`` whose message names the argument,
or a :class:`pyode.ODESolverError` whose message gives the time reached and the cause -- never a segfault,
a hang (every test runs under a ``signal.alarm`` watchdog) or a silent NaN. An exception raised inside
``func`` propagates unchanged: the same object, with its traceback.

``python tests/test_bad_input_battery.py`` prints the battery as a Markdown table (docs/hardening.md).
"""

from __future__ import annotations

import math
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import pyode
import pyode.control as pc
import pyode.nn as pnn
from pyode import _kernels
from pyode._kernels import Segments

WATCHDOG_S = 60  # generous for a loaded CI machine; a hang would otherwise block the suite forever
PYODE_ERRORS = (ValueError, TypeError, pyode.ODESolverError)
F64 = torch.float64
T = torch.tensor([0.0, 1.0], dtype=F64)
Y0 = torch.ones(2, dtype=F64)


pytestmark = pytest.mark.usefixtures("watchdog")


def decay(t, y):
    return -y


class Decay(nn.Module):
    """``dy/dt = -k y`` with a learnable rate (an nn.Module, for odeint_adjoint)."""

    def __init__(self, k: float = 1.0):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=F64))

    def forward(self, t, y):
        return -self.k * y


def stiff(t, y):
    return -1e7 * (y - torch.cos(t))


def nan_after_half(t, y):
    return torch.where(t > 0.5, torch.full_like(y, math.nan), -y)


@dataclass(frozen=True)
class Case:
    """One bad input: ``call()`` must raise ``error`` with a message matching ``match``."""

    entry: str
    what: str
    call: Callable[[], object]
    error: type[BaseException] | tuple[type[BaseException], ...]
    match: str

    @property
    def id(self) -> str:
        return f"{self.entry}: {self.what}"


# ---- odeint / solve / odeint_adjoint: one list of inputs, run through each entry point -------------------

def _entry_points() -> dict[str, Callable]:
    return {
        "odeint": pyode.odeint,
        "solve": pyode.solve,
        "odeint_adjoint": lambda f, y0, t, **kw: pyode.odeint_adjoint(f, y0, t, adjoint_params=(), **kw),
    }


def _solver_inputs() -> list[tuple[str, tuple, dict, type, str]]:
    """(what, (func, y0, t), kwargs, error, match) for the arguments every solve entry point shares."""
    nan_y0 = torch.tensor([1.0, math.nan], dtype=F64)
    big_t = torch.tensor([0.0, 100.0], dtype=F64)
    return [
        ("func is not callable", ("f", Y0, T), {}, TypeError, "func must be callable"),
        ("y0 is a list of floats", (decay, [1.0, 2.0], T), {}, TypeError, r"y0\[0\] must be a torch.Tensor"),
        ("y0 is a numpy array", (decay, np.ones(2), T), {}, TypeError, "y0 must be a torch.Tensor"),
        ("y0 is None", (decay, None, T), {}, TypeError, "y0 must be a torch.Tensor"),
        ("y0 is an int tensor", (decay, torch.ones(2, dtype=torch.int64), T), {}, TypeError, "y0 must be floating"),
        ("y0 is complex32", (decay, torch.ones(2, dtype=torch.complex32), T), {}, TypeError, "y0 must be floating"),
        ("y0 contains NaN", (decay, nan_y0, T), {}, ValueError, "y0 contains NaN or inf"),
        ("y0 contains inf", (decay, torch.tensor([math.inf, 1.0], dtype=F64), T), {}, ValueError, "y0 contains NaN"),
        ("y0 is a meta tensor", (decay, torch.ones(2, device="meta"), T), {}, ValueError, "y0 is a meta tensor"),
        ("y0 is an empty tuple", (decay, (), T), {}, ValueError, "y0 is an empty tuple"),
        ("y0 tuple mixes dtypes", (decay, (Y0, Y0.float()), T), {}, ValueError, r"y0\[1\] is torch.float32"),
        ("t is a string", (decay, Y0, "0 1"), {}, TypeError, "t must be a 1-D"),
        ("t is None", (decay, Y0, None), {}, TypeError, "t must be a 1-D"),
        ("t is a list of strings", (decay, Y0, ["a", "b"]), {}, TypeError, "t must be a 1-D"),
        ("t is an int tensor", (decay, Y0, torch.tensor([0, 1])), {}, TypeError, "t must be floating"),
        ("t is 2-D", (decay, Y0, torch.zeros(2, 2, dtype=F64)), {}, ValueError, "t must be 1-D"),
        ("t is 0-dim", (decay, Y0, torch.tensor(1.0, dtype=F64)), {}, ValueError, "t must be 1-D"),
        ("t has zero length", (decay, Y0, torch.zeros(0, dtype=F64)), {}, ValueError, "t is empty"),
        ("t contains NaN", (decay, Y0, torch.tensor([0.0, math.nan], dtype=F64)), {}, ValueError, "t contains NaN"),
        ("t contains inf", (decay, Y0, torch.tensor([0.0, math.inf], dtype=F64)), {}, ValueError, "t contains NaN"),
        ("t has duplicate times", (decay, Y0, torch.tensor([0.0, 1.0, 1.0], dtype=F64)), {}, ValueError,
         "t must be strictly"),
        ("t is not monotonic", (decay, Y0, torch.tensor([0.0, 1.0, 0.5], dtype=F64)), {}, ValueError,
         "t must be strictly"),
        ("rtol < 0", (decay, Y0, T), {"rtol": -1e-3}, ValueError, "rtol must be finite and >= 0"),
        ("atol is NaN", (decay, Y0, T), {"atol": math.nan}, ValueError, "atol must be finite"),
        ("rtol is inf", (decay, Y0, T), {"rtol": math.inf}, ValueError, "rtol must be finite"),
        ("rtol is a string", (decay, Y0, T), {"rtol": "1e-3"}, TypeError, "rtol must be a float"),
        ("rtol is a tensor of another shape", (decay, Y0, T), {"rtol": torch.ones(3)}, ValueError,
         "rtol of shape \\(3,\\) does not broadcast"),
        ("rtol = atol = 0", (decay, Y0, T), {"rtol": 0.0, "atol": 0.0}, ValueError, "cannot both be 0"),
        ("method unknown", (decay, Y0, T), {"method": "rk45"}, ValueError, "unknown method 'rk45'"),
        ("options is a list", (decay, Y0, T), {"options": [("step_size", 0.1)]}, TypeError, "options must be a dict"),
        ("options has a typo", (decay, Y0, T), {"options": {"firststep": 0.1}}, ValueError,
         r"unknown option\(s\) \['firststep'\]"),
        ("max_num_steps = 0", (decay, Y0, T), {"options": {"max_num_steps": 0}}, ValueError,
         r"options\['max_num_steps'\] must be an integer >= 1"),
        ("max_num_steps = 1.5", (decay, Y0, T), {"options": {"max_num_steps": 1.5}}, ValueError,
         r"options\['max_num_steps'\] must be an integer"),
        ("max_num_steps is a string", (decay, Y0, T), {"options": {"max_num_steps": "10"}}, TypeError,
         r"options\['max_num_steps'\] must be a number"),
        ("first_step = 0", (decay, Y0, T), {"options": {"first_step": 0.0}}, ValueError,
         r"options\['first_step'\] must be > 0"),
        ("first_step is inf", (decay, Y0, T), {"options": {"first_step": math.inf}}, ValueError,
         r"options\['first_step'\] must be a finite"),
        ("first_step = 1e-300", (decay, Y0, T), {"options": {"first_step": 1e-300}}, ValueError,
         r"options\['first_step'\] = 1e-300 is below the resolution"),
        ("max_step = 1e-300", (decay, Y0, T), {"options": {"max_step": 1e-300}}, ValueError,
         r"options\['max_step'\] = 1e-300 is below the resolution"),
        ("min_step > max_step", (decay, Y0, T), {"options": {"min_step": 1.0, "max_step": 0.1}}, ValueError,
         r"options\['min_step'\] = 1.0 is larger"),
        ("min_step = 1e300 (cannot shrink)", (decay, Y0, T), {"options": {"min_step": 1e300}},
         pyode.StepSizeUnderflowError, "cannot shrink it"),
        ("safety is NaN", (decay, Y0, T), {"options": {"safety": math.nan}}, ValueError, r"options\['safety'\]"),
        ("ifactor < 1", (decay, Y0, T), {"options": {"ifactor": 0.5}}, ValueError, r"options\['ifactor'\]"),
        ("dfactor = 0", (decay, Y0, T), {"options": {"dfactor": 0.0}}, ValueError, r"options\['dfactor'\]"),
        ("dcoeff is inf", (decay, Y0, T), {"options": {"dcoeff": math.inf}}, ValueError, r"options\['dcoeff'\]"),
        ("step_t contains NaN", (decay, Y0, T), {"options": {"step_t": [math.nan]}}, ValueError,
         r"options\['step_t'\] contains NaN"),
        ("jump_t is a string", (decay, Y0, T), {"options": {"jump_t": "0.5"}}, TypeError, r"options\['jump_t'\]"),
        ("interp unknown", (decay, Y0, T), {"options": {"interp": "spline"}}, ValueError, r"options\['interp'\]"),
        ("norm unknown", (decay, Y0, T), {"options": {"norm": "l1"}}, ValueError, r"options\['norm'\]"),
        ("dtype option is a string", (decay, Y0, T), {"options": {"dtype": "float64"}}, TypeError,
         r"options\['dtype'\]"),
        ("gradient mode unknown", (decay, Y0, T), {"gradient": "magic"}, ValueError, "unknown gradient mode"),
        ("rk4 step_size = 0", (decay, Y0, T), {"method": "rk4", "options": {"step_size": 0.0}}, ValueError,
         r"options\['step_size'\] must be > 0"),
        ("rk4 step_size is NaN", (decay, Y0, T), {"method": "rk4", "options": {"step_size": math.nan}}, ValueError,
         r"options\['step_size'\] must be a finite"),
        ("rk4 step_size is inf", (decay, Y0, T), {"method": "rk4", "options": {"step_size": math.inf}}, ValueError,
         r"options\['step_size'\] must be a finite"),
        ("rk4 step_size = 1e-300", (decay, Y0, T), {"method": "rk4", "options": {"step_size": 1e-300}}, ValueError,
         r"options\['step_size'\] = 1e-300 is below the resolution"),
        ("rk4 step_size = 1e-12, max_num_steps = 1000", (decay, Y0, T),
         {"method": "rk4", "options": {"step_size": 1e-12, "max_num_steps": 1000}}, pyode.MaxStepsError,
         "needs 1e\\+12 steps.*max_num_steps=1000"),
        ("explicit_adams step_size = 1e-12", (decay, Y0, T),
         {"method": "explicit_adams", "options": {"step_size": 1e-12}}, pyode.MaxStepsError, "max_num_steps="),
        ("alf step_size = 1e-300", (decay, Y0, T), {"method": "alf", "options": {"step_size": 1e-300}}, ValueError,
         r"options\['step_size'\]"),
        ("alf step_size = 1e-12, max_num_steps = 10", (decay, Y0, T),
         {"method": "alf", "options": {"step_size": 1e-12, "max_num_steps": 10}}, pyode.MaxStepsError,
         "max_num_steps=10"),
        ("implicit_adams max_iters = 0", (decay, Y0, T),
         {"method": "implicit_adams", "options": {"step_size": 0.1, "max_iters": 0}}, ValueError,
         r"options\['max_iters'\]"),
        ("max_num_steps exhausted", (decay, Y0, big_t), {"options": {"max_num_steps": 5}}, pyode.MaxStepsError,
         "max_num_steps=5 exceeded.*t reached"),
        ("stiff problem exhausts steps (dopri5)", (stiff, Y0, torch.tensor([0.0, 10.0], dtype=F64)),
         {"options": {"max_num_steps": 200}}, pyode.MaxStepsError, "may be stiff.*t reached"),
        ("stiff problem exhausts steps (tsit5, float32)", (stiff, Y0.float(), torch.tensor([0.0, 10.0])),
         {"method": "tsit5", "options": {"max_num_steps": 200}}, pyode.MaxStepsError, "max_num_steps=200"),
        ("solution blows up (y' = y^2)", (lambda t, y: y * y, Y0, torch.tensor([0.0, 2.0], dtype=F64)), {},
         pyode.ODESolverError, r"t reached = (0\.99|1\.00)"),
        ("func returns NaN at t0", (lambda t, y: y * math.nan, Y0, T), {}, pyode.NonFiniteStateError,
         "NaN/inf at the initial time"),
        ("func returns inf at t0", (lambda t, y: y * math.inf, Y0, T), {}, pyode.NonFiniteStateError,
         "NaN/inf at the initial time"),
        ("func overflows (y0 = 1e308, f = 10 y)", (lambda t, y: 10 * y, torch.full((2,), 1e308, dtype=F64), T),
         {}, pyode.NonFiniteStateError, "initial time"),
        ("func returns NaN for t > 0.5 (dopri5)", (nan_after_half, Y0, T), {}, pyode.NonFiniteStateError,
         r"t reached = 0\.[45]"),
        ("func returns NaN for t > 0.5 (rk4)", (nan_after_half, Y0, T), {"method": "rk4", "options": {"step_size": 0.1}},
         pyode.NonFiniteStateError, r"t reached = 0\.6"),
        ("func returns NaN for t > 0.5 (explicit_adams)", (nan_after_half, Y0, T),
         {"method": "explicit_adams", "options": {"step_size": 0.1}}, pyode.NonFiniteStateError, "t reached"),
        ("func has a NaN parameter", (Decay(math.nan), Y0, T), {}, pyode.NonFiniteStateError, "initial time"),
        ("func returns None", (lambda t, y: None, Y0, T), {}, TypeError, "func output must be a torch.Tensor"),
        ("func returns a numpy array", (lambda t, y: -y.numpy(), Y0, T), {}, TypeError, "func output must be"),
        ("func returns a tuple for a tensor y0", (lambda t, y: (-y,), Y0, T), {}, TypeError, "func output must be"),
        ("func returns the wrong shape", (lambda t, y: -y[None], Y0, T), {}, ValueError,
         r"func output has shape \(1, 2\), expected \(2,\)"),
        ("func returns a broadcastable shape", (lambda t, y: torch.ones(1, dtype=F64), Y0, T), {}, ValueError,
         "func output has shape"),
        ("func returns an integer dtype", (lambda t, y: torch.zeros(2, dtype=torch.int64), Y0, T), {}, ValueError,
         "func output has dtype torch.int64, expected torch.float64"),
        ("func returns the wrong device", (lambda t, y: torch.zeros(2, dtype=F64, device="meta"), Y0, T), {},
         ValueError, "func output is on meta, expected cpu"),
        ("func returns a tensor for a tuple y0", (lambda t, y: -y[0], (Y0, Y0), T), {}, TypeError,
         "func must return a tuple of 2 tensors"),
        ("func returns too few tensors for a tuple y0", (lambda t, y: (-y[0],), (Y0, Y0), T), {}, ValueError,
         "func returned 1 tensors; y0 has 2"),
        ("func's tuple output has an integer dtype", (lambda t, y: (-y[0], torch.zeros(2, dtype=torch.int64)), (Y0, Y0), T), {},
         ValueError, r"func output\[1\] has dtype"),
    ]


def _solver_cases() -> list[Case]:
    cases = []
    for entry, run in _entry_points().items():
        for what, args, kwargs, error, match in _solver_inputs():
            if entry == "odeint_adjoint" and "gradient" in kwargs:
                continue  # odeint_adjoint fixes the gradient mode
            cases.append(Case(entry, what, lambda run=run, args=args, kw=kwargs: run(*args, **kw), error, match))
    return cases


# ---- entry-point specific inputs ----------------------------------------------------------------------

def _adjoint_backward(**kwargs):
    y0 = Y0.clone().requires_grad_(True)
    pyode.odeint_adjoint(Decay(), y0, T, **kwargs).sum().backward()
    return y0.grad


def _adjoint_cases() -> list[Case]:
    def adj(**kw):
        return lambda: pyode.odeint_adjoint(Decay(), Y0.clone().requires_grad_(), T, **kw)

    return [
        Case("odeint_adjoint", "plain function, no adjoint_params", lambda: pyode.odeint_adjoint(decay, Y0, T),
             ValueError, "adjoint_params"),
        Case("odeint_adjoint", "adjoint_params is an int", adj(adjoint_params=3), TypeError,
             "adjoint_params must be a tuple"),
        Case("odeint_adjoint", "adjoint_params is a single tensor", adj(adjoint_params=torch.ones(2)), TypeError,
             "wrap a single tensor"),
        Case("odeint_adjoint", "adjoint_params holds a float", adj(adjoint_params=[1.0]), TypeError,
             r"adjoint_params\[0\] must be a torch.Tensor"),
        Case("odeint_adjoint", "adjoint_rtol < 0", adj(adjoint_rtol=-1.0), ValueError, "adjoint_rtol must be"),
        Case("odeint_adjoint", "adjoint_atol is NaN", adj(adjoint_atol=math.nan), ValueError, "adjoint_atol must be"),
        Case("odeint_adjoint", "adjoint_method unknown", adj(adjoint_method="rk45"), ValueError,
             "unknown adjoint_method 'rk45'"),
        Case("odeint_adjoint", "adjoint_options is a list", adj(adjoint_options=[1]), TypeError,
             "adjoint_options must be a dict"),
        Case("odeint_adjoint", "adjoint_options norm unknown", adj(adjoint_options={"norm": "l1"}), ValueError,
             r"adjoint_options\['norm'\]"),
        Case("odeint_adjoint", "backward pass exhausts max_num_steps",
             lambda: _adjoint_backward(adjoint_options={"max_num_steps": 3}), pyode.MaxStepsError,
             "adjoint backward pass: max_num_steps=3.*t reached"),
        Case("odeint", "gradient='reversible' with rk4", lambda: pyode.odeint(decay, Y0, T, gradient="reversible",
                                                                            method="rk4"), ValueError, "method='alf'"),
        Case("odeint", "gradient='checkpoint' with explicit_adams",
             lambda: pyode.odeint(Decay(), Y0.clone().requires_grad_(), T, gradient="checkpoint",
                                  method="explicit_adams", options={"step_size": 0.1}),
             ValueError, "supports Runge-Kutta methods"),
        Case("solve", "unknown keyword argument", lambda: pyode.solve(decay, Y0, T, adjoint_parms=()), TypeError,
             "adjoint_parms"),
    ]


def _event_cases() -> list[Case]:
    def event(t0=0.0, event_fn=lambda t, y: y[0] - 0.5, func=decay, **kw):
        return lambda: pyode.odeint_event(func, Y0, t0, event_fn=event_fn, **kw)

    def oscillator(t, y):
        return torch.stack([y[1], -y[0]])

    return [
        Case("odeint_event", "event_fn is None", event(event_fn=None), TypeError, "event_fn must be callable"),
        Case("odeint_event", "event_fn is not callable", event(event_fn=3), TypeError, "event_fn must be callable"),
        Case("odeint_event", "t0 is a string", event(t0="0"), TypeError, "t0 must be a float"),
        Case("odeint_event", "t0 has two elements", event(t0=torch.tensor([0.0, 1.0])), ValueError,
             "t0 must be a single time"),
        Case("odeint_event", "t0 is NaN", event(t0=math.nan), ValueError, "t contains NaN"),
        Case("odeint_event", "event_fn returns a float", event(event_fn=lambda t, y: 1.0), ValueError,
             "single element"),
        Case("odeint_event", "event_fn returns NaN", event(event_fn=lambda t, y: y[0] * math.nan), ValueError,
             "event_fn.*returned nan at t = 0"),
        Case("odeint_event", "fixed-grid method without step_size", event(method="rk4"), ValueError,
             r"needs options\['step_size'\]"),
        Case("odeint_event", "event never happens (max_num_steps cap)",
             event(func=oscillator, event_fn=lambda t, y: y[0] - 5.0, options={"max_num_steps": 300}),
             pyode.MaxStepsError, "max_num_steps=300.*t reached"),
        Case("odeint_event", "y0 contains NaN", lambda: pyode.odeint_event(decay, torch.tensor([math.nan, 1.0]), 0.0,
                                                                          event_fn=lambda t, y: y[0]),
             ValueError, "y0 contains NaN"),
    ]


def _kernel_cases() -> list[Case]:
    x = torch.ones(4, dtype=F64)
    lincomb, rk_finish = _kernels.lincomb, _kernels.rk_finish
    return [
        Case("lincomb", "base is a list", lambda: lincomb([1.0, 2.0], [x], [[1.0]]), TypeError, "torch.Tensor"),
        Case("lincomb", "ks is a tensor, not a list", lambda: lincomb(x, x, [[1.0]]), TypeError,
             "ks must be a list"),
        Case("lincomb", "ks holds None", lambda: lincomb(x, [None], [[1.0]]), TypeError, r"ks\[0\] must be a torch"),
        Case("lincomb", "no base and no terms", lambda: lincomb(None, [], [[]]), ValueError, "need a base tensor"),
        Case("lincomb", "int64 tensors", lambda: lincomb(torch.ones(4, dtype=torch.int64), [], [[]]), ValueError,
             "float32 and float64"),
        Case("lincomb", "float16 tensors", lambda: lincomb(torch.ones(4, dtype=torch.float16), [], [[]]), ValueError,
             "float32 and float64"),
        Case("lincomb", "mixed dtypes", lambda: lincomb(x, [x.float()], [[1.0]]), ValueError, r"ks\[0\] is torch.float32"),
        Case("lincomb", "term of another length", lambda: lincomb(x, [torch.ones(5, dtype=F64)], [[1.0]]), ValueError,
             r"ks\[0\] must be 1-D with 4 elements"),
        Case("lincomb", "2-D base", lambda: lincomb(torch.ones(2, 2, dtype=F64), [x], [[1.0]]), ValueError,
             "base must be 1-D"),
        Case("lincomb", "strided (non-contiguous) term", lambda: lincomb(x, [torch.ones(8, dtype=F64)[::2]], [[1.0]]),
             ValueError, r"ks\[0\] must be contiguous"),
        Case("lincomb", "expanded (stride-0) base", lambda: lincomb(torch.ones(1, dtype=F64).expand(4), [x], [[1.0]]),
             ValueError, "base must be contiguous"),
        Case("lincomb", "meta tensors", lambda: lincomb(torch.ones(4, device="meta"), [], [[]]), ValueError,
             "cpu or cuda"),
        Case("lincomb", "weights is a flat list", lambda: lincomb(x, [x], [1.0]), TypeError,
             r"weights\[0\] must be a sequence"),
        Case("lincomb", "weights row too long", lambda: lincomb(x, [x], [[1.0, 2.0]]), ValueError, r"len\(ks\) = 1"),
        Case("lincomb", "weights hold a string", lambda: lincomb(x, [x], [["a"]]), TypeError, "must hold floats"),
        Case("lincomb", "weights hold NaN", lambda: lincomb(x, [x], [[math.nan]]), ValueError,
             r"weights\[0\] contains NaN"),
        Case("lincomb", "weights hold inf", lambda: lincomb(x, [x], [[math.inf]]), ValueError, "contains NaN or inf"),
        Case("rk_finish", "y0 is None", lambda: rk_finish(None, [x], [1.0], [1.0], 1e-6, 1e-3), TypeError,
             "y0 must be a torch.Tensor"),
        Case("rk_finish", "b too short", lambda: rk_finish(x, [x, x], [1.0], None, 1e-6, 1e-3), ValueError,
             r"b must have len\(ks\) = 2"),
        Case("rk_finish", "e holds NaN", lambda: rk_finish(x, [x], [1.0], [math.nan], 1e-6, 1e-3), ValueError,
             "e contains NaN"),
        Case("rk_finish", "atol < 0", lambda: rk_finish(x, [x], [1.0], [1.0], -1.0, 1e-3), ValueError,
             "non-negative"),
        Case("rk_finish", "rtol is NaN", lambda: rk_finish(x, [x], [1.0], [1.0], 1e-6, math.nan), ValueError,
             "finite and non-negative"),
        Case("rk_finish", "atol is a string", lambda: rk_finish(x, [x], [1.0], [1.0], "1e-6", 1e-3), TypeError,
             "atol must be a float"),
        Case("rk_finish", "atol = rtol = 0 with an error estimate", lambda: rk_finish(x, [x], [1.0], [1.0], 0.0, 0.0),
             ValueError, "cannot both be 0"),
        Case("rk_finish", "segments is a list", lambda: rk_finish(x, [x], [1.0], [1.0], 1e-6, 1e-3, [0, 4]),
             TypeError, "segments must be a pyode._kernels.Segments"),
        Case("rk_finish", "segments do not cover y0",
             lambda: rk_finish(x, [x], [1.0], [1.0], 1e-6, 1e-3, Segments([0, 2])), ValueError,
             "segments must cover the 4 elements"),
        Case("Segments", "offsets are strings", lambda: Segments("ab"), TypeError, "sequence of ints"),
        Case("Segments", "offsets decrease", lambda: Segments([0, 3, 2]), ValueError, "start at 0 and increase"),
        Case("Segments.equal_rows", "rows do not divide n", lambda: Segments.equal_rows(3, 4), ValueError,
             "cannot split"),
    ]


class _Field(nn.Module):
    def forward(self, t, y):
        return -y


def _sgd(module):
    return torch.optim.SGD(module.parameters(), lr=0.1)


def _constructor_cases() -> list[Case]:
    """Constructors of pyode.nn and pyode.control: bad sizes, non-finite numbers, wrong types."""
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    net = pc.ResidualNet([lin])
    cases = [
        ("pyode.nn.TimeMLP", "dim = 0", lambda: pnn.TimeMLP(0), ValueError, "dim must be a positive int"),
        ("pyode.nn.TimeMLP", "dim = 2.0", lambda: pnn.TimeMLP(2.0), ValueError, "dim must be a positive int"),
        ("pyode.nn.ODEBlock", "func is a string", lambda: pnn.ODEBlock("f"), TypeError, "func must be callable"),
        ("pyode.nn.ODEBlock", "one time", lambda: pnn.ODEBlock(_Field(), t=[0.0]), ValueError, "at least 2 times"),
        ("pyode.nn.AugmentedNODE", "augment_dim = -1", lambda: pnn.AugmentedNODE(_Field(), -1), ValueError,
         "augment_dim"),
        ("pyode.nn.AugmentedNODE", "augment_dim = 1.5", lambda: pnn.AugmentedNODE(_Field(), 1.5), TypeError,
         "augment_dim"),
        ("pyode.nn.CNF", "dim = 0", lambda: pnn.CNF(pnn.TimeMLP(2), 0), ValueError, "dim must be"),
        ("pyode.nn.CNF", "t1 < 0", lambda: pnn.CNF(pnn.TimeMLP(2), 2, t1=-1.0), ValueError, "t1 must be > 0"),
        ("pyode.nn.CNF", "t1 is NaN", lambda: pnn.CNF(pnn.TimeMLP(2), 2, t1=math.nan), ValueError, "t1 must be"),
        ("pyode.nn.CNF", "trace_estimator unknown", lambda: pnn.CNF(pnn.TimeMLP(2), 2, trace_estimator="x"),
         ValueError, "trace_estimator"),
        ("pyode.nn.CNF", "noise unknown", lambda: pnn.CNF(pnn.TimeMLP(2), 2, noise="x"), ValueError, "noise"),
        ("pyode.nn.FFJORD", "dim = -1", lambda: pnn.FFJORD(pnn.TimeMLP(2), -1), ValueError, "dim must be"),
        ("pyode.nn.RungeKuttaBlock", "a not lower triangular", lambda: pnn.RungeKuttaBlock(lin, 0.1, [[1.0]], [1.0]),
         ValueError, "strictly lower triangular"),
        ("pyode.nn.RungeKuttaBlock", "h is NaN", lambda: pnn.RungeKuttaBlock(lin, math.nan, [[]], [1.0]),
         ValueError, "h must be > 0"),
        ("pyode.nn.ResNetBlock", "h = 0", lambda: pnn.ResNetBlock(lin, 0.0), ValueError, "h must be > 0"),
        ("pyode.nn.ResNetBlock", "h is a string", lambda: pnn.ResNetBlock(lin, "a"), TypeError, "h must be"),
        ("pyode.nn.PolyNetBlock", "n_terms = 0", lambda: pnn.PolyNetBlock(lin, n_terms=0), ValueError, "n_terms"),
        ("pyode.nn.LMResNet", "no fields", lambda: pnn.LMResNet([]), ValueError, "at least one"),
        ("pyode.nn.HamiltonianBlock", "dim_y != dim_z", lambda: pnn.HamiltonianBlock(2, 3, 4), ValueError,
         "dim_y and dim_z"),
        ("pyode.nn.MidpointBlock", "h = 0", lambda: pnn.MidpointBlock(lin, 0.0), ValueError, "h must be > 0"),
        ("pyode.nn.LeapfrogBlock", "h < 0", lambda: pnn.LeapfrogBlock(lin, -1.0), ValueError, "h must be > 0"),
        ("pyode.nn.ReversibleSequence", "a non-reversible block", lambda: pnn.ReversibleSequence([lin]), TypeError,
         r"blocks\[0\] must be a ReversibleBlock"),
        ("pyode.nn.AntisymmetricBlock", "gamma < 0", lambda: pnn.AntisymmetricBlock(2, gamma=-1.0), ValueError,
         "gamma must be >= 0"),
        ("pyode.nn.CountingField", "func is a string", lambda: pnn.CountingField("f"), TypeError, "func must be"),
        ("pyode.control.ResidualNet", "no layers", lambda: pc.ResidualNet([]), ValueError, "layers"),
        ("pyode.control.ResidualNet", "step_size is NaN", lambda: pc.ResidualNet([lin], math.nan), ValueError,
         "step_size must be > 0"),
        ("pyode.control.FixedStepODENet", "method unknown", lambda: pc.FixedStepODENet(_Field(), method="x"),
         ValueError, "method must be one of"),
        ("pyode.control.FixedStepODENet", "num_steps = 0", lambda: pc.FixedStepODENet(_Field(), num_steps=0),
         ValueError, "num_steps"),
        ("pyode.control.FixedStepODENet", "t1 < t0", lambda: pc.FixedStepODENet(_Field(), t0=1.0, t1=0.0),
         ValueError, "t1 > t0"),
        ("pyode.control.MSATrainer", "system is a Linear", lambda: pc.MSATrainer(lin, lambda a, b: a), TypeError,
         "ControlSystem"),
        ("pyode.control.MSATrainer", "rho < 0", lambda: pc.MSATrainer(net, lambda a, b: a, rho=-1.0), ValueError,
         "rho must be >= 0"),
        ("pyode.control.MSATrainer", "lbfgs_iters = 0", lambda: pc.MSATrainer(net, lambda a, b: a, lbfgs_iters=0),
         ValueError, "lbfgs_iters"),
        ("pyode.control.PGDTrainer", "optimizer is an int", lambda: pc.PGDTrainer(lin, 3, 0.1), TypeError,
         "optimizer must be"),
        ("pyode.control.PGDTrainer", "eps = 0", lambda: pc.PGDTrainer(lin, _sgd(lin), 0.0), ValueError, "eps"),
        ("pyode.control.PGDTrainer", "steps = 0", lambda: pc.PGDTrainer(lin, _sgd(lin), 0.1, steps=0), ValueError,
         "steps must be"),
        ("pyode.control.YOPOTrainer", "model not Sequential", lambda: pc.YOPOTrainer(lin, _sgd(lin), 0.1),
         TypeError, "nn.Sequential"),
        ("pyode.control.YOPOTrainer", "first_layer_depth too large",
         lambda: pc.YOPOTrainer(nn.Sequential(lin), _sgd(lin), 0.1), ValueError, "first_layer_depth"),
        ("pyode.control.YOPOTrainer", "n = 1.5", lambda: pc.YOPOTrainer(seq, _sgd(seq), 0.1, n=1.5), ValueError,
         "n must be an integer"),
        ("pyode.nn.TimeMLP", "hidden = -1", lambda: pnn.TimeMLP(2, hidden=-1), ValueError, "hidden"),
        ("pyode.nn.TimeMLP", "activation is a string", lambda: pnn.TimeMLP(2, activation="relu"), TypeError,
         "activation"),
        ("pyode.nn.ODEBlock", "t is a string", lambda: pnn.ODEBlock(_Field(), t="ab"), TypeError, "t must be"),
        ("pyode.nn.LatentODE", "obs_dim = -1", lambda: pnn.LatentODE(-1), ValueError, "obs_dim"),
        ("pyode.nn.LatentODE", "obs_std = 0 (inf log-likelihood)", lambda: pnn.LatentODE(2, obs_std=0.0), ValueError,
         "obs_std"),
        ("pyode.nn.GRUDeltaT", "hidden_dim = -1", lambda: pnn.GRUDeltaT(2, -1), ValueError, "hidden_dim"),
        ("pyode.nn.ODENetClassifier", "channels = 0", lambda: pnn.ODENetClassifier(channels=0), ValueError,
         "channels"),
        ("pyode.nn.ResNetClassifier", "channels = 0", lambda: pnn.ResNetClassifier(channels=0), ValueError,
         "channels"),
        ("pyode.nn.RungeKuttaBlock", "h is inf", lambda: pnn.RungeKuttaBlock(lin, math.inf, [[]], [1.0]), ValueError,
         "h must be finite"),
        ("pyode.nn.RungeKuttaBlock", "b holds NaN", lambda: pnn.RungeKuttaBlock(lin, 0.1, [[]], [math.nan]),
         ValueError, r"b\[0\] must be finite"),
        ("pyode.nn.LMResNetBlock", "k_init is NaN", lambda: pnn.LMResNetBlock(lin, k_init=math.nan), ValueError,
         "k_init must be finite"),
        ("pyode.nn.SymmetricLayer", "width = -1", lambda: pnn.SymmetricLayer(2, -1), ValueError, "width"),
        ("pyode.nn.AntisymmetricBlock", "gamma is NaN", lambda: pnn.AntisymmetricBlock(2, gamma=math.nan),
         ValueError, "gamma"),
        ("pyode.control.ResidualNet", "step_size is inf", lambda: pc.ResidualNet([lin], math.inf), ValueError,
         "step_size"),
        ("pyode.control.ResidualNet", "step_size is a string", lambda: pc.ResidualNet([lin], "a"), TypeError,
         "step_size"),
        ("pyode.control.FixedStepODENet", "num_steps = 1.5 (silently 1)",
         lambda: pc.FixedStepODENet(_Field(), num_steps=1.5), ValueError, "num_steps must be an integer"),
        ("pyode.control.FixedStepODENet", "t1 is inf", lambda: pc.FixedStepODENet(_Field(), t1=math.inf), ValueError,
         "t1"),
        ("pyode.control.MSATrainer", "rho is NaN", lambda: pc.MSATrainer(pc.ResidualNet([lin]), lambda a, b: a,
                                                                         rho=math.nan), ValueError, "rho"),
        ("pyode.control.MSATrainer", "terminal_loss not callable", lambda: pc.MSATrainer(pc.ResidualNet([lin]), 3),
         TypeError, "terminal_loss"),
        ("pyode.control.PGDTrainer", "steps is a string", lambda: pc.PGDTrainer(lin, _sgd(lin), 0.1, steps="a"),
         TypeError, "steps"),
        ("pyode.control.Hamiltonian", "dynamics is a string", lambda: pc.Hamiltonian("f"), TypeError, "dynamics"),
    ]
    return [Case(*c) for c in cases]


CASES = _solver_cases() + _adjoint_cases() + _event_cases() + _kernel_cases() + _constructor_cases()


def test_every_case_expects_a_pyode_error_class():
    for case in CASES:
        errors = case.error if isinstance(case.error, tuple) else (case.error,)
        assert all(issubclass(e, PYODE_ERRORS) for e in errors), case.id


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_a_clear_error(case):
    with pytest.raises(case.error, match=case.match) as info:
        case.call()
    if isinstance(info.value, pyode.ODESolverError):  # solver failures say where they stopped
        assert math.isfinite(info.value.t_reached) and "t reached" in str(info.value)


def test_nan_from_func_is_located_in_time():
    with pytest.raises(pyode.NonFiniteStateError) as info:
        pyode.odeint(nan_after_half, Y0, T)
    assert 0.4 < info.value.t_reached <= 0.5 + 1e-9
    assert info.value.reason == "non_finite"
    with pytest.raises(pyode.NonFiniteStateError) as info:  # decreasing time: the caller's time is reported
        pyode.odeint(lambda t, y: torch.where(t < 0.5, y * math.nan, y), Y0, torch.tensor([1.0, 0.0], dtype=F64))
    assert 0.5 - 1e-9 <= info.value.t_reached < 0.6


def test_alf_reports_nan_state():
    with pytest.raises(pyode.NonFiniteStateError):
        pyode.odeint(nan_after_half, Y0, T, method="alf", options={"step_size": 0.1})


@pytest.mark.parametrize("layout", ["strided", "expanded", "transposed"])
def test_non_contiguous_y0_is_copied_not_misread(layout):
    """Regression: reshape(-1) of a strided or expanded y0 is a non-contiguous view; the kernels read n
    consecutive elements from its address (wrong values; past the end of an expanded tensor's storage)."""
    base = torch.arange(1.0, 7.0, dtype=F64)
    y0 = {"strided": base[::2], "expanded": base[:1].reshape(1, 1).expand(3, 1),
          "transposed": base.reshape(2, 3).T}[layout]
    for method, options in (("dopri5", None), ("rk4", {"step_size": 0.1}), ("alf", {"step_size": 0.1})):
        got = pyode.odeint(decay, y0, T, method=method, options=options)
        want = pyode.odeint(decay, y0.contiguous(), T, method=method, options=options)
        assert torch.equal(got, want), (layout, method)


def test_absurd_but_valid_step_sizes_still_solve_accurately():
    """first_step = 1e300 is clamped to the interval and shrunk by the controller; step_size = 1e300
    is one step over the interval. Both are legal and must give a finite, correct answer."""
    exact = torch.exp(-T[-1])
    ys = pyode.odeint(decay, Y0, T, options={"first_step": 1e300})
    torch.testing.assert_close(ys[-1], exact.expand(2), rtol=1e-6, atol=0)
    ys = pyode.odeint(decay, Y0, T, method="rk4", options={"step_size": 1e300})
    torch.testing.assert_close(ys[-1], torch.full((2,), 0.375, dtype=F64), rtol=1e-12, atol=0)  # one RK4 step


# ---- an exception raised inside func propagates unchanged -----------------------------------------------

class Boom(Exception):
    """A user error type pyode cannot know about."""


def _raising_func(raise_on_call: int, raised: list, module: bool = False):
    calls = [0]

    def func_that_raises(t, y):
        calls[0] += 1
        if calls[0] == raise_on_call:
            raised.append(Boom(f"raised on call {calls[0]}"))
            raise raised[-1]
        return -y if not isinstance(y, tuple) else tuple(-v for v in y)

    if not module:
        return func_that_raises

    class Raising(nn.Module):
        def __init__(self):
            super().__init__()
            self.k = nn.Parameter(torch.tensor(1.0, dtype=F64))

        def forward(self, t, y):
            return self.k * func_that_raises(t, y)

    return Raising()


RAISE_SETUPS = {
    "dopri5 (fused path)": {},
    "dopri5 tuple state": {"y0": (Y0, Y0)},
    "dopri8 restep dense output": {"method": "dopri8", "t": torch.linspace(0, 1, 5, dtype=F64)},
    "rk4": {"method": "rk4", "options": {"step_size": 0.1}},
    "explicit_adams": {"method": "explicit_adams", "options": {"step_size": 0.1}},
    "alf": {"method": "alf", "options": {"step_size": 0.1}},
    "dopri5 autograd path": {"y0": Y0.clone().requires_grad_(True)},
    "odeint_event": {"event": True},
}


def _assert_same_exception(info, raised: list) -> None:
    assert info.value is raised[-1], "pyode must re-raise the very exception object func raised"
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "func_that_raises", frames  # the traceback still ends inside func


@pytest.mark.parametrize("raise_on_call", [1, 6])
@pytest.mark.parametrize("setup", list(RAISE_SETUPS))
def test_exception_in_func_propagates_unchanged(setup, raise_on_call):
    kw = dict(RAISE_SETUPS[setup])
    raised: list = []
    func = _raising_func(raise_on_call, raised)
    y0, t = kw.pop("y0", Y0), kw.pop("t", T)
    with pytest.raises(Boom) as info:
        if kw.pop("event", False):
            pyode.odeint_event(func, y0, 0.0, event_fn=lambda t, y: y[0] - 0.5, **kw)
        else:
            pyode.odeint(func, y0, t, **kw)
    _assert_same_exception(info, raised)


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint", "reversible"])
def test_exception_in_func_during_backward_propagates_unchanged(gradient):
    """The forward pass succeeds; func raises during the backward pass (after the forward's calls)."""
    forward_calls = pyode.solve(_raising_func(0, []), Y0, T, gradient="backprop",
                                method="alf" if gradient == "reversible" else None).stats.nfe
    raised: list = []
    func = _raising_func(forward_calls + 3, raised, module=True)
    y0 = Y0.clone().requires_grad_(True)
    ys = pyode.odeint(func, y0, T, gradient=gradient)
    assert not raised
    with pytest.raises(Boom) as info:
        ys.sum().backward()
    assert info.value is raised[-1]


def test_exception_in_event_fn_propagates_unchanged():
    raised = []

    def event_fn(t, y):
        if float(t) > 0.2:
            raised.append(Boom("event"))
            raise raised[-1]
        return y[0] - 0.5

    with pytest.raises(Boom) as info:
        pyode.odeint_event(decay, Y0, 0.0, event_fn=event_fn)
    assert info.value is raised[-1]


def test_keyboard_interrupt_in_func_propagates_unchanged():
    raised = []

    def interrupted(t, y):
        raised.append(KeyboardInterrupt())
        raise raised[-1]

    with pytest.raises(KeyboardInterrupt) as info:
        pyode.odeint(interrupted, Y0, T)
    assert info.value is raised[-1]


# ---- the Markdown table for docs/hardening.md -------------------------------------------------------------

def battery_rows(cases: list[Case]) -> list[tuple[str, str, str, str]]:
    """Runs every case; returns (entry point, bad input, exception type, message) rows."""
    rows = []
    for case in cases:
        try:
            case.call()
            outcome, message = "NO ERROR", ""
        except BaseException as exc:  # noqa: BLE001 - the table records whatever happens
            outcome, message = type(exc).__name__, str(exc).replace("|", "/").replace("\n", " ")
        rows.append((case.entry, case.what, outcome, message[:140]))
    return rows


def markdown_table() -> str:
    lines = ["| entry point | bad input | error | message |", "|---|---|---|---|"]
    seen = set()
    for entry, what, outcome, message in battery_rows([c for c in CASES if c.entry != "solve"]):
        key = (what, outcome, message)
        if entry == "odeint_adjoint" and key in seen:  # same validation as odeint: listed once
            continue
        seen.add(key)
        lines.append(f"| {entry} | {what} | {outcome} | {message} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
