"""A latent ODE (Rubanova et al. 2019) on irregularly observed spirals: an ODE-RNN encoder reads a random half of
the first 40 time points of each series, a neural ODE carries the latent state forward, and a linear decoder
reconstructs the whole series and extrapolates 20 points past the observations.

    python examples/latent_ode.py [--smoke] [--out outputs]      # writes latent_ode.png
"""

import time

import torch
from _common import parse_args, progress, pyplot, save

from pyode.nn import LatentODE, make_spirals

N_TIMES, N_OBSERVED = 60, 40


def observation_mask(n_series: int, fraction: float, seed: int) -> torch.Tensor:
    """(n_series, N_OBSERVED) 0/1: which of the first N_OBSERVED points the encoder sees (the first always)."""
    mask = (torch.rand(n_series, N_OBSERVED, generator=torch.Generator().manual_seed(seed)) < fraction).float()
    mask[:, 0] = 1.0
    return mask


def train(model: LatentODE, x, t, mask, steps: int, batch: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen, losses = torch.Generator().manual_seed(1), []
    for step in progress(range(steps), "latent ODE"):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        kl_weight = min(1.0, step / (0.3 * steps))  # KL annealing: reconstruct first, then regularise
        loss = model.negative_elbo(x[idx], t, mask[idx], kl_weight=kl_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def rmse(pred: torch.Tensor, target: torch.Tensor, times: slice) -> float:
    """Root-mean-square error over the time indices ``times`` of (batch, T, 2) series."""
    return float((pred[:, times] - target[:, times]).pow(2).mean().sqrt())


def plot(t, x_test, mask, pred, losses, path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for k, ax in enumerate(axes[:3]):
        seen = mask[k].bool()
        ax.plot(x_test[k, :, 0], x_test[k, :, 1], color="0.8", label="true series")
        ax.scatter(x_test[k, :N_OBSERVED][seen, 0], x_test[k, :N_OBSERVED][seen, 1], s=10, color="k",
                   label="observed")
        ax.plot(pred[k, :N_OBSERVED, 0], pred[k, :N_OBSERVED, 1], color="C0", label="reconstruction")
        ax.plot(pred[k, N_OBSERVED - 1:, 0], pred[k, N_OBSERVED - 1:, 1], "--", color="C3", label="extrapolation")
        ax.set(aspect="equal", title=f"held-out series {k}")
    axes[0].legend(fontsize=7)
    axes[3].plot(losses)
    axes[3].set(title="training -ELBO per value", xlabel="step")
    save(fig, path)


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    torch.manual_seed(0)
    n_train, n_test, steps = (16, 4, 2) if args.smoke else (512, 64, 600)
    t, x = make_spirals(n_train + n_test, N_TIMES, seed=0)
    x_train, x_test = x[:n_train, :N_OBSERVED], x[n_train:]
    mask = observation_mask(n_train + n_test, 0.5, seed=0)
    model = LatentODE(obs_dim=2, latent_dim=4, hidden_dim=25, ode_hidden=20)
    start = time.perf_counter()
    losses = train(model, x_train, t[:N_OBSERVED], mask[:n_train], steps, batch=min(32, n_train))
    model.eval()
    with torch.no_grad():
        pred, _, _ = model(x_test[:, :N_OBSERVED], t[:N_OBSERVED], mask[n_train:], t_pred=t)
    plot(t, x_test, mask[n_train:], pred, losses, args.out / "latent_ode.png")
    print(f"{steps} steps in {time.perf_counter() - start:.1f} s; held-out RMSE: reconstruction "
          f"{rmse(pred, x_test, slice(0, N_OBSERVED)):.3f}, extrapolation "
          f"{rmse(pred, x_test, slice(N_OBSERVED, None)):.3f}")


if __name__ == "__main__":
    main()
