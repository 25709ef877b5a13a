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

A backend is a :class:`~pyode._kernels.backend.KernelBackend` instance with declared capabilities
(``fused_workspace``, ``fused_out``, ``name``, ``device_type``).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import numbers
import os
import warnings
from collections.abc import Sequence
from types import ModuleType

import torch
from torch import Tensor

from pyode._kernels import reference
from pyode._kernels.backend import KernelBackend
from pyode._kernels.segments import Segments
from pyode.errors import BackendUnavailableError

__all__ = ["KernelBackend", "Segments", "backend_info", "get_backend", "lincomb", "rk_finish"]

_VALID_BACKENDS = ("auto", "reference", "cpu", "cuda")
_BUILD_HINT = ("build it with `pip install --no-build-isolation -e .` (needs a C++17 compiler, cmake and "
               "pybind11), or set PYODE_BACKEND=auto/reference to use the pure-torch path")

try:
    from pyode._kernels import compiled as _compiled
    _COMPILED_ERROR: str | None = None
except ImportError as exc:  # extension not built, or failed to load
    _compiled = None
    _COMPILED_ERROR = str(exc)
    if importlib.util.find_spec("pyode._C") is None:  # not a load failure: nothing was built
        _COMPILED_ERROR = ("pyode._C is not installed (a pure-Python install, e.g. PYODE_BUILD_EXTENSION=OFF): the "
                           "pure-torch reference backend runs; reinstall with a C++ compiler for the fused kernels")

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


def get_backend(device: torch.device) -> KernelBackend:
    """The backend (a :class:`KernelBackend` singleton) to use for tensors on ``device``."""
    name = _requested_backend()
    if name == "reference":
        return reference.BACKEND
    if name in ("cpu", "cuda") and device.type != name:
        raise BackendUnavailableError(f"PYODE_BACKEND={name} cannot run tensors on {device}")
    if device.type == "cuda":
        return _get_cuda_backend(name)
    if device.type != "cpu":
        return reference.BACKEND
    if _compiled is None:
        if name == "cpu":
            raise BackendUnavailableError(
                f"PYODE_BACKEND=cpu but the compiled extension pyode._C is not available "
                f"({_COMPILED_ERROR}); {_BUILD_HINT}")
        return reference.BACKEND
    return _compiled.BACKEND


def _get_cuda_backend(name: str) -> KernelBackend:
    cuda, error = _cuda_backend()
    if cuda is not None:
        return cuda.BACKEND
    if name == "cuda":
        raise BackendUnavailableError(f"PYODE_BACKEND=cuda but the CUDA extension pyode._C_cuda is not "
                                      f"available ({error}); {_CUDA_BUILD_HINT}")
    _warn_cuda_fallback(error)
    return reference.BACKEND


def _backend_name(device: torch.device) -> str:
    try:
        return get_backend(device).name
    except BackendUnavailableError as exc:
        return f"unavailable: {exc}"


def backend_info() -> dict:
    """What is loaded: the requested backend, whether ``pyode._C`` loaded (and why not), OpenMP threads,
    and whether the CUDA module ``pyode._C_cuda`` was built and loads (it links the CUDA runtime statically,
    so it loads without a driver and then reports 0 devices).

    Returns:
        dict: ``requested`` (``PYODE_BACKEND``, default ``"auto"``), ``compiled_cpu`` (bool),
        ``compiled_cpu_error`` (str or None), ``openmp`` and ``max_threads`` (when ``pyode._C`` loaded),
        ``cpu_backend`` (the name of the backend CPU solves use, or ``"unavailable: ..."``),
        ``cuda_built``, ``cuda`` (bool), ``cuda_error``, and with CUDA ``cuda_devices``, ``cuda_runtime``,
        ``cuda_driver``, ``cuda_backend``.

    Examples:
        >>> import pyode
        >>> info = pyode.backend_info()
        >>> {"requested", "compiled_cpu", "cpu_backend", "cuda"} <= set(info)
        True
    """
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
    """Each tensor: (n,), contiguous, of ``dtype`` on ``device``; ``what`` names them in errors."""
    for j, t in enumerate(tensors):
        name = what if what == "base" else f"{what}[{j}]"
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != dtype or t.device != device:
            raise ValueError(f"{name} is {t.dtype} on {t.device}; all inputs must be {dtype} on {device}")
        if t.dim() != 1 or t.numel() != n:
            raise ValueError(f"{name} must be 1-D with {n} elements, got shape {tuple(t.shape)}")
        if not t.is_contiguous():  # an expanded or strided view: the kernels read n consecutive elements
            raise ValueError(f"{name} must be contiguous; call .contiguous() first")


def _check_common(base: Tensor | None, ks: Sequence[Tensor]) -> tuple[int, torch.dtype, torch.device]:
    if isinstance(ks, Tensor) or not isinstance(ks, Sequence):
        raise TypeError(f"ks must be a list of (n,) tensors, got {type(ks).__name__}")
    first = base if base is not None else (ks[0] if ks else None)
    if first is None:
        raise ValueError("need a base tensor or at least one term in ks")
    if not isinstance(first, Tensor):
        raise TypeError(f"expected torch.Tensor inputs, got {type(first).__name__}")
    if first.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"kernels support float32 and float64, got {first.dtype}")
    if first.device.type not in ("cpu", "cuda"):
        raise ValueError(f"kernels run on cpu or cuda tensors, got a tensor on {first.device}")
    n = first.numel()
    _check_vectors("ks", list(ks), n, first.dtype, first.device)
    if base is not None:
        _check_vectors("base", [base], n, first.dtype, first.device)
    return n, first.dtype, first.device


def _finite_floats(name: str, values, length: int) -> list[float]:
    """``values`` as ``length`` finite floats (a NaN/inf coefficient would silently poison every output)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, Tensor)):
        raise TypeError(f"{name} must be a sequence of {length} floats, got {type(values).__name__}")
    if len(values) != length:
        raise ValueError(f"{name} must have len(ks) = {length} entries, got {len(values)}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (numbers.Real, Tensor)) or (isinstance(v, Tensor) and v.numel() != 1):
            raise TypeError(f"{name} must hold floats, got {type(v).__name__}")
        out.append(float(v))
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} contains NaN or inf: {out}")
    return out


def _check_tolerances(atol, rtol, with_error: bool) -> tuple[float, float]:
    for name, value in (("atol", atol), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (0 <= atol < math.inf and 0 <= rtol < math.inf):
        raise ValueError(f"atol and rtol must be finite and non-negative, got atol={atol}, rtol={rtol}")
    if with_error and atol == 0 and rtol == 0:
        raise ValueError("atol and rtol cannot both be 0 (the error ratio would divide by zero)")
    return float(atol), float(rtol)


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
    if isinstance(weights, (str, bytes)) or not isinstance(weights, (Sequence, Tensor)):
        raise TypeError(f"weights must be a list of rows of len(ks) = {len(ks)} floats, got {type(weights).__name__}")
    rows = [_finite_floats(f"weights[{r}]", row, len(ks)) for r, row in enumerate(weights)]
    return get_backend(device).lincomb(base, list(ks), rows)


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
    if y0 is None:
        raise TypeError("y0 must be a torch.Tensor, got NoneType")
    n, _, device = _check_common(y0, ks)
    b = _finite_floats("b", b, len(ks))
    e = None if e is None else _finite_floats("e", e, len(ks))
    atol, rtol = _check_tolerances(atol, rtol, with_error=e is not None)
    if segments is not None and not isinstance(segments, Segments):
        raise TypeError(f"segments must be a pyode._kernels.Segments, got {type(segments).__name__}")
    if segments is not None and segments.offsets[-1] != n:
        raise ValueError(f"segments must cover the {n} elements of y0, they end at {segments.offsets[-1]}")
    return get_backend(device).rk_finish(y0, None, list(ks), b, e, atol, rtol, segments)
