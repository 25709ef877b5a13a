"""Compiled CPU backend: thin wrappers that hand tensors to ``pyode._C`` by keyword (it reads their addresses
and sizes itself).

Callers (the public functions in ``pyode._kernels`` and the solvers) have already validated dtype,
device and contiguity; ``_C`` rechecks sizes. When autograd must see through a kernel, ``lincomb``
runs as :class:`pyode._kernels.autograd.LincombFunction`, whose backward is the same fused kernel.
:class:`CpuBackend` is the backend type, ``BACKEND`` its instance; the module-level functions are its methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pyode import _C  # ImportError here means: not built; the dispatcher handles it
from pyode._kernels.autograd import y1_with_graph
from pyode._kernels.backend import FusedBackend
from pyode._kernels.segments import Segments

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}


def lincomb_raw(base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]],
                like: Tensor, out: Tensor | None = None) -> Tensor:
    """(m, n) result of ``base + W @ ks`` without autograd. ``like``: any (n,) tensor giving dtype/size;
    ``out``: a contiguous (m, n) tensor of that dtype to write into (default: a new one)."""
    n = like.numel()
    if out is None:
        out = torch.empty((len(weights), n), dtype=like.dtype, device=like.device)
    flat = [float(w) for row in weights for w in row]
    _C.lincomb(out=out, rows=len(weights), n=n, base=base, ks=ks, weights=flat, dtype=_DTYPE_CODES[like.dtype])
    return out


def rk_finish(y0: Tensor, y1: Tensor | None, ks: Sequence[Tensor], b: Sequence[float] | None,
              e: Sequence[float] | None, atol: float, rtol: float,
              segments: Segments | None) -> tuple[Tensor, float, Tensor | None]:
    """Same contract as :func:`pyode._kernels.reference.rk_finish`."""
    y1, b = y1_with_graph(BACKEND.lincomb, y0, y1, ks, b)
    if y1 is None:
        y1 = torch.empty_like(y0)
    seg_norms = None
    if segments is not None and e is not None:
        seg_norms = torch.empty(segments.count, dtype=torch.float64)
    norm = _C.rk_finish(y1=y1, err=None, y0=y0, ks=ks, b=[] if b is None else [float(x) for x in b],
                        e=[] if e is None else [float(x) for x in e], atol=float(atol), rtol=float(rtol),
                        seg_offsets=None if segments is None else segments.buffer, seg_norms=seg_norms,
                        dtype=_DTYPE_CODES[y0.dtype])
    return y1, norm, seg_norms


def flat_stage_matrix(tableau) -> list[float]:
    """The stage matrix a as s * s floats, row-major, zero on and above the diagonal."""
    s = tableau.num_stages
    a = [0.0] * (s * s)
    for i, row in enumerate(tableau.a):
        for j, x in enumerate(row):
            a[i * s + j] = float(x)
    return a


def make_workspace(tableau, n: int, dtype: torch.dtype, segments: Segments | None):
    """A :class:`pyode._C.RKWorkspace` for fused steps of ``tableau`` on (n,) states of ``dtype``: each
    stage then costs one call with an address and a step size (the no-autograd fast path)."""
    e = [] if tableau.b_err is None else [float(x) for x in tableau.b_err]
    ws = _C.RKWorkspace(tableau.num_stages, flat_stage_matrix(tableau), [float(x) for x in tableau.b], e, int(n),
                        _DTYPE_CODES[dtype])
    if segments is not None:
        ws.set_segments(segments.offsets)
    return ws


def scaled_norm(a: Tensor, b: Tensor | None, y: Tensor, atol: float, rtol: float) -> float:
    """RMS of ``(a - b) / (atol + rtol * |y|)`` (b None: of ``a / scale``); all (n,) of one dtype."""
    return _C.scaled_norm(a=a, b=b, y=y, atol=float(atol), rtol=float(rtol), dtype=_DTYPE_CODES[y.dtype])


class CpuBackend(FusedBackend):
    """``pyode._C``'s kernels on CPU tensors, with the fused RK workspace."""

    name = "cpu"
    device_type = "cpu"
    fused_workspace = True
    fused_out = True
    lincomb_raw = staticmethod(lincomb_raw)
    rk_finish = staticmethod(rk_finish)
    scaled_norm = staticmethod(scaled_norm)
    make_workspace = staticmethod(make_workspace)


BACKEND = CpuBackend()
lincomb, lincomb_row = BACKEND.lincomb, BACKEND.lincomb_row
