"""Gradient modes: gradcheck, agreement with finite differences and with each other, memory, seminorm."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

import pyode

T3 = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)


class Linear2(nn.Module):
    """f(t, y) = tanh(W y) + b t, y: (batch, 2)."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(torch.tensor([[-0.5, 1.0], [-1.0, -0.3]], dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor([0.1, -0.2], dtype=torch.float64))

    def forward(self, t, y):
        return torch.tanh(y @ self.W.T) + self.b * t


def _grads(gradient, method="dopri5", rtol=1e-10, atol=1e-10, options=None):
    torch.manual_seed(0)
    f = Linear2()
    y0 = torch.tensor([[1.0, -0.5], [0.3, 0.8]], dtype=torch.float64, requires_grad=True)
    t = T3.clone().requires_grad_(gradient in ("adjoint", "backprop"))
    ys = pyode.odeint(f, y0, t, method=method, rtol=rtol, atol=atol, options=options, gradient=gradient)
    loss = (ys**2).sum() + ys[1].sum()
    loss.backward()
    return [y0.grad, f.W.grad, f.b.grad] + ([t.grad] if t.requires_grad else [])


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_gradcheck_each_mode(gradient):
    module = Linear2()
    y0 = torch.tensor([[0.5, -0.2]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5], dtype=torch.float64, requires_grad=gradient == "adjoint")

    def run(y0, W, b, t):
        def f(t, y):
            return torch.tanh(y @ W.T) + b * t

        return pyode.odeint(f, y0, t, rtol=1e-12, atol=1e-12, gradient=gradient, adjoint_params=(W, b))

    W = module.W.detach().clone().requires_grad_()
    b = module.b.detach().clone().requires_grad_()
    # the adjoint's gradient is exact only to the tolerance: gradcheck at atol 1e-6
    torch.autograd.gradcheck(run, (y0, W, b, t), atol=1e-6, rtol=1e-5)


def test_gradcheck_reversible_and_tuple_state():
    w = torch.tensor([0.7, -0.4], dtype=torch.float64, requires_grad=True)

    def f(t, state):
        x, v = state
        return v * w[0], -torch.sin(x) + w[1] * v

    def run(x0, v0, w):
        xs, vs = pyode.odeint(f, (x0, v0), T3, method="alf", options={"step_size": 0.1}, gradient="reversible",
                              adjoint_params=(w,))
        return xs, vs

    x0 = torch.tensor([0.3, 1.0], dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor([0.0, -0.2], dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(run, (x0, v0, w))
    torch.autograd.gradcheck(
        lambda x0, v0, w: pyode.odeint(f, (x0, v0), T3, gradient="adjoint", adjoint_params=(w,), rtol=1e-12,
                                       atol=1e-12), (x0, v0, w), atol=1e-6, rtol=1e-5)


def test_adjoint_backprop_and_finite_differences_agree():
    """Known solution: y' = a y, y(1) = y0 e^a; L = y(1)^2 -> dL/da = 2 y0^2 e^{2a}, dL/dy0 = 2 y0 e^{2a}."""
    for gradient in ("backprop", "adjoint", "checkpoint"):
        a = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)
        y0 = torch.tensor([1.3], dtype=torch.float64, requires_grad=True)
        ys = pyode.odeint(lambda t, y, a=a: a * y, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=1e-12,
                          atol=1e-12, gradient=gradient, adjoint_params=(a,))
        (ys[-1] ** 2).sum().backward()
        exact_a = 2 * 1.3**2 * math.exp(-1.4)
        exact_y0 = 2 * 1.3 * math.exp(-1.4)
        assert abs(float(a.grad) - exact_a) / exact_a < 1e-6, gradient
        assert abs(float(y0.grad) - exact_y0) / exact_y0 < 1e-6, gradient


def test_modes_agree_with_central_differences_on_nonlinear_problem():
    grads = {g: _grads(g) for g in ("backprop", "adjoint", "checkpoint")}
    f = Linear2()
    eps = 1e-6

    def loss_of(W):
        with torch.no_grad():
            f.W.copy_(W)
            y0 = torch.tensor([[1.0, -0.5], [0.3, 0.8]], dtype=torch.float64)
            ys = pyode.odeint(f, y0, T3, rtol=1e-12, atol=1e-12)
            return float((ys**2).sum() + ys[1].sum())

    W0 = f.W.detach().clone()
    fd = torch.zeros_like(W0)
    for idx in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        e = torch.zeros_like(W0)
        e[idx] = eps
        fd[idx] = (loss_of(W0 + e) - loss_of(W0 - e)) / (2 * eps)
    for mode, g in grads.items():
        rel = float((g[1] - fd).norm() / fd.norm())
        assert rel < 1e-6, (mode, rel)
    # t gradients: adjoint vs backprop
    rel_t = float((grads["adjoint"][3] - grads["backprop"][3]).norm() / grads["backprop"][3].norm())
    assert rel_t < 1e-6


# Two float64 evaluations of the same discretisation in different operation orders (recorded torch ops vs the
# fused kernels; MKL picks its own order per CPU): each gradient entry is a sum over ~n_steps * n_stages
# rounded terms, through a Jacobian chain of norm <= e^{|W| t} ~ 3 here: ~ 3 * 10 * 13 * eps ~ 1e-13.
SAME_STEPS_REL = 1e-12


@pytest.mark.parametrize("method,options", [("dopri5", None), ("bosh3", None), ("rk4", {"step_size": 0.05}),
                                            ("dopri8", None)])
def test_checkpoint_equals_backprop(method, options):
    """ACA replays the very same steps: equal to direct backprop of the same discretisation.

    ``first_step`` is set because the default initial step of dopri8 makes an error ratio of ~5e-8 at
    rtol = 1e-6: an error estimate at rounding level (~5e-14 absolute), whose relative value then depends on
    the operation order, and the next step size with it. Backprop's own forward pass (recorded ops) and
    checkpoint's (fused kernels) would take steps that differ in the 4th digit on some CPUs (seen: AVX-512
    MKL), two valid discretisations whose gradients differ by ~1e-10 -- not a replay error. With error ratios
    well above rounding both forward passes take the same steps, and the comparison is a rounding bound.
    """
    options = options or {"first_step": 0.2}
    direct = _grads("backprop", method, rtol=1e-6, atol=1e-6, options=options)
    replay = _grads("checkpoint", method, rtol=1e-6, atol=1e-6, options=options)
    for d, r in zip(direct[:3], replay[:3]):
        assert float((d - r).norm() / d.norm()) < SAME_STEPS_REL


def test_reversible_equals_backprop_of_alf():
    direct = _grads("backprop", "alf", options={"step_size": 0.02})
    reversible = _grads("reversible", "alf", options={"step_size": 0.02})
    for d, r in zip(direct[:3], reversible[:3]):
        assert float((d - r).norm() / d.norm()) < 1e-10


def test_alf_is_second_order_and_exactly_invertible():
    from pyode._kernels import get_backend
    from pyode._solvers.alf import alf_inverse, alf_step

    kern = get_backend(torch.device("cpu"))
    fn = lambda t, y: torch.stack([y[1], -torch.sin(y[0])])
    y = torch.tensor([1.0, 0.5], dtype=torch.float64)
    v = fn(0.0, y)
    y1, v1 = alf_step(fn, kern, 0.0, y, v, 0.1)
    y_back, v_back = alf_inverse(fn, kern, 0.0, y1, v1, 0.1)
    assert float((y_back - y).abs().max()) < 1e-15 and float((v_back - v).abs().max()) < 1e-15
    exact = pyode.odeint(fn, y, torch.tensor([0.0, 2.0], dtype=torch.float64), rtol=1e-12, atol=1e-12)[-1]
    errs = [float((pyode.odeint(fn, y, torch.tensor([0.0, 2.0], dtype=torch.float64), method="alf",
                                options={"step_size": h})[-1] - exact).abs().max()) for h in (0.02, 0.01)]
    assert 1.7 < math.log2(errs[0] / errs[1]) < 2.3


def test_event_time_gradient():
    """Ball from height h0 under gravity g hits the ground at t* = sqrt(2 h0 / g)."""
    g = torch.tensor(9.81, dtype=torch.float64, requires_grad=True)
    h0 = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)

    def f(t, s):
        return torch.stack([s[1], -g * torch.ones_like(s[1])])

    for gradient in ("backprop", "adjoint"):
        g.grad = h0.grad = None
        event_t, _ = pyode.odeint_event(f, torch.stack([h0, torch.zeros_like(h0)]), torch.tensor(0.0).double(),
                                        event_fn=lambda t, s: s[0], rtol=1e-12, atol=1e-12, gradient=gradient,
                                        adjoint_params=(g,))
        event_t.backward()
        exact_dg = -0.5 * math.sqrt(2 * 1.5) * 9.81**-1.5
        exact_dh = 0.5 * math.sqrt(2 / 9.81) / math.sqrt(1.5)
        assert abs(float(g.grad) - exact_dg) < 1e-6 * abs(exact_dg), gradient
        assert abs(float(h0.grad) - exact_dh) < 1e-6 * abs(exact_dh), gradient


def test_seminorm_takes_no_more_backward_steps():
    torch.manual_seed(0)
    f = nn.Sequential(nn.Linear(4, 256), nn.Tanh(), nn.Linear(256, 4)).double()
    f_t = lambda t, y: f(y)
    y0 = torch.randn(16, 4, dtype=torch.float64)
    nfe = {}
    for norm in ("mixed", "seminorm"):
        sol = pyode.solve(f_t, y0, torch.tensor([0.0, 2.0], dtype=torch.float64), rtol=1e-6, atol=1e-8,
                          gradient="adjoint", adjoint_params=tuple(f.parameters()), adjoint_options={"norm": norm})
        sol.ys[-1].pow(2).sum().backward()
        nfe[norm] = sol.stats.nfe_backward
    assert 0 < nfe["seminorm"] <= nfe["mixed"], nfe


def test_adjoint_bad_input():
    with pytest.raises(ValueError, match="adjoint_params"):
        pyode.odeint_adjoint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="adjoint_options\\['norm'\\]"):
        pyode.odeint_adjoint(Linear2(), torch.ones(1, 2, dtype=torch.float64), T3, adjoint_options={"norm": "x"})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\]"):
        y0 = torch.ones(1, 2, dtype=torch.float64, requires_grad=True)
        pyode.odeint_adjoint(Linear2(), y0, T3, adjoint_options={"bogus": 1}).sum().backward()
    with pytest.raises(ValueError, match="method='alf'"):
        pyode.odeint(Linear2(), torch.ones(1, 2, dtype=torch.float64), T3, method="rk4", gradient="reversible")


def test_frozen_parameters_are_skipped():
    f = Linear2()
    f.b.requires_grad_(False)
    y0 = torch.ones(1, 2, dtype=torch.float64, requires_grad=True)
    pyode.odeint_adjoint(f, y0, T3).sum().backward()
    assert f.W.grad is not None and f.b.grad is None


def test_non_finite_in_backward_pass_names_the_time():
    w = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)

    class NanBelow(torch.autograd.Function):  # identity whose derivative is NaN
        @staticmethod
        def forward(ctx, y):
            return y.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * math.nan

    def f(t, y):  # finite forward, but its vector-Jacobian product is NaN for t < 0.3
        return -w * (NanBelow.apply(y) if t < 0.3 else y)

    y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
    ys = pyode.odeint_adjoint(f, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), adjoint_params=(w,))
    with pytest.raises(pyode.NonFiniteStateError, match="adjoint backward pass") as info:
        ys[-1].sum().backward()
    assert 0.25 < info.value.t_reached <= 0.31


# The peak is this process's VmHWM (the high-water mark of its own address space, new at exec). getrusage's
# ru_maxrss would not do: Linux carries the forking parent's peak across exec, so under a large pytest process
# the child's baseline is already above anything the solve reaches and every difference reads 0.
_MEMORY_SCRIPT = r"""
import json, sys, torch, pyode

def peak_mb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024

mode, steps = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
w = torch.tensor(0.5, requires_grad=True)
y0 = torch.randn(1_000_000)
f = lambda t, y: -w * torch.tanh(y)
base = peak_mb()
ys = pyode.odeint(f, y0, torch.tensor([0.0, 1.0]), method="rk4", options={"step_size": 1.0 / steps},
                  gradient=mode, adjoint_params=(w,), adjoint_method="rk4",
                  adjoint_options={"step_size": 1.0 / steps})
ys[-1].sum().backward()
print(json.dumps({"extra_mb": peak_mb() - base}))
"""


def _extra_memory(mode, steps):
    # A fixed mmap threshold makes glibc return every large buffer to the OS on free, so the peak RSS
    # measures live tensors rather than heap fragmentation.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, mode, str(steps)], capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])["extra_mb"]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc (Linux)")
def test_adjoint_memory_is_flat_in_steps_and_backprop_is_not():
    """State of 1e6 float32 (4 MB): 10x more steps -> adjoint within 1.2x, backprop several times more."""
    adj = [_extra_memory("adjoint", n) for n in (4, 40)]
    direct = [_extra_memory("backprop", n) for n in (4, 40)]
    assert adj[1] <= 1.2 * adj[0] + 1.0, adj
    assert direct[1] > 4 * direct[0], direct


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint", "adjoint"])
def test_gradcheck_output_times(gradient):
    """Gradients with respect to every time in t (StartTime / OutputTimes, and the adjoint's own)."""
    w = torch.tensor([[-0.4, 1.0], [-1.0, -0.2]], dtype=torch.float64, requires_grad=True)

    def run(y0, t):
        return pyode.odeint(lambda t, y: torch.tanh(y @ w.T) * torch.cos(t), y0, t, rtol=1e-12, atol=1e-12,
                            gradient=gradient, adjoint_params=(w,))

    y0 = torch.tensor([0.5, -0.3], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.1, 0.6, 1.2], dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(run, (y0, t), atol=1e-6, rtol=1e-5)


def test_gradcheck_event_time():
    g = torch.tensor(9.81, dtype=torch.float64, requires_grad=True)

    def event_t_of(h0, g):
        def f(t, s):
            return torch.stack([s[1], -g * torch.ones_like(s[1])])

        event_t, ys = pyode.odeint_event(f, torch.stack([h0, torch.zeros_like(h0)]), torch.tensor(0.0).double(),
                                         event_fn=lambda t, s: s[0] - 0.1 * t, rtol=1e-12, atol=1e-12)
        return event_t, ys[-1]

    h0 = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    # bisection places the event to atol = 1e-12 in time: finite differences (eps 1e-6) carry ~1e-6 noise
    torch.autograd.gradcheck(event_t_of, (h0, g), atol=2e-5, rtol=1e-4)


def test_adjoint_reports_its_backward_steps():
    """The adjoint's backward solve counts its accepted/rejected steps beside its evaluations."""
    linear = torch.nn.Linear(2, 2).double()
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    sol = pyode.solve(lambda t, y: torch.tanh(linear(y)), y0, t, gradient="adjoint",
                      adjoint_params=tuple(linear.parameters()))
    sol.ys.sum().backward()
    stats = sol.stats
    assert stats.n_accepted_backward > 0
    assert stats.nfe_backward >= 6 * stats.n_accepted_backward  # dopri5: at least 6 evaluations per step
