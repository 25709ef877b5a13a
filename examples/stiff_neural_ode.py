"""A stiff neural ODE: known fast physics plus a learned slow law, trained through the implicit ``kvaerno5``.

The data come from ``dv/dt = u``, ``du/dt = -λ (u + sin v)`` with ``λ = 1000``: ``u`` relaxes within ~1/λ onto
the slow manifold ``u = -sin v``. The model keeps the known relaxation and learns the manifold,
``du/dt = -λ (u - g_θ(v))`` with a small MLP ``g_θ``. The problem's Jacobian has an eigenvalue near ``-λ``, so an
explicit method's step is capped by stability (``h λ`` below ~3.3) long after the transient is over, while
Kværnø's L-stable ESDIRK pair (``method="kvaerno5"``) takes steps the accuracy asks for. Gradients flow through
the Newton solves by the implicit function theorem (``gradient="backprop"``). The rows of the batch are independent
trajectories, so ``options={"jacobian": "rows"}`` gives Newton a block-diagonal Jacobian.

    python examples/stiff_neural_ode.py [--smoke] [--out outputs]      # writes stiff_neural_ode.png

A harder case, a network fitted to Robertson's kinetics over ten decades of time (Kim et al. 2021, "Stiff neural
ordinary differential equations"), is ``python bench/stiff_node.py`` (docs/stiff.md): its loss falls 205x
(0.242 -> 1.18e-3, 300 Adam iterations through ``kvaerno5``, seed 0; 1106x in 600), where ``dopri5`` gets a
non-finite gradient at the first iteration and hits ``max_num_steps`` on the trained model (20 000 steps reach
t = 15 of 1e5).
"""

import time

import torch
from _common import parse_args, progress, pyplot, save
from torch import nn

import pyode

LAMBDA = 1000.0
TOL = {"rtol": 1e-5, "atol": 1e-7}
# The batch rows are independent trajectories: a block-diagonal Jacobian (one 2x2 block per row, batched LU)
# instead of a dense (2 batch)^2 one.
ROWS = {"jacobian": "rows"}


class StiffField(nn.Module):
    """``(v, u) -> (u, -λ (u - g(v)))`` on a (batch, 2) state; ``g`` an MLP (learned) or ``-sin`` (truth)."""

    def __init__(self, slow_law=None):
        super().__init__()
        self.g = slow_law or nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1))

    def forward(self, t, y):
        v, u = y[:, :1], y[:, 1:]
        return torch.cat([u, -LAMBDA * (u - self.g(v))], dim=1)


def make_data(n: int, t_end: float, n_times: int, seed: int):
    """y0 (n, 2) off the slow manifold, t (n_times,), trajectories (n_times, n, 2) of the true system."""
    gen = torch.Generator().manual_seed(seed)
    y0 = torch.stack([torch.rand(n, generator=gen) * 6 - 3, torch.randn(n, generator=gen)], 1).double()
    t = torch.linspace(0, t_end, n_times, dtype=torch.float64)
    with torch.no_grad():
        ys = pyode.odeint(StiffField(lambda v: -torch.sin(v)), y0, t, method="kvaerno5", rtol=1e-8, atol=1e-10,
                          options=ROWS)
    return y0, t, ys


def train(model: StiffField, y0, t, ys, steps: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in progress(range(steps), "stiff neural ODE (kvaerno5)"):
        pred = pyode.odeint(model, y0, t, method="kvaerno5", options=ROWS, **TOL)
        loss = (pred[:, :, 0] - ys[:, :, 0]).pow(2).mean()  # only v is observed
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def cost_of(model: StiffField, y0, t, method: str) -> dict:
    """Steps and evaluations of one solve of the trained model without gradients."""
    with torch.no_grad():
        options = ROWS if method == "kvaerno5" else None
        stats = pyode.solve(model, y0, t, method=method, options=options, **TOL).stats
    return {"steps": int(stats.n_accepted + stats.n_rejected), "nfe": int(stats.nfe)}


def plot(model, y0, t, ys, losses, costs, path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    with torch.no_grad():
        pred = pyode.odeint(model, y0[:4], t, method="kvaerno5", options=ROWS, **TOL)
        v = torch.linspace(-3.2, 3.2, 200, dtype=torch.float64)[:, None]
        axes[0].plot(v[:, 0], -torch.sin(v[:, 0]), "k--", label="true -sin(v)")
        axes[0].plot(v[:, 0], model.g(v)[:, 0], "C0", label="learned g(v)")
    axes[0].set(title="slow manifold u = g(v)", xlabel="v")
    axes[0].legend()
    for k in range(4):
        axes[1].plot(t, ys[:, k, 0], "k--", lw=1)
        axes[1].plot(t, pred[:, k, 0], color=f"C{k}")
    axes[1].set(title="v(t): data (dashed) and model", xlabel="t")
    axes[2].semilogy(losses)
    names = list(costs)
    text = "\n".join(f"{m}: {costs[m]['steps']} steps, {costs[m]['nfe']} evaluations" for m in names)
    axes[2].set(title="training MSE", xlabel="step")
    axes[2].text(0.02, 0.02, f"one solve of the trained model, rtol {TOL['rtol']:g}:\n{text}",
                 transform=axes[2].transAxes, fontsize=8, va="bottom")
    save(fig, path)


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    torch.manual_seed(0)
    n, steps = (8, 2) if args.smoke else (32, 150)
    y0, t, ys = make_data(n, t_end=3.0, n_times=20, seed=0)
    model = StiffField().double()
    start = time.perf_counter()
    losses = train(model, y0, t, ys, steps)
    costs = {m: cost_of(model, y0, t, m) for m in ("kvaerno5", "dopri5")}
    plot(model, y0, t, ys, losses, costs, args.out / "stiff_neural_ode.png")
    print(f"{steps} steps in {time.perf_counter() - start:.1f} s; final MSE {losses[-1]:.2e}; "
          + "; ".join(f"{m}: {c['steps']} steps, {c['nfe']} evaluations" for m, c in costs.items()))


if __name__ == "__main__":
    main()
