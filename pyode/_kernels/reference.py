"""Reference backend: the kernels written as plain torch ops.

This is the specification every compiled kernel is tested against, and the fallback when no extension
is built. It is differentiable by ordinary autograd. The functions are also the methods of
:class:`ReferenceBackend`, whose instance ``BACKEND`` :func:`pyode._kernels.get_backend` returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pyode._kernels.backend import KernelBackend
from pyode._kernels.segments import Segments


def lincomb(base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]]) -> Tensor:
    """``out[r] = base + sum_j weights[r][j] * ks[j]``.

    Args:
        base: (n,) or None (zero).
        ks: s tensors of shape (n,).
        weights: m rows of s floats.
    Returns:
        (m, n)
    """
    rows = []
    for row in weights:
        acc = torch.zeros_like(ks[0]) if base is None else base
        for w, k in zip(row, ks):
            if w != 0.0:
                acc = acc + w * k
        rows.append(acc)
    if not rows:  # m = 0: an empty (0, n) of the inputs' dtype, like the compiled kernels
        like = ks[0] if ks else base
        return like.new_empty((0, like.numel())) if like is not None else torch.empty(0, 0)
    return torch.stack(rows)


def lincomb_row(base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """One row of :func:`lincomb`: ``base + sum_j weights[j] * ks[j]``, (n,) (a stage input, one update)."""
    return lincomb(base, ks, [weights])[0]


def lincomb_raw(base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]], like: Tensor,
                out: Tensor | None = None) -> Tensor:
    """:func:`lincomb` without autograd, (m, n): a fresh tensor (never an alias of an input), or ``out``."""
    with torch.no_grad():
        result = lincomb(base, ks, weights)
        if out is None:
            return result
        return out.copy_(result)


def rk_finish(y0: Tensor, y1: Tensor | None, ks: Sequence[Tensor], b: Sequence[float] | None,
              e: Sequence[float] | None, atol: float, rtol: float,
              segments: Segments | None) -> tuple[Tensor, float, Tensor | None]:
    """Complete a step: ``y1 = y0 + sum b_j k_j`` (unless ``b`` is None and ``y1`` given), and the RMS of
    ``err / (atol + rtol * max(|y0|, |y1|))`` with ``err = sum e_j k_j``.

    Args:
        y0: (n,); y1: (n,) or None; ks: s tensors (n,); b, e: s floats each (already times h).
        segments: the segments of the per-segment norms, or None.
    Returns:
        y1 (n,), global RMS norm (float), per-segment RMS norms (nseg,) float64 or None.
    """
    if b is not None:
        y1 = lincomb(y0, ks, [b])[0]
    if e is None:
        return y1, 0.0, None
    err = lincomb(None, ks, [e])[0] if ks else torch.zeros_like(y0)
    with torch.no_grad():
        err, y0_, y1_ = _norm_precision(err, y0, y1)
        ratio = (err / (atol + rtol * torch.maximum(y0_.abs(), y1_.abs()))).double()
        sq = ratio * ratio
        norm = float(sq.mean().sqrt()) if sq.numel() else 0.0
        seg_norms = None
        if segments is not None:
            bounds = zip(segments.offsets[:-1], segments.offsets[1:])
            seg_norms = torch.stack([sq[lo:hi].mean().sqrt() if hi > lo else sq.new_zeros(()) for lo, hi in bounds])
    return y1, norm, seg_norms


def scaled_norm(a: Tensor, b: Tensor | None, y: Tensor, atol: float, rtol: float) -> float:
    """RMS of ``(a - b) / (atol + rtol * |y|)`` (b None: of ``a / scale``); all (n,)."""
    with torch.no_grad():
        diff = a if b is None else a - b
        diff, y = _norm_precision(diff, y)
        r = (diff / (atol + rtol * y.abs())).double()
        return float(r.pow(2).mean().sqrt()) if r.numel() else 0.0


def _norm_precision(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Half-precision tensors in float32 for the error norm: in float16, ``atol = 1e-9`` rounds to 0 and
    ``err / (rtol * |y|)`` overflows to inf, which would read as a NaN/inf state. float32/float64 pass
    through unchanged (the compiled kernels compute in the state's own precision)."""
    if tensors[0].dtype in (torch.float16, torch.bfloat16):
        return tuple(t.float() for t in tensors)
    return tensors


class ReferenceBackend(KernelBackend):
    """Pure torch ops on any device and float dtype (see the module docstring); no fused capabilities."""

    name = "reference"
    device_type = None
    lincomb = staticmethod(lincomb)
    lincomb_row = staticmethod(lincomb_row)
    lincomb_raw = staticmethod(lincomb_raw)
    rk_finish = staticmethod(rk_finish)
    scaled_norm = staticmethod(scaled_norm)


BACKEND = ReferenceBackend()
