"""Compiled CPU backend: thin wrappers that hand raw buffers to ``pyode._C``.

Callers (the public functions in ``pyode._kernels`` and the solvers) have already validated dtype,
device and contiguity; ``_C`` rechecks sizes. When autograd must see through a kernel, ``lincomb``
runs as :class:`LincombFunction`, whose backward is the same fused kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pyode._kernels.segments import Segments
from pyode import _C  # noqa: F401  (ImportError here means: not built; the dispatcher handles it)

NAME = "cpu"
_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}


def _ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _size(t: Tensor | None) -> int:
    return 0 if t is None else t.numel()


def lincomb_raw(base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]],
                like: Tensor) -> Tensor:
    """(m, n) result of ``base + W @ ks`` without autograd. ``like``: any (n,) tensor giving dtype/size."""
    n = like.numel()
    out = torch.empty((len(weights), n), dtype=like.dtype, device=like.device)
    flat = [float(w) for row in weights for w in row]
    _C.lincomb(out.data_ptr(), out.numel(), n, _ptr(base), _size(base), [k.data_ptr() for k in ks],
               [k.numel() for k in ks], flat, len(weights), n, _DTYPE_CODES[like.dtype])
    return out


class LincombFunction(torch.autograd.Function):
    """Differentiable ``lincomb`` whose backward is again one fused ``lincomb`` call:
    ``grad_k_j = sum_r w[r][j] * grad_r`` and ``grad_base = sum_r grad_r``."""

    @staticmethod
    def forward(ctx, weights, base, *ks):  # type: ignore[override]
        ctx.weights = weights
        ctx.num_terms = len(ks)
        return lincomb_raw(base, ks, weights, like=ks[0] if ks else base)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        grad = grad.contiguous()
        rows = list(grad.unbind(0))
        grad_base = None
        if ctx.needs_input_grad[1]:
            grad_base = lincomb_raw(None, rows, [[1.0] * len(rows)], like=grad[0])[0]
        grad_ks = [None] * ctx.num_terms
        if any(ctx.needs_input_grad[2:]):
            transposed = [[row[j] for row in ctx.weights] for j in range(ctx.num_terms)]
            grad_ks = list(lincomb_raw(None, rows, transposed, like=grad[0]).unbind(0))
        return (None, grad_base, *grad_ks)


def lincomb(base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]]) -> Tensor:
    """Same contract as :func:`pyode._kernels.reference.lincomb`."""
    like = ks[0] if ks else base
    if torch.is_grad_enabled() and (
            (base is not None and base.requires_grad) or any(k.requires_grad for k in ks)):
        return LincombFunction.apply(tuple(tuple(r) for r in weights), base, *ks)
    return lincomb_raw(base, ks, weights, like)


def rk_finish(y0: Tensor, y1: Tensor | None, ks: Sequence[Tensor], b: Sequence[float] | None,
              e: Sequence[float] | None, atol: float, rtol: float,
              segments: Segments | None) -> tuple[Tensor, float, Tensor | None]:
    """Same contract as :func:`pyode._kernels.reference.rk_finish`."""
    grad = torch.is_grad_enabled() and (y0.requires_grad or any(k.requires_grad for k in ks))
    if b is not None and grad:
        # y1 must carry a graph: build it with the differentiable kernel, then only measure the error.
        y1, b = lincomb(y0, ks, [b])[0], None
    if y1 is None:
        y1 = torch.empty_like(y0)
    seg_norms = None
    if segments is not None and e is not None:
        seg_norms = torch.empty(segments.count, dtype=torch.float64)
    norm = _C.rk_finish(y1.data_ptr(), y1.numel(), 0, 0, y0.data_ptr(), y0.numel(),
                        [k.data_ptr() for k in ks], [k.numel() for k in ks],
                        [] if b is None else [float(x) for x in b], [] if e is None else [float(x) for x in e],
                        y0.numel(), float(atol), float(rtol),
                        0 if segments is None else segments.buffer.data_ptr(),
                        0 if segments is None else segments.count, _ptr(seg_norms), _DTYPE_CODES[y0.dtype])
    return y1, norm, seg_norms
