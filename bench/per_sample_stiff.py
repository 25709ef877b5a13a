"""Per-sample step sizes for the stiff methods: a batch of Van der Pol rows with mu log-spaced over [1, 1000],
per-sample (options per_sample=True) against the joint solve (one step size for the batch, the same
block-diagonal Jacobian, options jacobian='rows').

    python bench/per_sample_stiff.py [--rows 64] [--t-end 20] [--repeats 3] [--hidden 0]

Reports per method: the joint solve's steps (every row takes them), the per-sample steps per row (min / median /
max) and rounds (batch evaluations are per round), func evaluations, wall time (best of --repeats, the two
modes interleaved; the machine may be shared) and the largest difference between the two solutions at the output
times, relative to max |y| (each is within its own tolerance of the solution, the joint one far closer for most rows).
"""

from __future__ import annotations

import argparse
import time

import torch

import pyode


def van_der_pol(mu: torch.Tensor, hidden: int = 0):
    """Van der Pol rows; with ``hidden`` > 0 plus 1e-3 times a fixed random tanh MLP of y (width ``hidden``, two
    hidden layers): the same stiffness, with a func whose cost dominates the solver's own per-evaluation work."""
    mlp = None
    if hidden:
        gen = torch.Generator().manual_seed(0)
        mlp = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                                  torch.nn.Tanh(), torch.nn.Linear(hidden, 2)).double()
        with torch.no_grad():
            for p in mlp.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) / p.shape[-1] ** 0.5)
            mlp.requires_grad_(False)

    def f(t, y):
        x, v = y[:, 0], y[:, 1]
        out = torch.stack([v, mu * (1 - x * x) * v - x], -1)
        return out if mlp is None else out + 1e-3 * mlp(y)
    return f


def best_of(repeats: int, *runs):
    """Each run's best wall time and last result, the runs interleaved (a shared machine's load hits all alike)."""
    times, outs = [[] for _ in runs], [None] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            outs[i] = run()
            times[i].append(time.perf_counter() - start)
    return [min(ts) for ts in times], outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--t-end", type=float, default=20.0)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default="kvaerno5,rodas5,kvaerno3")
    parser.add_argument("--hidden", type=int, default=0, help="add 1e-3 * a tanh MLP of this width to func")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mu = torch.logspace(0, 3, args.rows, dtype=torch.float64)
    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64).repeat(args.rows, 1)
    t = torch.linspace(0.0, args.t_end, 11, dtype=torch.float64)
    f = van_der_pol(mu, args.hidden)
    print(f"Van der Pol, {args.rows} rows, mu = 1 .. 1000 (log-spaced), t 0 .. {args.t_end:g}, rtol {args.rtol:g}, "
          f"atol {args.atol:g}, float64, 1 thread; wall time best of {args.repeats}"
          + (f"; func + 1e-3 * MLP (2 hidden layers of {args.hidden})" if args.hidden else ""))
    print(f"{'method':9s} {'mode':10s} {'steps per row (min/med/max)':>28s} {'rounds':>7s} {'nfe':>7s} "
          f"{'wall s':>7s} {'max diff':>9s}")
    for method in args.methods.split(","):
        kw = {"method": method, "rtol": args.rtol, "atol": args.atol}
        (wall_j, wall_p), (joint, per) = best_of(
            args.repeats, lambda kw=kw: pyode.solve(f, y0, t, **kw, options={"jacobian": "rows"}),
            lambda kw=kw: pyode.solve(f, y0, t, **kw, options={"per_sample": True}))
        steps = (per.stats.per_sample_accepted + per.stats.per_sample_rejected).sort().values
        diff = float((per.ys - joint.ys).abs().max() / joint.ys.abs().max())
        n = joint.stats.n_steps
        print(f"{method:9s} {'joint':10s} {f'{n} / {n} / {n}':>28s} {n:7d} {joint.stats.nfe:7d} {wall_j:7.2f}")
        per_row = f"{int(steps[0])} / {int(steps[len(steps) // 2])} / {int(steps[-1])}"
        print(f"{method:9s} {'per-sample':10s} {per_row:>28s} {per.stats.n_iterations:7d} {per.stats.nfe:7d} "
              f"{wall_p:7.2f} {diff:9.1e}")


if __name__ == "__main__":
    main()
