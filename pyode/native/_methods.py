"""The methods the native loop runs, as data taken from :mod:`pyode._solvers.tableaux` and the interpolants
of :mod:`pyode._solvers.rk_step` (nothing is re-typed for C++)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from pyode._solvers import interpolation, rk_step
from pyode._solvers.implicit_auto import AUTO_PAIR
from pyode._solvers.implicit_tableaux import IMPLICIT_TABLEAUX, ROSENBROCK_TABLEAUX
from pyode._solvers.tableaux import (
    ADAMS_METHODS,
    RK4,
    TABLEAUX,
    ButcherTableau,
    adams_bashforth,
    adams_moulton,
)

ADAPTIVE = tuple(name for name, tab in TABLEAUX.items() if tab.adaptive)
FIXED = tuple(name for name, tab in TABLEAUX.items() if not tab.adaptive)
# The stiff methods of the native loop: Rosenbrock, and the adaptive ESDIRKs (stiffly accurate, explicit first
# stage, one diagonal γ), with a Jacobian from a compiled jac or forward differences.
STIFF = (*ROSENBROCK_TABLEAUX, *(name for name, tab in IMPLICIT_TABLEAUX.items()
                                 if tab.adaptive and tab.diagonal and tab.stiffly_accurate
                                 and tab.explicit_stage(0) and tab.c[0] == 0.0))
KIND_EXPLICIT, KIND_ROSENBROCK, KIND_ESDIRK, KIND_ADAMS, KIND_ALF, KIND_BDF = 0, 1, 2, 3, 4, 5
WITH_JACOBIAN = (*STIFF, "auto")  # the methods that use a Jacobian (jac, options["jacobian"])
GRID_KINDS = (*ADAMS_METHODS, "alf")  # fixed-grid methods that are not a tableau (float64 only)
# torchdiffeq's fixed-grid implicit methods that the ESDIRK kind runs: diagonally implicit, one diagonal value
FIXED_DIRK = tuple(name for name, tab in IMPLICIT_TABLEAUX.items()
                   if not tab.adaptive and tab.diagonal and len({row[i] for i, row in enumerate(tab.a) if row[i]}) == 1)


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
    kind: int = KIND_EXPLICIT
    fsal: bool | None = None  # None: the tableau's
    gamma: float = 0.0
    ros_c: np.ndarray | None = None
    ros_d: np.ndarray | None = None
    predictor: np.ndarray | None = None
    stiff: MethodData | None = None  # method="auto": the stiff partner (pyode_method.stiff_partner)
    adams_history: int = 0  # Adams: past derivatives, corrector iterations and the weight tables (pyode_method)
    max_iters: int = 0
    adams_ab: np.ndarray | None = None
    adams_am: np.ndarray | None = None

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


@functools.lru_cache(maxsize=16)
def auto_method_data(interp: str = "auto") -> MethodData:
    """method="auto": ``AUTO_PAIR``'s explicit method with ``interp``, its stiff partner attached (the cubic
    Hermite for ``interp`` "auto" or "cubic", as pyode/_solvers/problem.py builds the pair)."""
    explicit, stiff = AUTO_PAIR
    return dataclasses.replace(method_data(explicit, interp), stiff=stiff_method_data(stiff, "auto"))


@functools.lru_cache(maxsize=64)
def adams_method_data(name: str, max_order: int, max_iters: int) -> MethodData:
    """An Adams method of ``ADAMS_METHODS`` as fixed_grid.py's AdamsLoop runs it: up to ``max_order - 1`` past derivatives,
    ``max_iters`` corrector iterations (implicit ones only), RK4 (3/8 rule) steps while fewer than 3 are known.
    Row k-1 of the tables: the k Adams-Bashforth and the k + 1 Adams-Moulton weights."""
    history = max(max_order - 1, 1)
    ab, am = np.zeros((history, history)), np.zeros((history, history + 1))
    for k in range(1, history + 1):
        ab[k - 1, :k] = adams_bashforth(k)
        am[k - 1, :k + 1] = adams_moulton(k + 1)
    return dataclasses.replace(method_data(RK4.name, "linear"), kind=KIND_ADAMS, adams_history=max_order - 1,
                               max_iters=max_iters if ADAMS_METHODS[name] else 0, adams_ab=ab, adams_am=am)


@functools.lru_cache(maxsize=1)
def alf_method_data() -> MethodData:
    """ALF (:mod:`pyode._solvers.alf`): a kind without a tableau; the struct's tableau fields (Euler's) are unused."""
    return dataclasses.replace(method_data("euler", "linear"), kind=KIND_ALF)


def bdf_method_data(max_order: int) -> MethodData:
    """BDF (:mod:`pyode._solvers.bdf`): a kind without a tableau (the struct's tableau fields, Euler's, are unused);
    ``adams_history`` carries its maximum order."""
    return dataclasses.replace(method_data("euler", "linear"), kind=KIND_BDF, adams_history=max_order)


def grid_kind_data(name: str, opts) -> MethodData:
    """The data of a method of ``GRID_KINDS`` with its options (Adams: max_order, max_iters)."""
    return alf_method_data() if name == "alf" else adams_method_data(name, opts.max_order, opts.max_iters)


@functools.lru_cache(maxsize=64)
def fixed_dirk_data(name: str, interp: str, max_iters: int) -> MethodData:
    """A method of ``FIXED_DIRK`` as the ESDIRK kind on a fixed grid, laid out as ImplicitStepper lays out its terms:
    an implicit first stage becomes stage 1 behind an explicit stage 0 (f0, weight 0), and the interpolant is
    ImplicitStepper's for ``interp`` ("linear", or "cubic" with f(t1, y1) as a last term unless the method is
    stiffly accurate). ``max_iters``: Newton iterations per stage (0: the default)."""
    tab = IMPLICIT_TABLEAUX[name]
    lead = 0 if tab.explicit_stage(0) else 1
    s = tab.num_stages + lead
    a = np.zeros((s, s))
    a[lead:, lead:] = _lower([row[:i + 1] for i, row in enumerate(tab.a)], tab.num_stages)
    b = [0.0] * lead + list(tab.b)
    sa = tab.stiffly_accurate
    P = (interpolation.linear(b, s) if interp == "linear"
         else interpolation.cubic_hermite(b, s - 1 if sa else s, s + (0 if sa else 1)))
    gamma = next(row[i] for i, row in enumerate(tab.a) if row[i])
    return MethodData(tab, np.asarray([0.0] * lead + list(tab.c), dtype=np.float64), a, np.asarray(b, dtype=np.float64),
                      None, np.ascontiguousarray(np.asarray(P, dtype=np.float64)), False, KIND_ESDIRK, sa,
                      float(gamma), max_iters=max_iters)


def implicit_method_data(name: str, interp: str = "auto") -> MethodData:
    """The data of a method of ``WITH_JACOBIAN``: a stiff method's, or auto's pair."""
    return auto_method_data(interp) if name == "auto" else stiff_method_data(name, interp)


def _lower(rows, s: int) -> np.ndarray:
    """(s, s) float64 from ragged rows (row i: its first entries), zero elsewhere."""
    a = np.zeros((s, s))
    for i, row in enumerate(rows):
        a[i, :len(row)] = row
    return a


@functools.lru_cache(maxsize=16)
def stiff_method_data(name: str, interp: str = "auto") -> MethodData:
    """The data of a stiff method (``STIFF``) from :mod:`pyode._solvers.implicit_tableaux`: Rosenbrock
    (c = α, a, b = m, b_err = m_err, ros_c, ros_d, γ; P: with ``interp`` "auto" the tableau's own interpolant,
    weights on the increments (``RosenbrockTableau.interpolant``), with "cubic" none: the cubic Hermite in C) or
    ESDIRK (a with its diagonal, the predictor rows, and the cubic Hermite weights on the stages, f1 being the
    last stage)."""
    if name in ROSENBROCK_TABLEAUX:
        tab = ROSENBROCK_TABLEAUX[name]
        s = tab.num_stages
        own = tab.interpolant if interp == "auto" else None
        P = np.zeros((0, s + 1)) if own is None else np.asarray(own, dtype=np.float64)
        return MethodData(tab, np.asarray(tab.alpha, dtype=np.float64), _lower(tab.a, s),
                          np.asarray(tab.m, dtype=np.float64), np.asarray(tab.m_err, dtype=np.float64),
                          np.ascontiguousarray(P), False, KIND_ROSENBROCK, False, float(tab.gamma),
                          _lower(tab.c, s), np.asarray(tab.d, dtype=np.float64))
    tab = IMPLICIT_TABLEAUX[name]
    s = tab.num_stages
    P = np.ascontiguousarray(np.asarray(interpolation.cubic_hermite(tab.b, s - 1, s), dtype=np.float64))
    predictor = None if tab.predictor is None else _lower(tab.predictor, s)
    return MethodData(tab, np.asarray(tab.c, dtype=np.float64), np.asarray(tab.a, dtype=np.float64),
                      np.asarray(tab.b, dtype=np.float64), np.asarray(tab.b_err, dtype=np.float64), P, False,
                      KIND_ESDIRK, True, float(tab.a[-1][-1]), predictor=predictor)
