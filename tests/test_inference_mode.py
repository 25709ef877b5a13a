"""Solves under ``torch.inference_mode()``: the same results as under ``torch.no_grad()`` (bitwise: the same steps,
the stiff methods' Jacobians still by autograd), and nothing left behind that breaks a later solve outside that mode
(the C++ loop's cached buffer views, pooled buffers and cached tableaux are normal tensors whichever mode made them;
an inference tensor cannot be written or saved for backward outside inference mode).

Each solve's gradients after an inference-mode pass are compared with a fresh interpreter's, since a cache that a
first solve fills is only ever filled once per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

import pyode

F64 = torch.float64


class Field(torch.nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.lin = torch.nn.Linear(n, n).double()

    def forward(self, t, y):
        return torch.tanh(self.lin(y)) - 0.5 * y * torch.cos(t).reshape(-1, 1)  # per-sample t: (batch,)


def robertson(t, y):
    return torch.stack([-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2,
                        3e7 * y[1] ** 2])


# (method, options): explicit adaptive (the C++ loop, dopri8 with its restep output), fixed grid, the stiff kinds with
# an autograd Jacobian, auto, torchdiffeq's implicit grid, per-sample steps, Adams.
CASES = [("dopri5", {}), ("tsit5", {}), ("dopri8", {}), ("rk4", {"step_size": 0.05}), ("kvaerno5", {}),
         ("kvaerno3", {}), ("rodas5", {}), ("auto", {}), ("gl4", {"step_size": 0.1}), ("dopri5", {"per_sample": True}),
         ("implicit_adams", {"step_size": 0.05}), ("trbdf2", {"step_size": 0.1})]


def solve_all(field: Field, grad: bool) -> list[torch.Tensor]:
    """Every case's outputs (with ``grad``: and its gradients to y0 and the parameters) under odeint and, where it
    applies, odeint_adjoint; then Robertson by rodas5, a 300 000-element state (pooled stage buffers) and an event."""
    out, t = [], torch.linspace(0, 1, 5, dtype=F64)
    params = tuple(field.parameters())
    for method, opts in CASES:
        y0 = torch.tensor([[0.3, -0.2, 0.5], [0.1, 0.4, -0.3]], dtype=F64, requires_grad=grad)
        for adjoint in (False,) if opts.get("per_sample") else (False, True):
            kwargs = {"adjoint_params": params} if adjoint else {}
            odeint = pyode.odeint_adjoint if adjoint else pyode.odeint
            ys = odeint(field, y0, t, method=method, rtol=1e-7, atol=1e-9, options=dict(opts), **kwargs)
            out.append(ys.detach())
            if grad:
                out.extend(g.detach() for g in torch.autograd.grad(ys.square().sum(), (y0, *params)))
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=F64, requires_grad=grad)
    ys = pyode.odeint(robertson, y0, torch.tensor([0.0, 1.0, 10.0], dtype=F64), method="rodas5", rtol=1e-6,
                      atol=1e-10)
    out.append(ys.detach())
    if grad:
        out.append(torch.autograd.grad(ys.sum(), y0)[0])
    big = torch.randn(300_000, dtype=F64, generator=torch.Generator().manual_seed(3)).requires_grad_(grad)
    ys = pyode.odeint(lambda s, y: -y * (1 + s), big, torch.tensor([0.0, 0.5], dtype=F64))
    out.append(ys.detach())
    if grad:
        out.append(torch.autograd.grad(ys[-1].sum(), big)[0])
    y0 = torch.tensor([1.0, 0.0], dtype=F64, requires_grad=grad)
    event_t, ys = pyode.odeint_event(lambda s, y: torch.stack([y[1], -y[0]]), y0, torch.tensor(0.0, dtype=F64),
                                     event_fn=lambda s, y: y[0] - 0.5, method="dopri5", rtol=1e-8, atol=1e-10)
    out.extend([event_t.detach(), ys.detach()])
    if grad:
        out.append(torch.autograd.grad(event_t + ys[-1].sum(), y0)[0])
    return out


def make_field() -> Field:
    torch.manual_seed(1)
    return Field(3)  # made outside inference mode: a module made inside it has parameters autograd cannot use


def test_solves_under_inference_mode_match_no_grad_bitwise(one_thread):
    """Inference mode first: the no_grad pass then reuses what it cached (the C++ loop's views of its buffers,
    which the same layouts meet at the same addresses)."""
    field = make_field()
    with torch.inference_mode():
        results = solve_all(field, grad=False)
    with torch.no_grad():
        reference = solve_all(field, grad=False)
    assert len(results) == len(reference)
    for got, want in zip(results, reference):
        assert torch.equal(got, want)


def test_stiff_solve_under_inference_mode_keeps_the_autograd_jacobian(one_thread):
    """Under inference mode autograd records nothing, so the Jacobian turns inference mode off for its own call;
    otherwise it would fall back to forward differences (n more evaluations per Jacobian, other steps)."""
    y0, t = torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor([0.0, 1e3], dtype=F64)
    stats = []
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            stats.append(pyode.solve(robertson, y0, t, method="kvaerno5", rtol=1e-6, atol=1e-10).stats)
    assert stats[0].nfe == stats[1].nfe and stats[0].n_accepted == stats[1].n_accepted


PROBE = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    from test_inference_mode import make_field, solve_all
    torch.set_num_threads(1)
    field = make_field()
    if {inference_first}:
        with torch.inference_mode():
            solve_all(field, grad=False)
    torch.save(solve_all(field, grad=True), {out!r})
""")


def test_an_inference_mode_pass_leaves_later_gradients_unchanged(tmp_path):
    """Gradients after a first pass under inference mode equal a fresh process's, bitwise (the first pass fills
    every cache)."""
    from pathlib import Path

    tests = str(Path(__file__).parent)
    results = []
    for inference_first in (True, False):
        out = tmp_path / f"grads_{inference_first}.pt"
        code = PROBE.format(tests=tests, inference_first=inference_first, out=str(out))
        done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results.append(torch.load(out))
    assert len(results[0]) == len(results[1]) > 40
    for after_inference, fresh in zip(*results):
        assert torch.equal(after_inference, fresh)
