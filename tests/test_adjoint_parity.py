"""odeint_adjoint as torchdiffeq's: functions whose output depends on neither the state nor the parameters, and
the backward solve's error norm (adjoint_options={"norm": "seminorm" | callable}, the forward's norm inherited).
Step counts are compared with torchdiffeq 0.2.5 where it is installed."""

import math

import pytest
import torch
from torch import nn

import pyode

F64 = torch.float64


# ---- func independent of y and of the parameters ----------------------------------------------------------------

def test_adjoint_when_func_depends_only_on_time():
    """y' = -0.1 exp(-0.1 t): y(t_i) = y0 + exp(-0.1 t_i) - exp(-0.1 t0). torchdiffeq gives the same gradients."""
    y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64, requires_grad=True)
    ys = pyode.odeint_adjoint(lambda t, y: -0.1 * torch.exp(-0.1 * t) * torch.ones_like(y), y0, t, rtol=1e-10,
                              atol=1e-12, adjoint_params=())
    d_y0, d_t = torch.autograd.grad(ys.sum(), (y0, t))
    rate = [-0.1 * math.exp(-0.1 * x) for x in (0.0, 1.0, 2.0)]
    assert float(d_y0) == pytest.approx(3.0, abs=1e-12)
    torch.testing.assert_close(d_t, torch.tensor([-2 * rate[0], rate[1], rate[2]], dtype=F64), rtol=1e-8, atol=1e-10)


def test_adjoint_unused_parameters_get_zero_gradients():
    """A parameter in adjoint_params that func never uses gets zeros (as torchdiffeq), not None or a crash."""
    unused = nn.Linear(1, 1).double()
    y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    ys = pyode.odeint_adjoint(lambda t, y: t * torch.ones_like(y), y0, torch.tensor([0.0, 1.0], dtype=F64),
                              adjoint_params=tuple(unused.parameters()))
    grads = torch.autograd.grad(ys.sum(), (y0, *unused.parameters()))
    assert float(grads[0]) == 2.0
    assert all(float(g.abs().max()) == 0.0 for g in grads[1:])


def test_adjoint_event_interface_when_func_depends_only_on_time():
    """y' = -t from y0 = 1 at t0 = 0.5: the event y = 0 at t* = sqrt(2 y0 + t0^2) = 1.5, dt*/dy0 = 1/t*,
    dt*/dt0 = t0/t*."""
    y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    t0 = torch.tensor(0.5, dtype=F64, requires_grad=True)
    event_t, _ = pyode.odeint_event(lambda t, y: -t * torch.ones_like(y), y0, t0, event_fn=lambda t, y: y[0],
                                    odeint_interface=pyode.odeint_adjoint, adjoint_params=(), rtol=1e-10, atol=1e-12)
    d_y0, d_t0 = torch.autograd.grad(event_t, (y0, t0))
    assert event_t.item() == pytest.approx(1.5, abs=1e-10)
    assert float(d_y0) == pytest.approx(1 / 1.5, abs=1e-9)
    assert float(d_t0) == pytest.approx(0.5 / 1.5, abs=1e-9)


# ---- the backward solve's norm -----------------------------------------------------------------------------------

class Counted(nn.Module):
    """A small MLP field counting its calls; ``tuple_state``: y is (y[..., :2], y[..., 2:])."""

    def __init__(self, seed: int, tuple_state: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 4)).double()
        self.tuple_state, self.calls = tuple_state, 0

    def forward(self, t, y):
        self.calls += 1
        if not self.tuple_state:
            return self.net(y)
        out = self.net(torch.cat(y, -1))
        return out[..., :2], out[..., 2:]


def _backward_nfe(lib, seed, tuple_state=False, t_grad=False, **kwargs):
    """Backward evaluations and dL/dy0 of one adjoint solve of the Counted field."""
    func = Counted(seed, tuple_state)
    torch.manual_seed(100 + seed)
    y0 = torch.randn(8, 4, dtype=F64, requires_grad=True)
    state = (y0[:, :2], y0[:, 2:]) if tuple_state else y0
    t = torch.tensor([0.0, 1.0, 3.0], dtype=F64, requires_grad=t_grad)
    ys = lib.odeint_adjoint(func, state, t, rtol=1e-6, atol=1e-8, **kwargs)
    loss = sum(y.pow(2).sum() for y in ys) if tuple_state else ys.pow(2).sum()
    forward_calls = func.calls
    loss.backward()
    return func.calls - forward_calls, y0.grad


CASES = [(seed, tup, t_grad) for seed in (0, 1) for tup in (False, True) for t_grad in (False, True)]


@pytest.mark.parametrize(("seed", "tuple_state", "t_grad"), CASES)
def test_seminorm_takes_fewer_steps_and_no_more_than_torchdiffeq(seed, tuple_state, t_grad):
    """The seminorm leaves the parameter-gradient channels out of the backward error norm (Kidger et al. 2021):
    strictly fewer evaluations than the full norm here, and never more than torchdiffeq's backward solve takes
    with the same norm (equal for a tensor state; pyode's last step lands on the output time instead of
    overshooting it, which can only save steps)."""
    nfe = {norm: _backward_nfe(pyode, seed, tuple_state, t_grad, adjoint_options={"norm": norm})
           for norm in ("mixed", "seminorm")}
    assert nfe["seminorm"][0] < nfe["mixed"][0], nfe
    # both are gradients of the same solve to the tolerance: rtol 1e-6 over a ~10-step interval
    torch.testing.assert_close(nfe["seminorm"][1], nfe["mixed"][1], rtol=1e-4, atol=1e-5)
    torchdiffeq = pytest.importorskip("torchdiffeq")
    for norm, theirs in (("mixed", _backward_nfe(torchdiffeq, seed, tuple_state, t_grad)),
                         ("seminorm", _backward_nfe(torchdiffeq, seed, tuple_state, t_grad,
                                                    adjoint_options={"norm": "seminorm"}))):
        assert nfe[norm][0] <= theirs[0], (norm, nfe[norm][0], theirs[0])
        if not tuple_state:
            assert nfe[norm][0] == theirs[0], (norm, nfe[norm][0], theirs[0])
        torch.testing.assert_close(nfe[norm][1], theirs[1], rtol=1e-4, atol=1e-5)


def _torchdiffeq_seminorm(args):
    """torchdiffeq's seminorm written as a callable: max(|t|, rms(y), rms(adj_y)) for a tensor state."""
    t, y, adj_y, *_ = args
    return max(t.abs(), y.pow(2).mean().sqrt(), adj_y.pow(2).mean().sqrt())


@pytest.mark.parametrize("t_grad", [False, True])
def test_callable_adjoint_norm_gets_torchdiffeqs_arguments(t_grad):
    """A callable adjoint_options['norm'] receives (t, y, adj_y, *adj_params) shaped as the user's tensors; one
    that computes the seminorm takes exactly the seminorm's steps."""
    seen = []

    def norm(args):
        seen.append(tuple(a.shape for a in args))
        return _torchdiffeq_seminorm(args)

    nfe, grad = _backward_nfe(pyode, 0, t_grad=t_grad, adjoint_options={"norm": norm})
    params = Counted(0).net.parameters()
    assert seen and set(seen) == {((), (8, 4), (8, 4), *(p.shape for p in params))}
    semi_nfe, semi_grad = _backward_nfe(pyode, 0, t_grad=t_grad, adjoint_options={"norm": "seminorm"})
    assert nfe == semi_nfe
    torch.testing.assert_close(grad, semi_grad, rtol=1e-12, atol=1e-12)


def test_callable_adjoint_norm_tuple_state_arguments():
    """For a tuple state: (t, *y, *adj_y, *adj_params), as torchdiffeq."""
    seen = []

    def norm(args):
        seen.append(tuple(a.shape for a in args))
        return max(a.abs().max() for a in args)

    _backward_nfe(pyode, 0, tuple_state=True, adjoint_options={"norm": norm})
    shapes = tuple(p.shape for p in Counted(0).net.parameters())
    assert seen and set(seen) == {((), (8, 2), (8, 2), (8, 2), (8, 2), *shapes)}


def test_forward_norm_is_the_adjoints_state_norm():
    """With options={"norm": callable} and no adjoint norm, the backward solve's norm is torchdiffeq's default
    max(|t|, norm(y), norm(adj_y), rms(each parameter gradient)), and the seminorm drops the last."""

    def max_norm(y):
        return y.abs().max()

    def default(args):
        t, y, adj_y, *params = args
        return max([t.abs(), max_norm(y), max_norm(adj_y)] + [p.pow(2).mean().sqrt() for p in params])

    def semi(args):
        t, y, adj_y, *_ = args
        return max(t.abs(), max_norm(y), max_norm(adj_y))

    opts = {"options": {"norm": max_norm}}
    inherited = _backward_nfe(pyode, 1, **opts)
    explicit = _backward_nfe(pyode, 1, adjoint_options={"norm": default}, **opts)
    assert inherited[0] == explicit[0]
    torch.testing.assert_close(inherited[1], explicit[1], rtol=1e-12, atol=1e-12)
    seminorm = _backward_nfe(pyode, 1, adjoint_options={"norm": "seminorm"}, **opts)
    explicit_semi = _backward_nfe(pyode, 1, adjoint_options={"norm": semi}, **opts)
    assert seminorm[0] == explicit_semi[0] < inherited[0]


@pytest.mark.parametrize(("norm", "message"), [
    (lambda args: args[1], r"adjoint_options\['norm'\] must return a scalar"),
    (lambda args: "small", r"adjoint_options\['norm'\] must return a scalar"),
    (lambda args: args[0] * math.nan, r"adjoint_options\['norm'\] returned nan for a finite input"),
])
def test_bad_adjoint_norm_raises_naming_the_option(norm, message):
    with pytest.raises(ValueError, match=message):
        _backward_nfe(pyode, 0, adjoint_options={"norm": norm})


def test_adjoint_norm_must_be_known_or_callable():
    with pytest.raises(ValueError, match=r"adjoint_options\['norm'\] must be one of .* or a callable"):
        pyode.odeint_adjoint(Counted(0), torch.ones(1, 4, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                             adjoint_options={"norm": "max"})


def test_callable_adjoint_norm_warns_when_a_parameter_is_left_out():
    """As torchdiffeq: a frozen parameter is not integrated, so the callable norm does not receive it."""
    func = Counted(0)
    func.net[0].bias.requires_grad_(False)
    seen = []

    def norm(args):
        seen.append(len(args))
        return max(a.abs().max() for a in args)

    with pytest.warns(UserWarning, match="adjoint parameter does not require grad"):
        ys = pyode.odeint_adjoint(func, torch.ones(2, 4, dtype=F64, requires_grad=True),
                                  torch.tensor([0.0, 1.0], dtype=F64), adjoint_options={"norm": norm})
    ys.sum().backward()
    assert set(seen) == {3 + 3}  # t, y, adj_y and the three parameters that require grad
