"""A continuous normalising flow (FFJORD, Grathwohl et al. 2019) learns the two-moons density.

``pyode.nn.FFJORD`` integrates ``dz/dt = f(t, z)`` jointly with ``d log p/dt = -tr(∂f/∂z)`` (Hutchinson's trace
estimator, one Rademacher draw per solve). Training takes fixed RK4 steps (cheap, same gradient code path); the
density and samples in the figure are computed with adaptive dopri5, i.e. for the continuous model.

    python examples/cnf.py [--smoke] [--out outputs]      # writes cnf_moons.png
"""

import math
import time

import torch
from _common import parse_args, progress, pyplot, save
from torch import nn

from pyode.nn import FFJORD, TimeMLP


def two_moons(n: int, noise: float = 0.08, seed: int = 0) -> torch.Tensor:
    """n points (n, 2) of two interleaved half circles, centred and scaled to about [-1.5, 1.5]²."""
    gen = torch.Generator().manual_seed(seed)
    upper = torch.rand(n // 2, generator=gen) * math.pi
    lower = torch.rand(n - n // 2, generator=gen) * math.pi
    pts = torch.cat([torch.stack([upper.cos(), upper.sin()], 1),
                     torch.stack([1 - lower.cos(), 0.5 - lower.sin()], 1)])
    pts = pts[torch.randperm(n, generator=gen)] + noise * torch.randn(pts.shape, generator=gen)
    return (pts - torch.tensor([0.5, 0.25])) / 1.1


def train(model: FFJORD, data: torch.Tensor, steps: int, batch: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen, losses = torch.Generator().manual_seed(1), []
    for _ in progress(range(steps), "FFJORD on two moons"):
        x = data[torch.randint(0, len(data), (batch,), generator=gen)]
        loss = -model(x).mean()  # negative log-likelihood in nats
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def plot(model: FFJORD, data: torch.Tensor, losses: list[float], grid: int, path) -> None:
    plt = pyplot()
    axis = torch.linspace(-2.0, 2.0, grid)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    with torch.no_grad():
        density = model.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp().reshape(grid, grid)
        samples = model.sample(200 if grid < 50 else 2000, generator=torch.Generator().manual_seed(2))
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    axes[0].scatter(data[:2000, 0], data[:2000, 1], s=2)
    axes[0].set_title("data")
    axes[1].imshow(density.numpy(), extent=(-2, 2, -2, 2), origin="lower", cmap="viridis")
    axes[1].set_title("learned density (dopri5, exact trace)")
    axes[2].scatter(samples[:, 0], samples[:, 1], s=2, color="C1")
    axes[2].set_title("samples (dopri5)")
    for ax in axes[:3]:
        ax.set(xlim=(-2, 2), ylim=(-2, 2), aspect="equal")
    axes[3].plot(losses)
    axes[3].set(title="training NLL (nats, Hutchinson estimate)", xlabel="step")
    save(fig, path)


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    torch.manual_seed(0)
    steps, batch, grid = (3, 64, 20) if args.smoke else (1000, 256, 100)
    data = two_moons(200 if args.smoke else 10000)
    model = FFJORD(TimeMLP(2, 32 if args.smoke else 64, 2, nn.Tanh), 2, method="rk4", options={"step_size": 0.25})
    start = time.perf_counter()
    losses = train(model, data, steps, batch)
    # Evaluate the continuous model: adaptive dopri5, and the exact trace (cheap in 2-D) instead of Hutchinson's
    # one-draw estimate, whose noise would show as speckle in the density image.
    model.solver_kwargs = {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5, "options": None, "gradient": "backprop"}
    model.trace_estimator = model.dynamics.trace_estimator = "exact"
    plot(model, data, losses, grid, args.out / "cnf_moons.png")
    print(f"{steps} steps in {time.perf_counter() - start:.1f} s; last training NLL {losses[-1]:.3f} nats")


if __name__ == "__main__":
    main()
