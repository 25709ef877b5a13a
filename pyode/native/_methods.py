"""The methods the native loop runs, as data taken from :mod:`pyode._solvers.tableaux` and the interpolants
of :mod:`pyode._solvers.rk_step` (nothing is re-typed for C++)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from pyode._solvers import rk_step
from pyode._solvers.tableaux import TABLEAUX, ButcherTableau

ADAPTIVE = tuple(name for name, tab in TABLEAUX.items() if tab.adaptive)
FIXED = tuple(name for name, tab in TABLEAUX.items() if not tab.adaptive)


@dataclass(frozen=True)
class MethodData:
    """A tableau with its interpolant, as contiguous float64 arrays.

    Attributes:
        tableau: the method; c, b: (s,); a: (s, s) strictly lower; b_err: (s,) or None;
        P: (degree, terms) interpolant matrix (terms = s if FSAL else s + 1); restep: dense output by
        a fresh step of size θh (pyode's choice above order 5).
    """

    tableau: ButcherTableau
    c: np.ndarray
    a: np.ndarray
    b: np.ndarray
    b_err: np.ndarray | None
    P: np.ndarray
    restep: bool

    @property
    def num_stages(self) -> int:
        return len(self.c)


@functools.lru_cache(maxsize=64)
def method_data(name: str, interp: str) -> MethodData:
    """The data of method ``name`` with interpolant ``interp`` (as pyode's ``options['interp']``)."""
    tab = TABLEAUX[name]
    s = tab.num_stages
    if tab.adaptive:
        interp = rk_step._resolve_interp(tab, interp)
    terms = s if tab.fsal else s + 1
    f1_index = s - 1 if tab.fsal else s
    restep = interp == "restep"
    P = rk_step._interpolation_matrix(tab, "cubic" if restep else interp, terms, f1_index)
    a = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        a[i, :len(row)] = row
    b_err = None if tab.b_err is None else np.asarray(tab.b_err, dtype=np.float64)
    return MethodData(tab, np.asarray(tab.c, dtype=np.float64), a, np.asarray(tab.b, dtype=np.float64), b_err,
                      np.ascontiguousarray(np.asarray(P, dtype=np.float64)), restep)
