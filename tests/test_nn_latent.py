"""Latent ODE with ODE-RNN encoder, and the GRU baseline."""

import pytest
import torch

from pyode.nn.latent import (
    GRUDeltaT,
    LatentODE,
    ODERNNEncoder,
    gaussian_kl,
    latent_negative_elbo,
    make_spirals,
    masked_gaussian_log_lik,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def series(n=6, n_times=12, seed=0):
    t, x = make_spirals(n, n_times, t_end=2.0, seed=seed)
    mask = (torch.rand(n, n_times, generator=torch.Generator().manual_seed(seed)) < 0.6).float()
    return t, x, mask


def test_encoder_ignores_unobserved_values():
    torch.manual_seed(0)
    encoder = ODERNNEncoder(2, latent_dim=3, hidden_dim=8, ode_hidden=8)
    t, x, mask = series()
    mean, logvar = encoder(x, t, mask)
    assert mean.shape == logvar.shape == (6, 3)
    x_changed = torch.where(mask.bool().unsqueeze(-1), x, torch.randn_like(x) * 100)
    mean2, logvar2 = encoder(x_changed, t, mask)
    torch.testing.assert_close(mean2, mean)
    torch.testing.assert_close(logvar2, logvar)
    assert not torch.allclose(encoder(x, t)[0], mean)  # ...but the observed ones matter


def test_likelihood_and_kl_match_closed_forms():
    x, x_mean = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    mask = torch.tensor([[1.0, 0, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]])
    expected = (torch.distributions.Normal(x_mean, 0.3).log_prob(x) * mask.unsqueeze(-1)).sum(dim=(1, 2))
    torch.testing.assert_close(masked_gaussian_log_lik(x, x_mean, mask, 0.3), expected)
    mean, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    torch.testing.assert_close(gaussian_kl(mean, logvar), torch.distributions.kl_divergence(q, p).sum(1))


def test_latent_ode_training_lowers_the_negative_elbo_and_extrapolates_in_shape():
    torch.manual_seed(0)
    model = LatentODE(2, latent_dim=4, hidden_dim=16, ode_hidden=16, obs_std=0.1)
    t, x, mask = series(n=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = latent_negative_elbo(model, x, t, mask)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])
    model.eval()
    t_future = torch.linspace(0.0, 3.0, 18)
    x_pred, _, _ = model(x, t, mask, t_pred=t_future)
    assert x_pred.shape == (16, 18, 2)


def test_rnn_baseline_is_causal():
    torch.manual_seed(0)
    rnn = GRUDeltaT(2, hidden_dim=8)
    t, x, mask = series()
    preds = rnn(x, t, mask, t_pred=torch.tensor([2.5, 3.0]))
    assert preds.shape == (6, 14, 2)
    x_changed = x.clone()
    x_changed[:, 7:] += 5.0
    preds2 = rnn(x_changed, t, mask)
    torch.testing.assert_close(preds2[:, :8], preds[:, :8])  # index i depends only on indices < i
    assert not torch.allclose(preds2[:, 8:12], preds[:, 8:12])


def test_bad_inputs_raise_clear_errors():
    model = LatentODE(2)
    t, x, mask = series()
    with pytest.raises(ValueError, match=r"x must have shape \(batch, T, 2\)"):
        model(x[..., :1], t, mask)
    with pytest.raises(ValueError, match="mask must have shape"):
        model(x, t, mask[:, :-1])
    with pytest.raises(ValueError, match=r"t must have shape \(T,\)"):
        model.negative_elbo(x, t[:-1], mask)
