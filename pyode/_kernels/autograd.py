"""Differentiable ``lincomb`` on top of a backend's raw kernel, shared by the compiled backends.

Imports neither extension: :mod:`pyode._kernels.compiled` (``pyode._C``) and :mod:`pyode._kernels.cuda`
(``pyode._C_cuda``) both build their ``lincomb`` from this module with their own ``lincomb_raw``, so either
loads without the other.

``lincomb``'s backward formula is :func:`lincomb_vjp`, written once: the custom op ``torch.ops.pyode.lincomb``
(:mod:`pyode._kernels.library`) registers it as its autograd formula, and :class:`LincombFunction` (the eager
compiled path for large states) runs it with the backend's kernel. Paths built from torch's own ops (the
reference backend, :func:`native_lincomb` for small states) are differentiated by torch itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from pyode import _tuning

# Up to pyode._tuning.NATIVE_GRAD_MAX_ELEMENTS elements, a differentiable lincomb is built from torch's own ops
# (C++ autograd nodes); above it the fused kernel (see pyode._tuning for the measurement). (The custom op instead
# of the Function costs ~300 us more per forward at n = 16385: torch.library's Python dispatch; not used eagerly.)


def lincomb_vjp(combine: Callable, grad: Tensor, weights_t, ones, need_base: bool,
                need_ks: bool, num_terms: int) -> tuple[Tensor | None, list[Tensor | None]]:
    """The backward of ``out = base + W @ stack(ks)``: ``grad_base = sum_r grad_r`` and
    ``grad_k_j = sum_r W[r, j] grad_r``, each one more ``lincomb`` of the rows of ``grad``.

    Args:
        combine: ``combine(rows, weights) -> (m', n)``, the forward op (or kernel) without a base, taking
            weights in the caller's representation (nested floats, or an (m', m) tensor).
        grad: (m, n) gradient of the output; weights_t: W transposed, (s, m); ones: a (1, m) row of ones.
        need_base, need_ks: which gradients are wanted; num_terms: s.
    Returns:
        ``(grad_base (n,) or None, [grad_k_j (n,) or None] * s)``.
    """
    grad = grad.contiguous()  # the kernels read n consecutive elements per row
    m = grad.shape[0]
    rows = list(grad.unbind(0))
    grad_base = None
    if need_base:  # the sum of the rows (one row: itself; none: zeros)
        grad_base = rows[0] if m == 1 else grad.sum(0) if m == 0 else combine(rows, ones)[0]
    grad_ks: list[Tensor | None] = [None] * num_terms
    if need_ks:
        if m == 0:
            grad_ks = [grad.new_zeros(grad.shape[1]) for _ in range(num_terms)]
        else:
            grad_ks = list(combine(rows, weights_t).unbind(0))
    return grad_base, grad_ks


class LincombFunction(torch.autograd.Function):
    """Differentiable ``lincomb`` for a compiled backend: forward and backward (:func:`lincomb_vjp`) are
    calls of the backend's non-differentiable kernel ``raw`` (``lincomb_raw`` of the CPU or CUDA backend)."""

    @staticmethod
    def forward(ctx, raw, weights, base, *ks):  # type: ignore[override]
        ctx.raw = raw
        ctx.weights = weights
        ctx.num_terms = len(ks)
        return raw(base, ks, weights, like=ks[0] if ks else base)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        m = grad.shape[0]
        transposed = [[row[j] for row in ctx.weights] for j in range(ctx.num_terms)]
        grad_base, grad_ks = lincomb_vjp(lambda rows, w: ctx.raw(None, rows, w, like=rows[0]), grad, transposed,
                                         [[1.0] * m], ctx.needs_input_grad[2], any(ctx.needs_input_grad[3:]),
                                         ctx.num_terms)
        return (None, None, grad_base, *grad_ks)


# The state dtypes whose CPU tensors pyode makes over NumPy arrays where torch's constructors cost more per call
# (weight vectors here, func's time in FlatFunc).
NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def weight_tensor(weights, like: Tensor) -> Tensor:
    """``weights`` (floats, or rows of floats) as a tensor of ``like``'s dtype and device, each rounded once from
    double as ``torch.tensor`` rounds it. A CPU float32/float64 tensor is made over a NumPy array, which costs
    less per call than ``torch.tensor`` (paid once per stage on the recorded path). Which small allocations come
    between func's calls also decides where glibc's malloc puts func's own temporaries (warm or cold memory);
    ``bench/results/recorded_path_ab.md`` measures that for P2."""
    np_dtype = NUMPY_DTYPES.get(like.dtype)
    if np_dtype is not None and like.is_cpu:
        return torch.from_numpy(np.array(weights, dtype=np_dtype))
    return torch.tensor(weights, dtype=like.dtype, device=like.device)


def native_lincomb(base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]]) -> Tensor:
    """``base + W @ stack(ks)`` with torch ops (autograd through C++ nodes); ks non-empty. Returns (m, n)."""
    stacked = torch.stack(list(ks))
    w = weight_tensor(weights, stacked)
    return torch.mm(w, stacked) if base is None else torch.addmm(base, w, stacked)


def differentiable_lincomb(raw, base: Tensor | None, ks: Sequence[Tensor],
                           weights: Sequence[Sequence[float]]) -> Tensor:
    """``raw(base, ks, weights, like)`` (a backend's kernel), or, when autograd must see it, the same
    through :class:`LincombFunction` (large states) or :func:`native_lincomb` (small ones). Returns (m, n)."""
    like = ks[0] if ks else base
    if _records_graph(base, ks):
        if ks and like.numel() <= _tuning.NATIVE_GRAD_MAX_ELEMENTS:
            return native_lincomb(base, ks, weights)
        return LincombFunction.apply(raw, tuple(tuple(r) for r in weights), base, *ks)
    return raw(base, ks, weights, like)


def differentiable_lincomb_row(raw, base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """One row of :func:`differentiable_lincomb`: (n,). A small row with a base that autograd records is
    stack + a transposed view + addmv: C++ nodes, and no select node on a (1, n) result (recording costs ~2-5 us
    per op; against ``lincomb(...)[0]`` it took 1.3-2.7 ms off the forward pass of P2's solves, A/B in one
    process). The weights are made like the other paths' (``h * a`` in double, then the state's dtype), so all
    of them round alike and take the same steps."""
    if base is not None and ks and base.numel() <= _tuning.NATIVE_GRAD_MAX_ELEMENTS and _records_graph(base, ks):
        return torch.addmv(base, torch.stack(list(ks)).t(), weight_tensor(weights, base))
    return differentiable_lincomb(raw, base, ks, [weights])[0]


def _records_graph(base: Tensor | None, ks: Sequence[Tensor]) -> bool:
    return torch.is_grad_enabled() and ((base is not None and base.requires_grad) or any(k.requires_grad for k in ks))


def y1_with_graph(lincomb_fn, y0: Tensor, y1: Tensor | None, ks: Sequence[Tensor],
                  b: Sequence[float] | None) -> tuple[Tensor | None, Sequence[float] | None]:
    """When autograd must see through a step, builds ``y1 = y0 + sum_j b_j k_j`` with the differentiable
    ``lincomb_fn`` and returns ``(y1, None)``: the finishing kernel then only measures the error. With ``b``
    but no terms, ``y1`` is a copy of ``y0`` (the kernels read an empty ``b`` as "y1 given" and would leave a
    fresh buffer unwritten). Otherwise returns ``(y1, b)`` unchanged."""
    if b is not None and not ks:
        return y0.clone(), None
    grad = torch.is_grad_enabled() and (y0.requires_grad or any(k.requires_grad for k in ks))
    if b is not None and grad:
        return lincomb_fn(y0, ks, [b])[0], None
    return y1, b
