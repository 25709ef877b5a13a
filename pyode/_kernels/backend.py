"""The kernel backend type: the API every backend implements and the capabilities it declares.

One subclass per backend (:class:`~pyode._kernels.reference.ReferenceBackend`,
:class:`~pyode._kernels.compiled.CpuBackend`, :class:`~pyode._kernels.cuda.CudaBackend`), one instance each
(the module's ``BACKEND``), returned by :func:`pyode._kernels.get_backend`. Solvers read the capability
attributes instead of probing for methods. Imports neither extension.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor

from pyode._kernels.autograd import differentiable_lincomb, differentiable_lincomb_row
from pyode._kernels.segments import Segments


class KernelBackend:
    """The kernels of one device family. Tensors are flat (n,), contiguous, float32/float64 (the reference
    backend: any float dtype), already validated by the caller.

    Capabilities (class attributes):
        name: ``"reference"``, ``"cpu"`` or ``"cuda"`` (a wrapper adds a suffix).
        device_type: the tensors' device type, or None for any device.
        fused_workspace: :meth:`make_workspace` exists (one call per RK stage, no autograd).
        fused_out: :meth:`lincomb_raw` writes its result in one pass into a caller's ``out`` buffer (so a
            pooled buffer saves an allocation).
        async_finish: :meth:`rk_finish_device` exists (the norms stay on the device: no synchronisation).
    """

    name: ClassVar[str] = "abstract"
    device_type: ClassVar[str | None] = None
    fused_workspace: ClassVar[bool] = False
    fused_out: ClassVar[bool] = False
    async_finish: ClassVar[bool] = False

    def lincomb(self, base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]]) -> Tensor:
        """``out[r] = base + sum_j weights[r][j] * ks[j]``, differentiable. base: (n,) or None; ks: s (n,);
        weights: m rows of s floats. Returns (m, n)."""
        raise NotImplementedError

    def lincomb_row(self, base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
        """One row of :meth:`lincomb`: ``base + sum_j weights[j] * ks[j]``, (n,)."""
        raise NotImplementedError

    def lincomb_raw(self, base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]],
                    like: Tensor, out: Tensor | None = None) -> Tensor:
        """:meth:`lincomb` without autograd: (m, n), into ``out`` when given (a contiguous (m, n) tensor);
        ``like``: any (n,) tensor giving dtype, device and n."""
        raise NotImplementedError

    def rk_finish(self, y0: Tensor, y1: Tensor | None, ks: Sequence[Tensor], b: Sequence[float] | None,
                  e: Sequence[float] | None, atol: float, rtol: float,
                  segments: Segments | None) -> tuple[Tensor, float, Tensor | None]:
        """Completes a step: ``y1 = y0 + sum b_j k_j`` (unless ``b`` is None and ``y1`` given), and the RMS of
        ``err / (atol + rtol * max(|y0|, |y1|))`` with ``err = sum e_j k_j``; b, e already times h.
        Returns y1 (n,), the global norm (float), per-segment norms (nseg,) float64 on the host or None."""
        raise NotImplementedError

    def scaled_norm(self, a: Tensor, b: Tensor | None, y: Tensor, atol: float, rtol: float) -> float:
        """RMS of ``(a - b) / (atol + rtol * |y|)`` (b None: of ``a / scale``); all (n,)."""
        raise NotImplementedError

    def rk_finish_device(self, y0: Tensor, y1: Tensor | None, ks: Sequence[Tensor], b: Sequence[float] | None,
                         e: Sequence[float] | None, atol: float, rtol: float, segments: Segments | None,
                         norms_out: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """:meth:`rk_finish` with the norms left on the device, (1 + nseg,) float64 (only where ``async_finish``)."""
        raise NotImplementedError(f"the {self.name} backend has no rk_finish_device (async_finish is False)")

    def make_workspace(self, tableau, n: int, dtype, segments: Segments | None):
        """A fused per-solve RK step state (only where ``fused_workspace``)."""
        raise NotImplementedError(f"the {self.name} backend has no fused workspace (fused_workspace is False)")

    def __repr__(self) -> str:
        return f"<pyode kernel backend {self.name!r}>"


class FusedBackend(KernelBackend):
    """A compiled backend: ``lincomb`` and ``lincomb_row`` are its fused ``lincomb_raw`` kernel, seen by
    autograd through :mod:`pyode._kernels.autograd` (one backward formula for every backend)."""

    def lincomb(self, base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]]) -> Tensor:
        return differentiable_lincomb(self.lincomb_raw, base, ks, weights)

    def lincomb_row(self, base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
        return differentiable_lincomb_row(self.lincomb_raw, base, ks, weights)
