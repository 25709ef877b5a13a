"""Matrix-free Newton-Krylov (``options={"jacobian": "gmres"}``): GMRES against a direct solve, and a stiff
reaction-diffusion solve against the dense Newton."""

import pytest
import torch

import pyode
from pyode._solvers.krylov import gmres

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gmres_solves_a_nonsymmetric_system():
    """I - hγJ-like matrix (n = 80, condition ~1e3), restarts needed (restart 10 < n): the residual reaches the
    requested 1e-10 relative, so x matches the LU solution to ~cond * 1e-10."""
    gen = torch.Generator().manual_seed(0)
    n = 80
    A = torch.eye(n, dtype=torch.float64) * 3 + torch.randn(n, n, generator=gen, dtype=torch.float64) / n ** 0.5
    A[0, 0] = 1e3
    b = torch.randn(n, generator=gen, dtype=torch.float64)
    x = gmres(lambda v: A @ v, b, rtol=1e-10, restart=10, max_restarts=50)
    assert torch.linalg.vector_norm(A @ x - b) <= 1e-10 * torch.linalg.vector_norm(b) * 1.01
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=0, atol=1e-7)


def _fisher_kpp(n: int):
    """u_t = 0.4 u_xx + 5 u (1 - u) on (0, 1), u = 0 at the ends: the diffusion's eigenvalues reach
    -1.6 / dx² (-2.7e3 at n = 40), a stiff problem with a nonlinear reaction."""
    dx = 1.0 / (n + 1)

    def rhs(t, u):
        padded = torch.nn.functional.pad(u, (1, 1))
        return 0.4 * (padded[2:] - 2 * u + padded[:-2]) / dx**2 + 5 * u * (1 - u)

    x = torch.linspace(dx, 1 - dx, n, dtype=torch.float64)
    return rhs, torch.exp(-100 * (x - 0.5) ** 2)


@pytest.mark.parametrize("method", ["kvaerno3", "kvaerno5"])
def test_matches_dense_newton(method):
    """Same steps and the same solution as the dense Newton: each GMRES solve is exact to 1e-6 relative, far
    below Newton's test, so both iterations converge to the same stage values within Newton's tolerance
    (1e-2 of the local error): the solutions agree to a small multiple of rtol * |u| (1e-6)."""
    rhs, u0 = _fisher_kpp(40)
    t = torch.tensor([0.0, 0.05, 0.2], dtype=torch.float64)
    dense = pyode.solve(rhs, u0, t, method=method, rtol=1e-6, atol=1e-8)
    krylov = pyode.solve(rhs, u0, t, method=method, rtol=1e-6, atol=1e-8, options={"jacobian": "gmres"})
    torch.testing.assert_close(krylov.ys, dense.ys, rtol=0, atol=1e-6)
    # the dense Newton's solution against a tight reference: the comparison above is at the solver's accuracy
    ref = pyode.odeint(rhs, u0, t, method="kvaerno5", rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(krylov.ys, ref, rtol=0, atol=1e-4)
    assert abs(krylov.stats.n_accepted - dense.stats.n_accepted) <= 2


def test_rejects_methods_without_a_newton_iteration_per_stage():
    rhs, u0 = _fisher_kpp(4)
    t = torch.tensor([0.0, 0.1], dtype=torch.float64)
    with pytest.raises(ValueError, match="diagonally implicit"):
        pyode.odeint(rhs, u0, t, method="rodas5", options={"jacobian": "gmres"})
    with pytest.raises(ValueError, match="diagonally implicit"):
        pyode.odeint(rhs, u0, t, method="radauIIA5", options={"jacobian": "gmres", "step_size": 0.1})
    with pytest.raises(ValueError, match="'dense', 'differences', 'rows' or 'gmres'"):
        pyode.odeint(rhs, u0, t, method="kvaerno5", options={"jacobian": "krylov"})
