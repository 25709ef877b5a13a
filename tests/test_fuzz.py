"""A seeded, bounded fuzzer: random solves and kernel calls, each run on the compiled and on the reference backend
in child processes, compared case by case.

Cases (:func:`make_case`, deterministic in ``(seed, index)``) draw dtypes, shapes (zero sizes included), layouts
(non-contiguous, expanded, tuple states), time grids, methods, options (valid, extreme and invalid), gradient
modes and misbehaving ``func``s (raising, NaN, overflow, wrong shape/dtype/type, aliasing its input), plus direct
kernel calls. A case passes when both backends
- return outputs that agree (within the tolerance of :func:`_tolerance`), or
- raise the same exception type, and that type is one pyode means to raise (ValueError, TypeError,
  pyode.ODESolverError, or the func's own :class:`FuzzFuncError` passed through),
and neither crashes nor hangs (a per-case alarm in the child, and a progress watchdog in the parent that kills a
child stuck inside compiled code). Many cases run per child process (spawning torch per case is too slow).

CI runs ``PYODE_FUZZ_CASES`` cases (default 500) from ``PYODE_FUZZ_SEED`` (default 20); thousands on request:
``PYODE_FUZZ_CASES=5000 python -m pytest tests/test_fuzz.py`` (or ``python tests/test_fuzz.py SEED COUNT``, which
also lists the cases whose backends took different steps; ``PYODE_FUZZ_DIR=dir`` keeps every outcome as JSON
lines). A single case replays with
``python tests/test_fuzz.py --show SEED INDEX`` (prints the case) or ``--run SEED INDEX BACKEND``.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

CASES = int(os.environ.get("PYODE_FUZZ_CASES", "500"))
SEED = int(os.environ.get("PYODE_FUZZ_SEED", "20"))
CASE_TIMEOUT_S = 20      # one case: a few ms to ~1 s; past this it is a hang
STALL_TIMEOUT_S = 60     # parent: a child that reports nothing this long is stuck (inside compiled code) and killed
ADAPTIVE = ("dopri5", "tsit5", "bosh3", "dopri8", "fehlberg2", "adaptive_heun")
FIXED = ("euler", "midpoint", "heun3", "rk4", "explicit_adams", "implicit_adams")
HERE = Path(__file__).resolve()


class FuzzFuncError(Exception):
    """Raised on purpose by a misbehaving fuzz func: it must reach the caller unchanged."""


# ---- case generation ---------------------------------------------------------------------------------------

def make_case(seed: int, index: int) -> dict:
    """A JSON-able description of case ``index``: the same on every backend and every run."""
    rng = random.Random(seed * 1_000_003 + index)
    if rng.random() < 0.15:
        return _kernel_case(rng)
    case = {"kind": "solve", "dtype": rng.choice(["float64", "float64", "float32", "float32", "float16"]),
            "shape": _shape(rng), "layout": rng.choice(["contiguous"] * 4 + ["transposed", "strided", "expanded",
                                                                            "tuple"]),
            "scale": rng.choice([1.0, 1.0, 1e-3, 1e3, 1e30, 0.0]), "func": _func(rng), "times": _times(rng)}
    method = rng.choice(ADAPTIVE * 2 + FIXED)
    case["method"] = method
    case["options"] = _adaptive_options(rng, case) if method in ADAPTIVE else _fixed_options(rng)
    case["rtol"], case["atol"] = rng.choice(_tolerances(case["dtype"], method, case["func"]["kind"]))
    case["gradient"] = rng.choice([None] * 6 + ["backprop", "checkpoint", "adjoint"])
    if case["func"]["kind"] in ("stiff", "grow"):  # |lambda| = 1e3 / 100: bounded work (stiff backwards explodes)
        span = min(abs(case["times"]["span"]), 0.2)
        case["times"]["span"] = span if case["func"]["kind"] == "stiff" else math.copysign(span, case["times"]["span"])
        case["gradient"] = None if case["gradient"] == "adjoint" else case["gradient"]
    if math.prod(case["shape"]) > 1000:  # large states: cheap settings only (the reference backend is slow)
        case.update(method=rng.choice(["dopri5", "tsit5", "euler", "rk4"]), rtol=1e-3, atol=1e-5, gradient=None)
        case["options"] = {} if case["method"] in ADAPTIVE else {"step_size": 0.25}
        case["times"]["span"] = math.copysign(min(abs(case["times"]["span"]), 1.0), case["times"]["span"])
    if rng.random() < 0.08:
        case["bad"] = rng.choice(["nan_y0", "int_y0", "nonmonotonic_t", "unknown_option", "rtol_negative",
                                  "method_name", "t_2d", "y0_list", "options_list", "max_num_steps_zero"])
    return case


def _tolerances(dtype: str, method: str, func: str) -> list[tuple[float, float]]:
    """Tolerances the case can meet in bounded time: none far below the dtype's resolution (float16 at rtol 1e-9
    shrinks the step to ~1e-5 for ever: a slow solve, not a finding), tight ones only for high orders, and a
    pure absolute tolerance (rtol = 0) only for solutions that do not grow by orders of magnitude."""
    if dtype == "float16":
        return [(1e-2, 1e-3), (1e-3, 1e-3)]
    if dtype == "float32":  # well above float32's 1.2e-7: below it the steps follow the rounding noise
        return [(1e-3, 1e-5), (1e-4, 1e-6)]
    if method in ("adaptive_heun", "fehlberg2", "bosh3"):
        return [(1e-3, 1e-5), (1e-4, 1e-6), (1e-5, 0.0)]
    choices = [(1e-6, 1e-8), (1e-3, 1e-5), (1e-9, 1e-11), (1e-5, 0.0)]
    if func in ("decay", "rotate", "zero"):
        choices.append((0.0, 1e-6))
    return choices


def _shape(rng: random.Random) -> list[int]:
    if rng.random() < 0.08:
        return rng.choice([[0], [3, 0], [0, 2], [2, 0, 3]])
    if rng.random() < 0.03:
        return [rng.choice([40_000, 70_000])]  # pooled buffers, OpenMP kernels, non-temporal stores off/on
    return rng.choice([[], [1], [rng.randint(1, 6)], [rng.randint(1, 4), rng.randint(1, 5)],
                       [2, rng.randint(1, 3), rng.randint(1, 3)]])


def _times(rng: random.Random) -> dict:
    n = rng.choice([1, 2, 2, 3, 5])
    t0 = rng.choice([0.0, 0.0, 1.0, -2.0, 1e6])  # 1e6: the resolution of t (4 ulps = 4.7e-10) in play
    span = rng.choice([1.0, 0.5, 2.0, 1e-6])
    direction = rng.choice([1.0, 1.0, -1.0])
    dtype = rng.choice(["float64", "float64", "float32"])
    if dtype == "float32" and t0 == 1e6:  # func would see times in steps of 0.0625: any two solves differ
        t0 = 1.0
    return {"t0": t0, "span": span * direction, "n": n, "dtype": dtype}


def _func(rng: random.Random) -> dict:
    kind = rng.choice(["decay", "decay", "rotate", "rotate", "cubic", "time", "stiff", "grow", "raise", "nan_after",
                       "wrong_shape", "wrong_dtype", "not_tensor", "returns_input", "inplace_input", "zero"])
    return {"kind": kind, "k": rng.choice([0.5, 1.0, 3.0]), "n": rng.randint(1, 12), "tc": rng.uniform(0.0, 1.0)}


def _adaptive_options(rng: random.Random, case: dict) -> dict:
    options = {}
    picks = {
        "first_step": lambda: rng.choice([1e-3, 0.1, 1e-12, 10.0]),
        "min_step": lambda: rng.choice([0.0, 1e-4, 0.05]),
        "max_step": lambda: rng.choice([0.01, 0.2, math.inf]),
        "max_num_steps": lambda: rng.choice([3, 50, 1000, 2**70]),
        "safety": lambda: rng.choice([0.5, 0.9, 1.0]),
        "ifactor": lambda: rng.choice([1.5, 10.0, 1e6]),  # 1.0: a step that never grows (1e6 steps: slow)
        "dfactor": lambda: rng.choice([0.1, 0.2, 1.0]),
        "pcoeff": lambda: rng.choice([0.0, 0.2, 0.4]),
        "icoeff": lambda: rng.choice([0.3, 1.0]),
        "dcoeff": lambda: rng.choice([0.0, 0.1]),
        "interp": lambda: rng.choice(["auto", "cubic", "linear"]),
        "per_sample": lambda: True,
        "step_t": lambda: [case["times"]["t0"] + 0.3 * case["times"]["span"]],
        "jump_t": lambda: [case["times"]["t0"] + 0.6 * case["times"]["span"]],
        "norm": lambda: rng.choice(["rms", "mixed"]),
    }
    for name in rng.sample(sorted(picks), rng.choice([0, 0, 1, 2, 3])):
        options[name] = picks[name]()
    if "min_step" in options and "max_step" in options and options["min_step"] > options["max_step"]:
        del options["min_step"]  # half the time a valid pair; invalid options have their own cases
    return options


def _fixed_options(rng: random.Random) -> dict:
    options = {"step_size": rng.choice([0.1, 0.25, 0.05])} if rng.random() < 0.6 else {}
    if rng.random() < 0.2:
        options["interp"] = rng.choice(["linear", "cubic"])
    return options


def _kernel_case(rng: random.Random) -> dict:
    n = rng.choice([0, 1, 5, 33, 2048, 70_000])
    return {"kind": "kernel", "op": rng.choice(["lincomb", "rk_finish", "op"]), "n": n,
            "s": rng.choice([0, 1, 2, 7, 13]), "m": rng.choice([0, 1, 3]), "base": rng.random() < 0.6,
            "dtype": rng.choice(["float32", "float64"]), "layout": rng.choice(["contiguous"] * 3 + ["strided"]),
            "segments": rng.random() < 0.3, "e": rng.random() < 0.7, "b": rng.random() < 0.7,
            "weights": rng.choice(["normal", "normal", "huge", "nan", "complex", "meta", "int"]),
            "seed": rng.randint(0, 2**31)}


# ---- building and running a case ---------------------------------------------------------------------------

def _tview(t, y):
    """``t`` broadcast against ``y`` (per-sample rows get t of shape (batch,))."""
    return t.reshape(t.shape + (1,) * (y.dim() - t.dim())) if t.dim() else t


def build_func(spec: dict):
    kind, k, calls = spec["kind"], spec["k"], [0]

    def one(t, y):
        calls[0] += 1
        if kind == "decay":
            return -k * y
        if kind == "rotate":
            return k * (y.roll(1, -1) - y) - 0.1 * y if y.dim() else -k * y
        if kind == "cubic":
            return -y * y * y + torch.sin(_tview(t, y)).to(y.dtype)
        if kind == "time":
            return torch.cos(_tview(t, y)).to(y.dtype) * y
        if kind == "stiff":
            return -1e3 * (y - torch.cos(_tview(t, y)).to(y.dtype))
        if kind == "grow":
            return 100.0 * y
        if kind == "raise" and calls[0] >= spec["n"]:
            raise FuzzFuncError(f"func raised on call {calls[0]}")
        if kind == "nan_after":
            return torch.where(_tview(t, y) > spec["tc"], torch.full_like(y, math.nan), -y)
        if kind == "wrong_shape":
            return torch.zeros(y.numel() + 1, dtype=y.dtype)
        if kind == "wrong_dtype":
            return (-y).to(torch.float64 if y.dtype != torch.float64 else torch.float32)
        if kind == "not_tensor":
            return (-y).tolist()
        if kind == "returns_input":
            return y  # y' = y, and the output is the solver's own stage tensor
        if kind == "inplace_input" and not y.requires_grad:
            # writes into the state the solver handed in (same values: a func that changes them corrupts the
            # solve on every backend alike, and can make it crawl for ~1e9 steps)
            return -y.add_(0.0)
        if kind == "zero":
            return torch.zeros_like(y)
        return -y

    def func(t, y):
        if isinstance(y, tuple):
            return tuple(one(t, part) for part in y)
        return one(t, y)

    return func


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def build_y0(case: dict, gen: torch.Generator):
    dtype, shape, layout, scale = _dtype(case["dtype"]), case["shape"], case["layout"], case["scale"]
    base = (torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5) * scale
    if layout == "transposed" and len(shape) >= 2:
        y0 = base.to(dtype).transpose(0, 1).contiguous().transpose(0, 1)  # same values, column-major strides
    elif layout == "strided" and len(shape) >= 1:
        wide = torch.zeros(shape[:-1] + [2 * shape[-1]], dtype=dtype)
        wide[..., ::2] = base.to(dtype)
        y0 = wide[..., ::2]
    elif layout == "expanded" and len(shape) >= 1 and shape[0] > 0:
        y0 = base[:1].to(dtype).expand(shape)  # a broadcast view: every row aliases the first
    elif layout == "tuple":
        y0 = (base.to(dtype), (base * 0.5 + 0.25).to(dtype).flatten()[:3])
    else:
        y0 = base.to(dtype)
    return y0


def build_call(case: dict):
    """(callable, needs_grad) running the solve of ``case``; raises what the solve raises."""
    gen = torch.Generator().manual_seed(len(json.dumps(case)))
    y0 = build_y0(case, gen)
    tm = case["times"]
    t = torch.linspace(tm["t0"], tm["t0"] + tm["span"], tm["n"], dtype=_dtype(tm["dtype"]))
    kwargs = {"rtol": case["rtol"], "atol": case["atol"], "method": case["method"], "options": dict(case["options"])}
    bad = case.get("bad")
    if bad == "nan_y0" and isinstance(y0, torch.Tensor) and y0.numel():
        y0 = y0.clone()
        y0[(0,) * y0.dim()] = math.nan
    elif bad == "int_y0":
        y0 = torch.ones(3, dtype=torch.int64)
    elif bad == "nonmonotonic_t":
        t = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    elif bad == "unknown_option":
        kwargs["options"]["stepsize"] = 0.1
    elif bad == "rtol_negative":
        kwargs["rtol"] = -1.0
    elif bad == "method_name":
        kwargs["method"] = "rk45"
    elif bad == "t_2d":
        t = t.reshape(1, -1)
    elif bad == "y0_list":
        y0 = [1.0, 2.0]
    elif bad == "options_list":
        kwargs["options"] = [("step_size", 0.1)]
    elif bad == "max_num_steps_zero":
        kwargs["options"]["max_num_steps"] = 0
    grad = case["gradient"] is not None and case["dtype"] == "float64" and isinstance(y0, torch.Tensor) \
        and case["func"]["kind"] != "inplace_input" and bad is None
    func = build_func(case["func"])

    def run():
        import pyode

        start = y0.detach().clone().requires_grad_() if grad else y0
        extra = {} if not grad else {"gradient": case["gradient"]}
        if grad and case["gradient"] != "backprop":
            extra["adjoint_params"] = ()  # the fuzz funcs have no parameters
        sol = pyode.solve(func, start, t, **kwargs, **extra)
        ys = sol.ys if isinstance(sol.ys, tuple) else (sol.ys,)
        steps = [sol.stats.n_accepted, sol.stats.n_rejected, sol.stats.nfe]
        out = [torch.tensor(steps, dtype=torch.float64)] + [y.detach() for y in ys]
        if grad:
            (g,) = torch.autograd.grad(sum(y.sum() for y in ys), start, allow_unused=True)
            out.append(torch.zeros_like(start) if g is None else g)
        return out

    return run


def build_kernel_call(case: dict):
    gen = torch.Generator().manual_seed(case["seed"])
    dtype, n, s = _dtype(case["dtype"]), case["n"], case["s"]

    def vec():
        v = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
        if case["layout"] == "strided":
            wide = torch.zeros(2 * n, dtype=dtype)
            wide[::2] = v
            return wide[::2]
        return v

    base = vec() if case["base"] else None
    ks = [vec() for _ in range(s)]
    weights = torch.randn(case["m"], s, generator=gen, dtype=torch.float64)
    kind = case["weights"]
    if kind == "huge":
        weights = weights * 1e30
    elif kind == "nan" and weights.numel():
        weights[0, 0] = math.nan
    elif kind == "complex":
        weights = weights.to(torch.complex128)
    elif kind == "meta":
        weights = weights.to("meta")
    elif kind == "int":
        weights = weights.to(torch.int64)

    def run():
        from pyode import _kernels

        if case["op"] == "op":
            return [torch.ops.pyode.lincomb(base, ks, weights)]
        if case["op"] == "lincomb":
            return [_kernels.lincomb(base, ks, _host(weights).tolist())]
        y0 = base if base is not None else vec()
        row = _host(weights)[0].tolist() if weights.shape[0] else [0.0] * s
        segments = _kernels.Segments([0, n // 3, n]) if case["segments"] else None
        y1, norm, seg = _kernels.rk_finish(y0, ks, row if case["b"] else None, row if case["e"] else None, 1e-6, 1e-3,
                                           segments)
        return [t for t in (y1, torch.tensor([norm], dtype=torch.float64), seg) if t is not None]

    return run


def _host(weights: torch.Tensor) -> torch.Tensor:
    """Weights the list-taking kernel API can be given (a meta tensor has no values to list)."""
    return torch.zeros(weights.shape, dtype=torch.float64) if weights.is_meta else weights


# ---- the child: run cases, report one JSON line each -------------------------------------------------------

class CaseTimeout(BaseException):
    """The per-case alarm (a BaseException, so no ``except Exception`` in pyode can swallow it)."""


def _on_alarm(signum, frame):
    raise CaseTimeout


def run_case(case: dict) -> dict:
    """Runs one case here (with the backend of PYODE_BACKEND); returns its JSON-able outcome."""
    import pyode

    try:
        run = build_kernel_call(case) if case["kind"] == "kernel" else build_call(case)
        signal.alarm(CASE_TIMEOUT_S)
        try:
            outputs = run()
        finally:
            signal.alarm(0)
    except CaseTimeout:
        return {"status": "hang"}
    except (ValueError, TypeError, pyode.ODESolverError, FuzzFuncError) as exc:
        return {"status": "error", "type": type(exc).__name__, "message": str(exc)[:300],
                "expected": _clear_error(exc)}
    except Exception as exc:  # noqa: BLE001 -- every other exception is a finding, reported with its type
        return {"status": "error", "type": type(exc).__name__, "message": str(exc)[:300], "expected": False}
    return {"status": "ok", "outputs": [_encode(o) for o in outputs]}


def _clear_error(exc: BaseException) -> bool:
    """pyode's own errors; not torch's or pybind's messages leaking through a ValueError/TypeError."""
    raw = ("incompatible function arguments", "incompatible constructor arguments", "cannot reshape tensor",
           "must match the size", "Expected all tensors", "value cannot be converted")
    return not any(r in str(exc) for r in raw)


def _encode(t: torch.Tensor) -> dict:
    if t.is_meta:
        return {"shape": list(t.shape), "dtype": str(t.dtype), "meta": True}
    values = t.detach().to(torch.float64 if not t.is_complex() else torch.complex128).reshape(-1)
    if t.is_complex():
        values = torch.view_as_real(values).reshape(-1)
    return {"shape": list(t.shape), "dtype": str(t.dtype), "values": values.tolist()}


def child_main(seed: int, start: int, stop: int, out_path: str) -> None:
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _on_alarm)
    with open(out_path, "a") as out:
        for index in range(start, stop):
            result = run_case(make_case(seed, index))
            result["index"] = index
            out.write(json.dumps(result) + "\n")
            out.flush()


# ---- the parent: children per backend, restarted after a crash, outcomes compared ---------------------------

def run_backend(backend: str, seed: int, count: int, workdir: Path) -> dict[int, dict]:
    """Outcomes of cases [0, count) on ``backend``; a crash or a stuck child marks its case and goes on."""
    path = workdir / f"{backend}.jsonl"
    results: dict[int, dict] = {}
    start = 0
    while start < count:
        proc = _spawn(backend, seed, start, count, path)
        last_progress, seen = time.monotonic(), len(results)
        while proc.poll() is None:
            time.sleep(0.05)
            results = _read(path)
            if len(results) > seen:
                last_progress, seen = time.monotonic(), len(results)
            elif time.monotonic() - last_progress > STALL_TIMEOUT_S:
                proc.kill()
                proc.wait()
        results = _read(path)
        done = max(results, default=start - 1) + 1
        if done < count and proc.returncode != 0:  # crashed or killed in case `done`
            results[done] = {"status": "crash", "returncode": proc.returncode, "stderr": proc.stderr.read()[-2000:]}
            with open(path, "a") as out:
                out.write(json.dumps({**results[done], "index": done}) + "\n")
            done += 1
        start = done
    return results


def _spawn(backend: str, seed: int, start: int, stop: int, path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYODE_BACKEND": backend, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(HERE), "--child", str(seed), str(start), str(stop), str(path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _read(path: Path) -> dict[int, dict]:
    if not path.exists():
        return {}
    results = {}
    for line in path.read_text().splitlines():
        if line.endswith("}"):
            item = json.loads(line)
            results[item.pop("index")] = item
    return results


def _tolerance(case: dict) -> float:
    """How far two backends' outputs may differ, relative to max(1, |y|). Kernels: a few roundings. Solves that
    took the same steps (the first output is the step counts; solves that did not are set aside by
    :func:`compare`): the same operations in another summation order, amplified over up to ~1e3 steps."""
    if case["kind"] == "kernel":
        return 1e-5 if case["dtype"] == "float32" else 1e-12
    tol = {"float64": 1e-9, "float32": 1e-3, "float16": 5e-2}[case["dtype"]]
    # float32 times: a last-bit difference in a step size (the backends' error norms round differently) moves a
    # stage time by one float32 ulp (1.2e-7 relative) that func sees
    return max(tol, 1e-6) if case["times"]["dtype"] == "float32" else tol


def compare(case: dict, a: dict, b: dict) -> str | None:
    """None if the two outcomes agree, else what is wrong."""
    for name, r in (("cpu", a), ("reference", b)):
        if r["status"] in ("hang", "crash"):
            return f"{r['status']} on {name}: {r}"
        if r["status"] == "error" and not r["expected"]:
            return f"unclear error on {name}: {r['type']}: {r['message']}"
    if a["status"] != b["status"]:
        return f"cpu {a['status']} vs reference {b['status']}: {a.get('type')} {a.get('message', '')} | " \
               f"{b.get('type')} {b.get('message', '')}"
    if a["status"] == "error":
        if a["type"] == b["type"]:
            return None
        if "MaxStepsError" in (a["type"], b["type"]) and {a["type"], b["type"]} <= SOLVER_FAILURES:
            return DIVERGED  # other steps (see below) met max_num_steps before, or after, the other failure
        return f"cpu raised {a['type']}, reference {b['type']}: {a} | {b}"
    if case["kind"] == "solve" and a["outputs"][0]["values"] != b["outputs"][0]["values"]:
        return DIVERGED  # an accept/reject decision on the edge went the other way: other steps, both valid
    return _compare_outputs(a["outputs"], b["outputs"], _tolerance(case))


DIVERGED = "diverged"  # compare(): both solved, with different step sequences (not a failure unless frequent)
SOLVER_FAILURES = {"MaxStepsError", "StepSizeUnderflowError", "NonFiniteStateError"}


def _compare_outputs(xs: list, ys: list, tol: float) -> str | None:
    if len(xs) != len(ys):
        return f"{len(xs)} outputs vs {len(ys)}"
    for i, (x, y) in enumerate(zip(xs, ys)):
        if x["shape"] != y["shape"] or x["dtype"] != y["dtype"] or x.get("meta") != y.get("meta"):
            return f"output {i}: {x['shape']} {x['dtype']} vs {y['shape']} {y['dtype']}"
        if x.get("meta"):
            continue
        u, v = torch.tensor(x["values"], dtype=torch.float64), torch.tensor(y["values"], dtype=torch.float64)
        same_nan = torch.isnan(u) == torch.isnan(v)
        finite = torch.isfinite(u) & torch.isfinite(v)
        if not bool(same_nan.all()) or not bool(torch.where(finite, True, (u == v) | torch.isnan(u)).all()):
            return f"output {i}: NaN/inf in different places"
        if finite.any():
            scale = max(1.0, float(torch.maximum(u[finite].abs(), v[finite].abs()).max()))
            diff = float((u[finite] - v[finite]).abs().max())
            if diff > tol * scale:
                return f"output {i}: max difference {diff:.3g} > {tol:.1g} * {scale:.3g}"
    return None


def fuzz(seed: int, count: int) -> tuple[list[str], dict]:
    """Runs ``count`` cases on both backends (two child processes at once); returns the failures and a tally."""
    import concurrent.futures

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(os.environ.get("PYODE_FUZZ_DIR") or tmp)  # PYODE_FUZZ_DIR keeps each backend's outcomes
        workdir.mkdir(parents=True, exist_ok=True)
        for backend in ("cpu", "reference"):
            (workdir / f"{backend}.jsonl").unlink(missing_ok=True)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            cpu, ref = pool.map(lambda b: run_backend(b, seed, count, workdir), ["cpu", "reference"])
    failures, tally, diverged = [], {"ok": 0, "error": 0, DIVERGED: 0}, []
    for index in range(count):
        case = make_case(seed, index)
        problem = compare(case, cpu[index], ref[index])
        if problem == DIVERGED:
            tally[DIVERGED] += 1
            diverged.append(index)
        elif problem is not None:
            failures.append(f"case {seed}/{index}: {problem}\n    {json.dumps(case)}")
        elif cpu[index]["status"] in tally:
            tally[cpu[index]["status"]] += 1
    tally["diverged_cases"] = diverged
    return failures, tally


def _compiled_built() -> bool:
    import pyode

    return pyode.backend_info()["compiled_cpu"]


@pytest.mark.skipif(not _compiled_built(), reason="compiled CPU backend not built: nothing to compare")
def test_fuzz_compiled_and_reference_agree():
    failures, tally = fuzz(SEED, CASES)
    # the generator must reach both outcomes in numbers, or the comparison would prove little
    assert tally["ok"] >= CASES // 4 and tally["error"] >= CASES // 20, tally
    # rounding differences flip an edge decision now and then (chaotic stiff cases); more would be a bug
    assert tally[DIVERGED] <= max(3, tally["ok"] // 50), tally
    assert not failures, f"{len(failures)} of {CASES} cases failed:\n" + "\n".join(failures[:20])


def test_case_generation_is_deterministic_and_varied():
    cases = [make_case(SEED, i) for i in range(200)]
    assert cases == [make_case(SEED, i) for i in range(200)]
    assert {c["kind"] for c in cases} == {"kernel", "solve"}
    solves = [c for c in cases if c["kind"] == "solve"]
    assert {c["dtype"] for c in solves} == {"float16", "float32", "float64"}
    assert {c["layout"] for c in solves} >= {"contiguous", "transposed", "strided", "expanded", "tuple"}
    assert any(0 in c["shape"] for c in solves) and any("bad" in c for c in solves)
    assert any(c["options"].get("per_sample") for c in solves)


def test_compare_flags_disagreements():
    case = {"kind": "kernel", "dtype": "float64"}
    ok = {"status": "ok", "outputs": [{"shape": [2], "dtype": "torch.float64", "values": [1.0, 2.0]}]}
    off = {"status": "ok", "outputs": [{"shape": [2], "dtype": "torch.float64", "values": [1.0, 2.1]}]}
    err = {"status": "error", "type": "ValueError", "message": "x", "expected": True}
    assert compare(case, ok, ok) is None and compare(case, err, err) is None
    assert "max difference" in compare(case, ok, off)
    assert "ok vs reference error" in compare(case, ok, err)
    assert "hang" in compare(case, {"status": "hang"}, ok)
    assert "unclear error" in compare(case, {**err, "expected": False}, err)


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        child_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif sys.argv[1] == "--show":
        print(json.dumps(make_case(int(sys.argv[2]), int(sys.argv[3])), indent=1))
    elif sys.argv[1] == "--run":
        os.environ["PYODE_BACKEND"] = sys.argv[4]
        signal.signal(signal.SIGALRM, _on_alarm)
        print(json.dumps(run_case(make_case(int(sys.argv[2]), int(sys.argv[3]))))[:3000])
    else:
        found, counts = fuzz(int(sys.argv[1]), int(sys.argv[2]))
        print("\n".join(found))
        for i in counts["diverged_cases"]:
            print(f"diverged {sys.argv[1]}/{i}: {json.dumps(make_case(int(sys.argv[1]), i))}")
        print(f"{len(found)} failed of {sys.argv[2]}; agreeing outcomes: {counts}")
