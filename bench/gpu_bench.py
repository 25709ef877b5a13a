"""GPU benchmark of pyode's CUDA kernels and adaptive loop (run by ``bench/gpu_check.sh`` on a GPU machine).

Two figures, both on the large-state problem P3 (``bench.problems.DiffusionDecay``, N = 1e8 float32 by
default):

1. **Kernel bandwidth.** Each fused kernel of one dopri5 step (6 stage combinations and the FSAL error
   norm) is timed with CUDA events; bytes moved / time is compared with a device-to-device copy of N
   elements measured in the same process (the achievable streaming bandwidth). Only terms with a non-zero
   weight are counted: those are all the kernel reads.
2. **Loop time per step.** pyode, torchdiffeq and torchode (each if installed) solve P3 with dopri5 at
   rtol = atol = 1e-5, interleaved; the solve's wall time (synchronised) minus ``nfe`` times the
   separately measured time of one ``f`` call, divided by the attempted steps, is the solver's own cost
   per step outside ``f`` (Python bookkeeping, kernels, host synchronisations).

Usage::

    python bench/gpu_bench.py [--n 1e8] [--reps 3] [--json results.json]
    python bench/gpu_bench.py --device cpu --n 1e5 --reps 1    # smoke test of the script without a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable without shadowing an installed pyode
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch

from bench.peers import NotAvailable, make_peers
from bench.problems import Case, DiffusionDecay

RTOL = ATOL = 1e-5


def device_time(fn, reps: int, device: torch.device, warmup: int = 2) -> float:
    """Median seconds of ``fn()``: CUDA events on the current stream for a GPU, a wall clock otherwise."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type != "cuda":
            start_s = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start_s)
            continue
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return statistics.median(times)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(n: int, dtype: torch.dtype, device: torch.device) -> float:
    """Bytes/s of a device-to-device copy of ``n`` elements (read + write counted)."""
    src = torch.rand(n, dtype=dtype, device=device)
    dst = torch.empty_like(src)
    seconds = device_time(lambda: dst.copy_(src), reps=20, device=device)
    return 2 * n * src.element_size() / seconds


def kernel_bandwidths(n: int, dtype: torch.dtype, device: torch.device, copy_bw: float) -> list[dict]:
    """Bandwidth of each fused kernel of one dopri5 step at state size ``n``, as a fraction of ``copy_bw``.

    Returns one row per kernel plus a "whole step" row (total bytes / total time)."""
    from pyode._kernels import get_backend
    from pyode._solvers.tableaux import TABLEAUX

    kern = get_backend(device)
    tab, h, size = TABLEAUX["dopri5"], 1e-2, torch.tensor([], dtype=dtype).element_size()
    gen = torch.Generator(device=device).manual_seed(0)
    y0 = torch.rand(n, dtype=dtype, device=device, generator=gen)
    ks = [torch.rand(n, dtype=dtype, device=device, generator=gen) for _ in range(tab.num_stages)]
    rows = []
    for i in range(1, tab.num_stages):
        w = [h * a for a in tab.a[i]]
        live = sum(1 for x in w if x != 0.0)
        seconds = device_time(lambda w=w, i=i: kern.lincomb(y0, ks[:i], [w]), reps=10, device=device)
        rows.append({"kernel": f"stage {i} lincomb", "bytes": (2 + live) * n * size, "seconds": seconds})
    y1 = kern.lincomb(y0, ks, [[h * b for b in tab.b]])[0]
    e = [h * x for x in tab.b_err]
    finish_bytes = (2 + sum(1 for x in e if x != 0.0)) * n * size
    if kern.async_finish:
        seconds = device_time(lambda: kern.rk_finish_device(y0, y1, ks, None, e, ATOL, RTOL, None), reps=10,
                              device=device)
        rows.append({"kernel": "rk_finish (FSAL error norm, no sync)", "bytes": finish_bytes, "seconds": seconds})
    synced = device_time(lambda: kern.rk_finish(y0, y1, ks, None, e, ATOL, RTOL, None), reps=10, device=device)
    rows.append({"kernel": "rk_finish + norm to host (sync)", "bytes": finish_bytes, "seconds": synced})
    step = rows[:-1] if kern.async_finish else rows  # the no-sync finish, if there is one
    rows.append({"kernel": "whole dopri5 step (kernels only)", "bytes": sum(r["bytes"] for r in step),
                 "seconds": sum(r["seconds"] for r in step)})
    for r in rows:
        r["GB/s"] = r["bytes"] / r["seconds"] / 1e9
        r["fraction_of_copy"] = r["bytes"] / r["seconds"] / copy_bw
    return rows


def make_case(n: int, dtype: torch.dtype, device: torch.device) -> Case:
    y0 = torch.randn(n, generator=torch.Generator(device=device).manual_seed(3), device=device).to(dtype)
    t = torch.tensor([0.0, 1.0], dtype=dtype, device=device)
    return Case("P3", f"N={n:.0e}", DiffusionDecay(), y0, t, rtol=RTOL, atol=ATOL, modes=("forward",))


def exact_final_state(case: Case) -> torch.Tensor:
    """P3's exact y(t_end) through the FFT (circulant operator), in float64 on the state's device."""
    func, n = case.func, case.y0.numel()
    freq = torch.arange(n, dtype=torch.float64, device=case.y0.device)
    rate = func.c * (2 * torch.cos(2 * math.pi * freq / n) - 2) - func.decay
    spectrum = torch.fft.fft(case.y0.double()) * torch.exp(rate * float(case.t[-1]))
    return torch.fft.ifft(spectrum).real


def loop_times(case: Case, libraries: list[str], reps: int) -> list[dict]:
    """Per library: medians over ``reps`` interleaved solves of wall time, steps, nfe, loop time per step."""
    device = case.y0.device
    f_seconds = device_time(lambda: case.func(case.t[0], case.y0), reps=10, device=device)
    peers, walls, last = [], {}, {}
    for peer in make_peers(libraries):
        try:
            peer.solve(case, "dopri5", RTOL, ATOL, "forward")  # warm-up (and availability check)
            peers.append(peer)
            walls[peer.name] = []
        except (NotAvailable, ImportError) as exc:
            print(f"  {peer.name}: skipped ({exc})")
    for rep in range(reps):  # interleaved, each round starting at another library: drift hits all alike
        first = rep % max(len(peers), 1)
        for peer in peers[first:] + peers[:first]:
            last.pop(peer.name, None)  # free the previous solution before the next solve
            synchronize(device)
            start = time.perf_counter()
            result = peer.solve(case, "dopri5", RTOL, ATOL, "forward")
            synchronize(device)
            walls[peer.name].append(time.perf_counter() - start)
            last[peer.name] = result
    exact = exact_final_state(case)
    rows = []
    for name, result in last.items():
        wall = statistics.median(walls[name])
        steps = int(result.steps_fwd.iterations or 0)
        loop = (wall - result.nfe_fwd * f_seconds) / max(steps, 1)
        error = float((result.ys[-1].double() - exact).abs().max())
        rows.append({"library": name, "wall_s": wall, "steps": steps, "nfe": result.nfe_fwd,
                     "f_call_ms": f_seconds * 1e3, "loop_ms_per_step": loop * 1e3, "max_abs_error": error})
    return rows


def print_table(rows: list[dict], keys: list[str]) -> None:
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=float, default=1e8, help="state size of P3 (default 1e8)")
    parser.add_argument("--reps", type=int, default=3, help="timed solves per library (default 3)")
    parser.add_argument("--libraries", default="pyode,torchdiffeq,torchode")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a smoke test")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing to benchmark")
        return 1
    import pyode

    n, dtype = int(args.n), torch.float32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    info = {"device": name, "torch": torch.__version__, "pyode": pyode.backend_info(), "n": n}
    print(json.dumps(info, indent=1, default=str))
    copy_bw = copy_bandwidth(n, dtype, device)
    print(f"\ndevice-to-device copy of {n:.0e} float32: {copy_bw / 1e9:.0f} GB/s (read + write)\n")
    kernels = kernel_bandwidths(n, dtype, device, copy_bw)
    print_table(kernels, ["kernel", "GB/s", "fraction_of_copy", "seconds"])
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(f"\nP3 N={n:.0e} float32, dopri5, rtol=atol={RTOL:g}: loop time per step outside f")
    loops = loop_times(make_case(n, dtype, device), args.libraries.split(","), args.reps)
    print_table(loops, ["library", "wall_s", "steps", "nfe", "f_call_ms", "loop_ms_per_step", "max_abs_error"])
    by_name = {r["library"]: r for r in loops}
    if "pyode" in by_name:
        for peer in ("torchdiffeq", "torchode"):
            if peer in by_name:
                ratio = by_name[peer]["loop_ms_per_step"] / by_name["pyode"]["loop_ms_per_step"]
                print(f"pyode loop time per step is {ratio:.2f}x faster than {peer}'s")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "copy_GBps": copy_bw / 1e9, "kernels": kernels,
                                         "loops": loops}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
