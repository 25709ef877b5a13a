"""Writes the suite's results: ``results.json``, two PNG charts and Markdown tables.

``python bench/report.py bench/results/results.json`` re-renders the tables and charts of a saved run.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {"pyode": "tab:green", "torchdiffeq": "tab:blue", "torchode": "tab:orange"}


def write(results: dict, out_dir: Path) -> list[Path]:
    """Saves results.json, loop_per_step.png and wall_time.png under ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(results, indent=1, default=str))
    charts = [chart(results, "loop_per_step_s", 1e6, "loop time per step outside func (µs)",
                    out_dir / "loop_per_step.png"),
              chart(results, "wall_s", 1e3, "wall time, forward + backward (ms)", out_dir / "wall_time.png")]
    return [json_path, *charts]


def _cases(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(f"{r['problem']} {r['variant']}" for r in records))


def chart(results: dict, metric: str, scale: float, ylabel: str, path: Path) -> Path:
    """One panel per case: a bar per (library, mode, threads) with its median and min-max whiskers."""
    records = [r for r in results["records"] if r["status"] == "ok" and metric in r.get("summary", {})]
    cases = _cases(results["records"])
    cols = 2
    rows = max(1, math.ceil(len(cases) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 3.2 * rows), squeeze=False)
    for ax, case in zip(axes.flat, cases):
        mine = [r for r in records if f"{r['problem']} {r['variant']}" == case]
        for x, rec in enumerate(mine):
            stat = rec["summary"][metric]
            med = stat["median"] * scale
            err = [[med - stat["min"] * scale], [stat["max"] * scale - med]]
            ax.bar(x, med, color=COLOURS.get(rec["library"], "grey"), yerr=err, capsize=3)
        labels = [f"{r['library']}\n{r['mode'].replace('_', chr(10), 1)}\n{r['threads']}t" for r in mine]
        ax.set_xticks(range(len(mine)), labels, fontsize=6)
        if mine:
            ax.set_yscale("log")
        ax.set_title(case, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=7)
    for ax in list(axes.flat)[len(cases):]:
        ax.set_visible(False)
    fig.suptitle(f"pyode vs torchdiffeq vs torchode — {results['meta'].get('date', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value * scale:.{digits}g}"


def _spread(summary: dict, key: str, scale: float) -> str:
    """``median [min–max]`` of a summarised metric."""
    if key not in summary:
        return "–"
    s = summary[key]
    return f"{_fmt(s['median'], scale)} [{_fmt(s['min'], scale)}–{_fmt(s['max'], scale)}]"


def _steps(summary: dict, direction: str) -> str:
    acc, rej = summary.get(f"accepted_{direction}"), summary.get(f"rejected_{direction}")
    if acc is None or rej is None:
        return "–"
    return f"{acc['median']:.4g}/{rej['median']:.4g}"


def _median(record: dict, key: str) -> float | None:
    stat = record.get("summary", {}).get(key)
    return None if stat is None else stat["median"]


def markdown(results: dict) -> str:
    """All records as one Markdown table, followed by the pyode-vs-peers ratios."""
    head = ("| case | library | mode | thr | wall ms | NFE fwd/bwd | steps acc/rej fwd | steps acc/rej bwd "
            "| loop/step µs | eager-op eq. | BW frac | sol err | grad err |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    thp = results.get("meta", {}).get("thp")
    if thp:  # the allocation mode changes every library's large-state numbers: say which one this was
        lines.insert(0, f"Allocation: {thp}\n")
    for r in results["records"]:
        case = f"{r['problem']} {r['variant']}"
        if r["status"] != "ok":
            lines.append(f"| {case} | {r['library']} | {r['mode']} | {r['threads']} | {r['status']}: "
                         f"{(r['reason'] or '')[:80]} |" + " |" * 9)
            continue
        s = r["summary"]
        nfe = f"{_fmt(_median(r, 'nfe_fwd'), digits=6)}/{_fmt(_median(r, 'nfe_bwd'), digits=6)}"
        lines.append(
            f"| {case} | {r['library']} | {r['mode']} | {r['threads']} | {_spread(s, 'wall_s', 1e3)} | {nfe} "
            f"| {_steps(s, 'fwd')} | {_steps(s, 'bwd')} | {_spread(s, 'loop_per_step_s', 1e6)} "
            f"| {_fmt(_median(r, 'loop_per_step_eager_ops'))} | {_fmt(_median(r, 'bandwidth_fraction'))} "
            f"| {_fmt(_median(r, 'sol_err'), digits=2)} | {_fmt(_median(r, 'grad_err'), digits=2)} |")
    return "\n".join(lines) + "\n\n" + ratios_markdown(results)


def ratios_markdown(results: dict) -> str:
    """pyode against the faster peer per (case, mode, threads): >1 means pyode is faster/better."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in results["records"]:
        if r["status"] == "ok":
            key = (f"{r['problem']} {r['variant']}", r["mode"], r["threads"])
            groups.setdefault(key, {})[r["library"]] = r
    head = ("| case | mode | thr | wall: best peer / pyode | loop/step: best peer / pyode "
            "| pyode NFE / torchdiffeq NFE |")
    lines = [head, "|---|---|---|---|---|---|"]
    for (case, mode, threads), libs in groups.items():
        if "pyode" not in libs or len(libs) < 2:
            continue
        mine = libs.pop("pyode")
        lines.append(f"| {case} | {mode} | {threads} | {_ratio(libs, mine, 'wall_s')} "
                     f"| {_ratio(libs, mine, 'loop_per_step_s')} | {_nfe_ratio(libs, mine)} |")
    return "\n".join(lines)


def _ratio(peers: dict[str, dict], mine: dict, key: str) -> str:
    values = {name: _median(r, key) for name, r in peers.items() if _median(r, key)}
    own = _median(mine, key)
    if not values or not own:
        return "–"
    best = min(values, key=values.get)
    return f"{values[best] / own:.3g}× ({best})"


def _nfe_ratio(peers: dict[str, dict], mine: dict) -> str:
    ref, own = peers.get("torchdiffeq"), _median(mine, "nfe_fwd")
    if ref is None or not own or not _median(ref, "nfe_fwd"):
        return "–"
    return f"{own / _median(ref, 'nfe_fwd'):.3f}"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python bench/report.py path/to/results.json")
    source = Path(sys.argv[1])
    data = json.loads(source.read_text())
    for written in write(data, source.parent)[1:]:
        print("wrote", written)
    print(markdown(data))
