"""Gradients through terminal events: d/d(t0), d/d(y0) and d/d(params) of the event time and of the state at the
event, in every gradient mode, for single and chained events (each solve starting at the previous event time).

References: closed forms differentiated by autograd (exact up to the solver's tolerance) and finite differences
(torch.autograd.gradcheck) in float64.
"""

import math

import pytest
import torch

import pyode

F64 = torch.float64
# (gradient mode, extra kwargs): odeint_interface=pyode.odeint_adjoint is torchdiffeq's way to ask for the adjoint.
MODES = {
    "backprop": {},
    "adjoint": {"gradient": "adjoint"},
    "checkpoint": {"gradient": "checkpoint"},
    "adjoint_interface": {"odeint_interface": pyode.odeint_adjoint},
}


def _scalar(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=F64, requires_grad=True)


# ---- single event: y1' = -t - k y1, y2' = y1, event y1 = 0 (y1 is the example) -------------------------

def _linear_flow(t, t0, y0, k):
    """Exact solution at t of y1' = -t - k y1, y2' = y1 from (t0, y0)."""
    c = y0[0] + t0 / k - 1 / k**2
    decay = torch.exp(-k * (t - t0))
    y1 = c * decay - t / k + 1 / k**2
    y2 = y0[1] + c / k * (1 - decay) - (t**2 - t0**2) / (2 * k) + (t - t0) / k**2
    return y1, y2


def _exact_event(t0, y0, k):
    """The event time of y1 = 0 by Newton's method; the last Newton step is taken with autograd, which gives the
    implicit function theorem's derivative at the root. Returns (t*, y2(t*))."""
    with torch.no_grad():
        t = t0 + 1.0
        for _ in range(60):
            y1, _ = _linear_flow(t, t0, y0, k)
            t = t - y1 / (-t - k * y1)
    t = t.detach()
    y1, _ = _linear_flow(t, t0, y0, k)
    t = t - y1 / (-t - k * y1)
    return t, _linear_flow(t, t0, y0, k)[1]


def _pyode_event(t0, y0, k, mode: str, reverse_time: bool = False):
    def f(t, y):
        return torch.stack([-t - k * y[0], y[0]])

    return pyode.odeint_event(f, y0, t0, event_fn=lambda t, y: y[0], reverse_time=reverse_time, rtol=1e-11,
                              atol=1e-12, adjoint_params=(k,), **MODES[mode])


@pytest.mark.parametrize("mode", list(MODES))
def test_single_event_gradients_match_the_closed_form(mode):
    """The issue's example (t0 = 0.5, y1(t0) = 1, k = 0.1): torchdiffeq 0.2.5 gives d(t*)/d(t0) = 0.3725 and
    d(t*)/d(y0) = 0.6208; so do the closed form and every mode, and the state at the event has its gradients."""
    inputs = (_scalar(0.5), torch.tensor([1.0, 0.3], dtype=F64, requires_grad=True), _scalar(0.1))
    event_t, ys = _pyode_event(*inputs, mode)
    exact_t, exact_y2 = _exact_event(*inputs)
    assert abs(event_t.item() - exact_t.item()) < 1e-10
    assert abs(float(ys[-1, 1]) - float(exact_y2)) < 1e-10
    for out, ref in ((event_t, exact_t), (ys[-1, 1], exact_y2)):
        got = torch.autograd.grad(out, inputs, retain_graph=True, materialize_grads=True)
        want = torch.autograd.grad(ref, inputs, retain_graph=True, materialize_grads=True)
        for g, w in zip(got, want):
            # rtol 1e-11 solves: the adjoint's gradient is accurate to O(tolerance x conditioning), the others to
            # the event's bisection tolerance (atol 1e-12) over O(1) slopes; 1e-7 leaves margin for both.
            torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9)
    d_t0, d_y0, _ = torch.autograd.grad(event_t, inputs, retain_graph=True)
    assert round(float(d_t0), 4) == 0.3725 and round(float(d_y0[0]), 4) == 0.6208
    # y1 = 0 at the event whatever the inputs: its gradient vanishes (the event time moves to keep it there)
    for g in torch.autograd.grad(ys[-1, 0], inputs):
        assert float(g.abs().max()) < 1e-9


@pytest.mark.parametrize("reverse_time", [False, True])
@pytest.mark.parametrize("mode", list(MODES))
def test_single_event_gradcheck(mode, reverse_time):
    t0, y0 = (2.0, [-1.0, 0.3]) if reverse_time else (0.5, [1.0, 0.3])
    inputs = (_scalar(t0), torch.tensor(y0, dtype=F64, requires_grad=True), _scalar(0.1))

    def run(t0, y0, k):
        event_t, ys = _pyode_event(t0, y0, k, mode, reverse_time)
        return event_t, ys[-1]

    # The event is bisected to atol = 1e-12 in time: central differences with eps = 1e-6 carry ~1e-6 of noise.
    torch.autograd.gradcheck(run, inputs, atol=1e-5, rtol=1e-4)


# ---- chained events: a bouncing ball ---------------------------------------------------------------------------

NUDGE = 1e-7  # lifts the ball off the ground after a bounce, so the next solve does not stop at once


def _exact_bounces(t0, pos, vel, gravity, absorption, radius, n):
    """Closed-form event times of a ball (pos'' = -gravity) hitting pos = radius, with velocity update
    -(1 - absorption) vel. Returns the n event times and (pos, vel) at the last event."""
    times = []
    for i in range(n):
        if i:
            pos, vel = pos + NUDGE, -vel * (1 - absorption)
        tau = (vel + torch.sqrt(vel**2 + 2 * gravity * (pos - radius))) / gravity
        t0, pos, vel = t0 + tau, pos + vel * tau - gravity * tau**2 / 2, vel - gravity * tau
        times.append(t0)
    return times, (pos, vel)


def _pyode_bounces(t0, pos, vel, gravity, absorption, radius, n, mode, drag=None):
    """The same chain with pyode: each solve starts at the previous event time and state. ``radius`` is
    captured by event_fn (not in the state): its gradient flows through the event time. ``drag`` adds
    -drag vel |vel| to the acceleration (no closed form)."""

    def f(t, state):
        _, v = state
        accel = -gravity * torch.ones_like(v)
        return v, accel if drag is None else accel - drag * v * v.abs()

    params = (gravity,) if drag is None else (gravity, drag)
    state, times = (pos, vel), []
    for i in range(n):
        if i:
            state = (state[0] + NUDGE, -state[1] * (1 - absorption))
        t0, sol = pyode.odeint_event(f, state, t0, event_fn=lambda t, s: s[0] - radius, rtol=1e-11, atol=1e-12,
                                     adjoint_params=params, **MODES[mode])
        state = (sol[0][-1], sol[1][-1])
        times.append(t0)
    return times, state


def _ball_inputs():
    return tuple(_scalar(x) for x in (0.2, 10.0, 0.5, 9.8, 0.2, 0.3))  # t0, pos, vel, gravity, absorption, radius


@pytest.mark.parametrize("mode", list(MODES))
def test_chained_events_match_the_closed_form(mode):
    """Three bounces: the last event time and the velocity there, differentiated with respect to the first
    start time, the initial state, gravity, the absorption and the radius (captured by event_fn)."""
    inputs = _ball_inputs()
    times, (_, vel) = _pyode_bounces(*inputs, n=3, mode=mode)
    exact_times, (_, exact_vel) = _exact_bounces(*inputs, n=3)
    for got_t, want_t in zip(times, exact_times):
        assert abs(float(got_t) - float(want_t)) < 1e-9  # dopri5 is exact on a parabola: only the bisection errs
    for out, ref in ((times[-1], exact_times[-1]), (vel, exact_vel)):
        got = torch.autograd.grad(out, inputs, retain_graph=True, materialize_grads=True)
        want = torch.autograd.grad(ref, inputs, retain_graph=True, materialize_grads=True)
        for name, g, w in zip(("t0", "pos", "vel", "gravity", "absorption", "radius"), got, want):
            torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-8, msg=lambda m, name=name: f"{mode} d/d{name}: {m}")


@pytest.mark.parametrize("mode", ["backprop", "adjoint"])  # checkpoint: the closed-form chain test
def test_chained_events_gradcheck_with_drag(mode):
    """A nonlinear force (quadratic drag, a parameter): two bounces against finite differences."""
    t0, pos, vel, gravity, absorption, radius = _ball_inputs()

    def run(t0, pos, vel, drag):
        times, state = _pyode_bounces(t0, pos, vel, gravity, absorption, radius, n=2, mode=mode, drag=drag)
        return times[-1], state[1]

    # Each bounce is bisected to 1e-12 in time and the solves are tight (1e-11): central differences with
    # eps = 1e-6 carry ~1e-5 of noise through two chained events.
    torch.autograd.gradcheck(run, (t0, pos, vel, _scalar(0.05)), atol=3e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["rk4", "implicit_adams"])
@pytest.mark.parametrize("mode", list(MODES))
def test_fixed_grid_event_gradients(method, mode):
    """Events located on a fixed grid (steps t0 + k h): y' = -t from y0 = 1 at t0 = 0.5 (both methods are exact on
    this quadratic) crosses y = 0 at t* = sqrt(2 y0 + t0^2) = 1.5; dt*/dy0 = 1/t*, dt*/dt0 = t0/t*."""
    y0, t0 = torch.tensor([1.0], dtype=F64, requires_grad=True), _scalar(0.5)

    def run():
        return pyode.odeint_event(lambda t, y: -t * torch.ones_like(y), y0, t0, event_fn=lambda t, y: y[0],
                                  method=method, options={"step_size": 0.1}, atol=1e-12, adjoint_params=(),
                                  **MODES[mode])

    if mode == "checkpoint" and method == "implicit_adams":  # replays need a Runge-Kutta step
        with pytest.raises(ValueError, match="gradient='checkpoint' supports Runge-Kutta methods"):
            run()
        return
    event_t, _ = run()
    d_y0, d_t0 = torch.autograd.grad(event_t, (y0, t0))
    assert abs(event_t.item() - 1.5) < 1e-11
    assert abs(float(d_y0) - 1 / 1.5) < 1e-9 and abs(float(d_t0) - 0.5 / 1.5) < 1e-9


def test_event_fn_parameters_move_the_event():
    """A threshold captured by event_fn (not in the state): dt*/dr = -(dc/dr) / (dc/dt) = 1 / (dy/dt)."""
    r = _scalar(0.25)
    y0 = torch.tensor([1.0], dtype=F64)
    event_t, ys = pyode.odeint_event(lambda t, y: -y, y0, 0.0, event_fn=lambda t, y: y[0] - r, rtol=1e-11, atol=1e-12)
    d_r = torch.autograd.grad(event_t, r, retain_graph=True)[0]
    assert abs(float(event_t) - math.log(4.0)) < 1e-10
    assert abs(float(d_r) - (-1 / 0.25)) < 1e-8  # t* = -log r
    # the state at the event is r itself
    assert abs(float(torch.autograd.grad(ys[-1, 0], r)[0]) - 1.0) < 1e-8


def test_reversible_mode_refuses_events():
    with pytest.raises(ValueError, match="gradient='reversible'.*event"):
        pyode.odeint_event(lambda t, y: -y, torch.ones(1, dtype=F64), 0.0, event_fn=lambda t, y: y[0] - 0.5,
                           gradient="reversible")
