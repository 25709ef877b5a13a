"""GPU ensembles with numba CUDA: the same ``rhs`` compiled as a CUDA device function, one trajectory per
GPU thread, each with its own step size, with the tableaux and interpolants of the CPU path.

numba's CUDA target cannot call the C++ loop, so this module is the loop of
``csrc/include/pyode/core/solve_loop.h`` written once more in numba's CUDA dialect: the same operations in
the same order (the log-space PID controller, Hairer's initial step, dense output by the interpolant matrix
or by re-stepping), which the tests check against the CPU path under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``). Terminal events are CPU-only for now.
"""

# ruff: noqa: FURB136  (explicit ternaries pin the NaN behaviour of Python's min/max, as the C++ py_min/py_max)
from __future__ import annotations

import functools
import math

import numpy as np

# Module globals: the CUDA simulator swaps `cuda` in the kernel's globals.
from numba import cuda, float64, int64

_MAX_TERMS = 16  # s + 1 for every registered method (dopri8: 14 stages)
_OPT_FIELDS = ("rtol", "atol", "first_step", "safety", "ifactor", "dfactor", "pcoeff", "icoeff", "dcoeff",
               "min_step", "max_step", "max_num_steps", "step_size")


@functools.lru_cache(maxsize=32)
def _kernel(py_rhs, n: int):
    """The ensemble kernel for ``py_rhs`` and state size ``n`` (compile-time sizes of the local arrays)."""
    rhs = cuda.jit(device=True)(py_rhs)
    T_ = _MAX_TERMS

    @cuda.jit(device=True)
    def combine(y0, K, w, terms, out):
        for i in range(n):
            out[i] = y0[i]
        for j in range(terms):
            wj = w[j]
            if wj != 0.0:
                for i in range(n):
                    out[i] += wj * K[j, i]

    @cuda.jit(device=True)
    def evalf(sign, s, y, dy, p, cnt):
        cnt[0] += 1
        rhs(sign * s, y, dy, p)
        if sign < 0:
            for i in range(n):
                dy[i] = -dy[i]

    @cuda.jit(device=True)
    def attempt(tab, meta, fo, sign, p, t0, y0, h, K, y1, stage, w, cnt):
        c, a, b, be = tab[0], tab[1], tab[2], tab[3]
        s, fsal, adaptive = meta[0], meta[2], meta[6]
        for i in range(1, s):
            for j in range(i):
                w[j] = h * a[i, j]
            dst = y1 if (fsal and i == s - 1) else stage
            combine(y0, K, w, i, dst)
            evalf(sign, t0 + h if c[i] == 1.0 else t0 + c[i] * h, dst, K[i], p, cnt)
        if not fsal:
            for j in range(s):
                w[j] = h * b[j]
            combine(y0, K, w, s, y1)
        if not adaptive:
            return 0.0
        total = 0.0
        for i in range(n):
            e = 0.0
            for j in range(s):
                e += (h * be[j]) * K[j, i]
            a0, a1 = abs(y0[i]), abs(y1[i])
            big = a1 if (a1 > a0 or math.isnan(a1)) else a0
            d = e / (fo[1] + fo[0] * big)
            total += d * d
        return math.sqrt(total / n)

    @cuda.jit(device=True)
    def dense(tab, P, meta, fo, sign, p, t0, y0, h, theta, K, K2, stage, tmp, w, dst, cnt):
        if meta[5]:  # restep: a fresh step of size theta * h
            for i in range(n):
                K2[0, i] = K[0, i]
            attempt(tab, meta, fo, sign, p, t0, y0, theta * h, K2, tmp, stage, w, cnt)
            for i in range(n):
                dst[i] = tmp[i]
            return
        terms = meta[4]
        for j in range(terms):
            w[j] = 0.0
        power = h
        for q in range(meta[3]):
            power *= theta
            for j in range(terms):
                w[j] += power * P[q, j]
        combine(y0, K, w, terms, dst)

    @cuda.jit(device=True)
    def scaled(a, b, y, fo, use_b):
        total = 0.0
        for i in range(n):
            d = (a[i] - b[i] if use_b else a[i]) / (fo[1] + fo[0] * abs(y[i]))
            total += d * d
        return math.sqrt(total / n)

    @cuda.jit(device=True)
    def initial_step(meta, fo, sign, p, t0, y0, f0, probe, f1, cnt):
        d0 = scaled(y0, y0, y0, fo, False)
        d1 = scaled(f0, f0, y0, fo, False)
        if not (math.isfinite(d0) and math.isfinite(d1)):
            return math.nan
        h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        if h0 == 0.0:
            return math.nan
        for i in range(n):
            probe[i] = y0[i] + h0 * f0[i]
        evalf(sign, t0 + h0, probe, f1, p, cnt)
        d2 = scaled(f1, f0, y0, fo, True) / h0
        if d1 <= 1e-15 and d2 <= 1e-15:
            h1 = h0 * 1e-3 if h0 * 1e-3 > 1e-6 else 1e-6
        else:
            h1 = (0.01 / (d2 if d2 > d1 else d1)) ** (1.0 / meta[1])
        return h1 if h1 < 100.0 * h0 else 100.0 * h0

    @cuda.jit(device=True)
    def pyclip(x, lo, hi):
        x = lo if lo > x else x
        return hi if hi < x else x

    @cuda.jit(device=True)
    def next_step(meta, fo, hist, h, ratio, accepted):
        k = float64(meta[1])
        b1 = (fo[6] + fo[7] + fo[8]) / k
        b2 = -(fo[6] + 2.0 * fo[8]) / k
        b3 = fo[8] / k
        if not math.isfinite(ratio):
            factor = fo[5]
        else:
            r = pyclip(ratio, 1e-300, math.inf)
            cap = math.log(fo[4]) + 1.0
            cap = 700.0 if 700.0 < cap else cap
            lf = math.log(fo[3]) - b1 * math.log(r) - b2 * math.log(hist[0]) - b3 * math.log(hist[1])
            factor = pyclip(math.exp(pyclip(lf, -700.0, cap)), 1.0 if accepted else fo[5], fo[4])
            if accepted:
                hist[1] = hist[0]
                hist[0] = pyclip(ratio, 1e-10, math.inf)
        return pyclip(h * factor, fo[9], fo[10])

    @cuda.jit(device=True)
    def ulp(x):
        m = abs(x) if abs(x) > 1.0 else 1.0
        e = math.frexp(m)[1]
        return math.ldexp(1.0, e - 53)

    @cuda.jit(device=True)
    def write_out(ys, r, q, src):
        for i in range(n):
            ys[q, r, i] = src[i]

    @cuda.jit
    def kernel(c, a, b, be, P, meta, fo, y0s, params, t_out, sign, ys, stats):
        r = cuda.grid(1)
        if r >= y0s.shape[0]:
            return
        K = cuda.local.array((T_, n), float64)
        K2 = cuda.local.array((T_, n), float64)
        y = cuda.local.array(n, float64)
        y1 = cuda.local.array(n, float64)
        stage = cuda.local.array(n, float64)
        tmp = cuda.local.array(n, float64)
        w = cuda.local.array(T_, float64)
        hist = cuda.local.array(2, float64)
        cnt = cuda.local.array(1, int64)
        tab = (c, a, b, be)
        p = params[r if params.shape[0] > 1 else 0]
        hist[0] = 1.0
        hist[1] = 1.0
        cnt[0] = 0
        for i in range(n):
            y[i] = y0s[r, i]
        T = t_out.shape[0]
        write_out(ys, r, 0, y)
        status, t_reached, acc, rej, written = 0, t_out[0], 0, 0, 1
        if T > 1 and meta[6]:
            status, t_reached, acc, rej, written = adaptive_loop(tab, P, meta, fo, sign, p, t_out, ys, r, K, K2, y,
                                                                 y1, stage, tmp, w, hist, cnt)
        elif T > 1:
            status, t_reached, acc, written = fixed_loop(tab, P, meta, fo, sign, p, t_out, ys, r, K, K2, y, y1,
                                                         stage, tmp, w, cnt)
        for q in range(written, T):
            for i in range(n):
                ys[q, r, i] = math.nan
        stats[r, 0] = status
        stats[r, 1] = sign * t_reached
        stats[r, 2] = math.nan
        stats[r, 3] = acc
        stats[r, 4] = rej
        stats[r, 5] = cnt[0]

    @cuda.jit(device=True)
    def adaptive_loop(tab, P, meta, fo, sign, p, t_out, ys, r, K, K2, y, y1, stage, tmp, w, hist, cnt):
        s, fsal = meta[0], meta[2]
        T = t_out.shape[0]
        t, t_end = t_out[0], t_out[T - 1]
        evalf(sign, t, y, K[0], p, cnt)
        h = fo[2]
        if not h > 0.0:
            h = initial_step(meta, fo, sign, p, t, y, K[0], stage, K[s], cnt)
        if not math.isnan(h):
            h = pyclip(h, fo[9], fo[10])
        if not (math.isfinite(h) and h > 0.0):
            return 3, t, 0, 0, 1
        acc, rej, written = 0, 0, 1
        while t < t_end and written < T:
            h_step = h if h < t_end - t - 4.0 * ulp(t_end) else t_end - t  # no sliver step before t_end
            ratio = attempt(tab, meta, fo, sign, p, t, y, h_step, K, y1, stage, w, cnt)
            accepted = ratio <= 1.0
            h = next_step(meta, fo, hist, h_step, ratio, accepted)
            if not accepted:
                rej += 1
                if acc + rej >= fo[11]:
                    return 1, t, acc, rej, written
                if not h > 4.0 * ulp(t):
                    return (2 if math.isfinite(ratio) else 3), t, acc, rej, written
                if h >= h_step:
                    return 2, t, acc, rej, written
                continue
            acc += 1
            t1 = t + h_step if t + h_step < t_end else t_end
            if not fsal:
                evalf(sign, t + h_step, y1, K[s], p, cnt)
            while written < T and t_out[written] <= t1:
                if t_out[written] == t1:
                    write_out(ys, r, written, y1)
                else:
                    dense(tab, P, meta, fo, sign, p, t, y, h_step, (t_out[written] - t) / h_step, K, K2, stage, tmp,
                          w, ys[written, r], cnt)
                written += 1
            last = s - 1 if fsal else s
            for i in range(n):
                K[0, i] = K[last, i]
                y[i] = y1[i]
            t = t1
            if t < t_end and acc + rej >= fo[11]:  # at the end, the next h is never taken
                return 1, t, acc, rej, written
            if t < t_end and not h > 4.0 * ulp(t):
                return (2 if math.isfinite(ratio) else 3), t, acc, rej, written
        return 0, t, acc, rej, written

    @cuda.jit(device=True)
    def fixed_loop(tab, P, meta, fo, sign, p, t_out, ys, r, K, K2, y, y1, stage, tmp, w, cnt):
        s = meta[0]
        T = t_out.shape[0]
        t0, t_end, step = t_out[0], t_out[T - 1], fo[12]
        span = math.ceil((t_end - t0) / step - 1e-9)
        n_steps = int64(span) if span > 1.0 else 1
        written = 1
        for q in range(n_steps):
            g0 = t0 + q * step
            g1 = t0 + (q + 1) * step if q + 1 < n_steps else t_end
            h = g1 - g0
            evalf(sign, g0, y, K[0], p, cnt)
            attempt(tab, meta, fo, sign, p, g0, y, h, K, y1, stage, w, cnt)
            for i in range(n):
                if not math.isfinite(y1[i]):
                    return 3, g1, q + 1, written
            if meta[7] and written < T and t_out[written] < g1:
                evalf(sign, g0 + h, y1, K[s], p, cnt)
            while written < T and t_out[written] <= g1:
                if t_out[written] == g1:
                    write_out(ys, r, written, y1)
                else:
                    dense(tab, P, meta, fo, sign, p, g0, y, h, (t_out[written] - g0) / h, K, K2, stage, tmp, w,
                          ys[written, r], cnt)
                written += 1
            for i in range(n):
                y[i] = y1[i]
        return 0, t_end, n_steps, written

    return kernel


def _needs_f1(data) -> bool:
    s = data.num_stages
    return (not data.tableau.fsal and not data.restep and data.P.shape[1] > s and bool(np.any(data.P[:, s] != 0.0)))


def solve_cuda(rhs_py, data, opts, rtol: float, atol: float, y0: np.ndarray, params: np.ndarray, t: np.ndarray,
               sign: float, threads_per_block: int = 64):
    """Runs the ensemble on the GPU; returns ys (T, M, n) and stats (M, 6) as NumPy arrays."""
    M, n = y0.shape
    s = data.num_stages
    if s + 1 > _MAX_TERMS:
        raise ValueError(f"method {data.tableau.name!r} has {s} stages; the CUDA ensemble supports up to "
                         f"{_MAX_TERMS - 1}")
    adaptive = data.b_err is not None
    meta = np.array([s, data.tableau.order, int(data.tableau.fsal), data.P.shape[0], data.P.shape[1],
                     int(data.restep), int(adaptive), int(_needs_f1(data))], dtype=np.int64)
    fo = np.array([rtol, atol] + [float(_opt(opts, name, adaptive)) for name in _OPT_FIELDS[2:]])
    be = data.b_err if adaptive else np.zeros(s)
    p = params if params.size else np.zeros((1, 1))
    p = p.reshape(-1, p.shape[-1]) if p.ndim == 2 else p[None, :]
    kernel = _kernel(rhs_py, n)
    ys = cuda.device_array((len(t), M, n))
    stats = cuda.device_array((M, 6))
    blocks = (M + threads_per_block - 1) // threads_per_block
    kernel[blocks, threads_per_block](data.c, data.a, data.b, be, data.P, meta, fo, y0, p, sign * t, sign, ys,
                                      stats)
    return ys.copy_to_host(), stats.copy_to_host()


def _opt(opts, name: str, adaptive: bool) -> float:
    defaults = {"first_step": 0.0, "safety": 0.9, "ifactor": 10.0, "dfactor": 0.2, "pcoeff": 0.0, "icoeff": 1.0,
                "dcoeff": 0.0, "min_step": 0.0, "max_step": math.inf, "step_size": 0.0}
    value = getattr(opts, name, None)
    if name in ("max_num_steps",):
        return float(value)
    if name == "step_size":
        return 0.0 if adaptive else float(value)
    if not adaptive or value is None:
        return defaults[name]
    return float(value)
