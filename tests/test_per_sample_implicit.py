"""Per-sample step sizes for the adaptive stiff methods (kvaerno3, kvaerno5, rodas5): each batch row its own h,
Newton/Rosenbrock matrix, controller and accept/reject, in the per-sample loop's lock-step rounds."""

import functools

import numpy as np
import pytest
import scipy.integrate
import torch

import pyode

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: extra threads only add contention

METHODS = ["kvaerno3", "kvaerno5", "rodas5"]
T = torch.linspace(0.0, 3.0, 7, dtype=torch.float64)


def van_der_pol(mu: torch.Tensor):
    """Van der Pol rows (batch, 2), one mu per row; t is (batch,) per sample, () in a joint solve."""
    def f(t, y):
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], -1)
    return f


@pytest.mark.parametrize("method", METHODS)
def test_batch_of_one_takes_the_joint_solves_steps(method):
    """One row: the per-sample rounds are the joint loop, row-wise (same initial step, controller, Newton test,
    Jacobian refresh), so the same accepted and rejected steps and the same values up to rounding."""
    f, y0 = van_der_pol(torch.tensor([50.0], dtype=torch.float64)), torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    joint = pyode.solve(f, y0, T, method=method, rtol=1e-6, atol=1e-8)
    per = pyode.solve(f, y0, T, method=method, rtol=1e-6, atol=1e-8, options={"per_sample": True})
    assert (per.stats.n_accepted, per.stats.n_rejected) == (joint.stats.n_accepted, joint.stats.n_rejected)
    assert per.stats.n_iterations == joint.stats.n_steps
    # the same arithmetic on (1, 2) tensors instead of (2,): rounding differences only, carried over ~100 steps of a
    # problem whose error growth is O(1) (its slow manifold is attracting)
    torch.testing.assert_close(per.ys, joint.ys, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_stiff_and_mild_rows_each_take_their_own_steps(method):
    """A stiff row (mu = 1000) and a mild one (mu = 1): each row takes the steps of its own single-row solve (the
    initial step is the batch's, so it is fixed here), and matches that solve to rounding."""
    mu = torch.tensor([1.0, 1000.0], dtype=torch.float64)
    y0 = torch.tensor([[2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    opts = {"first_step": 1e-4}
    per = pyode.solve(van_der_pol(mu), y0, T, method=method, rtol=1e-6, atol=1e-8, options={"per_sample": True, **opts})
    steps = per.stats.per_sample_accepted + per.stats.per_sample_rejected
    assert int(steps[0]) != int(steps[1])
    for row in range(2):
        one = pyode.solve(van_der_pol(mu[row:row + 1]), y0[row:row + 1], T, method=method, rtol=1e-6, atol=1e-8,
                          options=opts)
        assert int(per.stats.per_sample_accepted[row]) == one.stats.n_accepted
        assert int(per.stats.per_sample_rejected[row]) == one.stats.n_rejected
        torch.testing.assert_close(per.ys[:, row], one.ys[:, 0], rtol=1e-10, atol=1e-10)  # as above: rounding only


def test_newton_failure_rejects_only_its_row(monkeypatch):
    """With max_iters = 3 the mild row's Newton iterations (large steps, a Jacobian kept from earlier) fail now and
    then: each failure rejects and halves that row's step alone, and every row still takes exactly the steps of its
    own solve (whose Newton fails at the same steps)."""
    from pyode._solvers import newton

    failures = []
    iterate = newton.RowNewton.iterate

    def counted(self, *args):
        z, failed = iterate(self, *args)
        failures.append(failed.clone())
        return z, failed

    monkeypatch.setattr(newton.RowNewton, "iterate", counted)
    mu = torch.tensor([1.0, 1000.0], dtype=torch.float64)
    y0 = torch.tensor([[2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    opts = {"first_step": 1e-4, "max_iters": 3}
    per = pyode.solve(van_der_pol(mu), y0, T, method="kvaerno5", rtol=1e-6, atol=1e-8,
                      options={"per_sample": True, **opts})
    per_row = torch.stack(failures).sum(0)
    assert int(per_row[0]) > 0 and int(per_row[1]) == 0
    for row in range(2):
        one = pyode.solve(van_der_pol(mu[row:row + 1]), y0[row:row + 1], T, method="kvaerno5", rtol=1e-6, atol=1e-8,
                          options=opts)
        assert int(per.stats.per_sample_accepted[row]) == one.stats.n_accepted
        assert int(per.stats.per_sample_rejected[row]) == one.stats.n_rejected
        torch.testing.assert_close(per.ys[:, row], one.ys[:, 0], rtol=1e-10, atol=1e-10)


def robertson(k1, k2, k3):
    def f(t, y):
        a, b, c = y.unbind(-1)
        return torch.stack([-k1 * a + k3 * b * c, k1 * a - k3 * b * c - k2 * b * b, k2 * b * b], -1)
    return f


RATES = ([0.04, 0.4, 0.04], [3e7, 3e7, 3e5], [1e4, 1e4, 1e3])  # k1, k2, k3 of each Robertson row
T_ROBERTSON = [0.0, 1e-2, 1.0, 1e2, 1e3]


@functools.cache
def robertson_reference() -> np.ndarray:
    """SciPy Radau at rtol 1e-11, atol 1e-16 for each row: (T, rows, 3)."""
    rows = []
    for a, b, c in zip(*RATES, strict=True):
        rows.append(scipy.integrate.solve_ivp(
            lambda s, y, a=a, b=b, c=c: [-a * y[0] + c * y[1] * y[2], a * y[0] - c * y[1] * y[2] - b * y[1] ** 2,
                                         b * y[1] ** 2],
            (0.0, T_ROBERTSON[-1]), [1.0, 0.0, 0.0], method="Radau", rtol=1e-11, atol=1e-16, t_eval=T_ROBERTSON).y.T)
    return np.stack(rows, 1)


@pytest.mark.parametrize(("method", "bound"), [("kvaerno5", 1e-5), ("rodas5", 1e-7)])
def test_robertson_rows_match_radau(method, bound):
    """Robertson rows with different rate constants, t to 1e3, against SciPy's Radau at rtol 1e-11. The bound is
    the method's own global error at rtol 1e-8 (a local-error control over 5 decades of t; the joint solve of
    each row has the same: to t = 1e4 kvaerno5 1.4e-6 to 3.0e-6, rodas5 7e-9 to 1.1e-8), with a 3-10x margin."""
    k1, k2, k3 = (torch.tensor(v, dtype=torch.float64) for v in RATES)
    t = torch.tensor(T_ROBERTSON, dtype=torch.float64)
    y0 = torch.tensor([[1.0, 0.0, 0.0]] * 3, dtype=torch.float64)
    sol = pyode.solve(robertson(k1, k2, k3), y0, t, method=method, rtol=1e-8, atol=1e-12,
                      options={"per_sample": True})
    ref = robertson_reference()
    # relative error, with y2 ~ 1e-5 .. 1e-9 measured against atol/rtol = 1e-4 where it is below that
    err = np.abs(sol.ys.numpy() - ref) / (np.abs(ref) + 1e-12 / 1e-8)
    assert err.max() < bound, err.max(axis=(0, 2))
    assert len(set(sol.stats.per_sample_accepted.tolist())) > 1  # the rows did step differently


def _stiff_rhs(a, scale):
    def f(t, y):  # eigenvalues near -50 and -1 (times the row's scale): stiff, nonlinear, non-autonomous
        return scale[:, None] * (y @ a.T) + 0.1 * torch.sin(y) * torch.cos(t)[:, None]
    return f


@pytest.mark.parametrize("method", ["kvaerno5", "rodas5"])
def test_gradcheck(method):
    """Backprop through the rounds (kvaerno5: the stages' implicit-function-theorem gradient, per row; rodas5:
    autograd through the batched LU) in float64. The step sizes are not differentiated (as in every adaptive
    solve); at rtol 1e-9 their dependence on the inputs moves the solution by O(1e-9), far below gradcheck's
    tolerances."""
    scale = torch.tensor([1.0, 0.1], dtype=torch.float64)
    t = torch.tensor([0.0, 0.1, 0.2], dtype=torch.float64)

    def solve(y0, a):
        return pyode.odeint(_stiff_rhs(a, scale), y0, t, method=method, rtol=1e-9, atol=1e-9,
                            options={"per_sample": True})

    y0 = torch.tensor([[1.0, -0.5], [0.3, 0.2]], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([[-50.0, 1.0], [0.5, -1.0]], dtype=torch.float64, requires_grad=True)
    # fast_mode: a random projection of the Jacobian (one backward, two solves per input) instead of every entry
    assert torch.autograd.gradcheck(solve, (y0, a), fast_mode=True)


@pytest.mark.parametrize("method", METHODS)
def test_failing_row_is_marked_and_the_others_finish(method):
    """Row 1's func turns NaN after t = 0.5: its Newton solves (or its matrix) fail, its step shrinks to the
    resolution of t and it stops; the other rows finish as in their own solves."""
    mu = torch.tensor([5.0, 5.0, 100.0], dtype=torch.float64)
    base = van_der_pol(mu)

    def f(t, y):
        out = base(t, y).clone()
        out[1] = torch.where(t[1] > 0.5, torch.nan, out[1])
        return out

    y0 = torch.tensor([[2.0, 0.0]] * 3, dtype=torch.float64)
    opts = {"per_sample": True, "first_step": 1e-3}
    T = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)
    sol = pyode.solve(f, y0, T, method=method, rtol=1e-6, atol=1e-8, options={**opts, "on_failure": "mark"})
    assert sol.stats.per_sample_status[0] == sol.stats.per_sample_status[2] == "success"
    assert sol.stats.per_sample_status[1] in ("step_underflow", "non_finite")
    assert 0.45 < float(sol.stats.per_sample_t_reached[1]) <= 0.5
    assert bool(torch.isnan(sol.ys[T > 0.5, 1]).all()) and not bool(torch.isnan(sol.ys[:, [0, 2]]).any())
    ok = pyode.solve(base, y0, T, method=method, rtol=1e-6, atol=1e-8, options=opts)
    torch.testing.assert_close(sol.ys[:, [0, 2]], ok.ys[:, [0, 2]], rtol=1e-10, atol=1e-10)
    # raising instead: the joint solve's error, naming the row (ESDIRKs: Newton's NaN; rodas5: a NaN state)
    expected = pyode.NonFiniteStateError if method == "rodas5" else pyode.ImplicitSolveError
    with pytest.raises(expected, match="row 1") as info:
        pyode.solve(f, y0, T, method=method, rtol=1e-6, atol=1e-8, options=opts)
    assert 0.45 < info.value.t_reached <= 0.5


def test_reverse_time_and_unsupported_combinations():
    f, y0 = van_der_pol(torch.tensor([1.0, 30.0], dtype=torch.float64)), torch.tensor([[2.0, 0.0]] * 2,
                                                                                       dtype=torch.float64)
    back = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    per = pyode.odeint(f, y0, back, method="kvaerno5", rtol=1e-8, atol=1e-10, options={"per_sample": True})
    joint = pyode.odeint(f, y0, back, method="kvaerno5", rtol=1e-8, atol=1e-10, options={"jacobian": "rows"})
    torch.testing.assert_close(per, joint, rtol=1e-6, atol=1e-6)  # both within ~10 rtol of the solution
    for method, extra in (("auto", {}), ("kvaerno5", {"jacobian": "gmres"}), ("radauIIA5", {"step_size": 0.1})):
        with pytest.raises(ValueError, match="per_sample"):
            pyode.odeint(f, y0, back, method=method, options={"per_sample": True, **extra})
