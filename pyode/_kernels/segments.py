"""Segment boundaries for per-row or per-component error norms."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence

import torch


class Segments:
    """Boundaries ``0 = o_0 <= o_1 <= ... <= o_q = n`` of q segments of a flat state of n elements.

    Used for the error norm per batch row (per-sample step sizes) and per tuple component (the
    torchdiffeq "mixed" norm: the max over components of each component's RMS).
    """

    def __init__(self, offsets: Sequence[int]):
        if isinstance(offsets, (str, bytes)) or not all(isinstance(o, numbers.Integral) for o in offsets):
            raise TypeError(f"segment offsets must be a sequence of ints, got {offsets!r:.60}")
        offsets = [int(o) for o in offsets]
        if len(offsets) < 2 or offsets[0] != 0 or any(b < a for a, b in itertools.pairwise(offsets)):
            raise ValueError(f"segment offsets must start at 0 and increase, got {offsets[:8]}...")
        self.offsets = offsets
        self.count = len(offsets) - 1
        self.buffer = torch.tensor(offsets, dtype=torch.int64)  # handed to the compiled kernel

    @classmethod
    def equal_rows(cls, rows: int, n: int) -> Segments:
        """``rows`` equal segments of a flat (rows * row_size,) state."""
        if rows <= 0 or n % rows:
            raise ValueError(f"cannot split a state of {n} elements into {rows} equal rows")
        size = n // rows
        return cls([r * size for r in range(rows + 1)])
