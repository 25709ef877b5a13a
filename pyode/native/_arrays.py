"""Inputs of a native solve as contiguous float64 NumPy arrays (no copy where they already are), their
shape checks, and the result in the caller's kind (NumPy or CPU torch) and dtype."""

from __future__ import annotations

import math
import sys

import numpy as np

_FLOATS = (np.float32, np.float64)


def _as_array(x, name: str) -> tuple[np.ndarray, str, object]:
    """``x`` as a float64 C-contiguous array; returns (array, kind "numpy"/"torch", original dtype)."""
    if type(x) is np.ndarray and x.dtype.type is np.float64 and x.flags.c_contiguous:  # as is (~0.4 us less)
        return x, "numpy", x.dtype
    kind, dtype = "numpy", None
    if type(x).__module__.startswith("torch"):
        import torch

        if isinstance(x, torch.Tensor):
            if x.device.type != "cpu":
                raise ValueError(f"{name} is on {x.device}; pyode.native.solve takes CPU tensors (use .cpu(), or "
                                 "device='cuda' with the numba CUDA ensemble)")
            if x.requires_grad:
                raise ValueError(f"{name} requires grad, but a native solve has no autograd; pass {name}.detach(), or "
                                 "use pyode.solve with a torch func for gradients (backprop, adjoint, checkpoint)")
            kind, dtype = "torch", x.dtype
            x = x.detach().numpy()
    if isinstance(x, (list, tuple, float, int)):
        x = np.asarray(x, dtype=np.float64)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array or a CPU torch tensor, got {type(x).__name__}")
    if x.dtype.type not in _FLOATS and not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must hold real numbers (float64, float32 or int), got dtype {x.dtype}")
    if dtype is None:
        dtype = x.dtype
    return np.ascontiguousarray(x, dtype=np.float64), kind, dtype


class Problem:
    """Checked shapes of a solve: y0 (M, n), params (M or 1, k), t (T,), and how to return results.

    Attributes are plain values computed once (a small solve's whole Python layer is a few microseconds):
    M, n, k, T, sign (+1 forward, -1 backward in time), ensemble, params_per_traj, and for the result the input's
    kind ("numpy" / "torch"), whether y0 was float32 and the output times as given.
    """

    __slots__ = (
        "M",
        "T",
        "ensemble",
        "float32",
        "k",
        "kind",
        "n",
        "params",
        "params_per_traj",
        "sign",
        "t",
        "t_out",
        "y0",
    )

    def __init__(self, y0: np.ndarray, params: np.ndarray, t: np.ndarray, ensemble: bool, kind: str, dtype, t_in):
        self.y0, self.params, self.t, self.ensemble, self.kind = y0, params, t, ensemble, kind
        self.params_per_traj = params.ndim == 2
        # by the scalar type: comparing dtypes (or their names) costs ~2 us, a tenth of a small solve's Python
        self.float32 = getattr(dtype, "type", None) is np.float32 or dtype is _torch_float32()
        self.t_out = t_in if _is_tensor(t_in) else t
        self.M, self.n = y0.shape
        self.k, self.T = params.shape[-1], t.shape[0]
        self.sign = -1.0 if self.T > 1 and t.item(1) < t.item(0) else 1.0

    @classmethod
    def build(cls, y0, t, params) -> Problem:
        """The checked problem; ``t``'s values (finite, strictly monotonic) are checked by the solver, or by
        :func:`check_times` (which names the first bad entry)."""
        y, kind, dtype = _as_array(y0, "y0")
        if y.ndim not in (1, 2) or y.shape[-1] == 0:
            raise ValueError(f"y0 must have shape (n,) for one trajectory or (M, n) for an ensemble (n >= 1), got "
                             f"{y.shape}; reshape a structured state to one flat vector per trajectory")
        p = _NO_PARAMS if params is None else _as_array(params, "params")[0]
        if p.ndim not in (1, 2):
            raise ValueError(f"params must have shape (k,) (shared) or (M, k) (one row per trajectory), got {p.shape}")
        ensemble = y.ndim == 2 or p.ndim == 2
        if p.ndim == 2 and y.ndim == 1:
            y = np.ascontiguousarray(np.broadcast_to(y, (p.shape[0], y.shape[0])))  # one y0 for every row
        y = y.reshape(-1, y.shape[-1])
        if p.ndim == 2 and p.shape[0] != y.shape[0]:
            raise ValueError(f"params has {p.shape[0]} rows but y0 has {y.shape[0]} trajectories; pass params of "
                             f"shape ({y.shape[0]}, k) or a shared (k,) vector")
        if y.shape[0] == 0:
            raise ValueError("y0 has no trajectories (shape (0, n)); pass at least one")
        return cls(y, p, _times(t), ensemble, kind, dtype, t)

    def wrap(self, ys: np.ndarray, y_event, stats: np.ndarray):
        """The :class:`NativeSolution` in the caller's kind; (T, n) for a single trajectory. ``stats``: the (M,)
        record array of the solve (``_solve._STATS_DTYPE``), owned by the result: its fields go out as views (six
        copies were ~1.5 us of a small solve's Python)."""
        from pyode.native._solve import NativeSolution  # (a cycle at import time; ~0.3 us once imported)

        if not self.ensemble:
            ys = ys[:, 0]
            y_event = None if y_event is None else y_event[0]
        if self.float32 or self.kind == "torch":
            ys, y_event = self._out(ys), None if y_event is None else self._out(y_event)
        return NativeSolution(ys, self.t_out, stats["status"], stats["t_reached"], stats["event_t"], y_event,
                              stats["n_accepted"], stats["n_rejected"], stats["n_feval"])

    def _out(self, x: np.ndarray):
        if self.float32:
            x = x.astype(np.float32)
        if self.kind == "torch":
            import torch

            return torch.from_numpy(x)
        return x


_NO_PARAMS = np.zeros((0,))
_NO_PARAMS.flags.writeable = False


def _torch_float32():
    """torch.float32 when torch is imported (a torch input imported it), else None."""
    torch = sys.modules.get("torch")
    return None if torch is None else torch.float32


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch")


def _times(t) -> np.ndarray:
    """``t`` as a (T,) float64 array (its values are checked by :func:`check_times` or the solver)."""
    tt = _as_array(t, "t")[0]
    if tt.ndim != 1 or tt.size == 0:
        raise ValueError(f"t must be a 1-D array of output times with at least the initial time, got shape {tt.shape}")
    return tt


def check_times(tt: np.ndarray) -> None:
    """Raises a ValueError naming the first bad entry unless ``tt`` is finite and strictly monotonic; a handful of
    whole-array NumPy calls (~1.5 us at any T)."""
    first, last = tt.item(0), tt.item(-1)
    # Strictly monotonic with finite ends is strictly monotonic and finite: a NaN anywhere (or inf - inf) makes a
    # difference NaN, which the ufunc reductions propagate and which fails "> 0"; an inf inside finite ends cannot
    # be monotonic. (np.minimum.reduce: ndarray.min's Python wrapper costs ~0.5 us more.)
    d = np.subtract(tt[1:], tt[:-1])
    gap = math.inf if d.size == 0 else np.minimum.reduce(d) if last >= first else -np.maximum.reduce(d)
    if not (gap > 0 and math.isfinite(first) and math.isfinite(last)):
        _raise_bad_times(tt)


def _raise_bad_times(tt: np.ndarray) -> None:
    """The ValueError for output times that failed :func:`_times`' check, naming the first bad entry."""
    bad = np.flatnonzero(~np.isfinite(tt))
    if bad.size:
        raise ValueError(f"t contains NaN or inf (t[{bad[0]}] = {tt[bad[0]]}); pass finite output times")
    up = tt[1] > tt[0]
    q = int(np.flatnonzero(tt[1:] <= tt[:-1] if up else tt[1:] >= tt[:-1])[0]) + 1
    raise ValueError(f"t must be strictly increasing or strictly decreasing (no repeated times): t[{q - 1}] = "
                     f"{tt[q - 1]:.17g}, t[{q}] = {tt[q]:.17g}")


def pointer(ffi, arr: np.ndarray, keep: list):
    """A ``double *`` into ``arr`` (float64, C-contiguous); ``keep`` holds the array for the call."""
    if arr.dtype.type is not np.float64 or not arr.flags.c_contiguous:
        raise AssertionError("pyode.native internal: arrays must be contiguous float64")
    if arr.size == 0:
        arr = np.zeros(1)
    keep.append(arr)
    return ffi.from_buffer("double[]", arr)
