"""A stiff neural ODE fitted to Robertson's chemical kinetics (Kim, Ji, Deng, Ma & Rackauckas 2021, "Stiff
neural ordinary differential equations"): trained through ``kvaerno5`` (``--gradient backprop``, the default,
or the interpolated adjoint), where ``dopri5`` runs out of steps.

Following Kim et al.: each species is scaled by its maximum over the data (``ŷ = y / s``, s ~ (1, 3.6e-5, 1)),
so the loss weighs the three species alike, and the observation times are log-spaced over 1e-5 .. 1e5 (the
dynamics happen on every scale). The model, on the scaled state, is
``dŷ/dt = c ⊙ tanh(W φ(ŷ) + MLP(φ(ŷ)))`` with ``φ(ŷ)`` the monomials of degree <= 2 of ŷ (9 features), a linear skip
``W`` and a one-hidden-layer tanh MLP, and ``c`` a fixed per-species rate scale (twice the largest rate of each
scaled equation, like Kim et al.'s scaling of the network's output); the outer tanh bounds the derivative, so no
model met during training blows up in finite time (quadratic features can). The model starts as a decay
``dŷ/dt ≈ -c ⊙ tanh(ŷ)`` (see :class:`StiffNODE`); the loss is the mean squared error of the scaled states.
The model is stiff throughout (eigenvalues down to ~ -1e4 on ŷ2, as Robertson's), so an explicit method's step
is capped near 3e-4 over the whole interval of 1e5.

Usage: ``python bench/stiff_node.py [--iters 150] [--gradient backprop|adjoint] [--quick] [--out bench/results] [--figures docs/figures]``
Writes ``<out>/stiff_node.json`` and ``<figures>/stiff_node.png`` (loss curves; trajectories of data and model).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import pyode
from pyode.errors import ODESolverError

K = (0.04, 3e7, 1e4)
TOL = {"rtol": 1e-5, "atol": 1e-8}  # on the scaled state, whose components are O(1)
DOPRI_MAX_STEPS = 20_000  # dopri5's cap: ~3e8 steps would be needed at its stability limit on the trained model


def robertson(t, y):
    k1, k2, k3 = K
    y1, y2, y3 = y.unbind(-1)
    return torch.stack([-k1 * y1 + k3 * y2 * y3, k1 * y1 - k2 * y2**2 - k3 * y2 * y3, k2 * y2**2], -1)


def make_data(n_times: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """t (n_times,) with t[0] = 0 then log-spaced over [1e-5, 1e5]; scaled data (n_times, 3); the scales s (3,)."""
    t = torch.cat([torch.zeros(1), torch.logspace(-5, 5, n_times - 1)]).double()
    y0 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    with torch.no_grad():
        ys = pyode.odeint(robertson, y0, t, method="kvaerno5", rtol=1e-10, atol=1e-14)
    s = ys.abs().amax(0)
    return t, ys / s, s


def features(y: torch.Tensor) -> torch.Tensor:
    """(…, 3) -> (…, 9): ŷ and its monomials of degree 2."""
    i, j = torch.triu_indices(3, 3)
    return torch.cat([y, y[..., i] * y[..., j]], -1)


class StiffNODE(nn.Module):
    """``dŷ/dt = c ⊙ tanh(W φ(ŷ) + MLP(φ(ŷ)))`` (see the module docstring); ``c`` (3,) fixed."""

    def __init__(self, c: torch.Tensor, hidden: int = 16):
        super().__init__()
        self.register_buffer("c", c)
        self.skip = nn.Linear(9, 3, bias=False)
        self.mlp = nn.Sequential(nn.Linear(9, hidden), nn.Tanh(), nn.Linear(hidden, 3))
        # Start at dŷ/dt ≈ -c ⊙ tanh(ŷ): every species decays at its rate scale. A model that starts at dŷ/dt = 0
        # drifts after the first updates (a bounded derivative times 1e5 time units) and its loss explodes; a
        # decaying one stays bounded, and is stiff from the start (eigenvalue -c2 ~ -2e4).
        with torch.no_grad():
            nn.init.normal_(self.mlp[2].weight, std=1e-3)
            self.skip.weight.zero_()
            self.skip.weight[:, :3] = -torch.eye(3)

    def forward(self, t, y):
        phi = features(y)
        return self.c * torch.tanh(self.skip(phi) + self.mlp(phi))


def rate_scale(s: torch.Tensor) -> torch.Tensor:
    """Twice the largest coefficient of each scaled Robertson equation (the network's output scale: the truth
    needs |tanh argument| <= 1/2 there, where tanh is nearly linear)."""
    k1, k2, k3 = K
    s1, s2, s3 = s.tolist()
    return 2.0 * torch.tensor([max(k1, k3 * s2 * s3 / s1), max(k1 * s1 / s2, k2 * s2, k3 * s3), k2 * s2**2 / s3],
                              dtype=torch.float64)


def train(model: nn.Module, t, data, method: str, iters: int, lr: float, gradient: str,
          dopri_max_steps: int = DOPRI_MAX_STEPS) -> dict:
    """Adam on the scaled MSE; stops at the first solver failure (recorded)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    y0 = data[0]
    losses, nfe, failure = [], [], None
    start = time.perf_counter()
    options = {"max_num_steps": dopri_max_steps} if method == "dopri5" else None
    for _ in tqdm(range(iters), desc=f"stiff NODE ({method})", disable=None, leave=False):
        try:
            sol = pyode.solve(model, y0, t, method=method, options=options, gradient=gradient, **TOL)
            loss = (sol.ys - data).pow(2).mean()
            opt.zero_grad()
            loss.backward()
        except ODESolverError as exc:
            failure = f"{type(exc).__name__} at iteration {len(losses)}: {exc}"[:300]
            break
        opt.step()
        sched.step()
        losses.append(loss.item())
        nfe.append(int(sol.stats.nfe + sol.stats.nfe_backward))
    return {"method": method, "gradient": gradient, "losses": losses, "nfe": nfe, "failure": failure,
            "seconds": time.perf_counter() - start}


def plot(records: list[dict], t, data, model, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in records:
        label = r["method"] + (" (stopped: max_num_steps)" if r["failure"] else "")
        axes[0].semilogy(r["losses"], label=label)
    axes[0].set(title="training loss (scaled MSE)", xlabel="iteration")
    axes[0].legend()
    with torch.no_grad():
        pred = pyode.odeint(model, data[0], t, method="kvaerno5", **TOL)
    for k, name in enumerate(("y1", "y2 / 3.6e-5", "y3")):
        axes[1].semilogx(t[1:], data[1:, k], "k.", ms=3)
        axes[1].semilogx(t[1:], pred[1:, k], color=f"C{k}", label=name)
    axes[1].set(title="Robertson, scaled: data (dots) and trained model", xlabel="t")
    axes[1].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=150)
    parser.add_argument("--n-times", type=int, default=40)
    parser.add_argument("--lr", type=float, default=2e-2)
    parser.add_argument("--gradient", default="backprop", choices=["backprop", "adjoint"],
                        help="adjoint: the interpolated adjoint (memory flat in the model, ~10x slower here)")
    parser.add_argument("--quick", action="store_true", help="a few iterations on few times (smoke run)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    if args.quick:
        args.iters, args.n_times = 3, 8
    torch.manual_seed(0)
    t, data, s = make_data(args.n_times)
    c = rate_scale(s)
    records, models = [], {}
    for method in ("kvaerno5", "dopri5"):
        torch.manual_seed(0)  # same initial weights
        models[method] = StiffNODE(c).double()
        records.append(train(models[method], t, data, method, args.iters, args.lr, args.gradient))
    for r in records:
        first, best = (r["losses"][0], min(r["losses"])) if r["losses"] else (math.nan, math.nan)
        print(f"{r['method']}: {len(r['losses'])} iterations in {r['seconds']:.1f} s, loss {first:.3g} -> "
              f"{best:.3g} ({first / best:.0f}x)" + (f"; {r['failure']}" if r["failure"] else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stiff_node.json").write_text(json.dumps(records, indent=1))
    if not args.quick:
        plot(records, t, data, models["kvaerno5"], args.figures / "stiff_node.png")


if __name__ == "__main__":
    main()
