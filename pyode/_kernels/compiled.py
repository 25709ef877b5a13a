"""Compiled CPU backend: thin wrappers that hand raw buffers to ``pyode._C``.

Callers (the public functions in ``pyode._kernels`` and the solvers) have already validated dtype,
device and contiguity; ``_C`` rechecks sizes. When autograd must see through a kernel, ``lincomb``
runs as :class:`LincombFunction`, whose backward is the same fused kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pyode import _C  # ImportError here means: not built; the dispatcher handles it
from pyode._kernels.segments import Segments

NAME = "cpu"
_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}


def _ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _size(t: Tensor | None) -> int:
    return 0 if t is None else t.numel()


def lincomb_raw(base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]],
                like: Tensor, out: Tensor | None = None) -> Tensor:
    """(m, n) result of ``base + W @ ks`` without autograd. ``like``: any (n,) tensor giving dtype/size;
    ``out``: a contiguous (m, n) tensor of that dtype to write into (default: a new one)."""
    n = like.numel()
    if out is None:
        out = torch.empty((len(weights), n), dtype=like.dtype, device=like.device)
    flat = [float(w) for row in weights for w in row]
    _C.lincomb(out.data_ptr(), out.numel(), n, _ptr(base), _size(base), [k.data_ptr() for k in ks],
               [k.numel() for k in ks], flat, len(weights), n, _DTYPE_CODES[like.dtype])
    return out


class LincombFunction(torch.autograd.Function):
    """Differentiable ``lincomb`` whose backward is again one fused ``lincomb`` call:
    ``grad_k_j = sum_r w[r][j] * grad_r`` and ``grad_base = sum_r grad_r``.

    ``raw`` is the backend's non-differentiable kernel (``lincomb_raw`` of this module or of the CUDA
    backend), so every compiled backend shares this one autograd rule."""

    @staticmethod
    def forward(ctx, raw, weights, base, *ks):  # type: ignore[override]
        ctx.raw = raw
        ctx.weights = weights
        ctx.num_terms = len(ks)
        return raw(base, ks, weights, like=ks[0] if ks else base)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        grad = grad.contiguous()
        rows = list(grad.unbind(0))
        grad_base = None
        if ctx.needs_input_grad[2]:  # the sum of the rows (one row: itself)
            grad_base = rows[0] if len(rows) == 1 else ctx.raw(None, rows, [[1.0] * len(rows)], like=grad[0])[0]
        grad_ks = [None] * ctx.num_terms
        if any(ctx.needs_input_grad[3:]):
            transposed = [[row[j] for row in ctx.weights] for j in range(ctx.num_terms)]
            grad_ks = list(ctx.raw(None, rows, transposed, like=grad[0]).unbind(0))
        return (None, None, grad_base, *grad_ks)


# Up to this many elements, a differentiable lincomb is built from torch's own ops (stack + addmm/addmv): their
# autograd nodes are C++, while a Python autograd.Function costs ~17 us forward and ~35 us backward per
# call, which dominates small-state backprop (measured: 13 / 18 us per stage for the native ops at n = 2
# and n = 1024). Above it the fused kernel's single pass over memory wins.
NATIVE_GRAD_MAX_NUMEL = 1 << 14


def native_lincomb(base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]]) -> Tensor:
    """``base + W @ stack(ks)`` with torch ops (autograd through C++ nodes); ks non-empty. Returns (m, n)."""
    stacked = torch.stack(list(ks))
    w = torch.tensor(weights, dtype=stacked.dtype, device=stacked.device)
    return torch.mm(w, stacked) if base is None else torch.addmm(base, w, stacked)


def differentiable_lincomb(raw, base: Tensor | None, ks: Sequence[Tensor],
                           weights: Sequence[Sequence[float]]) -> Tensor:
    """``raw(base, ks, weights, like)`` (a backend's kernel), or, when autograd must see it, the same
    through :class:`LincombFunction` (large states) or :func:`native_lincomb` (small ones). Returns (m, n)."""
    like = ks[0] if ks else base
    if _records_graph(base, ks):
        if ks and like.numel() <= NATIVE_GRAD_MAX_NUMEL:
            return native_lincomb(base, ks, weights)
        return LincombFunction.apply(raw, tuple(tuple(r) for r in weights), base, *ks)
    return raw(base, ks, weights, like)


def differentiable_lincomb_row(raw, base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """One row of :func:`differentiable_lincomb`: (n,). A small row with a base that autograd records is
    stack + a transposed view + addmv: C++ nodes, and no select node on a (1, n) result (recording costs ~2-5 us
    per op; against ``lincomb(...)[0]`` it took 1.3-2.7 ms off the forward pass of P2's solves, A/B in one
    process). The weights are made like the other paths' (``h * a`` in double, then the state's dtype), so all
    of them round alike and take the same steps."""
    if base is not None and ks and base.numel() <= NATIVE_GRAD_MAX_NUMEL and _records_graph(base, ks):
        w = torch.tensor(weights, dtype=base.dtype, device=base.device)
        return torch.addmv(base, torch.stack(list(ks)).t(), w)
    return differentiable_lincomb(raw, base, ks, [weights])[0]


def _records_graph(base: Tensor | None, ks: Sequence[Tensor]) -> bool:
    return torch.is_grad_enabled() and ((base is not None and base.requires_grad) or any(k.requires_grad for k in ks))


def lincomb(base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]]) -> Tensor:
    """Same contract as :func:`pyode._kernels.reference.lincomb`."""
    return differentiable_lincomb(lincomb_raw, base, ks, weights)


def lincomb_row(base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Same contract as :func:`pyode._kernels.reference.lincomb_row`."""
    return differentiable_lincomb_row(lincomb_raw, base, ks, weights)


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


def rk_finish(y0: Tensor, y1: Tensor | None, ks: Sequence[Tensor], b: Sequence[float] | None,
              e: Sequence[float] | None, atol: float, rtol: float,
              segments: Segments | None) -> tuple[Tensor, float, Tensor | None]:
    """Same contract as :func:`pyode._kernels.reference.rk_finish`."""
    y1, b = y1_with_graph(lincomb, y0, y1, ks, b)
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


def _flat_a(tableau) -> list[float]:
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
    ws = _C.RKWorkspace(tableau.num_stages, _flat_a(tableau), [float(x) for x in tableau.b], e, int(n),
                        _DTYPE_CODES[dtype])
    if segments is not None:
        ws.set_segments(segments.offsets)
    return ws


def make_per_sample_workspace(tableau, P, t_out: Sequence[float], rows: int, width: int, dtype: torch.dtype,
                              opts, gains, atol: float, rtol: float, stall_limit: int):
    """A :class:`pyode._C.PerSampleWorkspace`: fused per-row step sizes for an FSAL ``tableau`` with
    interpolant matrix ``P`` (powers, s), output times ``t_out`` (solver direction), a (rows, width)
    state, the step bounds and ``max_num_steps`` of ``opts`` (AdaptiveOptions, validated), the controller's
    ``gains`` (:func:`pyode._solvers.controller.pid_gains`), the tolerances and ``stall_limit``
    (:class:`pyode._solvers.adaptive.StallWatch`'s ``LIMIT``)."""
    return _C.PerSampleWorkspace(
        tableau.num_stages, _flat_a(tableau), [float(x) for x in tableau.c], [float(x) for x in tableau.b_err],
        [float(x) for row in P for x in row], [float(x) for x in t_out], int(rows), int(width), _DTYPE_CODES[dtype],
        float(gains.safety), float(gains.ifactor), float(gains.dfactor), float(gains.b1), float(gains.b2),
        float(gains.b3), float(opts.min_step), float(opts.max_step), float(atol), float(rtol), int(opts.max_num_steps),
        int(stall_limit))


def scaled_norm(a: Tensor, b: Tensor | None, y: Tensor, atol: float, rtol: float) -> float:
    """RMS of ``(a - b) / (atol + rtol * |y|)`` (b None: of ``a / scale``); all (n,) of one dtype."""
    n = y.numel()
    return _C.scaled_norm(a.data_ptr(), a.numel(), _ptr(b), _size(b), y.data_ptr(), n, n, float(atol), float(rtol),
                          _DTYPE_CODES[y.dtype])
