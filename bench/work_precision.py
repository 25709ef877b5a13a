"""Work-precision of the gradient problems: time against gradient error over a sweep of tolerances.

The suite compares libraries at one tolerance. The performance issue's wall-time target for P1/P2 is stated "at
equal or smaller gradient error", so this runs each library (backprop) at the suite's tolerances scaled by
``--factors`` (rtol and atol alike), interleaved, and reports for each case:

- every (library, factor): median forward+backward wall time, NFE, and relative L2 gradient error against the
  float64 reference of the suite;
- matched accuracy: the faster peer at the suite's own tolerance (time T, gradient error E), and pyode's
  fastest run whose gradient error is <= E: its time / T. Only measured points count (no interpolation).

A work-precision chart per case goes to ``<out>/work_precision.png``.

Usage: ``python bench/work_precision.py [--factors 10,3,1,0.3] [--reps 5] [--threads 1] [--out bench/results]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch
from tqdm import tqdm

from bench import measure
from bench.peers import make_peers
from bench.problems import make_cases

MODE = "backprop"
LIBRARIES = ("pyode", "torchdiffeq", "torchode")


def sweep(cases, peers, factors: list[float], reps: int, quiet: bool = False) -> list[dict]:
    """One record per (case, library, factor): medians over ``reps`` interleaved repetitions."""
    records, samples = [], {}
    total = len(cases) * len(factors) * len(peers) * (reps + 1)
    with tqdm(total=total, desc="work-precision", unit="run", disable=True if quiet else None) as bar:
        for case in cases:
            for factor in factors:
                rtol, atol = case.rtol * factor, case.atol * factor
                for rep in range(reps + 1):  # repetition 0 warms up and is not kept
                    for peer in peers[rep % len(peers):] + peers[:rep % len(peers)]:
                        result = peer.solve(case, case.method, rtol, atol, MODE)
                        if rep > 0:
                            samples.setdefault((case.label, peer.name, factor), []).append(
                                (result.wall_fwd + result.wall_bwd, result.nfe_fwd,
                                 measure.relative_error(result.grad, case.reference_grad, "l2")))
                        bar.update(1)
    for (label, library, factor), runs in samples.items():
        records.append({"case": label, "library": library, "factor": factor,
                        "wall_s": statistics.median(r[0] for r in runs), "nfe": runs[0][1],
                        "grad_err": statistics.median(r[2] for r in runs)})
    return records


def matched_accuracy(records: list[dict]) -> list[dict]:
    """Per case: the faster peer at factor 1 against pyode's fastest run with no larger gradient error."""
    rows = []
    for label in dict.fromkeys(r["case"] for r in records):
        mine = [r for r in records if r["case"] == label and r["library"] == "pyode"]
        peers = [r for r in records if r["case"] == label and r["library"] != "pyode" and r["factor"] == 1.0]
        if not mine or not peers:
            continue
        peer = min(peers, key=lambda r: r["wall_s"])
        ok = [r for r in mine if r["grad_err"] <= peer["grad_err"]]
        best = min(ok, key=lambda r: r["wall_s"]) if ok else None
        rows.append({"case": label, "peer": peer, "pyode": best,
                     "ratio": best["wall_s"] / peer["wall_s"] if best else None})
    return rows


def markdown(records: list[dict], rows: list[dict]) -> str:
    lines = ["| case | library | tolerance factor | wall ms | NFE | grad err |", "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['case']} | {r['library']} | {r['factor']:g} | {r['wall_s'] * 1e3:.1f} | {r['nfe']} "
                     f"| {r['grad_err']:.2g} |")
    lines += ["", "| case | faster peer at the suite's tolerance | pyode at no larger gradient error | pyode / peer |",
              "|---|---|---|---|"]
    for row in rows:
        peer, mine = row["peer"], row["pyode"]
        mine_text = (f"factor {mine['factor']:g}: {mine['wall_s'] * 1e3:.1f} ms, err {mine['grad_err']:.2g}"
                     if mine else "none")
        ratio = f"{row['ratio']:.2f}×" if row["ratio"] is not None else "–"
        lines.append(f"| {row['case']} | {peer['library']}: {peer['wall_s'] * 1e3:.1f} ms, err "
                     f"{peer['grad_err']:.2g} | {mine_text} | {ratio} |")
    return "\n".join(lines)


def chart(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["case"] for r in records))
    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 4), squeeze=False)
    for ax, label in zip(axes[0], labels):
        for library in LIBRARIES:
            pts = sorted((r["grad_err"], r["wall_s"] * 1e3) for r in records
                         if r["case"] == label and r["library"] == library)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=library)
        ax.set(xscale="log", xlabel="relative gradient error", ylabel="forward+backward ms", title=label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("work-precision, backprop (lower left is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factors", default="10,3,1,0.3")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (it shows only on a terminal anyway)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    factors = [float(f) for f in args.factors.split(",")]
    if 1.0 not in factors:
        factors.append(1.0)  # the peers' reference point is the suite's own tolerance
    cases = [c for c in make_cases(["P1", "P2"], args.quick) if MODE in c.modes]
    measure.reference_solutions(cases, args.quick)
    records = sweep(cases, make_peers(list(LIBRARIES)), factors, args.reps, quiet=args.quiet)
    rows = matched_accuracy(records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chart(records, out / "work_precision.png")
    print(markdown(records, rows))
    print(f"\nwrote {out / 'work_precision.png'}")


if __name__ == "__main__":
    main()
