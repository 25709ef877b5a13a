"""A stiff neural ODE fitted to Robertson's chemical kinetics (Kim, Ji, Deng, Ma & Rackauckas 2021, "Stiff
neural ordinary differential equations"), trained through ``kvaerno5`` and ``bdf`` where ``dopri5`` runs out of steps.

Following Kim et al.: each species is scaled by its maximum over the data (``ŷ = y / s``, s ~ (1, 3.6e-5, 1)),
so the loss weighs the three species alike; the observation times are log-spaced over 1e-5 .. 1e5 (the dynamics
happen on every scale); the network's output is scaled per species by a rate scale ``c`` (twice the largest rate
of each scaled equation); Adam with a cosine-decaying learning rate, gradients clipped to norm 1.

Two models (``--model``), both with a linear skip ``W`` and a one-hidden-layer tanh MLP on ``φ(ŷ)``, the
monomials of degree <= 2 of the scaled state (9 features):

- ``conserving`` (default): the network gives ``dŷ2/dt = c2 z2`` and ``dŷ3/dt = c3 z3`` with
  ``z = W φ(σ(ŷ)) + MLP(φ(σ(ŷ)))``, and ``dŷ1/dt`` follows from conservation of mass, ``s · dŷ/dt = 0`` (the
  reactions only move mass between species; known physics, built in). ``σ`` is the identity on [-0.5, 1.5] and
  saturates outside, so the derivative is bounded (no blow-up in finite time) while the truth, polynomial of
  degree 2 in ŷ, stays exactly representable on the data's range. It starts with ``dŷ2/dt = -c2 ŷ2`` (stiff from
  the first iteration, eigenvalue -c2 ~ -2e4) and nothing else: ŷ stays at ŷ0.
  Why conservation: after t ~ 100 y2 is in quasi-steady state and ``dy1/dt = -k1 y1 + k3 y2 y3 = -k2 y2²``,
  2e-4 of either term at t = 1e5. A model that learns ``dy1/dt`` on its own must cancel its two terms to that
  precision, far below Adam's parameter noise: it settles into a spurious equilibrium and misses the slow tail
  (the ``free`` model below). Through conservation the tail follows from y3's production, which has no cancellation.
- ``free``: ``dŷ/dt = c ⊙ tanh(W φ(ŷ) + MLP(φ(ŷ)))`` for all three species, started as the decay
  ``-c ⊙ tanh(ŷ)`` (:class:`StiffNODE`).

Usage: ``python bench/stiff_node.py [--model conserving|free] [--iters 300] [--lr 1e-2] [--gradient backprop|adjoint]
[--methods dopri5,kvaerno5,bdf] [--seed 0] [--quick] [--out bench/results] [--figures docs/figures]``
Writes ``<out>/stiff_node.json`` (command, seed, losses) and ``<figures>/stiff_node.png`` (loss curves; data and model).
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
DOPRI_MAX_STEPS = 20_000  # dopri5's cap: ~6e8 steps would be needed at its stability limit (h |λ| <= 3.3, λ ~ -2e4)


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


def soft_range(y: torch.Tensor, lo: float = -0.5, hi: float = 1.5, width: float = 0.5) -> torch.Tensor:
    """Identity on [lo, hi]; outside, approaches lo - width or hi + width smoothly (slope 1 at the edges)."""
    above = hi + width * torch.tanh((y - hi) / width)
    below = lo + width * torch.tanh((y - lo) / width)
    return torch.where(y > hi, above, torch.where(y < lo, below, y))


class ConservingNODE(nn.Module):
    """``dŷ2,3/dt = c2,3 ⊙ (W φ(σ(ŷ)) + MLP(φ(σ(ŷ))))`` and ``dŷ1/dt = -(s2 dŷ2/dt + s3 dŷ3/dt) / s1`` (see the
    module docstring); ``c`` (3,) and ``s`` (3,) fixed. State (..., 3) -> derivative (..., 3)."""

    def __init__(self, c: torch.Tensor, s: torch.Tensor, hidden: int = 16):
        super().__init__()
        self.register_buffer("c", c[1:])
        self.register_buffer("s", s)
        self.skip = nn.Linear(9, 2, bias=False)
        self.mlp = nn.Sequential(nn.Linear(9, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        with torch.no_grad():  # start at dŷ2/dt = -c2 ŷ2, dŷ3/dt = 0 (the MLP's output layer at zero, still trained)
            self.skip.weight.zero_()
            self.skip.weight[0, 1] = -1.0
            self.mlp[2].weight.zero_()
            self.mlp[2].bias.zero_()

    def forward(self, t, y):
        phi = features(soft_range(y))
        d23 = self.c * (self.skip(phi) + self.mlp(phi))
        d1 = -(self.s[1] * d23[..., :1] + self.s[2] * d23[..., 1:]) / self.s[0]
        return torch.cat([d1, d23], -1)


def rate_scale(s: torch.Tensor) -> torch.Tensor:
    """Twice the largest coefficient of each scaled Robertson equation (the network's output scale: the truth
    needs |tanh argument| <= 1/2 there, where tanh is nearly linear)."""
    k1, k2, k3 = K
    s1, s2, s3 = s.tolist()
    return 2.0 * torch.tensor([max(k1, k3 * s2 * s3 / s1), max(k1 * s1 / s2, k2 * s2, k3 * s3), k2 * s2**2 / s3],
                              dtype=torch.float64)


def train(model: nn.Module, t, data, method: str, iters: int, lr: float, gradient: str,
          dopri_max_steps: int = DOPRI_MAX_STEPS) -> dict:
    """Adam on the scaled MSE (cosine-decaying learning rate, gradient norm clipped to 1: a step across a
    bifurcation of the model, where an equilibrium appears or vanishes, gives a large gradient); stops at the
    first solver failure or non-finite gradient (recorded)."""
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
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        except ODESolverError as exc:
            failure = f"{type(exc).__name__} at iteration {len(losses)}: {exc}"[:300]
            break
        if not torch.isfinite(norm):  # an explicit method's steps far outside its stability region
            failure = (f"non-finite gradient at iteration {len(losses)} (loss {loss.item():.3g}, "
                       f"{sol.stats.n_accepted} steps)")
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
        if "what" in r:  # dopri5 on the trained model: in the legend only
            label = "dopri5 on the trained model: " + ("max_num_steps" if r["failure"] else "solved")
        else:
            label = r["method"] + (f" (stopped at iteration {len(r['losses'])}: "
                                   + ("non-finite gradient" if "non-finite" in r["failure"] else "max_num_steps")
                                   + ")" if r["failure"] else "")
        axes[0].semilogy(r["losses"] or [float("nan")], label=label)
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


def dopri5_on_trained(model: nn.Module, t, y0) -> dict:
    """One forward solve of the trained model with dopri5 (its step capped by stability on the stiff mode)."""
    start = time.perf_counter()
    try:
        with torch.no_grad():
            sol = pyode.solve(model, y0, t, method="dopri5", options={"max_num_steps": DOPRI_MAX_STEPS}, **TOL)
        failure = None if sol.stats.status == "success" else sol.stats.status
    except ODESolverError as exc:
        failure = f"{type(exc).__name__}: {exc}"[:300]
    return {"method": "dopri5", "what": "forward solve of the kvaerno5-trained model", "failure": failure,
            "losses": [], "seconds": time.perf_counter() - start}


def make_model(kind: str, s: torch.Tensor) -> nn.Module:
    c = rate_scale(s)
    return (ConservingNODE(c, s) if kind == "conserving" else StiffNODE(c)).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="conserving", choices=["conserving", "free"])
    parser.add_argument("--iters", type=int, default=300, help="600: 1106x in ~2x the time (docs/stiff.md)")
    parser.add_argument("--n-times", type=int, default=40)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0, help="initial weights (the data are deterministic)")
    parser.add_argument("--gradient", default="backprop", choices=["backprop", "adjoint"],
                        help="adjoint: the interpolated adjoint (memory flat in the model, ~4x slower here)")
    parser.add_argument("--methods", default="dopri5,kvaerno5,bdf",
                        help="methods to train with, each from the same initial weights (kvaerno5 always runs: the "
                             "trained model of the figure and of the dopri5 check)")
    parser.add_argument("--quick", action="store_true", help="a few iterations on few times (smoke run)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    if args.quick:
        args.iters, args.n_times = 3, 8
    torch.set_num_threads(1)
    t, data, s = make_data(args.n_times)
    records, models = [], {}
    methods = list(dict.fromkeys(["kvaerno5", *args.methods.split(",")]))
    methods.sort(key=lambda m: m != "dopri5")  # dopri5 first: it stops within the first iterations
    for method in methods:
        torch.manual_seed(args.seed)  # the same initial weights for every method
        models[method] = make_model(args.model, s)
        records.append(train(models[method], t, data, method, args.iters, args.lr, args.gradient))
    records.append(dopri5_on_trained(models["kvaerno5"], t, data[0]))
    for r in records[:-1]:
        first, last, best = (r["losses"][0], r["losses"][-1], min(r["losses"])) if r["losses"] else (math.nan,) * 3
        print(f"{r['method']}: {len(r['losses'])} iterations in {r['seconds']:.1f} s, loss {first:.3g} -> "
              f"{last:.3g} ({first / last:.0f}x; best {best:.3g}, {first / best:.0f}x)"
              + (f"; {r['failure']}" if r["failure"] else ""))
    print(f"dopri5 on the trained model: {records[-1]['failure'] or 'solved'} ({records[-1]['seconds']:.1f} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python " + " ".join(sys.argv), "model": args.model, "seed": args.seed, "lr": args.lr,
            "iters": args.iters, "n_times": args.n_times, "tolerances": TOL, "torch": torch.__version__}
    (args.out / "stiff_node.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    if not args.quick:
        plot(records, t, data, models["kvaerno5"], args.figures / "stiff_node.png")


if __name__ == "__main__":
    main()
