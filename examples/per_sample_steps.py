"""Per-sample step sizes: a batch whose rows have very different time scales, solved jointly and per row.

Row ``i`` relaxes towards ``cos t`` at its own rate ``k_i`` (1 to 1000, log-spaced): ``dy_i/dt = -k_i (y_i - cos t)``.
A joint solve (the default) takes one step size for the whole batch, set by its fastest row; with
``options={"per_sample": True}`` every row has its own time, step size and accept/reject decision (``func`` then
receives ``t`` of shape (batch,)), so slow rows take few steps. The figure shows the steps each row took, and
each row's error against the exact solution at the final time.

    python examples/per_sample_steps.py [--smoke] [--out outputs]      # writes per_sample_steps.png
"""

import torch
from _common import parse_args, pyplot, save

import pyode

T_END = 5.0


def exact(k: torch.Tensor, t: float) -> torch.Tensor:
    """y(t) of dy/dt = -k (y - cos t), y(0) = 0: (batch, 1)."""
    t = torch.tensor(t, dtype=k.dtype)
    return k * (k * torch.cos(t) + torch.sin(t) - k * torch.exp(-k * t)) / (k * k + 1)


def main() -> None:
    args = parse_args(__doc__.split("\n")[0])
    k = torch.logspace(0, 3, 16 if args.smoke else 512, dtype=torch.float64)[:, None]

    def field(t, y):  # t: () in a joint solve, (batch,) per sample
        return -k * (y - torch.cos(t if t.dim() == 0 else t[:, None]))

    y0, t = torch.zeros_like(k), torch.tensor([0.0, T_END], dtype=torch.float64)
    joint = pyode.solve(field, y0, t, rtol=1e-6, atol=1e-9)
    rows = pyode.solve(field, y0, t, rtol=1e-6, atol=1e-9, options={"per_sample": True})
    plt = pyplot()
    fig, (ax_s, ax_e) = plt.subplots(1, 2, figsize=(11, 4))
    ax_s.loglog(k[:, 0], rows.stats.per_sample_accepted, ".", label="per_sample: accepted steps of each row")
    ax_s.axhline(joint.stats.n_accepted, color="C1", label=f"joint: {joint.stats.n_accepted} steps for every row")
    ax_s.set(xlabel="rate k of the row", ylabel="accepted steps", title="steps per row (dopri5, rtol 1e-6)")
    ax_s.legend(fontsize=8)
    for sol, name in ((joint, "joint"), (rows, "per_sample")):
        ax_e.loglog(k[:, 0], (sol.ys[-1] - exact(k, T_END)).abs()[:, 0] + 1e-17, ".", label=name)
    ax_e.set(xlabel="rate k of the row", ylabel=f"|y(T) - exact|, T = {T_END:g}", title="error per row")
    ax_e.legend(fontsize=8)
    save(fig, args.out / "per_sample_steps.png")
    print(f"joint: {joint.stats.n_accepted} steps, {joint.stats.nfe} batch evaluations; per_sample: "
          f"{rows.stats.n_iterations} rounds, {rows.stats.nfe} batch evaluations, steps per row "
          f"{int(rows.stats.per_sample_accepted.min())}-{int(rows.stats.per_sample_accepted.max())}")


if __name__ == "__main__":
    main()
