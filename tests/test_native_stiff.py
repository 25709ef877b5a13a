"""pyode.native's stiff methods (rodas5: Rosenbrock; kvaerno5/kvaerno3: ESDIRK) in the C++ loop: accuracy against
SciPy's Radau on Robertson and Van der Pol (mu = 1000), convergence order, the same steps as pyode's torch path,
ensembles, compiled and finite-difference Jacobians, bad input."""

import itertools
import math

import numpy as np
import pytest
import torch

numba = pytest.importorskip("numba")
pytest.importorskip("cffi")
scipy_integrate = pytest.importorskip("scipy.integrate")
scipy_linalg = pytest.importorskip("scipy.linalg")

import pyode
import pyode.native as pn

try:
    pn._lib.library_path()
except ImportError as exc:  # pragma: no cover - the build always ships it
    pytest.skip(f"native library not built: {exc}", allow_module_level=True)

from bench.native_stiff import robertson, robertson_jac, vdp, vdp_jac  # the benchmark's right-hand sides

STIFF = ("rodas5", "kvaerno5")


def robertson_np(t, y):
    return [-0.04 * y[0] + 1e4 * y[1] * y[2], 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] ** 2, 3e7 * y[1] ** 2]


def robertson_torch(t, y):
    return torch.stack(robertson_np(t, y))


ROB_T = np.array([0.0, 0.4, 4.0, 40.0, 400.0, 4e3, 4e4, 1e5])
ROB_Y0 = np.array([1.0, 0.0, 0.0])


def _radau(f, jac, y0, t, rtol):
    sol = scipy_integrate.solve_ivp(f, (t[0], t[-1]), y0, method="Radau", t_eval=t, rtol=rtol, atol=rtol * 1e-4,
                                    jac=jac)
    assert sol.success
    return sol.y.T


@pytest.fixture(scope="module")
def robertson_ref():
    jac = lambda t, y: [[-0.04, 1e4 * y[2], 1e4 * y[1]], [0.04, -1e4 * y[2] - 6e7 * y[1], -1e4 * y[1]],
                        [0.0, 6e7 * y[1], 0.0]]
    return _radau(robertson_np, jac, ROB_Y0, ROB_T, 1e-10)


# Error measure: |y - y_ref| over each component's largest magnitude in the solve (y2 of Robertson peaks at
# 3.6e-5 and decays to 1e-10, where a pointwise relative error measures only atol). At rtol 1e-6 a 5th-order
# pair's global error is a few rtol; 1e-4 leaves a factor ~30 over the measured 3e-6..3e-5 and is still far
# below what a wrong stage, Jacobian sign or dense output would give (>= 1e-2).
ACCURACY = 1e-4


def _scaled_error(ys, ref):
    return float(np.max(np.abs(ys - ref) / np.abs(ref).max(axis=0)))


@pytest.mark.parametrize("method", [*STIFF, "kvaerno3"])
@pytest.mark.parametrize("with_jac", [True, False])
def test_robertson_matches_radau(robertson_ref, method, with_jac):
    # Steps land on the output times (step_t), so this measures the method, not the dense output.
    sol = pn.solve(robertson, ROB_Y0, ROB_T, method=method, rtol=1e-6, atol=1e-10,
                   jac=robertson_jac if with_jac else None, options={"step_t": list(ROB_T)})
    assert sol.success
    assert _scaled_error(sol.ys, robertson_ref) <= ACCURACY
    # Mass is conserved by the ODE and, up to rounding, by every linear step combination.
    np.testing.assert_allclose(sol.ys.sum(axis=1), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method,interp,bound", [("rodas5", "auto", ACCURACY), ("rodas5", "cubic", 10 * ACCURACY),
                                                  ("kvaerno5", "auto", 10 * ACCURACY)])
def test_robertson_dense_output(robertson_ref, method, interp, bound):
    # Outputs inside steps come from the interpolant (as in the torch path). rodas5's own 4th-order continuous
    # extension keeps the method's accuracy (measured 8.2e-7 of y2's peak); the cubic Hermite (rodas5 with
    # interp='cubic', kvaerno5) is third order on steps up to ~1e4 wide here and dominates the error on the
    # intermediate y2 (measured 4.2e-4 for rodas5 against 2e-8 at step ends; kvaerno5 3.8e-5): 10 * ACCURACY.
    sol = pn.solve(robertson, ROB_Y0, ROB_T, method=method, rtol=1e-6, atol=1e-10, jac=robertson_jac,
                   options={"interp": interp})
    assert sol.success
    assert _scaled_error(sol.ys, robertson_ref) <= bound
    # Mass is conserved by the ODE and, up to rounding, by every linear step combination.
    np.testing.assert_allclose(sol.ys.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_van_der_pol_stiff_matches_radau():
    mu = 1000.0
    t = np.linspace(0.0, 3000.0, 13)
    y0 = np.array([2.0, 0.0])
    ref = _radau(lambda s, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]],
                 lambda s, y: [[0.0, 1.0], [-2 * mu * y[0] * y[1] - 1.0, mu * (1 - y[0] ** 2)]], y0, t, 1e-10)
    for method in STIFF:
        sol = pn.solve(vdp, y0, t, np.array([mu]), method=method, rtol=1e-6, atol=1e-6, jac=vdp_jac)
        assert sol.success
        # Position y0 (bounded by ~2): global error <= ACCURACY of its range (measured 1.6e-5 rodas5, 2.8e-5
        # kvaerno5). y1 = y0' swings by ~1e3 within t ~ 1e-3 at each relaxation jump; the output times lie on
        # the slow manifold (|y1| ~ 1e-3), where the error control's scale is atol + rtol |y1| ~ atol.
        scale = np.abs(ref).max(axis=0)
        assert np.max(np.abs(sol.ys[:, 0] - ref[:, 0])) / scale[0] <= ACCURACY
        if method == "rodas5":  # its own interpolant keeps y1 within a few atol there (measured 2.4e-7); the
            # cubic Hermite output over steps ~10 wide (kvaerno5, rodas5 with interp='cubic') misses it by ~5e-3.
            assert np.max(np.abs(sol.ys[:, 1] - ref[:, 1])) <= 10 * 1e-6


@pytest.mark.parametrize("method", STIFF)
def test_finite_difference_jacobian_takes_the_steps_of_the_exact_one_on_van_der_pol(method):
    # Forward differences are accurate to ~sqrt(eps) relative, far below what Newton and the Rosenbrock
    # stages notice, so the steps are those of the exact Jacobian up to a few controller decisions near ratio 1
    # (rodas5 with the predictive controller: 409 + 29 against 407 + 27). (Differences against an ESDIRK's f0, a
    # stage derivative carrying Newton's error / hγ, instead of f(t0, y0) made J wrong by ~1e3 here and the steps
    # collapse near t = 806.)
    t = np.linspace(0.0, 3000.0, 4)
    args = (vdp, np.array([2.0, 0.0]), t, np.array([1000.0]))
    exact = pn.solve(*args, method=method, rtol=1e-6, atol=1e-6, jac=vdp_jac)
    fd = pn.solve(*args, method=method, rtol=1e-6, atol=1e-6)
    for count in ("n_accepted", "n_rejected"):
        assert abs(int(getattr(fd, count)[0]) - int(getattr(exact, count)[0])) <= 0.02 * int(exact.n_accepted[0])
    # two solves whose steps differ agree to their global errors, not to rtol: ~4e-5 of the peak |y0| = 2 here
    # (bench/native_stiff.py's Van der Pol error at rtol 1e-6)
    np.testing.assert_allclose(fd.ys, exact.ys, rtol=0, atol=2e-4)


def _forced(t, y, dy, p):
    """y0' = -y0 + cos t; (y1, y2) a harmonic oscillator: smooth, non-autonomous (exercises f_t)."""
    dy[0] = -y[0] + math.cos(t)
    dy[1] = y[2]
    dy[2] = -y[1]


def _forced_exact(t):
    return np.stack([0.5 * (np.cos(t) + np.sin(t)) + 0.5 * np.exp(-t), np.cos(t), -np.sin(t)], axis=-1)


@pytest.mark.parametrize("method,order", [("rodas5", 5), ("kvaerno5", 5), ("kvaerno3", 3)])
def test_convergence_order(method, order):
    # Constant steps: first_step = max_step = h and tolerances so loose that no step is rejected. Halving h
    # divides the global error by 2^order; ±0.6 of the order allows the pre-asymptotic terms at these h.
    t = np.array([0.0, 2.0])
    errors = []
    for h in (0.25, 0.125, 0.0625):  # binary fractions: exactly 8, 16, 32 steps to t = 2
        sol = pn.solve(_forced, np.array([1.0, 1.0, 0.0]), t, method=method, rtol=1e3, atol=1e3,
                       options={"first_step": h, "max_step": h})
        assert sol.n_rejected[0] == 0 and sol.n_accepted[0] == round(2.0 / h)
        errors.append(np.max(np.abs(sol.ys[-1] - _forced_exact(2.0))))
    observed = [math.log2(a / b) for a, b in itertools.pairwise(errors)]
    assert all(abs(p - order) <= 0.6 for p in observed), observed


def test_reversed_time_uses_the_jacobian_sign():
    # Backwards from t = 2 to 0 on the same smooth problem: J and f in solver time flip sign.
    t = np.linspace(2.0, 0.0, 5)
    jac = numba.njit(lambda s, y, J, p: _forced_jac(J))
    for method in STIFF:
        sol = pn.solve(_forced, _forced_exact(2.0), t, method=method, rtol=1e-9, atol=1e-11, jac=jac)
        np.testing.assert_allclose(sol.ys, _forced_exact(t), rtol=0, atol=1e-7)


@numba.njit
def _forced_jac(J):
    J[:, :] = 0.0
    J[0, 0] = -1.0
    J[1, 2] = 1.0
    J[2, 1] = -1.0


@pytest.mark.parametrize("method", STIFF)
def test_same_steps_as_torch_path(robertson_ref, method, monkeypatch):
    # The C++ steppers replay the torch ones (Jacobian reuse, Newton's tests, error filter) with an exact
    # Jacobian on both sides (compiled jac here, autograd there): the same accepted/rejected steps, and outputs
    # equal to summation-order rounding amplified by Newton's iteration counts (well below rtol).
    monkeypatch.setenv("PYODE_CORE_LOOP", "0")  # the torch path's Python loop (not the C++ loop it also runs)
    nat = pn.solve(robertson, ROB_Y0, ROB_T, method=method, rtol=1e-6, atol=1e-10, jac=robertson_jac)
    py = pyode.solve(robertson_torch, torch.tensor(ROB_Y0), torch.tensor(ROB_T), method=method, rtol=1e-6,
                     atol=1e-10)
    assert (nat.n_accepted[0], nat.n_rejected[0]) == (py.stats.n_accepted, py.stats.n_rejected)
    np.testing.assert_allclose(nat.ys, py.ys.numpy(), rtol=1e-8, atol=1e-16)


def _linear(t, y, dy, p):
    n = y.shape[0]
    for i in range(n):
        acc = 0.0
        for j in range(n):
            acc += p[i * n + j] * y[j]
        dy[i] = acc


def _linear_jac(t, y, J, p):
    n = y.shape[0]
    for i in range(n):
        for j in range(n):
            J[i, j] = p[i * n + j]


def _pivoting_system(n: int) -> np.ndarray:
    """A = S diag(-λ) S^-1, λ from 1 to 1e3, S = I + 0.8 (seeded normal): the step matrices I/(hγ) - A need row
    swaps at the step sizes rodas5 takes (non-adjacent ones too: LAPACK's pivots [3 2 3 3] at n = 4, h = 0.1)."""
    rng = np.random.default_rng(7)
    S = np.eye(n) + 0.8 * rng.standard_normal((n, n))
    return S @ np.diag(-np.logspace(0, 3, n)) @ np.linalg.inv(S)


@pytest.mark.parametrize("n", [4, 6])
def test_rodas5_with_row_swaps_matches_torch_path_and_exact(n, monkeypatch):
    # n = 4 runs the loop's small-state stages (vectors in registers, lu_solve_fixed), n = 6 the general ones; both
    # must take the torch path's steps (LAPACK's LU: equal up to rounding, cond(S) <= 175 here) and stay within
    # the solve's tolerance of expm(tA) y0 (a contractive system: global error ~ the local tolerance; 1e-6 of the
    # peak is 100 local tolerances).
    monkeypatch.setenv("PYODE_CORE_LOOP", "0")
    A = _pivoting_system(n)
    t = np.linspace(0.0, 10.0, 11)
    y0 = np.ones(n)
    nat = pn.solve(_linear, y0, t, A.ravel(), method="rodas5", rtol=1e-8, atol=1e-10, jac=_linear_jac)
    A_t = torch.tensor(A)
    py = pyode.solve(lambda tt, y: A_t @ y, torch.tensor(y0), torch.tensor(t), method="rodas5", rtol=1e-8,
                     atol=1e-10)
    assert (nat.n_accepted[0], nat.n_rejected[0]) == (py.stats.n_accepted, py.stats.n_rejected)
    peak = np.abs(nat.ys).max()
    np.testing.assert_allclose(nat.ys, py.ys.numpy(), rtol=1e-8, atol=1e-10 * peak)
    exact = np.stack([scipy_linalg.expm(tk * A) @ y0 for tk in t])
    assert np.abs(nat.ys - exact).max() <= 1e-6 * peak


def test_stiff_ensemble_rows_are_independent_solves():
    mus = np.array([[1.0], [30.0], [300.0], [1000.0], [100.0], [3.0]])
    t = np.linspace(0.0, 50.0, 6)
    y0 = np.array([2.0, 0.0])
    for method in STIFF:
        ens = pn.solve(vdp, y0, t, mus, method=method, rtol=1e-7, atol=1e-7, jac=vdp_jac,
                       options={"num_threads": 2})
        assert ens.success and ens.ys.shape == (6, 6, 2)
        for r, mu in enumerate(mus):
            one = pn.solve(vdp, y0, t, mu, method=method, rtol=1e-7, atol=1e-7, jac=vdp_jac)
            np.testing.assert_array_equal(ens.ys[:, r], one.ys)  # same code, same data: bit for bit
            assert ens.n_accepted[r] == one.n_accepted[0]
    # Each row its own step size: mu = 1 oscillates ~8 times by t = 50, mu = 1000 creeps along its slow
    # manifold (period ~1600) in a few large steps.
    assert ens.n_accepted[0] > 10 * ens.n_accepted[3]


def test_finite_differences_cost_evaluations_not_accuracy(robertson_ref):
    land = {"step_t": list(ROB_T)}
    exact = pn.solve(robertson, ROB_Y0, ROB_T, method="rodas5", rtol=1e-6, atol=1e-10, jac=robertson_jac,
                     options=land)
    fd = pn.solve(robertson, ROB_Y0, ROB_T, method="rodas5", rtol=1e-6, atol=1e-10, options=land)
    assert fd.n_feval[0] > exact.n_feval[0]  # n extra evaluations per Jacobian
    assert _scaled_error(fd.ys, robertson_ref) <= ACCURACY


def test_bad_jac_refused():
    t = np.array([0.0, 1.0])

    @numba.cfunc("float64(float64, CPointer(float64), CPointer(float64))")
    def wrong(t, y, p):
        return 0.0

    with pytest.raises(TypeError, match="jac must be"):
        pn.solve(robertson, ROB_Y0, t, method="rodas5", jac=wrong)

    def two_args(t, y):
        return y

    with pytest.raises(TypeError, match="could not compile jac"):
        pn.solve(robertson, ROB_Y0, t, method="rodas5", jac=two_args)
    with pytest.raises(ValueError, match="jac is used by the stiff methods"):
        pn.solve(robertson, ROB_Y0, t, method="dopri5", jac=robertson_jac)
    with pytest.raises(ValueError, match="device='cpu'"):
        pn.solve(robertson, ROB_Y0, t, method="kvaerno5", device="cuda")
    with pytest.raises(ValueError, match="interp"):
        pn.solve(robertson, ROB_Y0, t, method="kvaerno5", options={"interp": "quartic"})


def test_events_work_with_stiff_methods():
    # Van der Pol (mu = 1000) from y0 = 2: the first zero of y0 against Radau's event location.
    mu = 1000.0

    def crossing(t, y, p):
        return y[0]

    sol = pn.solve(vdp, np.array([2.0, 0.0]), np.array([0.0, 3000.0]), np.array([mu]), method="rodas5",
                   rtol=1e-8, atol=1e-8, jac=vdp_jac, event=crossing)
    ev = lambda s, y: y[0]
    ev.terminal = True
    ref = scipy_integrate.solve_ivp(lambda s, y: [y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]], (0, 3000), [2.0, 0.0],
                                    method="Radau", rtol=1e-10, atol=1e-10, events=ev)
    assert sol.status_names() == ["event"]
    # The crossing is within the fast jump (|y0'| ~ 1e3), so its time is as sharp as the phase: rtol * t_event.
    assert abs(sol.event_t[0] - ref.t_events[0][0]) <= 1e-5 * ref.t_events[0][0]


def test_torch_api_runs_stiff_native_rhs():
    f = pn.rhs(robertson, jac=robertson_jac)
    sol = pyode.solve(f, torch.tensor(ROB_Y0), torch.tensor(ROB_T), method="kvaerno5", rtol=1e-6, atol=1e-10)
    nat = pn.solve(robertson, ROB_Y0, ROB_T, method="kvaerno5", rtol=1e-6, atol=1e-10, jac=robertson_jac)
    np.testing.assert_array_equal(sol.ys.numpy(), nat.ys)
    assert sol.stats.n_accepted == nat.n_accepted[0]


def _growth(t, y, dy, p):
    dy[0] = y[0]


@pytest.mark.parametrize("method,gamma", [("rodas5", 0.19), ("kvaerno5", 0.26)])
def test_singular_step_matrix_rejects_and_shrinks(method, gamma):
    # y' = y with a first step h = 1/gamma: I/(h gamma) - J (Rosenbrock) or I - h gamma J (ESDIRK) is exactly 0.
    # (1/gamma < 6 < t_end, so the first step is not shortened.) The LU reports it singular, the step is rejected
    # and retried smaller, and the solve goes on to e^8.
    sol = pn.solve(_growth, np.array([1.0]), np.array([0.0, 8.0]), method=method, rtol=1e-8, atol=1e-10,
                   options={"first_step": 1.0 / gamma})
    assert sol.success and sol.n_rejected[0] >= 1
    np.testing.assert_allclose(sol.ys[-1, 0], math.exp(8.0), rtol=1e-6)
    # The singular attempt evaluated no stages: fewer evaluations than from a first step just below 1/gamma,
    # which is rejected by its error estimate after computing them (the same steps otherwise).
    near = pn.solve(_growth, np.array([1.0]), np.array([0.0, 8.0]), method=method, rtol=1e-8, atol=1e-10,
                    options={"first_step": (1.0 - 1e-9) / gamma})
    assert (near.n_accepted[0], near.n_rejected[0]) == (sol.n_accepted[0], sol.n_rejected[0])
    assert sol.n_feval[0] < near.n_feval[0]


def _vdp_torch(mu):
    return lambda t, y: torch.stack([y[1], mu * (1.0 - y[0] * y[0]) * y[1] - y[0]])


@pytest.mark.parametrize("with_jac", [False, True])
def test_auto_takes_the_torch_paths_steps_and_switches_per_trajectory(with_jac):
    """method="auto" natively: the steps of pyode.solve's auto on the same function (Van der Pol mu = 100: tsit5 ->
    kvaerno5 -> tsit5 -> kvaerno5, its window's Jacobian checks included), with the compiled Jacobian or forward
    differences; in an ensemble each trajectory switches on its own (mu = 1: never stiff, tsit5's steps exactly)."""
    t = np.array([0.0, 50.0, 100.0])
    y0 = np.array([2.0, 0.0])
    jac = vdp_jac if with_jac else None
    native = pn.solve(vdp, y0, t, np.array([[100.0], [1.0]]), method="auto", rtol=1e-6, atol=1e-8, jac=jac)
    assert native.success
    options = {} if with_jac else {"jacobian": "differences"}
    with torch.no_grad():  # the torch path's exact Jacobian (autograd) equals the compiled one to rounding
        ref = pyode.solve(_vdp_torch(100.0), torch.tensor(y0), torch.tensor(t), method="auto", rtol=1e-6, atol=1e-8,
                          options=options)
    assert (int(native.n_accepted[0]), int(native.n_rejected[0])) == (ref.stats.n_accepted, ref.stats.n_rejected)
    if not with_jac:  # with differences the evaluations match too (autograd's Jacobian calls are not rhs calls)
        assert int(native.n_feval[0]) == ref.stats.nfe
    np.testing.assert_allclose(native.ys[:, 0], ref.ys.numpy(), rtol=0, atol=1e-9)
    tsit5 = pn.solve(vdp, y0, t, np.array([1.0]), method="tsit5", rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(native.ys[:, 1], tsit5.ys)
    assert int(native.n_accepted[1]) == int(tsit5.n_accepted[0])


def test_auto_refuses_the_gpu():
    with pytest.raises(ValueError, match="explicit methods only"):
        pn.solve(vdp, np.array([2.0, 0.0]), np.array([0.0, 1.0]), np.array([1.0]), method="auto", device="cuda")
