"""The core of torchdiffeq's examples bouncing_ball.py and learn_physics.py (event chains with gradients), run with
pyode and with torchdiffeq 0.2.5 at small sizes: the same event times, losses and gradients (float64: to the
solves' tolerance; float32: to its rounding).

One deliberate difference: learn_physics's event function reads a learned radius that is not part of the state.
torchdiffeq differentiates the event time only through the state, so its gradient with respect to that radius is 0;
pyode also differentiates what event_fn captures, and matches finite differences.
"""

import pytest
import torch
from torch import nn

import pyode

torchdiffeq = pytest.importorskip("torchdiffeq")

F64 = torch.float64
LIBS = {"pyode": pyode, "torchdiffeq": torchdiffeq}


def _param(value, dtype=F64):
    return nn.Parameter(torch.tensor([value], dtype=dtype))


class BouncingBall(nn.Module):
    """bouncing_ball.py's system: a ball under gravity, bouncing (velocity -(1 - absorption) v) when its height
    reaches its radius; the radius rides in the state as log_radius."""

    def __init__(self, lib, adjoint: bool = False, dtype=F64):
        super().__init__()
        self.lib, self.dtype = lib, dtype
        self.odeint = lib.odeint_adjoint if adjoint else lib.odeint
        self.gravity, self.log_radius = _param(9.8, dtype), nn.Parameter(torch.log(torch.tensor([0.2], dtype=dtype)))
        self.t0, self.init_pos, self.init_vel = _param(0.0, dtype), _param(10.0, dtype), _param(0.0, dtype)
        self.absorption = _param(0.2, dtype)
        self.tol = 1e-8 if dtype == F64 else 1e-6

    def forward(self, t, state):
        _, vel, log_radius = state
        return vel, -self.gravity, torch.zeros_like(log_radius)

    def event_fn(self, t, state):
        pos, _, log_radius = state
        return pos - torch.exp(log_radius)

    def bounce(self, state):
        pos, vel, log_radius = state
        return pos + 1e-7, -vel * (1 - self.absorption), log_radius  # lifted off the ground: no instant re-trigger

    def collision_times(self, n: int) -> list[torch.Tensor]:
        t0, state, times = self.t0, (self.init_pos, self.init_vel, self.log_radius), []
        for _ in range(n):
            t0, sol = self.lib.odeint_event(self, state, t0, event_fn=self.event_fn, rtol=self.tol, atol=self.tol,
                                            odeint_interface=self.odeint)
            times.append(t0)
            state = self.bounce(tuple(s[-1] for s in sol))
        return times

    def trajectory(self, event_times) -> tuple[torch.Tensor, torch.Tensor]:
        """The dense path between the events (odeint from each event time, which requires grad)."""
        t0, state = self.t0, (self.init_pos, self.init_vel, self.log_radius)
        times, heights = [t0], [state[0]]
        for event_t in event_times:
            inner = torch.linspace(float(t0), float(event_t), int((float(event_t) - float(t0)) * 20),
                                   dtype=self.dtype)[1:-1]
            tt = torch.cat([t0.reshape(-1), inner, event_t.reshape(-1)])
            sol = self.lib.odeint(self, state, tt, rtol=self.tol, atol=self.tol)
            times.append(tt[1:])
            heights.append(sol[0][1:].reshape(-1))
            state, t0 = self.bounce(tuple(s[-1] for s in sol)), event_t
        return torch.cat(times), torch.cat(heights)


def _grads(model, output):
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(output, list(params.values()), allow_unused=True, materialize_grads=True)
    return dict(zip(params, grads))


@pytest.mark.parametrize("adjoint", [False, True])
def test_bouncing_ball_event_times_and_gradients(adjoint):
    """Three bounces: event times and d(last event time)/d(every parameter), pyode against torchdiffeq."""
    results = {}
    for name, lib in LIBS.items():
        model = BouncingBall(lib, adjoint)
        times = model.collision_times(3)
        results[name] = (torch.stack([t.reshape(()) for t in times]).detach(), _grads(model, times[-1]))
    (ours, our_grads), (theirs, their_grads) = results["pyode"], results["torchdiffeq"]
    # both bisect each event to atol = 1e-8 and solve the parabola exactly (dopri5): 3 events, ~3e-8 apart at most
    torch.testing.assert_close(ours, theirs, rtol=0, atol=5e-8)
    for name in our_grads:  # O(1) gradients; event placement to 1e-8 moves them by ~1e-7
        torch.testing.assert_close(our_grads[name], their_grads[name], rtol=1e-6, atol=1e-6, msg=name)
    assert abs(float(our_grads["init_vel"]) - 0.102041) < 1e-5  # the report: pyode gave -2e-17 here


def test_bouncing_ball_gradcheck_as_the_example():
    """The example's own check: central differences with eps = 1e-3 against the analytical gradients, to 1e-4."""
    model = BouncingBall(pyode)
    analytical = _grads(model, model.collision_times(3)[-1])
    for name in ("init_pos", "init_vel", "t0", "gravity", "log_radius"):
        param = getattr(model, name)
        with torch.no_grad():
            param += 1e-3
            plus = model.collision_times(3)[-1]
            param -= 2e-3
            minus = model.collision_times(3)[-1]
            param += 1e-3
        assert abs(float((plus - minus) / 2e-3) - float(analytical[name])) < 1e-4, name


def test_bouncing_ball_dense_path_and_its_gradients():
    """simulate(): odeint between the events, each interval starting at an event time (t0 requiring grad); a loss
    on the whole path and its gradients."""
    results = {}
    for name, lib in LIBS.items():
        model = BouncingBall(lib)
        times, heights = model.trajectory(model.collision_times(2))
        loss = (heights * torch.cos(times)).sum()
        results[name] = (heights.detach(), float(loss), _grads(model, loss))
    (h_ours, l_ours, g_ours), (h_theirs, l_theirs, g_theirs) = results["pyode"], results["torchdiffeq"]
    torch.testing.assert_close(h_ours, h_theirs, rtol=0, atol=1e-7)
    assert abs(l_ours - l_theirs) < 1e-6 * max(1.0, abs(l_theirs))
    for name in g_ours:
        torch.testing.assert_close(g_ours[name], g_theirs[name], rtol=1e-6, atol=1e-6, msg=name)


def test_bouncing_ball_float32():
    """float32 (rtol = atol = 1e-6): event times and gradients agree to float32 noise amplified by three chained
    events (~1e-5 relative)."""
    results = {}
    for name, lib in LIBS.items():
        model = BouncingBall(lib, dtype=torch.float32)
        times = model.collision_times(3)
        results[name] = (torch.stack([t.reshape(()) for t in times]).detach(), _grads(model, times[-1]))
    torch.testing.assert_close(results["pyode"][0], results["torchdiffeq"][0], rtol=2e-5, atol=0)
    for name, grad in results["pyode"][1].items():
        torch.testing.assert_close(grad, results["torchdiffeq"][1][name], rtol=1e-4, atol=1e-5, msg=name)


# ---- learn_physics.py ---------------------------------------------------------------------------------------------

class Dynamics(nn.Module):
    """Learned constant acceleration scale * tanh(b) (the Linear sees zeros), the rest of the state constant."""

    def __init__(self):
        super().__init__()
        self.dvel = nn.Linear(1, 1).double()
        self.scale = nn.Parameter(torch.tensor(10.0, dtype=F64))

    def forward(self, t, state):
        _, vel, *rest = state
        return (vel, torch.tanh(self.dvel(torch.zeros_like(vel))) * self.scale, *[torch.zeros_like(r) for r in rest])


class Bounce(nn.Module):
    """Learned instantaneous velocity change -sigmoid(w + b) v."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(1, 1).double()

    def forward(self, t, state):
        pos, vel, *rest = state
        return (pos, -torch.sigmoid(self.net(torch.ones_like(vel))) * vel, *rest)


class NeuralPhysics(nn.Module):
    """learn_physics.py's model: a chain of odeint_event solves (event: height = radius^2), a learned bounce at
    each event, and odeint through the observation times of each interval. Parameters are set so that the
    model bounces four times over the observations."""

    def __init__(self, accel_bias: float = -2.3):
        super().__init__()
        self.initial_pos, self.initial_vel = _param(10.0), _param(0.0)
        self.dynamics, self.bounce = Dynamics(), Bounce()
        self.radius = nn.Parameter(torch.tensor([0.45], dtype=F64))
        with torch.no_grad():
            self.dynamics.dvel.weight.fill_(0.3)
            self.dynamics.dvel.bias.fill_(accel_bias)  # acceleration 10 tanh(-2.3) = -9.80
            self.bounce.net.weight.fill_(0.5)
            self.bounce.net.bias.fill_(0.9)

    def simulate(self, lib, times, max_events: int = 20):
        t0 = torch.zeros(1, dtype=F64)

        def event_fn(t, state):  # with a terminal time, as the example
            if t > times[-1] + 1e-7:
                return torch.zeros_like(t)
            return state[0] - self.radius.reshape_as(state[0]) ** 2

        state = (self.initial_pos, self.initial_vel, self.radius)  # the example's radius "in the state"
        path, n_events = [state[0]], 0
        while t0 < times[-1] and n_events < max_events:
            event_t, sol = lib.odeint_event(self.dynamics, state, t0, event_fn=event_fn, rtol=1e-8, atol=1e-8)
            inside = times[(times > t0) & (times <= event_t)]
            path.append(lib.odeint(self.dynamics, state, torch.cat([t0.reshape(-1), inside]), rtol=1e-8,
                                   atol=1e-8)[0][1:].reshape(-1))
            if event_t < times[-1]:
                state = self.bounce(event_t, tuple(s[-1] for s in sol))
                pos, *rest = state
                state = (pos + 1e-7 * self.dynamics(event_t, state)[0], *rest)
            t0, n_events = event_t, n_events + 1
        return torch.cat(path), n_events


@pytest.fixture(scope="module")
def observations():
    """Ground truth: the bouncing ball's dense path through three bounces (t = 0 .. 5.65)."""
    with torch.no_grad():
        ball = BouncingBall(torchdiffeq)
        times, heights = ball.trajectory(ball.collision_times(4))
    return times[:110], heights[:110]


def _physics_loss(lib, model, observations):
    times, target = observations
    path, n_events = model.simulate(lib, times)
    return ((path - target) / (target + 1e-3)).abs().mean(), n_events


def test_learn_physics_loss_and_gradients(observations):
    """At a fixed model with four events: the same loss and gradients as torchdiffeq (the issue saw d/d(bias)
    1.3149 against 1.5923 before), except d/d(radius), which pyode gets right (finite differences) and
    torchdiffeq reports as 0."""
    results = {}
    for name, lib in LIBS.items():
        model = NeuralPhysics()
        loss, n_events = _physics_loss(lib, model, observations)
        results[name] = (float(loss), n_events, _grads(model, loss))
    (l_ours, n_ours, g_ours), (l_theirs, n_theirs, g_theirs) = results["pyode"], results["torchdiffeq"]
    assert n_ours == n_theirs == 4
    assert abs(l_ours - l_theirs) < 1e-6 * l_theirs
    for name in g_ours:
        if name != "radius":
            torch.testing.assert_close(g_ours[name], g_theirs[name], rtol=1e-5, atol=1e-6, msg=name)
    assert float(g_theirs["radius"]) == 0.0
    model = NeuralPhysics()
    with torch.no_grad():  # events are bisected to 1e-8: central differences with eps 1e-5 carry ~1e-3 of noise
        model.radius += 1e-5
        plus, _ = _physics_loss(pyode, model, observations)
        model.radius -= 2e-5
        minus, _ = _physics_loss(pyode, model, observations)
    finite_difference = float((plus - minus) / 2e-5)
    assert abs(float(g_ours["radius"]) - finite_difference) < 5e-3 * max(1.0, abs(finite_difference))
    assert abs(finite_difference) > 0.05  # a gradient torchdiffeq misses, not noise


def test_learn_physics_training_matches(observations):
    """Three Adam steps of the example's training loop from a model whose acceleration is off (-9.64), radius
    frozen (torchdiffeq cannot learn it): the same losses at every step."""
    losses = {}
    for name, lib in LIBS.items():
        model = NeuralPhysics(accel_bias=-2.0)
        model.radius.requires_grad_(False)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
        losses[name] = []
        for _ in range(3):
            optimizer.zero_grad()
            loss, _ = _physics_loss(lib, model, observations)
            loss.backward()
            optimizer.step()
            losses[name].append(float(loss))
    assert losses["pyode"] == pytest.approx(losses["torchdiffeq"], rel=1e-6)
    assert losses["pyode"][-1] < losses["pyode"][0]
