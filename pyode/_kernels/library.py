"""pyode's kernels as PyTorch custom operators, so that ``torch.compile`` can trace through a solve.

Importing this module registers ``torch.ops.pyode.lincomb`` (``torch.library.custom_op``) with a fake
(meta) implementation for tracing and an autograd formula whose backward is again the same op. The op is
opaque to the compiler: inside it, the weights are read on the host and the backend's raw kernel runs
(``pyode._C``, ``pyode._C_cuda``, or the pure-torch reference when no extension is built).

The eager solvers never go through the dispatcher (they call ``pyode._C`` directly, which is faster for
small states); the trace-friendly solve (:mod:`pyode._solvers.traced`) uses this op on request. ``import
pyode`` imports this module (registration costs ~2 ms), so ``torch.ops.pyode.lincomb`` is there for users.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pyode._kernels import get_backend, reference
from pyode._kernels.autograd import lincomb_vjp

__all__ = ["lincomb"]

_LINCOMB_SCHEMA = "(Tensor? base, Tensor[] ks, Tensor weights) -> Tensor"


def _like(base: Tensor | None, ks: Sequence[Tensor]) -> Tensor:
    """The tensor giving the result's dtype, device and row length n."""
    if ks:
        return ks[0]
    if base is None:
        raise ValueError("pyode::lincomb needs a base tensor or at least one term in ks")
    return base


def _check_lincomb_args(base: Tensor | None, ks: Sequence[Tensor], weights: Tensor, real: bool) -> Tensor:
    """Shape/dtype/device checks that need no data (they run at trace time too); returns the ``like`` tensor.

    The kernels read n elements of ``like``'s dtype from every address, so a mismatch must not get through.
    ``real``: the check of the real kernel, which reads values (no meta tensor may reach it); the fake
    implementation takes meta inputs for shape inference, but not meta mixed with real ones."""
    like = _like(base, ks)
    if weights.is_complex() or not weights.is_floating_point():
        raise TypeError(f"pyode::lincomb: weights must be a real floating-point tensor, got {weights.dtype}")
    if weights.dim() != 2 or weights.shape[1] != len(ks):
        raise ValueError(f"pyode::lincomb: weights must be (m, len(ks) = {len(ks)}), got shape "
                         f"{tuple(weights.shape)}")
    n, dtype, device = like.numel(), like.dtype, like.device
    for j, t in enumerate(ks if base is None else [base, *ks]):
        if t.dim() != 1 or t.numel() != n or t.dtype != dtype or t.device != device:
            name = "base" if base is not None and j == 0 else f"ks[{j - (base is not None)}]"
            raise ValueError(f"pyode::lincomb: {name} is {t.dtype} {tuple(t.shape)} on {t.device}; base and "
                             f"every k must be 1-D {dtype} with {n} elements on {device}")
    if real and like.is_meta:
        name = "ks[0]" if ks else "base"
        raise ValueError(f"pyode::lincomb: {name} is a meta tensor (a shape without values) but the weights are "
                         f"on {weights.device}; the kernel needs values: pass real tensors, or meta ones throughout "
                         "for shape inference")
    if weights.is_meta and not like.is_meta:
        raise ValueError(f"pyode::lincomb: weights is a meta tensor (a shape without values) but ks/base are on "
                         f"{device}; the op reads the weights' values: pass them on cpu")
    if weights.device != device and weights.device.type != "cpu":
        raise ValueError(f"pyode::lincomb: weights is on {weights.device} but ks/base on {device}; the weights are "
                         f"read on the host: pass them on cpu or on {device}")
    return like


def _lincomb_impl(base: Tensor | None, ks: list[Tensor], weights: Tensor) -> Tensor:
    """Real kernel: ``out[r] = base + sum_j weights[r, j] * ks[j]``, (m, n). The host read of ``weights``
    happens here, inside the opaque op, so a compiled graph around it has no host synchronisation."""
    like = _check_lincomb_args(base, ks, weights, real=True)
    # float64: the kernels' coefficient precision (no autograd here: the op runs below the autograd key).
    rows = (weights if weights.dtype == torch.float64 else weights.double()).tolist()
    # contiguous(): the compiler may hand over strided views, and the kernels read n consecutive elements.
    base = None if base is None else base.contiguous()
    ks = [k.contiguous() for k in ks]
    backend = get_backend(like.device) if like.dtype in (torch.float32, torch.float64) else reference.BACKEND
    return backend.lincomb_raw(base, ks, rows, like=like)  # a fresh (m, n) tensor, never an alias


def _lincomb_fake(base: Tensor | None, ks: list[Tensor], weights: Tensor) -> Tensor:
    like = _check_lincomb_args(base, ks, weights, real=False)
    return like.new_empty((weights.shape[0], like.numel()))


def _setup_context(ctx, inputs, output) -> None:
    base, ks, weights = inputs
    ctx.has_base = base is not None
    ctx.num_terms = len(ks)
    ctx.save_for_backward(weights, *ks)


def _lincomb_backward(ctx, grad: Tensor):
    """grad: (m, n). Returns (grad_base (n,), grad_ks [s x (n,)], grad_weights (m, s)), each only if needed.

    grad_base and grad_ks: :func:`pyode._kernels.autograd.lincomb_vjp` with this op (the backward of every
    backend's lincomb, and differentiable again); grad_w[r, j] = <grad_r, k_j> (a small matmul)."""
    weights, *ks = ctx.saved_tensors
    # needs_input_grad mirrors the inputs: (bool, [bool per k], bool); the grads must mirror them too.
    need_base, need_ks, need_weights = ctx.needs_input_grad
    grad_base, grad_ks = lincomb_vjp(lambda rows, w: lincomb(None, rows, w), grad, weights.t().contiguous(),
                                     weights.new_ones((1, grad.shape[0])), need_base and ctx.has_base,
                                     any(need_ks), ctx.num_terms)
    grad_weights = None
    if need_weights:
        stacked = torch.stack(ks) if ks else grad.new_zeros((0, grad.shape[1]))
        grad_weights = (grad @ stacked.t()).to(weights.dtype)
    return grad_base, grad_ks, grad_weights


lincomb = torch.library.custom_op("pyode::lincomb", _lincomb_impl, mutates_args=(), schema=_LINCOMB_SCHEMA)
"""``torch.ops.pyode.lincomb(base, ks, weights)``: base (n,) or None, ks s tensors (n,), weights (m, s)
(any real float dtype, on the CPU or the device of ks) -> (m, n). Differentiable in all three; traceable by ``torch.compile``."""
lincomb.register_fake(_lincomb_fake)
lincomb.register_autograd(_lincomb_backward, setup_context=_setup_context)
