"""The four gradient modes measured: peak memory of a forward+backward pass and the gradient's error.

A small MLP neural ODE ``dy/dt = W2 tanh(W1 y + b1) + b2`` (2 -> 64 -> 2, float64, a batch of 256 states),
loss ``sum(y(T)**2)``, gradients with respect to the parameters and ``y0``:

- **memory**: the horizon ``T`` grows (so does the number of steps); the peak of the heap bytes in use
  (glibc ``mallinfo2``: every arena plus mmapped chunks, which is where torch's CPU tensors live) above the
  level before the solve, sampled at every ``func`` call, every tensor autograd saves (pack) and every saved
  tensor read back in the backward pass (unpack), so the peak of both passes is seen. Deterministic for a given
  build (no timing involved); a first run of each mode is discarded (one-off allocations).
- **accuracy**: ``T`` fixed, tolerances (dopri5 modes) or step sizes (ALF) swept; relative error of the whole
  gradient vector against dopri8 backprop at rtol 1e-12 / atol 1e-14 (the exact gradient of the ODE to ~1e-10,
  far below every error plotted).

Usage: ``python bench/gradient_modes.py [--quick] [--out bench/results] [--docs docs/figures]``; writes
``<out>/gradient_modes.json``, ``<docs>/gradient_modes.png`` and ``<docs>/gradient_modes.md`` (the tables).
About 30 s on one busy core.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import pyode

MODES = ("backprop", "checkpoint", "adjoint", "reversible")
ALF_STEP = 0.05              # ALF step of the memory sweep
MEMORY_RTOL = 1e-6           # dopri5 tolerance of the memory sweep (atol = rtol / 100)
ACCURACY_T = 4.0
COLORS = {"backprop": "C0", "checkpoint": "C1", "adjoint": "C2", "reversible": "C3"}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ["arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"]]


def _heap_in_use():
    """Bytes malloc has handed out and not got back (all arenas + mmapped chunks), or None off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None

    def in_use() -> int:
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd

    return in_use


class PeakMeter:
    """The peak of ``in_use() - baseline`` over the samples taken."""

    def __init__(self, in_use):
        self.in_use, self.baseline, self.peak = in_use, in_use(), 0

    def sample(self, *_):
        self.peak = max(self.peak, self.in_use() - self.baseline)


class Field(nn.Module):
    """``f(t, y) = W2 tanh(W1 y + b1) + b2``: y (batch, 2) -> (batch, 2); samples the meter on every call."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        self.meter = None

    def forward(self, t, y):
        if self.meter is not None:
            self.meter.sample()
        return self.net(y)


def _solve_kwargs(mode: str, rtol: float, alf_step: float) -> dict:
    if mode == "reversible":
        return {"method": "alf", "options": {"step_size": alf_step}}
    return {"method": "dopri5", "rtol": rtol, "atol": rtol * 1e-2}


def gradient(field: Field, y0, t_end: float, mode: str, meter=None, **kwargs):
    """One forward+backward pass; returns (flat gradient over params and y0, solver stats)."""
    y0 = y0.detach().requires_grad_(True)
    params = list(field.parameters())
    t = torch.tensor([0.0, t_end], dtype=y0.dtype)
    field.meter = meter
    sample = meter.sample if meter is not None else (lambda *_: None)

    def keep(x):
        sample()
        return x

    with torch.autograd.graph.saved_tensors_hooks(keep, keep):
        sol = pyode.solve(field, y0, t, gradient=mode, **kwargs)
        loss = sol.ys[-1].pow(2).sum()
        sample()
        grads = torch.autograd.grad(loss, params + [y0])
    sample()
    field.meter = None
    return torch.cat([g.reshape(-1) for g in grads]), sol.stats


def _steps(stats) -> int:
    return int(stats.n_accepted + stats.n_rejected)


def memory_sweep(field, y0, horizons, in_use) -> list[dict]:
    rows = []
    for mode in MODES:
        gradient(field, y0, horizons[0], mode, PeakMeter(in_use), **_solve_kwargs(mode, MEMORY_RTOL, ALF_STEP))
        for t_end in horizons:
            pyode.empty_cache()
            meter = PeakMeter(in_use)
            _, stats = gradient(field, y0, t_end, mode, meter, **_solve_kwargs(mode, MEMORY_RTOL, ALF_STEP))
            rows.append({"mode": mode, "T": t_end, "steps": _steps(stats), "nfe": int(stats.nfe),
                         "nfe_backward": int(stats.nfe_backward or 0), "peak_mb": meter.peak / 1e6})
    return rows


def accuracy_sweep(field, y0, rtols, alf_steps) -> list[dict]:
    g_ref, _ = gradient(field, y0, ACCURACY_T, "backprop", method="dopri8", rtol=1e-12, atol=1e-14)
    rows = []
    for mode in MODES:
        settings = alf_steps if mode == "reversible" else rtols
        for setting in settings:
            g, stats = gradient(field, y0, ACCURACY_T, mode, **_solve_kwargs(mode, setting, setting))
            err = float((g - g_ref).norm() / g_ref.norm())
            rows.append({"mode": mode, "setting": setting, "steps": _steps(stats), "nfe": int(stats.nfe),
                         "nfe_backward": int(stats.nfe_backward or 0), "rel_error": err})
    return rows


def plot(memory: list[dict], accuracy: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_m, ax_a) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode in MODES:
        mem = [r for r in memory if r["mode"] == mode]
        ax_m.loglog([r["steps"] for r in mem], [max(r["peak_mb"], 1e-3) for r in mem], "o-", color=COLORS[mode],
                    label=mode)
        acc = [r for r in accuracy if r["mode"] == mode]
        ax_a.loglog([r["nfe"] + r["nfe_backward"] for r in acc], [max(r["rel_error"], 1e-16) for r in acc], "o-",
                    color=COLORS[mode], label=mode + (" (ALF, step size)" if mode == "reversible" else " (dopri5, rtol)"))
    ax_m.set(xlabel="forward steps (horizon T grows)", ylabel="peak heap in use during fwd+bwd (MB)",
             title=f"memory (dopri5 rtol {MEMORY_RTOL:g}; ALF step {ALF_STEP:g})")
    ax_a.set(xlabel="function evaluations, forward + backward", ylabel="relative gradient error",
             title=f"accuracy vs cost (T = {ACCURACY_T:g}, reference dopri8 rtol 1e-12)")
    for ax in (ax_m, ax_a):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("pyode gradient modes: MLP neural ODE 2-64-2, batch 256, float64")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(memory: list[dict], accuracy: list[dict]) -> str:
    lines = ["| mode | T | forward steps | NFE fwd / bwd | peak MB |", "|---|---|---|---|---|"]
    lines += [f"| `{r['mode']}` | {r['T']:g} | {r['steps']} | {r['nfe']} / {r['nfe_backward']} | {r['peak_mb']:.2f} |"
              for r in memory]
    lines += ["", "| mode | rtol (dopri5) or step size (ALF) | forward steps | NFE fwd / bwd | relative gradient error |",
              "|---|---|---|---|---|"]
    lines += [f"| `{r['mode']}` | {r['setting']:g} | {r['steps']} | {r['nfe']} / {r['nfe_backward']} | "
              f"{r['rel_error']:.2e} |" for r in accuracy]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two points per sweep (seconds)")
    parser.add_argument("--out", default="bench/results", help="folder for gradient_modes.json")
    parser.add_argument("--docs", default="docs/figures", help="folder for gradient_modes.png and .md")
    args = parser.parse_args(argv)
    in_use = _heap_in_use()
    if in_use is None:
        raise SystemExit("gradient_modes.py measures memory with glibc's mallinfo2 (Linux, glibc >= 2.33)")
    torch.set_num_threads(1)  # a fixed thread count: per-thread arenas and OpenMP buffers do not vary the peak
    torch.manual_seed(0)
    field = Field().double()
    y0 = torch.randn(256, 2, dtype=torch.float64)
    horizons = [1.0, 8.0] if args.quick else [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    rtols = [1e-3, 1e-6] if args.quick else [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
    alf_steps = [0.2, 0.05] if args.quick else [0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625]
    start = time.perf_counter()
    memory = memory_sweep(field, y0, horizons, in_use)
    accuracy = accuracy_sweep(field, y0, rtols, alf_steps)
    result = {"memory": memory, "accuracy": accuracy, "seconds": time.perf_counter() - start,
              "torch": torch.__version__, "backend": pyode.backend_info().get("cpu_backend")}
    out, docs = Path(args.out), Path(args.docs)
    out.mkdir(parents=True, exist_ok=True)
    docs.mkdir(parents=True, exist_ok=True)
    (out / "gradient_modes.json").write_text(json.dumps(result, indent=1))
    plot(memory, accuracy, docs / "gradient_modes.png")
    (docs / "gradient_modes.md").write_text(markdown(memory, accuracy))
    print(markdown(memory, accuracy))
    print(f"{result['seconds']:.1f} s; wrote {out / 'gradient_modes.json'}, {docs / 'gradient_modes.png'}")
    return result


if __name__ == "__main__":
    main()
