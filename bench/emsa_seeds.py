"""E-MSA against SGD / Adagrad / Adam on the sin(x) toy over a grid of data and network seeds.

The docs' claim "E-MSA reaches loss 1e-3 in fewer iterations than SGD/Adam" was measured on one seed pair
(data 0, network 1). This checks it on ``len(DATA_SEEDS) x len(NET_SEEDS)`` pairs (the toy of
:mod:`pyode.control.demos`: 20 residual tanh layers of width 5, 100 training points, full batch, float64):

1. Hyper-parameters are chosen on the *tuning pairs* (the diagonal ``(DATA_SEEDS[i], NET_SEEDS[i])``), the same way
   for every method: fewest runs that never reach the threshold, then the lowest median iterations to it.
   Baselines pick a learning rate from :data:`LEARNING_RATES`; E-MSA picks
   ``(rho, lbfgs_iters)`` from ``Config.emsa_settings`` (runs of at most ``emsa_sweep_cap`` iterations).
2. Every method then runs on all pairs, one torch thread, stopping once the loss falls below the threshold
   (or at the iteration cap: ``emsa_cap`` for E-MSA, ``grad_cap`` for the baselines). Recorded: iterations and seconds to the threshold (the iteration whose
   starting loss is first below it, as in the demo's table), or "never". Seconds are the CPU time of the run's
   one thread: on a shared machine it moves far less with the load than wall time (kept in the JSON too).
3. Baselines also get a per-pair *oracle* rate (the grid rate that is best on that pair alone): the most
   tuning can do for them.

The learning-rate grid of every baseline is searched on all pairs at once by :class:`BatchedToy` (each run
its own slice of stacked tensors, updated with the optimiser's own formulas, so it gives the same losses as
``torch.optim`` on the run alone, to rounding); the reported numbers come from ordinary single runs.

Writes ``<out>/emsa_seeds.json`` (every run), ``<out>/emsa_seeds.md`` (tables) and ``<out>/emsa_seeds.png``.

Usage: ``python bench/emsa_seeds.py [--quick] [--out bench/results/emsa_seeds] [--from-json PATH]``
(``--from-json`` redraws the table and chart of an earlier run without running anything).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch
from tqdm.auto import tqdm

from pyode.control.demos import (
    TOY_STEP,
    first_reach,
    sin_toy_data,
    sin_toy_embed,
    sin_toy_network,
    single_thread,
    toy_gradient_run,
    toy_msa_run,
)

OPTIMISERS = ("SGD", "Adagrad", "Adam")
# Factor-3 grids around the demo's tuned rates (SGD 1, Adagrad 1, Adam 0.3), wide enough that no chosen rate sits
# at an end of its grid.
LEARNING_RATES = {"SGD": [0.1, 0.3, 1.0, 3.0, 10.0], "Adagrad": [0.03, 0.1, 0.3, 1.0, 3.0],
                  "Adam": [0.01, 0.03, 0.1, 0.3, 1.0]}
DOCUMENTED_EMSA = (1.0, 10)  # rho, lbfgs_iters of docs/control_results.md


@dataclass
class Config:
    data_seeds: tuple[int, ...] = (0, 1, 2, 3, 123)
    net_seeds: tuple[int, ...] = (1, 2, 3, 4, 7)
    threshold: float = 1e-3
    emsa_settings: tuple[tuple[float, int], ...] = ((1.0, 10), (0.3, 10), (3.0, 10), (1.0, 5), (1.0, 20))
    emsa_sweep_cap: int = 40  # iterations per E-MSA run in the sweep on the tuning pairs
    emsa_cap: int = 100  # ... and on all pairs: about twice the baselines' median iterations to 1e-3
    grad_cap: int = 2000
    learning_rates: dict[str, list[float]] = field(default_factory=lambda: dict(LEARNING_RATES))

    @property
    def pairs(self) -> list[tuple[int, int]]:
        return [(d, n) for d in self.data_seeds for n in self.net_seeds]

    @property
    def tuning_pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.data_seeds, self.net_seeds))


QUICK = Config(data_seeds=(0,), net_seeds=(1, 4), threshold=0.2, emsa_settings=((1.0, 5), (1.0, 10)), emsa_sweep_cap=3,
               emsa_cap=4,
               grad_cap=60, learning_rates={"SGD": [0.3, 1.0], "Adagrad": [0.3, 1.0], "Adam": [0.03, 0.3]})


# ----------------------------------------------------------------------------------------------
# Batched grid search: R independent copies of the toy in stacked tensors.
# ----------------------------------------------------------------------------------------------


class BatchedToy:
    """``R`` independent sin(x) toys, run ``r`` = ``(data_seed, net_seed)``, trained at once.

    Weights ``(R, depth, 5, 5)``, biases ``(R, depth, 5)``, inputs ``(R, n, 5)``: no operation mixes runs,
    so the gradient of the summed loss holds each run's own gradient.
    """

    def __init__(self, pairs: list[tuple[int, int]]):
        weights, biases, inputs, targets = [], [], [], []
        for data_seed, net_seed in pairs:
            net = sin_toy_network(net_seed)
            weights.append(torch.stack([layer[0].weight.detach() for layer in net.layers]))
            biases.append(torch.stack([layer[0].bias.detach() for layer in net.layers]))
            x_train, y_train = sin_toy_data(data_seed)[:2]
            inputs.append(sin_toy_embed(x_train))
            targets.append(y_train)
        self.weight = torch.stack(weights).requires_grad_(True)
        self.bias = torch.stack(biases).requires_grad_(True)
        self.x0, self.y = torch.stack(inputs), torch.stack(targets)

    def losses(self) -> torch.Tensor:
        """Mean training loss of every run, ``(R,)``: the same map as ``ResidualNet`` + ``sin_toy_loss``."""
        x = self.x0
        for layer in range(self.weight.shape[1]):
            pre = x @ self.weight[:, layer].transpose(1, 2) + self.bias[:, layer, None, :]
            x = x + TOY_STEP * torch.tanh(pre)
        return (0.5 * (x.mean(dim=2) - self.y) ** 2).mean(dim=1)

    def keep(self, rows: torch.Tensor) -> None:
        """Drop every run but ``rows`` (an index tensor), so finished runs stop costing time."""
        self.weight = self.weight.detach()[rows].requires_grad_(True)
        self.bias = self.bias.detach()[rows].requires_grad_(True)
        self.x0, self.y = self.x0[rows], self.y[rows]


def _optimiser_update(name: str, params: list[torch.Tensor], grads: tuple[torch.Tensor, ...], state: list[dict],
                      lr: torch.Tensor, step: int) -> None:
    """One step of torch.optim's SGD / Adagrad / Adam (default hyper-parameters) with a rate per run ``lr: (R,)``."""
    for param, grad, st in zip(params, grads, state):
        rate = lr.view(-1, *([1] * (param.dim() - 1)))
        if name == "SGD":
            param -= rate * grad
        elif name == "Adagrad":  # lr_decay 0, eps 1e-10, zero initial accumulator
            st["sum"] = st.get("sum", torch.zeros_like(param)) + grad * grad
            param -= rate * grad / (st["sum"].sqrt() + 1e-10)
        elif name == "Adam":  # betas (0.9, 0.999), eps 1e-8
            st["m"] = st.get("m", torch.zeros_like(param)).lerp(grad, 0.1)
            st["v"] = st.get("v", torch.zeros_like(param)) * 0.999 + 0.001 * grad * grad
            denom = st["v"].sqrt() / math.sqrt(1 - 0.999**step) + 1e-8
            param -= (rate / (1 - 0.9**step)) * st["m"] / denom
        else:
            raise ValueError(f"unknown optimiser {name!r}; choose one of {OPTIMISERS}")


def batched_trajectories(name: str, pairs: list[tuple[int, int]], rate: float, iterations: int) -> list[list[float]]:
    """Training loss per iteration of ``name`` at ``rate`` on each pair (no early stop): ``(pairs, iterations)``.

    Used to check the batched engine against ``torch.optim``.
    """
    toy = BatchedToy(pairs)
    lr = torch.full((len(pairs),), rate, dtype=torch.float64)
    state: list[dict] = [{}, {}]
    trajectory = []
    for step in range(iterations):
        losses = toy.losses()
        trajectory.append(losses.detach().tolist())
        grads = torch.autograd.grad(losses.sum(), [toy.weight, toy.bias])
        with torch.no_grad():
            _optimiser_update(name, [toy.weight, toy.bias], grads, state, lr, step + 1)
    return [list(run) for run in zip(*trajectory)]


def batched_iterations(name: str, pairs: list[tuple[int, int]], rates: list[float], threshold: float,
                       cap: int) -> list[list[float]]:
    """Iterations to ``threshold`` of ``name`` at every rate on every pair, ``result[pair][rate]``; ``nan`` where a
    run never gets there within ``cap`` iterations or diverges. All runs share stacked tensors; finished runs
    leave the stack every 20 iterations."""
    runs = [(pair, rate) for pair in pairs for rate in rates]
    toy = BatchedToy([pair for pair, _ in runs])
    active = torch.arange(len(runs))  # which run each row of the stack is
    lr = torch.tensor([rate for _, rate in runs], dtype=torch.float64)
    state: list[dict] = [{}, {}]
    reach = torch.full((len(runs),), math.nan, dtype=torch.float64)
    for step in tqdm(range(cap), desc=f"{name} rate grid", disable=None, leave=False):
        losses = toy.losses()
        values = losses.detach()
        reached = values < threshold
        newly = reached & reach[active].isnan()  # finished runs stay in the stack until the next compaction
        reach[active[newly]] = float(step + 1)
        running = ~reached & values.isfinite()
        if not bool(running.any()):
            break
        grads = torch.autograd.grad(losses.sum(), [toy.weight, toy.bias])
        with torch.no_grad():
            _optimiser_update(name, [toy.weight, toy.bias], grads, state, lr, step + 1)
        if step % 20 == 19 and not bool(running.all()):
            rows = running.nonzero().squeeze(1)
            toy.keep(rows)
            active, lr = active[rows], lr[rows]
            state = [{key: value[rows] for key, value in st.items()} for st in state]
    flat = reach.tolist()
    return [flat[i * len(rates):(i + 1) * len(rates)] for i in range(len(pairs))]


# ----------------------------------------------------------------------------------------------
# Selection and statistics ("never" counts as +inf).
# ----------------------------------------------------------------------------------------------


def _inf(value: float) -> float:
    return math.inf if math.isnan(value) else value


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile with ``nan`` ("never") ranked last as +inf."""
    ranked = sorted(_inf(v) for v in values)
    return ranked[max(0, math.ceil(q * len(ranked)) - 1)]


def selection_key(iterations: list[float], seconds: list[float] | None = None) -> tuple[int, float, float]:
    """Fewer runs that never reach the threshold first, then the lower median iterations, then seconds."""
    return (sum(math.isnan(v) for v in iterations), quantile(iterations, 0.5),
            quantile(seconds, 0.5) if seconds else 0.0)


def summarise(runs: list[dict]) -> dict:
    """Median and quartiles of iterations and seconds to the threshold over ``runs``, runs that never reach it."""
    its, secs = [r["iterations"] for r in runs], [r["seconds"] for r in runs]
    per_iter = [r["seconds_total"] / r["iterations_run"] for r in runs if r["iterations_run"]]
    return {"runs": len(runs), "never": sum(math.isnan(v) for v in its),
            "iterations": [quantile(its, q) for q in (0.25, 0.5, 0.75)],
            "seconds": [quantile(secs, q) for q in (0.25, 0.5, 0.75)],
            "ms_per_iteration": 1e3 * statistics.median(per_iter) if per_iter else math.nan}


def paired(a: list[dict], b: list[dict], key: str) -> list[int]:
    """Pairs where ``a`` needs less / the same / more ``key`` than ``b`` (never = +inf; never vs never is a tie)."""
    counts = [0, 0, 0]
    for ra, rb in zip(a, b):
        x, y = _inf(ra[key]), _inf(rb[key])
        counts[0 if x < y else 1 if x == y else 2] += 1
    return counts


# ----------------------------------------------------------------------------------------------
# Single runs.
# ----------------------------------------------------------------------------------------------


def _timed(train, threshold: float, pair: tuple[int, int]) -> dict:
    """Run ``train()`` (a toy run that stops at ``threshold``) and record iterations and seconds to it.

    ``seconds`` is the CPU time of the run (one thread), which on a shared machine moves far less with the
    load than wall time; a run that reaches the threshold stops there, so its total is the time to it.
    ``wall_seconds`` is the wall time to the threshold, as the demo reports it.
    """
    cpu_start = time.process_time()
    run = train()
    cpu = time.process_time() - cpu_start
    iterations, wall = first_reach(run, threshold)
    return {"pair": list(pair), "iterations": iterations, "seconds": math.nan if math.isnan(iterations) else cpu,
            "wall_seconds": wall, "iterations_run": len(run["losses"]), "seconds_total": cpu,
            "final_loss": run["losses"][-1], "best_loss": min(run["losses"])}


def gradient_runs(name: str, rates: dict[tuple[int, int], float], cfg: Config, done: dict | None = None) -> list[dict]:
    """One ``torch.optim`` run per pair at ``rates[pair]``; ``done`` caches runs by ``(name, pair, rate)``."""
    done = {} if done is None else done
    for pair, rate in tqdm(rates.items(), desc=f"{name} runs", disable=None, leave=False):
        if (name, pair, rate) not in done:
            train = partial(toy_gradient_run, name, rate, cfg.grad_cap, sin_toy_data(pair[0]), net_seed=pair[1],
                            stop_below=cfg.threshold)
            done[name, pair, rate] = _timed(train, cfg.threshold, pair) | {"lr": rate}
    return [done[name, pair, rate] for pair, rate in rates.items()]


def emsa_runs(setting: tuple[float, int], pairs: list[tuple[int, int]], cfg: Config, cap: int) -> list[dict]:
    """One E-MSA run of at most ``cap`` iterations per pair with ``setting = (rho, lbfgs_iters)``."""
    rho, lbfgs_iters = setting
    out = []
    for pair in tqdm(pairs, desc=f"E-MSA rho={rho:g} lbfgs={lbfgs_iters}", disable=None, leave=False):
        train = partial(toy_msa_run, rho, cap, sin_toy_data(pair[0]), lbfgs_iters=lbfgs_iters,
                        net_seed=pair[1], stop_below=cfg.threshold)
        out.append(_timed(train, cfg.threshold, pair) | {"rho": rho, "lbfgs_iters": lbfgs_iters})
    return out


# ----------------------------------------------------------------------------------------------
# The experiment.
# ----------------------------------------------------------------------------------------------


def tune_baselines(cfg: Config) -> dict:
    """Per optimiser: the grid's iterations on every pair, the rate chosen on the tuning pairs, per-pair oracles."""
    tuned = {}
    for name in OPTIMISERS:
        rates = cfg.learning_rates[name]
        grid = batched_iterations(name, cfg.pairs, rates, cfg.threshold, cfg.grad_cap)
        by_pair = dict(zip(cfg.pairs, grid))
        tuning = {rate: [by_pair[p][i] for p in cfg.tuning_pairs] for i, rate in enumerate(rates)}
        chosen = min(rates, key=lambda rate: selection_key(tuning[rate]))
        oracle = {p: rates[min(range(len(rates)), key=lambda i: _inf(by_pair[p][i]))] for p in cfg.pairs}
        tuned[name] = {"rates": rates, "grid": {f"{p[0]},{p[1]}": its for p, its in by_pair.items()},
                       "chosen": chosen, "oracle": {f"{p[0]},{p[1]}": r for p, r in oracle.items()}}
    return tuned


def _warm_up() -> None:
    """The first step of a torch.optim optimiser or L-BFGS in a process pays one-off imports and
    initialisation (close to a second): pay them before anything is timed."""
    data = sin_toy_data(0)
    for name in OPTIMISERS:
        toy_gradient_run(name, 0.1, 2, data)
    toy_msa_run(1.0, 1, data, lbfgs_iters=1)


def _emsa_methods(cfg: Config, sweep: dict, best: tuple[float, int]) -> dict[str, list[dict]]:
    """The chosen E-MSA setting and the documented one (once if equal) on all pairs, from scratch: the sweep's
    runs stopped at the smaller cap."""
    methods = {}
    for setting in dict.fromkeys([best, DOCUMENTED_EMSA]):
        if setting in sweep:
            label = {(True, True): "tuned = documented", (True, False): "tuned", (False, True): "documented"}[
                setting == best, setting == DOCUMENTED_EMSA]
            methods[f"E-MSA ({label}: rho={setting[0]:g}, lbfgs_iters={setting[1]})"] = emsa_runs(
                setting, cfg.pairs, cfg, cfg.emsa_cap)
    return methods


def run_experiment(cfg: Config) -> dict:
    """Tune on the tuning pairs, run every method on every pair; every run's record and the summaries."""
    start, cpu_start = time.perf_counter(), time.process_time()
    with single_thread():
        _warm_up()
        tuned = tune_baselines(cfg)
        methods: dict[str, list[dict]] = {}
        done: dict = {}
        for name in OPTIMISERS:
            methods[f"{name} (tuned lr={tuned[name]['chosen']:g})"] = gradient_runs(
                name, dict.fromkeys(cfg.pairs, tuned[name]["chosen"]), cfg, done)
            methods[f"{name} (per-pair oracle lr)"] = gradient_runs(
                name, {p: tuned[name]["oracle"][f"{p[0]},{p[1]}"] for p in cfg.pairs}, cfg, done)
        sweep = {setting: emsa_runs(setting, cfg.tuning_pairs, cfg, cfg.emsa_sweep_cap) for setting in cfg.emsa_settings}
        best = min(cfg.emsa_settings, key=lambda s: selection_key([r["iterations"] for r in sweep[s]],
                                                                  [r["seconds"] for r in sweep[s]]))
        methods |= _emsa_methods(cfg, sweep, best)
    return {"config": asdict(cfg) | {"pairs": cfg.pairs, "tuning_pairs": cfg.tuning_pairs},
            "baseline_tuning": tuned, "emsa_sweep": {f"rho={s[0]:g}, lbfgs_iters={s[1]}": sweep[s] for s in sweep},
            "emsa_best": list(best), "methods": methods,
            "summary": {label: summarise(runs) for label, runs in methods.items()},
            "sweep_summary": {f"rho={s[0]:g}, lbfgs_iters={s[1]}": summarise(sweep[s]) for s in sweep},
            "total_seconds": time.perf_counter() - start, "total_cpu_seconds": time.process_time() - cpu_start}


# ----------------------------------------------------------------------------------------------
# Output.
# ----------------------------------------------------------------------------------------------


def _fmt(value: float, seconds: bool = False) -> str:
    if math.isinf(value) or math.isnan(value):
        return "never"
    return f"{value:.2f}" if seconds else f"{value:.0f}"


def _spread(values: list[float], seconds: bool = False) -> str:
    q1, median, q3 = values
    return f"{_fmt(median, seconds)} [{_fmt(q1, seconds)}, {_fmt(q3, seconds)}]"


def markdown(results: dict) -> str:
    cfg = results["config"]
    th = f"{cfg['threshold']:g}"
    lines = [(f"Pairs: {len(cfg['pairs'])} (data seeds {cfg['data_seeds']} x network seeds {cfg['net_seeds']}); "
              f"tuning pairs {cfg['tuning_pairs']}; threshold {th}; caps: E-MSA {cfg['emsa_cap']} "
              f"(sweep {cfg['emsa_sweep_cap']}), "
              f"gradient methods {cfg['grad_cap']} iterations. Median [quartiles] over all pairs, never = +inf."),
             "", f"| method | never reach {th} | iterations to {th} | CPU seconds to {th} | CPU ms / iteration |",
             "|---|---|---|---|---|"]
    for label, s in results["summary"].items():
        lines.append(f"| {label} | {s['never']}/{s['runs']} | {_spread(s['iterations'])} | "
                     f"{_spread(s['seconds'], True)} | {s['ms_per_iteration']:.1f} |")
    emsa = [label for label in results["methods"] if label.startswith("E-MSA")]
    lines += ["", "Paired over the same seed pairs (E-MSA fewer / tie / more than the baseline):", "",
              "| E-MSA setting | baseline | iterations | CPU seconds |", "|---|---|---|---|"]
    for e in emsa:
        for label, runs in results["methods"].items():
            if not label.startswith("E-MSA"):
                its = paired(results["methods"][e], runs, "iterations")
                secs = paired(results["methods"][e], runs, "seconds")
                lines.append(f"| {e} | {label} | {its[0]} / {its[1]} / {its[2]} | {secs[0]} / {secs[1]} / {secs[2]} |")
    lines += ["", f"E-MSA sweep on the tuning pairs (cap {cfg['emsa_sweep_cap']} iterations):", "",
              f"| setting | never reach {th} | iterations | CPU seconds | CPU ms / iteration |", "|---|---|---|---|---|"]
    for label, s in results["sweep_summary"].items():
        lines.append(f"| {label} | {s['never']}/{s['runs']} | {_spread(s['iterations'])} | "
                     f"{_spread(s['seconds'], True)} | {s['ms_per_iteration']:.0f} |")
    lines += ["", "Baseline learning rates (chosen on the tuning pairs; per-pair oracle counts):", ""]
    for name, t in results["baseline_tuning"].items():
        counts = {rate: list(t["oracle"].values()).count(rate) for rate in t["rates"]}
        lines.append(f"- {name}: grid {t['rates']}, chosen {t['chosen']:g}; oracle "
                     + ", ".join(f"{rate:g}: {n}" for rate, n in counts.items() if n))
    lines.append(f"\nTotal: {results['total_seconds']:.0f} s wall, {results['total_cpu_seconds']:.0f} s CPU.")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results["methods"])
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    for ax, key, unit in ((axes[0], "iterations", "iterations"), (axes[1], "seconds", "CPU seconds")):
        finite = [r[key] for runs in results["methods"].values() for r in runs if not math.isnan(r[key])]
        never_at = 2 * max(finite) if finite else 1.0
        for i, label in enumerate(labels):
            runs = results["methods"][label]
            values = [never_at if math.isnan(r[key]) else r[key] for r in runs]
            jitter = [i + 0.25 * ((k * 0.618) % 1 - 0.5) for k in range(len(values))]
            ax.scatter(jitter, values, s=12, alpha=0.6,
                       c=["tab:red" if math.isnan(r[key]) else "tab:blue" for r in runs])
            median = quantile([r[key] for r in runs], 0.5)
            if math.isfinite(median):
                ax.hlines(median, i - 0.35, i + 0.35, colors="k")
        ax.axhline(never_at, color="tab:red", lw=0.5, ls="--")
        ax.set_yscale("log")
        ticks = [label.replace(" (", "\n(").replace(": ", ":\n") for label in labels]
        ax.set_xticks(range(len(labels)), ticks, fontsize=7, rotation=30, ha="right")
        ax.set_ylabel(f"{unit} to loss < {results['config']['threshold']:g}")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.suptitle(f"sin(x) toy over {len(results['config']['pairs'])} (data, network) seed pairs: E-MSA vs tuned "
                 "SGD / Adagrad / Adam\nblack: median; red: never reached (drawn at the dashed line)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _json_safe(value):
    """``nan``/``inf`` ("never") as ``null``, tuples as lists: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _from_json(value):
    """Inverse of :func:`_json_safe` for the values the tables use: ``null`` back to ``nan``."""
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return math.nan if value is None else value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke configuration (seconds)")
    parser.add_argument("--out", default="bench/results/emsa_seeds", help="output folder")
    parser.add_argument("--from-json", help="redraw the table and chart of an earlier run's emsa_seeds.json")
    args = parser.parse_args(argv)
    if args.from_json:
        results = _from_json(json.loads(Path(args.from_json).read_text()))
    else:
        results = run_experiment(QUICK if args.quick else Config())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "emsa_seeds.json").write_text(json.dumps(_json_safe(results), indent=1))
    table = markdown(results)
    (out / "emsa_seeds.md").write_text(table)
    plot(results, out / "emsa_seeds.png")
    print(table)
    return results


if __name__ == "__main__":
    main()
