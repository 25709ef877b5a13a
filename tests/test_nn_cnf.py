"""Continuous normalising flows: trace estimators and log-densities against analytic values."""

import pytest
import torch
from torch import nn

from pyode.nn.cnf import (
    CNF,
    FFJORD,
    divergence_exact,
    divergence_hutchinson,
    sample_noise,
    standard_normal_log_prob,
)
from pyode.nn.continuous import TimeMLP

pytestmark = pytest.mark.usefixtures("one_thread")


M = torch.tensor([[0.5, 1.2, -0.3], [-0.4, -1.0, 0.8], [0.9, 0.1, 0.2]], dtype=torch.float64)


def test_exact_divergence_of_linear_map_is_its_trace():
    z = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    div = divergence_exact(z @ M.T, z)
    torch.testing.assert_close(div, torch.full((7,), M.trace().item(), dtype=torch.float64))


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_with_the_known_variance(noise):
    torch.manual_seed(0)
    n = 100_000  # independent noise per row = independent estimates
    z = torch.randn(n, 3, dtype=torch.float64, requires_grad=True)
    eps = sample_noise(z, noise)
    estimates = divergence_hutchinson(z @ M.T, z, eps)
    S = (M + M.T) / 2
    var = 2 * (S**2).sum() - (2 * (S.diagonal() ** 2).sum() if noise == "rademacher" else 0.0)
    std_error = (var / n).sqrt()
    assert abs(estimates.mean() - M.trace()) < 4 * std_error
    assert abs(estimates.var() / var - 1) < 0.04
    # Rademacher noise has the smaller variance whenever S has a non-zero diagonal.
    assert noise == "gaussian" or var < 2 * (S**2).sum()


class LinearField(nn.Module):
    def __init__(self, matrix):
        super().__init__()
        self.matrix = nn.Parameter(matrix.clone())

    def forward(self, t, z):
        return z @ self.matrix.T


def analytic_log_prob(x: torch.Tensor, matrix: torch.Tensor, t1: float) -> torch.Tensor:
    """x = exp(t1 A) z0  ->  log p(x) = log N(exp(-t1 A) x) - t1 tr(A)."""
    z0 = x @ torch.linalg.matrix_exp(-t1 * matrix).T
    return standard_normal_log_prob(z0) - t1 * matrix.trace()


def test_linear_cnf_log_density_matches_analytic_value():
    cnf = CNF(LinearField(M), dim=3, t1=0.7, rtol=1e-9, atol=1e-10)
    x = torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(cnf.log_prob(x), analytic_log_prob(x, M, 0.7), rtol=1e-7, atol=1e-7)
    assert cnf.nfe > 0


def test_hutchinson_cnf_draws_noise_once_per_solve_and_is_unbiased():
    torch.manual_seed(1)
    flow = FFJORD(LinearField(M), dim=3, t1=0.7, rtol=1e-9, atol=1e-10)
    x = torch.randn(4000, 3, dtype=torch.float64)
    with torch.no_grad():
        estimate = flow.log_prob(x)
    eps = flow.dynamics.eps
    exact = analytic_log_prob(x, M, 0.7)
    # For a linear field the estimate is exact up to the trace term, evaluated with a single ε per sample.
    single_draw = exact + 0.7 * (M.trace() - ((eps @ M.T) * eps).sum(dim=1))
    torch.testing.assert_close(estimate, single_draw, rtol=1e-7, atol=1e-7)
    assert abs((estimate - exact).mean()) < 4 * (estimate - exact).std() / 4000**0.5


def test_sampling_agrees_with_density_evaluation():
    torch.manual_seed(2)
    cnf = CNF(TimeMLP(2, hidden=16).double(), dim=2, rtol=1e-8, atol=1e-8)
    with torch.no_grad():
        x, logp = cnf.sample_with_log_prob(5)
        torch.testing.assert_close(cnf.log_prob(x), logp, rtol=1e-5, atol=1e-5)
    assert cnf.sample(3).shape == (3, 2)


def test_training_step_gives_gradients_for_both_estimators():
    torch.manual_seed(3)
    for estimator in ("exact", "hutchinson"):
        cnf = CNF(TimeMLP(2, hidden=8), dim=2, trace_estimator=estimator, method="rk4",
                  options={"step_size": 0.25})
        loss = -cnf(torch.randn(16, 2)).mean()
        loss.backward()
        grads = [p.grad for p in cnf.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown trace_estimator 'hutchinsons'"):
        CNF(TimeMLP(2), dim=2, trace_estimator="hutchinsons")
    with pytest.raises(ValueError, match="unknown noise 'uniform'"):
        FFJORD(TimeMLP(2), dim=2, noise="uniform")
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\)"):
        CNF(TimeMLP(2), dim=2).log_prob(torch.zeros(4, 3))


def test_sample_noise_defaults_to_rademacher():
    like = torch.zeros(1000, 3, dtype=torch.float64)
    eps = sample_noise(like, generator=torch.Generator().manual_seed(0))
    same_draw = sample_noise(like, "rademacher", generator=torch.Generator().manual_seed(0))
    assert set(eps.unique().tolist()) == {-1.0, 1.0} and eps.dtype == torch.float64
    torch.testing.assert_close(eps, same_draw, rtol=0, atol=0)


def test_cnf_with_a_fixed_grid_method_needs_a_step_size():
    with pytest.raises(ValueError, match="step_size"):
        CNF(TimeMLP(2), dim=2, method="rk4")
