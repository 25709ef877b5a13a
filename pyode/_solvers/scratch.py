"""A bounded pool of large stage-input buffers, reused within and across solves.

A fresh large CPU tensor costs page faults on first touch: measured here, 13 ms to allocate and fill
40 MB against 1.9 ms to refill a touched buffer, more than the 4-10 ms a fused stage needs to compute it.
The fused stepper therefore takes its stage inputs from this pool when the state is large
(``pyode._tuning.POOL_MIN_BYTES``, 256 KiB by default).
Solutions are never pooled: they belong to the caller, who may hold them only through a NumPy view.

The pool lists the buffers it allocated and hands one out only when nothing but the pool refers to it:
no Python reference and no other tensor on its storage (the stage input handed to func, ``y1`` viewing the
last stage's buffer, a step record, func keeping its input). The check is made at each
take, so nobody has to give buffers back or know who still looks at them.

The pool keeps at most ``limit_bytes`` (default ``pyode._tuning.POOL_LIMIT_BYTES``, 1 GiB) of buffers after
a solve, like torch's CUDA caching allocator keeps device memory; :func:`pyode.empty_cache` releases them.
"""

from __future__ import annotations

import sys
import threading

import torch
from torch import Tensor

from pyode import _tuning


def _storage_use_count(t: Tensor) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


_LONE_STORAGE_USE = _storage_use_count(torch.empty(1))  # a tensor whose storage nothing else shares
_FREE_REFCOUNT = 3  # while scanning: the pool's list, the loop variable, getrefcount's argument


class ScratchPool:
    """Reusable buffers keyed by (shape, dtype, device); thread-safe.

    Args:
        limit_bytes: at most this many bytes of buffers are listed (more are ordinary tensors); default
            ``pyode._tuning.POOL_LIMIT_BYTES``.
        max_per_key: at most this many buffers of one key are listed.
    """

    def __init__(self, limit_bytes: int | None = None, max_per_key: int = 64):
        self.limit_bytes = _tuning.POOL_LIMIT_BYTES if limit_bytes is None else limit_bytes
        self.max_per_key = max_per_key
        self._buffers: dict[tuple, list[Tensor]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, like: Tensor) -> Tensor:
        """A buffer with ``like``'s shape, dtype and device (contents undefined)."""
        return self.empty(like.shape, like.dtype, like.device)

    def empty(self, shape: tuple, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A contiguous buffer of this shape, dtype and device (contents undefined)."""
        key = (torch.Size(shape), dtype, device)
        with self._lock:
            listed = self._buffers.get(key, ())
            for buf in listed:
                if sys.getrefcount(buf) == _FREE_REFCOUNT and _storage_use_count(buf) == _LONE_STORAGE_USE:
                    return buf
            buf = torch.empty(key[0], dtype=dtype, device=device)
            nbytes = buf.numel() * buf.element_size()
            if self._bytes + nbytes <= self.limit_bytes and len(listed) < self.max_per_key:
                self._buffers.setdefault(key, []).append(buf)
                self._bytes += nbytes
            return buf

    def clear(self) -> None:
        """Drops every listed buffer (those still in use live on as ordinary tensors)."""
        with self._lock:
            self._buffers.clear()
            self._bytes = 0

    @property
    def cached_bytes(self) -> int:
        return self._bytes


POOL = ScratchPool()  # large buffers, shared by all solves


def empty_cache() -> None:
    """Releases the large stage buffers pyode keeps between solves (see :mod:`pyode._solvers.scratch`).

    Solves of large states (>= 256 KiB) keep up to 1 GiB of stage buffers for reuse, as torch's CUDA
    caching allocator keeps device memory (both sizes: :mod:`pyode._tuning`); buffers still in use live on
    as ordinary tensors.

    Examples:
        >>> import pyode
        >>> pyode.empty_cache()
    """
    POOL.clear()
