"""torchdiffeq's step callbacks: func.callback_step / callback_accept_step / callback_reject_step(t0, y0, dt) in the
forward loops, the *_adjoint variants in the adjoint's backward solve, the warning for callbacks a method never
calls, and exceptions raised by a callback. Compared with torchdiffeq 0.2.5 where it is installed."""

import itertools
import math
import warnings

import pytest
import torch
from torch import nn

import pyode
from pyode._solvers.problem import build_problem

F64 = torch.float64
T_END = 2.0


class Logged(nn.Module):
    """y' = -w y (1 + sin 5t), logging every callback as (name, t0, dt, y0) with plain floats/tuples."""

    def __init__(self, adjoint: bool = False, tuple_state: bool = False):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(1.0, dtype=F64))
        self.tuple_state, self.log = tuple_state, []
        for name in ("callback_step", "callback_accept_step", "callback_reject_step"):
            setattr(self, name, self._recorder(name))
            if adjoint:
                setattr(self, name + "_adjoint", self._recorder(name + "_adjoint"))

    def _recorder(self, name):
        def record(t0, y0, dt):
            assert isinstance(t0, torch.Tensor) and isinstance(dt, torch.Tensor)
            parts = y0 if isinstance(y0, tuple) else (y0,)
            self.log.append((name, float(t0), float(dt), tuple(tuple(p.shape) for p in parts),
                             tuple(p.detach().clone() for p in parts)))
        return record

    def forward(self, t, y):
        rate = -self.w * (1 + torch.sin(5 * t))
        return tuple(rate * p for p in y) if self.tuple_state else rate * y


def _solve(lib, func, y0, t, **kwargs):
    return lib.odeint(func, y0, t, rtol=1e-3, atol=1e-5, options={"first_step": 1.0}, **kwargs)


def test_adaptive_callbacks_follow_each_attempt():
    """Every attempt calls callback_step, then exactly one of accept/reject, with the step's start and size; the
    counts match the solve's statistics and the accepted steps tile [0, T_END]."""
    func = Logged()
    y0 = torch.ones(3, dtype=F64)
    sol = pyode.solve(func, y0, torch.tensor([0.0, T_END], dtype=F64), rtol=1e-3, atol=1e-5,
                      options={"first_step": 1.0})
    names = [entry[0] for entry in func.log]
    assert names[0::2] == ["callback_step"] * (len(names) // 2)
    decisions = names[1::2]
    assert decisions.count("callback_accept_step") == sol.stats.n_accepted
    assert decisions.count("callback_reject_step") == sol.stats.n_rejected > 0  # first_step=1 is too large
    for (_, t0, dt, _, y), (_, t0_d, dt_d, _, y_d) in zip(func.log[0::2], func.log[1::2]):
        assert (t0, dt) == (t0_d, dt_d) and torch.equal(y[0], y_d[0])
    accepted = [(t0, dt) for name, t0, dt, *_ in func.log if name == "callback_accept_step"]
    assert accepted[0][0] == 0.0 and math.isclose(sum(dt for _, dt in accepted), T_END, rel_tol=1e-12)
    for (t0, dt), (t_next, _) in itertools.pairwise(accepted):
        assert math.isclose(t0 + dt, t_next, rel_tol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("tuple_state", [False, True])
def test_adaptive_callbacks_match_torchdiffeq(reverse, tuple_state):
    """Same calls, times, step sizes and states as torchdiffeq (user time: decreasing when t is; dt positive; a
    tuple state as a tuple), up to the last step, which pyode shortens to end on t[-1] instead of overshooting."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    t = torch.tensor([T_END, 0.0] if reverse else [0.0, T_END], dtype=F64)
    logs = []
    for lib in (torchdiffeq, pyode):
        func = Logged(tuple_state=tuple_state)
        y0 = (torch.ones(2, dtype=F64), torch.full((3,), 2.0, dtype=F64)) if tuple_state else torch.ones(3, dtype=F64)
        _solve(lib, func, y0, t)
        logs.append(func.log)
    theirs, ours = logs
    direction = -1.0 if reverse else 1.0  # steps strictly inside the interval (torchdiffeq's last one overshoots)
    before_end = [i for i, e in enumerate(theirs) if direction * (e[1] + direction * e[2] - float(t[-1])) < -1e-9]
    assert len(before_end) >= 8
    for i in before_end[:-2]:
        assert ours[i][:1] == theirs[i][:1] and ours[i][3] == theirs[i][3]
        assert list(ours[i][1:3]) == pytest.approx(list(theirs[i][1:3]), rel=1e-12, abs=1e-14)
        for mine, other in zip(ours[i][4], theirs[i][4]):
            torch.testing.assert_close(mine, other, rtol=1e-12, atol=1e-14)


def test_adjoint_callbacks_match_torchdiffeq():
    """The *_adjoint callbacks run during the backward solve, with torchdiffeq's (t, y, adj_y, *adj_params) state.
    t requires grad here: torchdiffeq 0.2.5 integrates dL/dt (and measures it in its error norm) even when t does
    not, which changes its steps for a time-dependent func; pyode integrates it only when needed. The forward
    solve is tight, so both backward solves start from the same state to ~1e-10."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    logs = []
    for lib in (torchdiffeq, pyode):
        func = Logged(adjoint=True)
        ys = lib.odeint_adjoint(func, torch.ones(3, dtype=F64, requires_grad=True),
                                torch.tensor([0.0, T_END], dtype=F64, requires_grad=True), rtol=1e-10, atol=1e-12,
                                adjoint_rtol=1e-3, adjoint_atol=1e-5)
        forward_calls = len(func.log)
        assert all(not entry[0].endswith("_adjoint") for entry in func.log)
        ys.sum().backward()
        logs.append(func.log[forward_calls:])
    theirs, ours = logs
    assert {e[0] for e in ours} == {"callback_step_adjoint", "callback_accept_step_adjoint",
                                    "callback_reject_step_adjoint"} >= {e[0] for e in theirs}
    assert {e[3] for e in ours} == {e[3] for e in theirs} == {((), (3,), (3,), ())}  # (t, y, adj_y, dL/dw)
    assert ours[0][1] == T_END  # the backward solve starts at the end, in the user's time
    for mine, other in list(zip(ours, theirs))[:8]:
        assert mine[0] == other[0] and list(mine[1:3]) == pytest.approx(list(other[1:3]), rel=1e-6)
        for a, b in zip(mine[4], other[4]):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("method", "options"), [
    ("rk4", {"step_size": 0.25}), ("euler", {"step_size": 0.25}), ("implicit_adams", {"step_size": 0.25}),
    ("alf", {"step_size": 0.25}),
])
def test_fixed_grid_calls_step_only_and_warns(method, options):
    """Fixed grids call callback_step once per grid step, and warn (as torchdiffeq) that accept/reject are never
    called."""
    func = Logged()
    with pytest.warns(UserWarning, match=rf"method '{method}' never calls callback_accept_step, "
                                         "callback_reject_step"):
        pyode.odeint(func, torch.ones(3, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method=method,
                     options=options)
    assert [e[0] for e in func.log] == ["callback_step"] * 4
    assert [e[1] for e in func.log] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert [e[2] for e in func.log] == pytest.approx([0.25] * 4)


def test_no_warning_when_the_method_calls_every_callback():
    func = Logged(adjoint=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ys = pyode.odeint_adjoint(func, torch.ones(3, dtype=F64, requires_grad=True),
                                  torch.tensor([0.0, 1.0], dtype=F64))
        ys.sum().backward()


def test_adjoint_method_warning_names_the_adjoint_callbacks():
    func = Logged(adjoint=True)
    with pytest.warns(UserWarning, match="method 'rk4' never calls callback_accept_step_adjoint"):
        pyode.odeint_adjoint(func, torch.ones(3, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                             adjoint_method="rk4", adjoint_options={"step_size": 0.1})


@pytest.mark.skipif("scipy_solver" not in pyode.METHODS, reason="scipy_solver not built into this tree")
def test_scipy_solver_warns_for_every_callback():
    with pytest.warns(UserWarning, match="method 'scipy_solver' never calls callback_accept_step, "
                                         "callback_reject_step, callback_step"):
        pyode.odeint(Logged(), torch.ones(3, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="scipy_solver",
                     options={"solver": "RK45"})


class PerRow:
    """Rows decaying at different rates (so they take different steps), logging callbacks as (name, t0, dt)."""

    def __init__(self):
        self.rows = []

    def __call__(self, t, y):
        return -y * (1 + 3 * torch.arange(3, dtype=F64)[:, None]) * (1 + torch.sin(5 * t))[:, None]

    def callback_step(self, t0, y, dt):
        self.rows.append(("step", t0.clone(), dt.clone()))

    def callback_accept_step(self, t0, y, dt):
        self.rows.append(("accept", t0.clone(), dt.clone()))

    def callback_reject_step(self, t0, y, dt):
        self.rows.append(("reject", t0.clone(), dt.clone()))


def test_per_sample_callbacks_carry_row_times_and_steps():
    """In per-sample mode t0 and dt are (batch,): each row's; accept/reject get dt = 0 on rows that did not take
    that decision, so each row's accepted dt sum to the interval and their counts are the row's statistics."""
    func = PerRow()
    y0 = torch.tensor([[1.0], [2.0], [0.5]], dtype=F64)
    sol = pyode.solve(func, y0, torch.tensor([0.0, T_END], dtype=F64), rtol=1e-4, atol=1e-6,
                      options={"per_sample": True, "first_step": 0.5})
    assert all(t0.shape == (3,) and dt.shape == (3,) for _, t0, dt in func.rows)
    assert sum(name == "step" for name, *_ in func.rows) == sol.stats.n_iterations
    decided = {name: torch.stack([dt for n, _, dt in func.rows if n == name]) for name in ("accept", "reject")}
    torch.testing.assert_close(decided["accept"].sum(0), torch.full((3,), T_END, dtype=F64), rtol=1e-12, atol=0)
    assert (decided["accept"] > 0).sum(0).tolist() == sol.stats.per_sample_accepted.tolist()
    assert (decided["reject"] > 0).sum(0).tolist() == sol.stats.per_sample_rejected.tolist()
    assert sum(sol.stats.per_sample_rejected.tolist()) > 0  # first_step=0.5 is too large for the fast rows


class Boom(Exception):
    pass


@pytest.mark.parametrize("name", ["callback_step", "callback_accept_step", "callback_reject_step",
                                  "callback_step_adjoint"])
def test_a_raising_callback_propagates_unchanged(name):
    func = Logged()
    raised = []

    def explode(t0, y0, dt):
        raised.append(Boom(name))
        raise raised[-1]

    setattr(func, name, explode)
    with pytest.raises(Boom) as info:
        ys = pyode.odeint_adjoint(func, torch.ones(3, dtype=F64, requires_grad=True),
                                  torch.tensor([0.0, T_END], dtype=F64), rtol=1e-3, atol=1e-5,
                                  options={"first_step": 1.0})
        ys.sum().backward()
    assert info.value is raised[0]


def test_func_without_callbacks_gets_no_hooks():
    """Checked once per solve: the loop holds no hook object, so each step pays one `is None` test."""
    problem = build_problem(lambda t, y: -y, torch.ones(3, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))
    assert problem.loop.callbacks is None
    problem = build_problem(Logged(), torch.ones(3, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))
    assert problem.loop.callbacks is not None
