"""Fit a neural ODE to a 2-D spiral (the classic torchdiffeq example, Chen et al. 2018, section 5).

The true dynamics are ``dy/dt = (y**3) @ A``; a small MLP ``f_θ(y)`` learns them from minibatches of short
trajectory windows, by backpropagation through pyode's dopri5 solver.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

import pyode

TRUE_A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]])


class SpiralDynamics(nn.Module):
    """``f_θ(t, y) = MLP(y**3)``: y (batch, 2) -> (batch, 2)."""

    def __init__(self, hidden: int = 50):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, t, y):
        return self.net(y**3)


def make_data(n_points: int = 200, t_end: float = 10.0):
    """The true trajectory: t (n_points,), y (n_points, 2)."""
    t = torch.linspace(0.0, t_end, n_points)
    with torch.no_grad():
        y = pyode.odeint(lambda t, y: (y**3) @ TRUE_A, torch.tensor([2.0, 0.0]), t, method="dopri5")
    return t, y


def sample_windows(t, y, batch: int, length: int, gen: torch.Generator):
    """Random windows: y0 (batch, 2), window times (length,), targets (length, batch, 2)."""
    starts = torch.randint(0, len(t) - length, (batch,), generator=gen)
    idx = starts[None, :] + torch.arange(length)[:, None]
    return y[starts], t[:length], y[idx]


def run(out_dir: str | Path = ".", iterations: int = 300, seed: int = 0, quiet: bool = False) -> dict:
    """Trains the model; writes ``spiral.png`` (true vs learned trajectory). Returns the final losses."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t, y_true = make_data()
    model = SpiralDynamics()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    start, nfe = time.perf_counter(), 0
    bar = tqdm(range(iterations), desc="spiral neural ODE", disable=True if quiet else None)  # None: a tty only
    for _ in bar:
        y0, t_win, target = sample_windows(t, y_true, batch=16, length=20, gen=gen)
        sol = pyode.solve(model, y0, t_win, rtol=1e-4, atol=1e-5, method="dopri5")
        loss = (sol.ys - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        nfe += sol.stats.nfe
        bar.set_postfix(loss=f"{loss.item():.4f}")
    with torch.no_grad():
        y_fit = pyode.odeint(model, y_true[0], t, rtol=1e-6, atol=1e-7)
    full_loss = float((y_fit - y_true).abs().mean())
    path = Path(out_dir) / "spiral.png"
    _plot(y_true, y_fit, path)
    result = {"trajectory_l1": full_loss, "baseline_l1": float(y_true.abs().mean()), "forward_nfe": nfe,
              "seconds": time.perf_counter() - start, "png": str(path)}
    if not quiet:
        print(f"mean |error| over the whole trajectory: {full_loss:.4f} (predicting 0: {result['baseline_l1']:.4f})")
        print(f"forward NFE {nfe}, {result['seconds']:.1f} s; wrote {path}")
    return result


def _plot(y_true, y_fit, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(y_true[:, 0], y_true[:, 1], "g-", label="true")
    ax.plot(y_fit[:, 0], y_fit[:, 1], "b--", label="neural ODE")
    ax.set_title("pyode: spiral fitted by a neural ODE")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
