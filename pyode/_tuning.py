"""Every size threshold of pyode's Python code, in one place, with its unit in its name.

Each threshold switches between two implementations that compute the same values (bitwise, or to rounding
where noted): it changes speed or memory, never results beyond rounding. The defaults were measured on the
development machines (x86-64 EPYC, 32 MB L3); the entry of each says what it trades and how it was measured,
so a different machine can re-measure it.

Override: the environment variable ``PYODE_TUNING``, read once when pyode is imported, as comma-separated
``NAME=value`` pairs of the names below; a value is a non-negative integer in Python's literal syntax
(``262144``, ``0x40000``, ``1_048_576``)::

    PYODE_TUNING="POOL_MIN_BYTES=1048576,ERROR_CARRY_MIN_BYTES=0" python train.py

An unknown name or a bad value raises ValueError at import, naming it. :func:`current` returns the values in
force. The modules that use a threshold read it from this module at each use (``_tuning.NAME``), so a test may
also monkeypatch it here.

Python thresholds (bytes are of the state, ``numel * element_size``):

``POOL_MIN_BYTES`` (256 KiB; :mod:`pyode._solvers.scratch`, ``rk_step``, ``controller``)
    Stage buffers and the initial step's Euler probe come from the scratch pool from this size on. A fresh
    large CPU tensor pays page faults on first touch (13 ms to allocate and fill 40 MB against 1.9 ms to refill
    a touched buffer, measured); below it ``torch.empty_like`` reuses freed heap memory and is as cheap as the
    pool's search.
``POOL_LIMIT_BYTES`` (1 GiB; :mod:`pyode._solvers.scratch`)
    The most the pool keeps listed between solves (memory held against allocations saved, as torch's CUDA
    caching allocator); a bound, not a measurement. :func:`pyode.empty_cache` releases it.
``ERROR_CARRY_MIN_BYTES`` (4 MiB; :mod:`pyode._solvers.rk_step`)
    From this size an FSAL step's last stage also writes its partial error, so the finishing pass reads 4
    arrays instead of s + 2 (7% less memory traffic per dopri5 step; A/B: ``python bench/p3_ab.py --what
    carry``). Below it a step's 8 arrays fit the 32 MB L3 and the extra output buys nothing: scale it with L3.
``NATIVE_GRAD_MAX_ELEMENTS`` (16384; :mod:`pyode._kernels`)
    Up to this many elements a lincomb that autograd records is built from torch's ops (C++ autograd nodes);
    above it the fused kernel with its Python ``autograd.Function`` (~17 us forward, ~35 us backward per call)
    wins by its single pass over memory (measured 13 / 18 us per stage for torch's ops at n = 2 and 1024).
``JACOBIAN_VJP_MAX_ROWS`` (64; :class:`pyode._solvers.newton.Jacobian`)
    Up to this many rows the exact Jacobian is one vector-Jacobian product per row; above it
    ``torch.func.jacrev`` (vmapped), whose per-call overhead and one-off import of torch._dynamo (~2 s) do not
    pay for small systems.
``NEWTON_INVERSE_MAX_ROWS`` (8; :mod:`pyode._solvers.newton`)
    Up to this many rows per block, a Newton solve multiplies by the inverse (formed once per factorisation)
    instead of calling ``lu_solve``: ~3 us against ~35 us for Robertson's 3 x 3 matrix (a kvaerno5 step makes
    ~20 solves); the inverse's rounding, cond(M) eps |r|, is the LU solve's.
``CORE_LOOP_MAX_ELEMENTS`` (2048; :mod:`pyode._solvers.core_loop`)
    States of up to this many (real) elements run their no-grad solves in the C++ loop; larger ones in the
    Python loop, whose fused kernels (each stage one vectorised pass; y1, error and norm one pass) outrun the
    C++ loop's separate stage, error and norm passes plus the callback's copy of func's output. Measured with
    y' = -y, dopri5, 1 thread, time per evaluation, Python loop / C++ loop: float32 n = 2 1.18x, 2048 1.22x,
    4096 0.96x, 8192 0.87x, 16384 0.86x; float64 n = 256 1.54x, 1024 1.32x, 2048 1.02x, 4096 1.00x, 8192 0.76x,
    32768 0.56x. Both loops take the same steps.
``NON_TEMPORAL_MIN_BYTES`` (16 MiB; an override is handed to ``pyode._C.set_non_temporal`` at import)
    Single-row kernel outputs (stage inputs) of at least this size are written with non-temporal stores. Half
    the 32 MB L3: a larger output is evicted before ``func`` reads it anyway; +2-13% counted bandwidth at 1e7
    float32 elements, 1 and 2 threads, never slower (``python bench/kernels_nt.py``). Mirrors the C++ default
    in ``csrc/include/pyode/stream_terms.h``.

C++ thresholds (compile-time constants, in elements; change them in the header and rebuild):

- ``kBlock`` = 2048 (``csrc/include/pyode/common.h``): elements per cache block; multi-pass work inside a block
  stays in L1/L2, and reductions sum per block in a fixed order (results independent of the thread count).
- ``kParallelThreshold`` = 65536 (``common.h``): below it a kernel runs on one thread (thread start-up costs
  more than it saves).
- ``kStreamBlock`` = 32768 and ``kPairBlock`` = 16384 (``csrc/cpu/lincomb_cpu.cpp``): units of parallel work of
  the streaming lincomb and of the two-row (y1 and error) kernel, the latter sized so that a block's slice of
  every term stays in L2.
- ``kGilReleaseElements`` = 16384 (``csrc/include/pyode/py_gil.h``): kernel calls, and the per-sample rows' own work,
  on more elements release the GIL.
- ``kFinishChunk`` = 2048 (``csrc/cuda/cuda_kernels.h``: 256 threads x 8 items): elements per block of the
  CUDA ``rk_finish`` reduction, read in Python as ``pyode._kernels.cuda.CHUNK_ELEMENTS``.
"""

from __future__ import annotations

import os

ENV = "PYODE_TUNING"

_DEFAULTS: dict[str, int] = {
    "POOL_MIN_BYTES": 1 << 18,
    "POOL_LIMIT_BYTES": 1 << 30,
    "ERROR_CARRY_MIN_BYTES": 1 << 22,
    "NATIVE_GRAD_MAX_ELEMENTS": 1 << 14,
    "JACOBIAN_VJP_MAX_ROWS": 64,
    "NEWTON_INVERSE_MAX_ROWS": 8,
    "NON_TEMPORAL_MIN_BYTES": 16 << 20,
    "CORE_LOOP_MAX_ELEMENTS": 2048,
}


def parse(text: str) -> dict[str, int]:
    """The ``NAME=value`` pairs of a ``PYODE_TUNING`` string; ValueError naming a bad pair, name or value."""
    values: dict[str, int] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, raw = (part.strip() for part in item.partition("="))
        if not sep:
            raise ValueError(f"{ENV}: {item.strip()!r} is not NAME=value (e.g. {ENV}=\"POOL_MIN_BYTES=1048576\")")
        if name not in _DEFAULTS:
            raise ValueError(f"{ENV}: unknown key {name!r}; valid keys: {', '.join(_DEFAULTS)}")
        try:
            value = int(raw, 0)
        except ValueError:
            value = -1
        if value < 0:
            raise ValueError(f"{ENV}: {name}={raw!r} must be a non-negative integer (e.g. 262144 or 0x40000)")
        values[name] = value
    return values


OVERRIDES: dict[str, int] = parse(os.environ.get(ENV, ""))
_values = {**_DEFAULTS, **OVERRIDES}

POOL_MIN_BYTES: int = _values["POOL_MIN_BYTES"]
POOL_LIMIT_BYTES: int = _values["POOL_LIMIT_BYTES"]
ERROR_CARRY_MIN_BYTES: int = _values["ERROR_CARRY_MIN_BYTES"]
NATIVE_GRAD_MAX_ELEMENTS: int = _values["NATIVE_GRAD_MAX_ELEMENTS"]
JACOBIAN_VJP_MAX_ROWS: int = _values["JACOBIAN_VJP_MAX_ROWS"]
NEWTON_INVERSE_MAX_ROWS: int = _values["NEWTON_INVERSE_MAX_ROWS"]
NON_TEMPORAL_MIN_BYTES: int = _values["NON_TEMPORAL_MIN_BYTES"]
CORE_LOOP_MAX_ELEMENTS: int = _values["CORE_LOOP_MAX_ELEMENTS"]


if "NON_TEMPORAL_MIN_BYTES" in OVERRIDES:  # the one C++ threshold settable at run time
    try:
        from pyode import _C

        _C.set_non_temporal(NON_TEMPORAL_MIN_BYTES)
    except ImportError:  # the compiled backend is not built: nothing to set
        pass


def current() -> dict[str, int]:
    """Every threshold's value in force (defaults, ``PYODE_TUNING`` overrides, test monkeypatches)."""
    return {name: globals()[name] for name in _DEFAULTS}
