"""CUDA backend: thin wrappers that hand raw device buffers to ``pyode._C_cuda``.

Imported lazily by :func:`pyode._kernels.get_backend` when the first CUDA tensor arrives (an
``ImportError`` here means the module was not built). Kernels run on PyTorch's current stream of the
tensors' device and never synchronise, except :func:`rk_finish`, which brings the step's error norms to the
host: one synchronisation per step. :func:`rk_finish_device` leaves them on the device instead, for a
device-side step-size controller.

Same contracts as :mod:`pyode._kernels.compiled`; autograd goes through the same
:class:`~pyode._kernels.autograd.LincombFunction`, with this module's kernel. Needs only ``pyode._C_cuda``
(not the CPU extension ``pyode._C``). :class:`CudaBackend` is the backend type, ``BACKEND`` its instance.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence

import torch
from torch import Tensor

from pyode import _C_cuda
from pyode._kernels import reference
from pyode._kernels.autograd import y1_with_graph
from pyode._kernels.backend import FusedBackend
from pyode._kernels.segments import Segments

MAX_TERMS: int = _C_cuda.max_terms
CHUNK_ELEMENTS: int = _C_cuda.chunk_elements
_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}

# Device copies of each Segments' offsets and chunk table, made once per (segments, device).
_SEGMENT_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _check_tensors(like: Tensor, tensors: Sequence[Tensor | None]) -> None:
    """Every tensor must share ``like``'s device and dtype: a kernel handed a host pointer or the wrong
    element size would read out of bounds, and pyode never copies between devices silently."""
    for t in tensors:
        if t is not None and (t.device != like.device or t.dtype != like.dtype):
            raise ValueError(f"CUDA kernel inputs must all be {like.dtype} on {like.device}; got {t.dtype} on "
                             f"{t.device}: move them with .to({str(like.device)!r}) first")


def _launch(t: Tensor) -> tuple[int, int]:
    """(device ordinal, cudaStream_t handle of PyTorch's current stream there) for tensors like ``t``."""
    index = t.device.index if t.device.index is not None else torch.cuda.current_device()
    return index, torch.cuda.current_stream(index).cuda_stream


def lincomb_raw(base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]],
                like: Tensor, out: Tensor | None = None) -> Tensor:
    """(m, n) result of ``base + W @ ks`` without autograd. ``like``: any (n,) tensor giving dtype/device;
    ``out``: a contiguous (m, n) tensor like it to write into (default: a new one)."""
    _check_tensors(like, [base, *ks, out])
    n = like.numel()
    if out is None:
        out = torch.empty((len(weights), n), dtype=like.dtype, device=like.device)
    flat = [float(w) for row in weights for w in row]
    _C_cuda.lincomb(out.data_ptr(), out.numel(), n, 0 if base is None else base.data_ptr(),
                    0 if base is None else base.numel(), [k.data_ptr() for k in ks], [k.numel() for k in ks],
                    flat, len(weights), n, _DTYPE_CODES[like.dtype], *_launch(like))
    return out


def _segment_tables(segments: Segments, device: torch.device) -> tuple[Tensor, Tensor, int]:
    """(offsets (nseg + 1,), chunk_starts (nseg + 1,), nchunks) on ``device``: segment q owns blocks
    ``[chunk_starts[q], chunk_starts[q + 1])`` of the kernel, ``ceil(len_q / CHUNK_ELEMENTS)`` of them."""
    per_device = _SEGMENT_TABLES.setdefault(segments, {})
    if device not in per_device:
        starts = [0]
        for lo, hi in itertools.pairwise(segments.offsets):
            starts.append(starts[-1] + -(-(hi - lo) // CHUNK_ELEMENTS))
        per_device[device] = (segments.buffer.to(device), torch.tensor(starts, dtype=torch.int64, device=device),
                              starts[-1])
    return per_device[device]


def _fold_terms(y0: Tensor, y1: Tensor | None, ks: Sequence[Tensor], b: Sequence[float] | None,
                e: Sequence[float] | None):
    """More terms than one launch takes: form y1 and the error vector with lincomb first, leaving one
    term (the error, weight 1) for the finishing kernel. Returns ``(y1, ks, b, e)``."""
    if len(ks) <= MAX_TERMS:
        return y1, ks, b, e
    if b is not None:
        y1 = lincomb_raw(y0, ks, [b], like=y0)[0]
    if e is None:
        return y1, [], None, None
    return y1, [lincomb_raw(None, ks, [e], like=y0)[0]], None, [1.0]


def rk_finish_device(y0: Tensor, y1: Tensor | None, ks: Sequence[Tensor], b: Sequence[float] | None,
                     e: Sequence[float] | None, atol: float, rtol: float, segments: Segments | None,
                     norms_out: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """:func:`rk_finish` without synchronising: the norms stay on the device.

    Args:
        y0: (n,); y1: (n,) or None (then ``b`` is required); ks: s tensors (n,); b, e: s floats each
            (already times h); segments: per-segment norms, or None.
        norms_out: optional (1 + nseg,) float64 tensor on the device to write the norms into (a static
            buffer, e.g. for CUDA-graph capture); allocated when None.
    Returns:
        ``(y1 (n,), norms)``; norms is (1 + nseg,) float64 on the device -- ``[global RMS, RMS of each
        segment...]`` -- or None when ``e`` is None (no error estimate).
    """
    y1, b = y1_with_graph(BACKEND.lincomb, y0, y1, ks, b)
    y1, ks, b, e = _fold_terms(y0, y1, ks, b, e)
    _check_tensors(y0, [y1, *ks])
    if y1 is None:
        y1 = torch.empty_like(y0)
    if y0.numel() == 0:  # nothing to launch over: the norms of an empty state are 0, never unwritten memory
        norms = None if e is None else _norms_buffer(norms_out, 1 + (0 if segments is None else segments.count),
                                                     y0.device).zero_()
        return y1, norms
    nseg = 0 if segments is None else segments.count
    if segments is None:
        offsets = chunk_starts = None
        nchunks = -(-y0.numel() // CHUNK_ELEMENTS)
    else:
        offsets, chunk_starts, nchunks = _segment_tables(segments, y0.device)
    norms = _norms_buffer(norms_out, 1 + nseg, y0.device) if e is not None else None
    partials = torch.empty(nchunks if e is not None else 0, dtype=torch.float64, device=y0.device)
    buffers = _C_cuda.FinishBuffers(0 if offsets is None else offsets.data_ptr(),
                                    0 if chunk_starts is None else chunk_starts.data_ptr(), nseg, nchunks,
                                    partials.data_ptr(), partials.numel(),
                                    0 if norms is None else norms.data_ptr(), 0 if norms is None else norms.numel())
    _C_cuda.rk_finish_async(y1.data_ptr(), y1.numel(), 0, 0, y0.data_ptr(), y0.numel(),
                            [k.data_ptr() for k in ks], [k.numel() for k in ks],
                            [] if b is None else [float(x) for x in b], [] if e is None else [float(x) for x in e],
                            y0.numel(), float(atol), float(rtol), buffers, _DTYPE_CODES[y0.dtype], *_launch(y0))
    return y1, norms


def _norms_buffer(norms_out: Tensor | None, size: int, device: torch.device) -> Tensor:
    if norms_out is None:
        return torch.empty(size, dtype=torch.float64, device=device)
    if norms_out.dtype != torch.float64 or norms_out.device != device or norms_out.numel() != size \
            or not norms_out.is_contiguous():
        raise ValueError(f"norms_out must be a contiguous ({size},) float64 tensor on {device}, got "
                         f"{tuple(norms_out.shape)} {norms_out.dtype} on {norms_out.device}")
    return norms_out


def rk_finish(y0: Tensor, y1: Tensor | None, ks: Sequence[Tensor], b: Sequence[float] | None,
              e: Sequence[float] | None, atol: float, rtol: float,
              segments: Segments | None) -> tuple[Tensor, float, Tensor | None]:
    """Same contract as :func:`pyode._kernels.reference.rk_finish` (seg_norms come back as a host
    float64 tensor, like the CPU backend's): one device-to-host copy, the step's only synchronisation."""
    y1, norms = rk_finish_device(y0, y1, ks, b, e, atol, rtol, segments)
    if norms is None:
        return y1, 0.0, None
    host = norms.cpu()
    return y1, float(host[0]), (host[1:] if segments is not None else None)


class CudaBackend(FusedBackend):
    """``pyode._C_cuda``'s kernels on CUDA tensors (no fused workspaces; the scaled norm is the torch formula)."""

    name = "cuda"
    device_type = "cuda"
    async_finish = True
    lincomb_raw = staticmethod(lincomb_raw)
    rk_finish = staticmethod(rk_finish)
    rk_finish_device = staticmethod(rk_finish_device)
    scaled_norm = staticmethod(reference.scaled_norm)  # no kernel of its own: the reference's torch ops


BACKEND = CudaBackend()
lincomb, lincomb_row = BACKEND.lincomb, BACKEND.lincomb_row
