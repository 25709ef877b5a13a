"""pyode's kernel layer: one narrow API, a backend chosen per device.

Backends:
    ``reference``  pure torch ops: the specification and the fallback;
    ``cpu``        the compiled extension ``pyode._C`` (csrc/, pybind11, OpenMP);
    ``cuda``       the CUDA extension ``pyode._C_cuda`` (csrc/cuda/), imported when the first CUDA tensor
                   arrives.

``PYODE_BACKEND=reference|cpu|cuda|auto`` (default ``auto``) forces a backend; asking for one that is not
built, or for tensors on another device, raises :class:`pyode.errors.BackendUnavailableError`; ``auto``
picks the compiled backend of the tensors' device and falls back to the reference path (pure torch, on any
device) when it is not built -- with a one-time warning for CUDA saying how to build it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Sequence
from types import ModuleType

import torch
from torch import Tensor

from pyode._kernels import reference
from pyode._kernels.segments import Segments
from pyode.errors import BackendUnavailableError

__all__ = ["Segments", "backend_info", "get_backend", "lincomb", "rk_finish"]

_VALID_BACKENDS = ("auto", "reference", "cpu", "cuda")
_BUILD_HINT = ("build it with `pip install --no-build-isolation -e .` (needs a C++17 compiler, cmake and "
               "pybind11), or set PYODE_BACKEND=auto/reference to use the pure-torch path")

try:
    from pyode._kernels import compiled as _compiled
    _COMPILED_ERROR: str | None = None
except ImportError as exc:  # extension not built, or failed to load
    _compiled = None
    _COMPILED_ERROR = str(exc)

_CUDA_BUILD_HINT = ("build it on a machine with the CUDA toolkit (nvcc on PATH) with "
                    "`PYODE_CUDA=ON pip install --no-build-isolation -e .`")


@functools.cache
def _cuda_backend() -> tuple[ModuleType | None, str | None]:
    """(pyode._kernels.cuda, None), or (None, why it cannot load); imported on first use only."""
    try:
        from pyode._kernels import cuda
    except ImportError as exc:  # not built (PYODE_CUDA=OFF, no nvcc), or built for another Python
        return None, str(exc)
    return cuda, None


@functools.cache
def _warn_cuda_fallback(reason: str) -> None:
    warnings.warn(f"pyode's CUDA kernels are not available ({reason}): CUDA tensors use the slower pure-torch "
                  f"path; {_CUDA_BUILD_HINT}", RuntimeWarning, stacklevel=3)


def _requested_backend() -> str:
    name = os.environ.get("PYODE_BACKEND", "auto").strip().lower() or "auto"
    if name not in _VALID_BACKENDS:
        raise ValueError(f"PYODE_BACKEND={name!r} is not valid; use one of {', '.join(_VALID_BACKENDS)}")
    return name


def get_backend(device: torch.device) -> ModuleType:
    """The backend module (``lincomb``, ``rk_finish``) to use for tensors on ``device``."""
    name = _requested_backend()
    if name == "reference":
        return reference
    if name in ("cpu", "cuda") and device.type != name:
        raise BackendUnavailableError(f"PYODE_BACKEND={name} cannot run tensors on {device}")
    if device.type == "cuda":
        return _get_cuda_backend(name)
    if device.type != "cpu":
        return reference
    if _compiled is None:
        if name == "cpu":
            raise BackendUnavailableError(
                f"PYODE_BACKEND=cpu but the compiled extension pyode._C is not available "
                f"({_COMPILED_ERROR}); {_BUILD_HINT}")
        return reference
    return _compiled


def _get_cuda_backend(name: str) -> ModuleType:
    cuda, error = _cuda_backend()
    if cuda is not None:
        return cuda
    if name == "cuda":
        raise BackendUnavailableError(f"PYODE_BACKEND=cuda but the CUDA extension pyode._C_cuda is not "
                                      f"available ({error}); {_CUDA_BUILD_HINT}")
    _warn_cuda_fallback(error)
    return reference


def _backend_name(device: torch.device) -> str:
    try:
        return get_backend(device).NAME
    except BackendUnavailableError as exc:
        return f"unavailable: {exc}"


def backend_info() -> dict:
    """What is loaded: the requested backend, whether ``pyode._C`` loaded (and why not), OpenMP threads,
    and whether the CUDA module ``pyode._C_cuda`` was built and loads (it links the CUDA runtime statically,
    so it loads without a driver and then reports 0 devices)."""
    info = {"requested": os.environ.get("PYODE_BACKEND", "auto"), "compiled_cpu": _compiled is not None,
            "compiled_cpu_error": _COMPILED_ERROR}
    if _compiled is not None:
        info["openmp"] = bool(_compiled._C.openmp)
        info["max_threads"] = int(_compiled._C.max_threads())
    info["cpu_backend"] = _backend_name(torch.device("cpu"))
    info.update(_cuda_info())
    return info


def _cuda_info() -> dict:
    info = {"cuda_built": importlib.util.find_spec("pyode._C_cuda") is not None}
    cuda, error = _cuda_backend() if info["cuda_built"] else (None, "pyode._C_cuda was not built")
    info.update(cuda=cuda is not None, cuda_error=error)
    if cuda is not None:
        module = cuda._C_cuda
        info.update(cuda_devices=int(module.device_count()), cuda_runtime=int(module.runtime_version()),
                    cuda_driver=int(module.driver_version()))
    if torch.cuda.is_available():
        info["cuda_backend"] = _backend_name(torch.device("cuda"))
    return info


def _check_vectors(what: str, tensors: Sequence[Tensor], n: int, dtype: torch.dtype, device) -> None:
    for j, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}[{j}] must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != dtype or t.device != device:
            raise ValueError(f"{what}[{j}] is {t.dtype} on {t.device}; all inputs must be {dtype} on {device}")
        if t.dim() != 1 or t.numel() != n:
            raise ValueError(f"{what}[{j}] must be 1-D with {n} elements, got shape {tuple(t.shape)}")
        if not t.is_contiguous():
            raise ValueError(f"{what}[{j}] must be contiguous; call .contiguous() first")


def _check_common(base: Tensor | None, ks: Sequence[Tensor]) -> tuple[int, torch.dtype, torch.device]:
    first = base if base is not None else (ks[0] if ks else None)
    if first is None:
        raise ValueError("need a base tensor or at least one term in ks")
    if not isinstance(first, Tensor):
        raise TypeError(f"expected torch.Tensor inputs, got {type(first).__name__}")
    if first.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"kernels support float32 and float64, got {first.dtype}")
    n = first.numel()
    _check_vectors("ks", list(ks), n, first.dtype, first.device)
    if base is not None:
        _check_vectors("base", [base], n, first.dtype, first.device)
    return n, first.dtype, first.device


def lincomb(base: Tensor | None, ks: Sequence[Tensor], weights: Sequence[Sequence[float]]) -> Tensor:
    """``out[r] = base + sum_j weights[r][j] * ks[j]`` in one pass over memory (differentiable).

    Args:
        base: (n,) contiguous, or None for zero.
        ks: s contiguous (n,) tensors, same dtype (float32/float64) and device as ``base``.
        weights: m rows of s floats.
    Returns:
        (m, n) tensor.
    """
    _, _, device = _check_common(base, ks)
    if any(len(row) != len(ks) for row in weights):
        raise ValueError(f"every row of weights must have len(ks) = {len(ks)} entries")
    return get_backend(device).lincomb(base, list(ks), [list(map(float, r)) for r in weights])


def rk_finish(y0: Tensor, ks: Sequence[Tensor], b: Sequence[float], e: Sequence[float] | None,
              atol: float, rtol: float, segments: Segments | None = None):
    """Complete a Runge-Kutta step: ``y1 = y0 + sum_j b_j k_j``, the error ``sum_j e_j k_j`` and the RMS of
    ``err / (atol + rtol * max(|y0|, |y1|))``, globally and per segment, in one pass.

    Args:
        y0: (n,); ks: s tensors (n,); b, e: s floats each, already multiplied by the step h.
        segments: optional :class:`Segments` for per-row norms.
    Returns:
        ``(y1 (n,), norm: float, seg_norms (nseg,) float64 or None)``.
    """
    n, _, device = _check_common(y0, ks)
    if len(b) != len(ks) or (e is not None and len(e) != len(ks)):
        raise ValueError(f"b and e must each have len(ks) = {len(ks)} weights")
    if not (atol >= 0 and rtol >= 0):
        raise ValueError(f"atol and rtol must be non-negative, got atol={atol}, rtol={rtol}")
    if segments is not None and segments.offsets[-1] != n:
        raise ValueError(f"segments must cover the {n} elements of y0, they end at {segments.offsets[-1]}")
    return get_backend(device).rk_finish(y0, None, list(ks), list(b), None if e is None else list(e),
                                         atol, rtol, segments)
