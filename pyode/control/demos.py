"""Demos: E-MSA on the sin(x) toy (Li, Chen, Tai & E, JMLR 2018) and YOPO-m-n vs PGD-k adversarial
training on scikit-learn's 8x8 digits (Zhang et al., NeurIPS 2019).

Both print a table, write a PNG into ``out_dir``, show tqdm progress bars and return their numbers.
``quick=True`` runs a seconds-long smoke version with the same code paths.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .msa import MSATrainer
from .pmp import ResidualNet
from .yopo import PGDTrainer, YOPOTrainer, robust_accuracy


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread, restoring the previous setting afterwards.

    The demo networks are tiny: with several threads, synchronisation costs more than it saves, and on
    a shared machine the timings become noise.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _savefig(fig, out_dir: str, name: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))


# ----------------------------------------------------------------------------------------------
# sin(x) toy: 20 residual tanh layers of width 5, 100 train / 100 test points on [-pi, pi].
# ----------------------------------------------------------------------------------------------

TOY_WIDTH, TOY_DEPTH, TOY_STEP = 5, 20, 0.5


def sin_toy_data(seed: int = 0, n_train: int = 100, n_test: int = 100) -> tuple[Tensor, ...]:
    """``(x_train, y_train, x_test, y_test)``: ``x ~ U[-π, π]`` of shape ``(n,)``, ``y = sin x``, float64."""
    generator = torch.Generator().manual_seed(seed)
    x = (2 * torch.rand(n_train + n_test, generator=generator, dtype=torch.float64) - 1) * math.pi
    return x[:n_train], torch.sin(x[:n_train]), x[n_train:], torch.sin(x[n_train:])


def sin_toy_network(seed: int = 1) -> ResidualNet:
    """``x_{t+1} = x_t + h tanh(W_t x_t + b_t)``, 20 layers, width 5, h = 0.5, float64."""
    torch.manual_seed(seed)
    layers = [nn.Sequential(nn.Linear(TOY_WIDTH, TOY_WIDTH), nn.Tanh()) for _ in range(TOY_DEPTH)]
    return ResidualNet(layers, step_size=TOY_STEP).double()


def sin_toy_embed(x: Tensor) -> Tensor:
    """Fixed input embedding: the scalar input copied to every channel, ``(n,) -> (n, 5)``."""
    return x[:, None].expand(-1, TOY_WIDTH).contiguous()


def sin_toy_loss(x_final: Tensor, y: Tensor) -> Tensor:
    """Φ(x_T, y) = ½ (mean_channels x_T − y)², per sample ``(n,)`` (fixed mean read-out)."""
    return 0.5 * (x_final.mean(dim=1) - y) ** 2


def _toy_test_loss(net: ResidualNet, data: tuple[Tensor, ...]) -> float:
    with torch.no_grad():
        return sin_toy_loss(net(sin_toy_embed(data[2])), data[3]).mean().item()


def toy_gradient_run(name: str, lr: float, iterations: int, data: tuple[Tensor, ...], *, net_seed: int = 1,
                     stop_below: float | None = None, progress: bool = False) -> dict:
    """Full-batch training of :func:`sin_toy_network` (``net_seed``) with ``torch.optim.<name>``.

    Returns ``{"method", "setting", "losses", "times", "test_loss"}``: the training loss at the start of every
    iteration and the elapsed seconds at its end. Stops after ``iterations``, at a non-finite loss, or once a
    loss falls below ``stop_below``.
    """
    net = sin_toy_network(net_seed)
    optimizer = getattr(torch.optim, name)(net.parameters(), lr=lr)
    x0, y = sin_toy_embed(data[0]), data[1]
    losses, times, start = [], [], time.perf_counter()
    for _ in tqdm(range(iterations), desc=f"{name} lr={lr:g}", disable=None if progress else True,
                  leave=False):
        optimizer.zero_grad()
        loss = sin_toy_loss(net(x0), y).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        times.append(time.perf_counter() - start)
        if not math.isfinite(losses[-1]) or (stop_below is not None and losses[-1] < stop_below):
            break
    return {"method": name, "setting": f"lr={lr:g}", "losses": losses, "times": times,
            "test_loss": _toy_test_loss(net, data)}


def toy_msa_run(rho: float, iterations: int, data: tuple[Tensor, ...], *, lbfgs_iters: int = 10,
                net_seed: int = 1, stop_below: float | None = None, progress: bool = True) -> dict:
    """(E-)MSA on the toy (:func:`sin_toy_network` with ``net_seed``); returns what
    :func:`toy_gradient_run` returns, the losses taken before each update."""
    net = sin_toy_network(net_seed)
    trainer = MSATrainer(net, sin_toy_loss, rho=rho, lbfgs_iters=lbfgs_iters)
    x0, y = sin_toy_embed(data[0]), data[1]
    name = "E-MSA" if rho > 0 else "MSA"
    losses, times, start = [], [], time.perf_counter()
    for _ in tqdm(range(iterations), desc=f"{name} rho={rho:g}", disable=None if progress else True, leave=False):
        losses.append(trainer.step(x0, y))
        times.append(time.perf_counter() - start)
        if not math.isfinite(losses[-1]) or (stop_below is not None and losses[-1] < stop_below):
            break
    return {"method": name, "setting": f"rho={rho:g}, lbfgs_iters={lbfgs_iters}", "losses": losses,
            "times": times, "test_loss": _toy_test_loss(net, data)}


TOY_LEARNING_RATES = {
    "SGD": [0.03, 0.1, 0.3, 1.0, 3.0],
    "Adagrad": [0.03, 0.1, 0.3, 1.0, 3.0],
    "Adam": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
}


def tune_learning_rate(name: str, rates: list[float], iterations: int, data: tuple[Tensor, ...]) -> float:
    """The rate with the lowest mean training loss over the last 10% of a short run."""
    def score(lr: float) -> float:
        losses = toy_gradient_run(name, lr, iterations, data)["losses"]
        if len(losses) < iterations:  # diverged (non-finite loss)
            return math.inf
        tail = losses[-max(1, iterations // 10):]
        return sum(tail) / len(tail)
    return min(rates, key=score)


def first_reach(run: dict, threshold: float) -> tuple[float, float]:
    """(iteration, seconds) at which the training loss first drops below ``threshold`` (nan: never)."""
    for i, loss in enumerate(run["losses"]):
        if loss < threshold:
            return i + 1, run["times"][i]
    return math.nan, math.nan


def _loss_at(run: dict, iteration: int) -> str:
    return f"{run['losses'][iteration - 1]:.2e}" if len(run["losses"]) >= iteration else "-"


def _msa_table(runs: list[dict], thresholds: tuple[float, ...], at_iterations: tuple[int, ...]) -> list[list[str]]:
    rows = []
    for run in runs:
        reach = [first_reach(run, th) for th in thresholds]
        per_iter = run["times"][-1] / len(run["times"])
        rows.append([run["method"], run["setting"], str(len(run["losses"]))]
                    + [_loss_at(run, it) for it in at_iterations]
                    + [f"{run['losses'][-1]:.2e}", f"{run['test_loss']:.2e}", f"{1e3 * per_iter:.2f}"]
                    + ["never" if math.isnan(it) else f"{it:.0f} / {sec:.2f}s" for it, sec in reach])
    return rows


def _plot_msa(runs: list[dict], out_dir: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_iter, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        label = f"{run['method']} ({run['setting']})"
        ax_iter.plot(range(1, len(run["losses"]) + 1), run["losses"], label=label)
        ax_time.plot(run["times"], run["losses"], label=label)
    for ax, xlabel in ((ax_iter, "iteration"), (ax_time, "wall time [s]")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss")
        ax.grid(True, which="both", alpha=0.3)
    ax_iter.legend(fontsize=8)
    fig.suptitle("sin(x) toy: 20 residual tanh layers, width 5 (Li, Chen, Tai & E 2018)")
    path = _savefig(fig, out_dir, "msa_sin_toy.png")
    plt.close(fig)
    return path


def run_msa_demo(out_dir: str = ".", quick: bool = False, rhos: tuple[float, ...] = (1.0,), *,
                 progress: bool = True) -> dict:
    """E-MSA (one run per ρ in ``rhos``) vs basic MSA vs SGD / Adagrad / Adam (tuned rates) on the sin(x) toy.

    Returns ``{"runs": [...], "table": rows, "headers": [...], "figure": png path, "tuned_rates": {...}}``;
    every run holds ``losses`` and ``times`` per iteration and the final ``test_loss``. Progress bars show on a
    terminal only, and not at all with ``progress=False``.

    Args:
        out_dir (str): folder for the figure (default ``"."``).
        quick (bool): 2 MSA and 40 gradient iterations, learning rates tuned over two candidates for 20
            iterations (default False: 60 and 2000 iterations, the full grid for 300).
        rhos (tuple[float, ...]): the E-MSA penalties, each > 0 (default ``(1.0,)``); basic MSA (ρ = 0)
            always runs.
        progress (bool): progress bars (default True: shown on a terminal only).

    Returns:
        dict: ``runs``, ``table``, ``headers``, ``figure``, ``tuned_rates``.

    Raises:
        ValueError: an empty ``rhos`` or a ρ <= 0.

    Examples:
        Trains several networks and writes a figure, hence the skip:

        >>> from pyode.control import run_msa_demo
        >>> results = run_msa_demo("/tmp/msa_demo", quick=True, progress=False)  # doctest: +SKIP
    """
    if not rhos or any(rho <= 0 for rho in rhos):
        raise ValueError(f"rhos are the E-MSA penalties and must be > 0 (basic MSA always runs), got {rhos}")
    msa_iterations, grad_iterations, tune_iterations = (2, 40, 20) if quick else (60, 2000, 300)
    rates = {k: v[1:4:2] for k, v in TOY_LEARNING_RATES.items()} if quick else TOY_LEARNING_RATES
    data = sin_toy_data()
    with single_thread():
        tuned = {name: tune_learning_rate(name, grid, tune_iterations, data)
                 for name, grid in tqdm(rates.items(), desc="tuning learning rates",
                                        disable=None if progress else True)}
        runs = [toy_msa_run(rho, msa_iterations, data, progress=progress) for rho in (*rhos, 0.0)]
        runs += [toy_gradient_run(name, lr, grad_iterations, data, progress=progress)
                 for name, lr in tuned.items()]
    thresholds, at_iterations = (1e-2, 1e-3), tuple(sorted({1, 10, msa_iterations}))
    headers = (["method", "setting", "iters"] + [f"loss@it{it}" for it in at_iterations]
               + ["final loss", "test loss", "ms/iter"] + [f"iters / time to loss<{th:g}" for th in thresholds])
    table = _msa_table(runs, thresholds, at_iterations)
    _print_table(headers, table)
    return {"runs": runs, "headers": headers, "table": table, "figure": _plot_msa(runs, out_dir),
            "tuned_rates": tuned}


# ----------------------------------------------------------------------------------------------
# YOPO-m-n vs PGD-k on scikit-learn's 8x8 digits.
# ----------------------------------------------------------------------------------------------


def digits_data(seed: int = 0) -> tuple[Tensor, ...]:
    """``(x_train, y_train, x_test, y_test)``: digits in [0, 1] as ``(n, 1, 8, 8)``, 75/25 stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.long)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    return x_train, y_train, x_test, y_test


def digits_model(seed: int, width: int = 256) -> nn.Sequential:
    """MLP whose first child (flatten, linear, ReLU) is YOPO's layer one f_0."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU()),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 10))


def _epoch_batches(x: Tensor, y: Tensor, epoch: int, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(epoch))
    return [(x[order[i:i + batch_size]], y[order[i:i + batch_size]]) for i in range(0, x.shape[0], batch_size)]


TrainerFactory = Callable[[nn.Sequential, torch.optim.Optimizer, float, torch.Generator], object]

YOPO_DEMO_METHODS: dict[str, TrainerFactory] = {
    "PGD-10": lambda model, opt, eps, gen: PGDTrainer(model, opt, eps, steps=10, generator=gen),
    "YOPO-3-5": lambda model, opt, eps, gen: YOPOTrainer(model, opt, eps, m=3, n=5, generator=gen),
    "YOPO-5-3": lambda model, opt, eps, gen: YOPOTrainer(model, opt, eps, m=5, n=3, generator=gen),
    "PGD-2": lambda model, opt, eps, gen: PGDTrainer(model, opt, eps, steps=2, generator=gen),
}


def train_adversarially(method: str, seed: int, eps: float, epochs: int, data: tuple[Tensor, ...],
                        batch_size: int = 64, lr: float = 1e-3, progress: bool = True) -> dict:
    """Train a fresh :func:`digits_model` with one of :data:`YOPO_DEMO_METHODS`; evaluate clean/PGD-20."""
    model = digits_model(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    trainer = YOPO_DEMO_METHODS[method](model, optimizer, eps, torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    for epoch in tqdm(range(epochs), desc=f"{method} seed={seed}", disable=None if progress else True, leave=False):
        trainer.train_epoch(_epoch_batches(data[0], data[1], epoch, batch_size))
    wall = time.perf_counter() - start
    clean, robust = robust_accuracy(model, data[2], data[3], eps, steps=20,
                                    generator=torch.Generator().manual_seed(1000 + seed))
    return {"method": method, "seed": seed, "clean": clean, "robust": robust, "wall_s": wall,
            "full_passes": trainer.full_passes, "first_layer_passes": trainer.first_layer_passes}


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1))


def _summarise(runs: list[dict], methods: list[str]) -> list[dict]:
    summary = []
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        clean, robust, wall = (_mean_std([r[k] for r in mine]) for k in ("clean", "robust", "wall_s"))
        summary.append({"method": method, "clean": clean, "robust": robust, "wall_s": wall,
                        "full_passes": mine[0]["full_passes"], "first_layer_passes": mine[0]["first_layer_passes"]})
    return summary


def _yopo_target(summary: list[dict], reference: str = "PGD-10") -> dict:
    """Per YOPO variant: robust-accuracy gap to the reference (points) and its share of full passes."""
    ref = next(s for s in summary if s["method"] == reference)
    result = {}
    for s in summary:
        if s["method"].startswith("YOPO"):
            gap = 100 * (ref["robust"][0] - s["robust"][0])
            ratio = s["full_passes"] / ref["full_passes"]
            result[s["method"]] = {"gap_points": gap, "pass_ratio": ratio, "met": gap <= 3 and ratio <= 1 / 3}
    return result


def _plot_yopo(summary: list[dict], eps: float, out_dir: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_pass, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    for s in summary:
        for ax, cost in ((ax_pass, s["full_passes"]), (ax_time, s["wall_s"][0])):
            ax.errorbar(cost, 100 * s["robust"][0], yerr=100 * s["robust"][1], fmt="o", capsize=3)
            ax.annotate(s["method"], (cost, 100 * s["robust"][0]), textcoords="offset points", xytext=(5, 5))
    ax_pass.set_xlabel("full forward/backward passes (training)")
    ax_time.set_xlabel("training wall time [s]")
    for ax in (ax_pass, ax_time):
        ax.set_ylabel(f"PGD-20 robust accuracy [%] (eps={eps:g})")
        ax.grid(True, alpha=0.3)
    fig.suptitle("YOPO-m-n vs PGD-k adversarial training on sklearn digits (Zhang et al. 2019)")
    path = _savefig(fig, out_dir, "yopo_digits.png")
    plt.close(fig)
    return path


def run_yopo_demo(out_dir: str = ".", quick: bool = False, eps: float = 0.1, *, progress: bool = True) -> dict:
    """YOPO-3-5 / YOPO-5-3 vs PGD-10 (and the equal-cost PGD-2) on digits; clean and PGD-20 accuracy.

    Returns ``{"runs", "summary", "target", "table", "headers", "figure"}``; ``target`` says per YOPO
    variant whether robust accuracy is within 3 points of PGD-10 with <= 1/3 of its full passes.

    Args:
        out_dir (str): folder for the figure (default ``"."``).
        quick (bool): one epoch, one seed, 256 training and 128 test images (default False: 20 epochs,
            3 seeds, all of scikit-learn's digits).
        eps (float): L∞ radius of training and evaluation (default 0.1).
        progress (bool): progress bars (default True: shown on a terminal only).

    Returns:
        dict: ``runs``, ``summary``, ``target``, ``table``, ``headers``, ``figure``.

    Examples:
        Trains several classifiers (needs scikit-learn) and writes a figure, hence the skip:

        >>> from pyode.control import run_yopo_demo
        >>> results = run_yopo_demo("/tmp/yopo_demo", quick=True, progress=False)  # doctest: +SKIP
    """
    epochs, seeds = (1, [0]) if quick else (20, [0, 1, 2])
    data = digits_data()
    if quick:
        data = (data[0][:256], data[1][:256], data[2][:128], data[3][:128])
    methods = list(YOPO_DEMO_METHODS)
    with single_thread():
        runs = [train_adversarially(method, seed, eps, epochs, data, progress=progress)
                for method in tqdm(methods, desc="methods", disable=None if progress else True) for seed in seeds]
    summary = _summarise(runs, methods)
    headers = ["method", "clean acc %", "PGD-20 acc %", "full passes", "first-layer passes", "wall s"]
    table = [[s["method"], f"{100 * s['clean'][0]:.1f} ± {100 * s['clean'][1]:.1f}",
              f"{100 * s['robust'][0]:.1f} ± {100 * s['robust'][1]:.1f}", str(s["full_passes"]),
              str(s["first_layer_passes"]), f"{s['wall_s'][0]:.1f}"] for s in summary]
    _print_table(headers, table)
    target = _yopo_target(summary)
    for method, t in target.items():
        print(f"{method}: robust gap to PGD-10 {t['gap_points']:+.1f} points, {t['pass_ratio']:.2f}x its "
              f"full passes -> target {'met' if t['met'] else 'NOT met'}")
    return {"runs": runs, "summary": summary, "target": target, "headers": headers, "table": table,
            "figure": _plot_yopo(summary, eps, out_dir)}
