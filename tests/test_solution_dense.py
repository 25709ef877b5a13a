"""Beyond torchdiffeq: dense output (``solve(..., dense=True)``, ``Solution.evaluate``, ``Solution.ts``),
per-sample failures marked per row (``options={"on_failure": "mark"}``) and the progress bar."""

import math

import pytest
import torch

import pyode

F64 = torch.float64


def decay(t, y):  # y' = -y cos t: y = y0 exp(-sin t)
    return -y * torch.cos(t)


def exact(y0, t):
    return torch.exp(-torch.sin(t)).reshape(*t.shape, *([1] * y0.dim())) * y0


# The continuous extension's error stays within ~100 x rtol for the adaptive methods (rtol chosen per order to
# keep the step count small); rk4's and implicit_adams' linear interpolation between grid points (h = 0.02) is
# off by at most h^2/8 max|y''| (~1e-4 here).
CASES = [("dopri5", {}, 1e-10, 1e-8), ("tsit5", {}, 1e-10, 1e-8), ("bosh3", {}, 1e-8, 1e-6),
         ("dopri8", {}, 1e-10, 1e-8), ("adaptive_heun", {}, 1e-7, 1e-5), ("rk4", {"step_size": 0.02}, 0, 1e-4),
         ("implicit_adams", {"step_size": 0.02}, 0, 1e-4)]


@pytest.mark.parametrize(("method", "options", "rtol", "tol"), CASES)
def test_evaluate_matches_the_exact_solution_and_the_outputs(method, options, rtol, tol):
    y0 = torch.tensor([1.0, -2.0], dtype=F64)
    t = torch.tensor([0.0, 0.7, 2.0], dtype=F64)
    sol = pyode.solve(decay, y0, t, method=method, options=options, rtol=rtol, atol=rtol * 1e-2 or 1e-9, dense=True)
    grid = torch.linspace(0.0, 2.0, 57, dtype=F64)
    torch.testing.assert_close(sol.evaluate(grid), exact(y0, grid), rtol=0, atol=tol)
    # At the output times the dense output is the solve's own output (the same interpolant, or y1).
    torch.testing.assert_close(sol.evaluate(t), sol.ys, rtol=0, atol=1e-12)


def test_evaluate_is_batched_over_times_and_keeps_tuple_states():
    y0 = (torch.tensor([1.0], dtype=F64), torch.tensor([[2.0, 3.0]], dtype=F64))
    sol = pyode.solve(lambda t, y: (decay(t, y[0]), decay(t, y[1])), y0, torch.tensor([0.0, 1.0], dtype=F64),
                      rtol=1e-10, atol=1e-12, dense=True)
    times = torch.rand(5, 7, dtype=F64, generator=torch.Generator().manual_seed(0))
    a, b = sol.evaluate(times)
    assert a.shape == (5, 7, 1) and b.shape == (5, 7, 1, 2)
    torch.testing.assert_close(b, exact(y0[1], times), rtol=0, atol=1e-8)
    assert sol.evaluate(0.5)[0].shape == (1,)  # a float time: the state's own shape


def test_evaluate_in_reverse_time_and_out_of_range():
    y0 = torch.tensor([1.0], dtype=F64)
    sol = pyode.solve(decay, y0, torch.tensor([2.0, -1.0], dtype=F64), rtol=1e-10, atol=1e-12, dense=True)
    grid = torch.linspace(2.0, -1.0, 31, dtype=F64)
    ref = torch.exp(-(torch.sin(grid) - math.sin(2.0)))[:, None]
    torch.testing.assert_close(sol.evaluate(grid), ref, rtol=0, atol=1e-8)
    assert bool((sol.ts[1:] < sol.ts[:-1]).all()) and sol.ts[0] == 2.0 and sol.ts[-1] == -1.0
    with pytest.raises(ValueError, match="outside the solved interval"):
        sol.evaluate(torch.tensor([2.5], dtype=F64))
    with pytest.raises(ValueError, match="dense=True"):
        pyode.solve(decay, y0, torch.tensor([0.0, 1.0], dtype=F64)).evaluate(0.5)


def test_evaluate_is_differentiable():
    """gradcheck in float64 of the dense output at interior times w.r.t. y0 and a parameter (backprop)."""
    t = torch.tensor([0.0, 1.5], dtype=F64)
    times = torch.tensor([0.13, 0.77, 1.21], dtype=F64)

    def run(y0, w):
        sol = pyode.solve(lambda t, y: -w * y * torch.cos(t), y0, t, rtol=1e-9, atol=1e-11, dense=True)
        return sol.evaluate(times)

    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    w = torch.tensor(0.8, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (y0, w), atol=1e-6, rtol=1e-5)


def test_ts_are_the_accepted_steps():
    y0 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([0.0, 3.0], dtype=F64)
    sol = pyode.solve(decay, y0, t, rtol=1e-6, atol=1e-8, save_steps=True)
    assert sol.dense is None
    assert len(sol.ts) == sol.stats.n_accepted + 1 and bool((sol.ts[1:] > sol.ts[:-1]).all())
    assert float(sol.ts[0]) == 0.0 and float(sol.ts[-1]) == 3.0
    fixed = pyode.solve(decay, y0, t, method="euler", options={"step_size": 0.5}, save_steps=True)
    torch.testing.assert_close(fixed.ts, torch.arange(0.0, 3.01, 0.5, dtype=F64))
    with pytest.raises(ValueError, match="do not combine with event_fn"):
        pyode.solve(decay, y0, t, event_fn=lambda t, y: y[0] - 0.5, dense=True)
    with pytest.raises(ValueError, match="not available with method='scipy_solver'"):
        pyode.solve(decay, y0, t, method="scipy_solver", dense=True)


# ------------------------------------------------------------------------------------ on_failure="mark"


def blow_up_row(t, y):
    """Rows decay as y' = -c y^2 (y = 2 / (1 + 2 c t)); row 2 has c = -1: y' = y^2 from 2, singular at t = 0.5."""
    c = torch.tensor([1.0, 1.0, -1.0, 2.0], dtype=y.dtype)[:, None]
    return -c * y * y


def test_on_failure_mark_finishes_the_other_rows():
    y0 = torch.full((4, 1), 2.0, dtype=F64)
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    opts = {"per_sample": True, "on_failure": "mark"}
    sol = pyode.solve(blow_up_row, y0, t, rtol=1e-9, atol=1e-12, options=opts)
    assert sol.stats.per_sample_status == ["success", "success", "step_underflow", "success"]
    assert sol.stats.status == "partial"
    reached = sol.stats.per_sample_t_reached
    assert float(reached[2]) == pytest.approx(0.5, abs=1e-3) and bool((reached[[0, 1, 3]] == 1.0).all())
    c = torch.tensor([1.0, 1.0, 2.0], dtype=F64)
    ok = sol.ys[:, [0, 1, 3], 0]
    torch.testing.assert_close(ok, 2.0 / (1.0 + 2.0 * c[None, :] * t[:, None]), rtol=1e-7, atol=0)
    assert bool(sol.ys[3:, 2].isnan().all())  # t = 0.75, 1.0: never reached by the failed row
    with pytest.raises(pyode.StepSizeUnderflowError, match="batch row 2"):
        pyode.solve(blow_up_row, y0, t, rtol=1e-9, atol=1e-12, options={"per_sample": True})
    with pytest.raises(ValueError, match=r"options\['on_failure'\]"):
        pyode.solve(blow_up_row, y0, t, options={"on_failure": "mark"})


# -------------------------------------------------------------------------------------------- progress


class Meter:
    def __init__(self):
        self.total, self.closed = 0.0, False

    def update(self, dt):
        self.total += dt

    def close(self):
        self.closed = True


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_progress_meter_covers_the_interval(method, capsys):
    meter = Meter()
    y0 = torch.tensor([1.0], dtype=F64)
    options = {"step_size": 0.1} if method == "rk4" else None
    pyode.odeint(decay, y0, torch.tensor([0.0, 2.0], dtype=F64), method=method, options=options, progress=meter)
    assert meter.total == pytest.approx(2.0, abs=1e-12) and meter.closed
    pyode.odeint(decay, y0, torch.tensor([0.0, 2.0], dtype=F64), progress=True)  # not a tty: silent
    assert capsys.readouterr().err == ""
    with pytest.raises(TypeError, match="progress must be"):
        pyode.odeint(decay, y0, torch.tensor([0.0, 2.0], dtype=F64), progress="yes")
