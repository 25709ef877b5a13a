"""The native solver from numba's nopython mode: ``@numba.njit`` code calls :func:`solve_into` (or the C
entry point ``pyode_solve_packed`` itself through cffi), e.g. an objective that solves the ODE thousands of
times in a parameter fit without returning to Python.

numba calls functions of a cffi ABI-mode library (``ffi.dlopen``) directly; it cannot pass C structs, so
this entry point takes the method and options packed in one float64 array (:func:`pack`) and the
right-hand side as a function address (``pyode.native.compile_rhs(f, n, k).address``). Example::

    packed = pack("dopri5", rtol=1e-8, atol=1e-8)
    rhs = pyode.native.compile_rhs(lorenz, n=3, k=3).address

    @numba.njit
    def loss(p):
        ys = np.empty((t.size, 1, 3)); stats = np.empty((1, 6))
        solve_into(packed, rhs, y0, p, t, ys, stats)
        return ((ys[:, 0] - data) ** 2).sum()
"""

from __future__ import annotations

import math

import numpy as np

from pyode.native._lib import PACKED_HEADER, load
from pyode.native._methods import ADAPTIVE, FIXED, method_data
from pyode.native._solve import _CONTROLLER_CODES, _parse_options

ffi, lib = load()
solve_packed = lib.pyode_solve_packed
"""The C function ``pyode_solve_packed`` (see ``pyode_native.h``), callable from ``@numba.njit`` code."""


def pack(method: str = "dopri5", *, rtol: float = 1e-6, atol: float = 1e-9, options: dict | None = None,
         sign: float = 1.0) -> np.ndarray:
    """The method and options of a solve as the float64 array ``pyode_solve_packed`` reads (validated here,
    and checked again in C). ``sign``: -1 when the solve's times decrease (for the option checks)."""
    if method not in ADAPTIVE + FIXED:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(ADAPTIVE + FIXED)}")
    opts, threads = _parse_options(method, options, sign)
    data = method_data(method, opts.interp)
    s = data.num_stages
    adaptive = method in ADAPTIVE
    ctrl = ([opts.first_step or 0.0, opts.safety, opts.ifactor, opts.dfactor, opts.pcoeff, opts.icoeff, opts.dcoeff,
             opts.min_step, opts.max_step] if adaptive else [0.0, 0.9, 10.0, 0.2, 0.0, 1.0, 0.0, 0.0, math.inf])
    header = [1, s, data.tableau.order, int(data.tableau.fsal), data.P.shape[0], data.P.shape[1], int(data.restep),
              int(adaptive), float(rtol), float(atol), *ctrl, opts.max_num_steps,
              0.0 if adaptive else opts.step_size, float(atol), threads,
              _CONTROLLER_CODES[opts.controller] if adaptive else 0]
    assert len(header) == PACKED_HEADER
    b_err = data.b_err if data.b_err is not None else np.zeros(s)
    return np.concatenate([np.asarray(header, dtype=np.float64), data.c, data.a.ravel(), data.b, b_err,
                           data.P.ravel()])


def _make_solve_into():
    import numba

    @numba.njit(nogil=True)
    def solve_into(packed, rhs, y0, params, t, ys, stats, event=0):
        """Solves into ``ys`` (T, M, n) and ``stats`` (M, 6): status, t_reached, event_t, n_accepted,
        n_rejected, n_feval. y0: (M, n); params: (M, k), (k,) or empty; rhs, event: addresses of compiled
        functions (``compile_rhs(...).address``, ``compile_event(...).address``; event 0: none). Returns the C
        return code (0: ok; negative: invalid arguments)."""
        M = ys.shape[1]
        n = ys.shape[2]
        k = params.shape[params.ndim - 1] if params.size > 0 else 0
        stride = k if params.ndim == 2 else 0
        y0c = np.ascontiguousarray(y0)
        pc = np.ascontiguousarray(params) if params.size > 0 else np.zeros(1)
        return solve_packed(ffi.from_buffer(packed), packed.size, rhs, event, M, n, k, stride,
                            ffi.from_buffer(y0c), y0c.size, ffi.from_buffer(pc), pc.size,
                            ffi.from_buffer(t), t.size, ffi.from_buffer(ys), ys.size,
                            ffi.from_buffer(stats), stats.size)

    return solve_into


solve_into = _make_solve_into()
