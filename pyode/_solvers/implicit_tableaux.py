"""Tableaux of the implicit Runge-Kutta and Rosenbrock methods, as validated data.

Implicit RK: ``k_i = f(t0 + c_i h, y0 + h Σ_j a_ij k_j)`` for all j (a full matrix), ``y1 = y0 + h Σ b_i k_i``.
The fixed-grid set has torchdiffeq's names (``implicit_euler``, ``implicit_midpoint``, ``trapezoid``,
``radauIIA3``, ``gl4``, ``radauIIA5``, ``gl6``, ``sdirk2``, ``trbdf2``); coefficients are those of Hairer &
Wanner, *Solving ODEs II* (Tables IV.5.1-5.6 for Gauss and Radau IIA; IV.6 for SDIRK), checked in
``tests/test_implicit_tableaux.py`` against the order conditions. (torchdiffeq's ``gl4`` lists
``c_2 = 1/2 - √3/6``; the method's node is ``1/2 + √3/6``, which is what the rows of ``a`` sum to.)

The adaptive ESDIRK pairs ``kvaerno3`` and ``kvaerno5`` are Kværnø's (BIT 44, 2004), with diffrax's names
and coefficients; both are stiffly accurate (``b`` is the last row of ``a``) and their embedded method is the
second-to-last row, so ``b_err = b - a[s-2]``.

Rosenbrock: ``rodas5`` (Di Marzo 1993, RODAS5(4)) in Hairer's transformed form (see :class:`RosenbrockTableau`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_TOL = 1e-12  # consistency of published coefficients (rounded to ~16 digits)


def _floats(values, name: str, method: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"implicit tableau {method!r}: {name} must be a sequence of numbers") from None


@dataclass(frozen=True)
class ImplicitTableau:
    """An implicit Runge-Kutta method with ``s`` stages.

    Attributes:
        name: registry key; c: (s,) nodes; a: (s, s) full matrix; b: (s,) weights; order: of ``b``.
        b_err: (s,) ``b - b_hat`` of an embedded pair (sums to 0), or None for fixed-grid methods.
        predictor: for DIRKs, optional rows ``α_i`` (row i has i entries): ``Σ_j α_ij k_j`` predicts ``k_i``
            from the earlier stages (extrapolation), the starting point of stage i's Newton iteration.
        adaptive: derived: ``b_err is not None``.
        diagonal: derived: ``a`` is lower triangular (DIRK: the stages are solved one at a time).
        stiffly_accurate: derived: ``b`` equals the last row of ``a`` and ``c_s = 1``, so ``y1`` is the last stage
            state and ``f(t1, y1)`` is the last stage derivative.
    """

    name: str
    c: tuple
    a: tuple
    b: tuple
    order: int
    b_err: tuple | None = None
    predictor: tuple | None = None

    def __post_init__(self) -> None:
        s = len(self.c)
        object.__setattr__(self, "c", _floats(self.c, "c", self.name))
        object.__setattr__(self, "b", _floats(self.b, "b", self.name))
        object.__setattr__(self, "a", tuple(_floats(row, f"a[{i}]", self.name) for i, row in enumerate(self.a)))
        if self.b_err is not None:
            object.__setattr__(self, "b_err", _floats(self.b_err, "b_err", self.name))
        if len(self.a) != s or any(len(row) != s for row in self.a) or len(self.b) != s:
            raise ValueError(f"implicit tableau {self.name!r}: a must be {s}x{s} and b of length {s}")
        for i, row in enumerate(self.a):
            if abs(sum(row) - self.c[i]) > _TOL:
                raise ValueError(f"implicit tableau {self.name!r}: row {i} of a sums to {sum(row)!r}, not c[{i}]")
        if abs(sum(self.b) - 1.0) > _TOL:
            raise ValueError(f"implicit tableau {self.name!r}: b sums to {sum(self.b)!r}, not 1")
        if self.b_err is not None and (len(self.b_err) != s or abs(sum(self.b_err)) > _TOL):
            raise ValueError(f"implicit tableau {self.name!r}: b_err must have {s} entries summing to 0")
        if self.predictor is not None:
            object.__setattr__(self, "predictor", tuple(_floats(row, f"predictor[{i}]", self.name)
                                                        for i, row in enumerate(self.predictor)))
            if len(self.predictor) != s or any(len(row) != i for i, row in enumerate(self.predictor)):
                raise ValueError(f"implicit tableau {self.name!r}: predictor row i must have i entries")

    @property
    def num_stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_err is not None

    @property
    def diagonal(self) -> bool:
        return all(x == 0.0 for i, row in enumerate(self.a) for x in row[i + 1:])

    @property
    def stiffly_accurate(self) -> bool:
        return self.c[-1] == 1.0 and all(abs(x - y) <= _TOL for x, y in zip(self.a[-1], self.b))

    def explicit_stage(self, i: int) -> bool:
        """Stage ``i`` needs no solve: its row of ``a`` is zero (the first stage of an ESDIRK)."""
        return all(x == 0.0 for x in self.a[i])


_S2, _S3, _S6, _S15 = math.sqrt(2.0), math.sqrt(3.0), math.sqrt(6.0), math.sqrt(15.0)

IMPLICIT_EULER = ImplicitTableau("implicit_euler", [1.0], [[1.0]], [1.0], order=1)
IMPLICIT_MIDPOINT = ImplicitTableau("implicit_midpoint", [0.5], [[0.5]], [1.0], order=2)
TRAPEZOID = ImplicitTableau("trapezoid", [0.0, 1.0], [[0.0, 0.0], [0.5, 0.5]], [0.5, 0.5], order=2)

GL4 = ImplicitTableau(
    "gl4", [0.5 - _S3 / 6, 0.5 + _S3 / 6],
    [[0.25, 0.25 - _S3 / 6], [0.25 + _S3 / 6, 0.25]], [0.5, 0.5], order=4)

GL6 = ImplicitTableau(
    "gl6", [0.5 - _S15 / 10, 0.5, 0.5 + _S15 / 10],
    [[5 / 36, 2 / 9 - _S15 / 15, 5 / 36 - _S15 / 30],
     [5 / 36 + _S15 / 24, 2 / 9, 5 / 36 - _S15 / 24],
     [5 / 36 + _S15 / 30, 2 / 9 + _S15 / 15, 5 / 36]],
    [5 / 18, 4 / 9, 5 / 18], order=6)

RADAU_IIA3 = ImplicitTableau("radauIIA3", [1 / 3, 1.0], [[5 / 12, -1 / 12], [3 / 4, 1 / 4]], [3 / 4, 1 / 4], order=3)

_R5_LAST = [4 / 9 - _S6 / 36, 4 / 9 + _S6 / 36, 1 / 9]
RADAU_IIA5 = ImplicitTableau(
    "radauIIA5", [0.4 - _S6 / 10, 0.4 + _S6 / 10, 1.0],
    [[11 / 45 - 7 * _S6 / 360, 37 / 225 - 169 * _S6 / 1800, -2 / 225 + _S6 / 75],
     [37 / 225 + 169 * _S6 / 1800, 11 / 45 + 7 * _S6 / 360, -2 / 225 - _S6 / 75],
     _R5_LAST],
    _R5_LAST, order=5)

# Alexander's two-stage L-stable SDIRK (Hairer & Wanner IV.6, γ = 1 - √2/2).
_G2 = 1.0 - _S2 / 2
SDIRK2 = ImplicitTableau("sdirk2", [_G2, 1.0], [[_G2, 0.0], [1 - _G2, _G2]], [1 - _G2, _G2], order=2)

# TR-BDF2 (Bank et al. 1985; Hosea & Shampine 1996) as an ESDIRK: a trapezoidal stage to 2γ, then BDF2.
_W = _S2 / 4
TRBDF2 = ImplicitTableau(
    "trbdf2", [0.0, 2 * _G2, 1.0],
    [[0.0, 0.0, 0.0], [_G2, _G2, 0.0], [_W, _W, _G2]], [_W, _W, _G2], order=2)


def _kvaerno3() -> ImplicitTableau:
    # γ: the root of 6γ³ - 18γ² + 9γ - 1 = 0 in (1/3, 1/2) that makes the method L-stable (diffrax writes it
    # to 11 digits; here to double precision). Every other coefficient is a formula in γ.
    g = 0.43586652150845899941601945
    a31, a32 = (-4 * g * g + 6 * g - 1) / (4 * g), (-2 * g + 1) / (4 * g)
    a41, a42, a43 = (6 * g - 1) / (12 * g), -1 / ((24 * g - 12) * g), (-6 * g * g + 6 * g - 1) / (6 * g - 3)
    a = [[0, 0, 0, 0], [g, g, 0, 0], [a31, a32, g, 0], [a41, a42, a43, g]]
    b = a[3]
    theta = 1 / (2 * g)  # diffrax's predictors: constant, then linear extrapolation, then the embedded row
    predictor = [[], [1.0], [1.0 - theta, theta], [a31, a32, g]]
    return ImplicitTableau("kvaerno3", [0.0, 2 * g, 1.0, 1.0], a, b, order=3,
                           b_err=[x - y for x, y in zip(b, a[2])], predictor=predictor)


def _kvaerno5() -> ImplicitTableau:
    g = 0.26
    rows = [
        [],
        [g],
        [0.13, 0.84033320996790809],
        [0.22371961478320505, 0.47675532319799699, -0.06470895363112615],
        [0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998],
        [0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676],
        [0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046, 0.62993304899016403,
         0.06962479448202728],
    ]
    a = [row + ([g] if i else [0.0]) + [0.0] * (6 - i) for i, row in enumerate(rows)]
    c = [sum(row) for row in a]  # diffrax lists c to 16 digits; the row sums are those same values
    b = a[6]
    # diffrax's predictors (from OrdinaryDiffEq's Kvaerno5 tableau, with α21 = 1 instead of its 0), except the
    # last row: the last stage starts from the one before it (both at c = 1: the embedded solution, one error
    # estimate away from y1), i.e. k6 = (Y5 - base6) / hγ, α6j = (a5j - a6j) / γ. diffrax's row, a[5] itself,
    # predicts k6 by the step's mean slope (Y5 - y0) / h, far from the end slope in the stiff components: on
    # Robertson its Newton started ~2e3 tolerances away, this row's ~0.2 away (2-3 iterations fewer a step).
    predictor = [[], [1.0], [-1.366025403784441, 2.3660254037844357],
                 [-0.19650552613122207, 0.8113579546496623, 0.38514757148155954],
                 [0.10375304369958693, 0.937994698066431, -0.04174774176601781, 0.0],
                 [-0.17281112873898072, 0.6235784481025847, 0.5492326806363959, 0.0, 0.0],
                 [(x - y) / g for x, y in zip(a[5][:6], a[6][:6])]]
    return ImplicitTableau("kvaerno5", c, a, b, order=5, b_err=[x - y for x, y in zip(b, a[5])],
                           predictor=predictor)


KVAERNO3 = _kvaerno3()
KVAERNO5 = _kvaerno5()

IMPLICIT_TABLEAUX = {tab.name: tab for tab in (
    IMPLICIT_EULER, IMPLICIT_MIDPOINT, TRAPEZOID, RADAU_IIA3, GL4, RADAU_IIA5, GL6, SDIRK2, TRBDF2,
    KVAERNO3, KVAERNO5)}


@dataclass(frozen=True)
class RosenbrockTableau:
    """A Rosenbrock method in Hairer & Wanner's transformed form (VI.7, eq. 7.4'): with ``W = I/(hγ) - J``,

        ``W u_i = f(t0 + α_i h, y0 + Σ_{j<i} a_ij u_j) + Σ_{j<i} (c_ij / h) u_j + h d_i f_t``,
        ``y1 = y0 + Σ m_i u_i``,  error ``Σ m_err_i u_i``.

    Attributes: gamma: the diagonal γ; alpha, d: (s,); a, c: s rows of the strictly lower triangle (row i has i
    entries); m, m_err: (s,); order: of ``m``; dense: R rows ``H_r`` of s weights, the method's continuous
    extension in OrdinaryDiffEq.jl's form ``y(t0 + θh) = (1-θ) y0 + θ (y1 + (1-θ)(k_0 + θ(k_1 + ... θ k_{R-1})))``
    with ``k_r = Σ_i H_ri u_i``, or None (dense output by the cubic Hermite through (y0, f0), (y1, f1)).
    """

    name: str
    gamma: float
    alpha: tuple
    d: tuple
    a: tuple
    c: tuple
    m: tuple
    m_err: tuple
    order: int
    dense: tuple | None = None

    @property
    def num_stages(self) -> int:
        return len(self.alpha)

    adaptive = True

    @property
    def interpolant(self) -> tuple | None:
        """``dense`` as R + 1 rows ``P_p`` of weights on the increments: ``y(t0 + θh) = y0 + Σ_i W_i(θ) u_i``
        with ``W_i(θ) = Σ_p θ^(p+1) P_p[i]`` (no factor h: the u_i are increments, not derivatives), the form of
        :func:`pyode._solvers.interpolation.weights_at` with ``h = 1``. Expanding the nested form,
        ``θ y1 + θ(1-θ) Σ_r θ^r k_r`` gives ``P_0 = m + H_0``, ``P_p = H_p - H_(p-1)``, ``P_R = -H_(R-1)``;
        the rows sum to ``m`` (θ = 1 is y1). None without ``dense``."""
        if self.dense is None:
            return None
        R, s = len(self.dense), self.num_stages
        rows = []
        for p in range(R + 1):
            row = list(self.m) if p == 0 else [0.0] * s
            for i in range(s):
                row[i] += (self.dense[p][i] if p < R else 0.0) - (self.dense[p - 1][i] if p > 0 else 0.0)
            rows.append(tuple(row))
        return tuple(rows)


# RODAS5 (Di Marzo 1993): the coefficients of diffrax's rodas5.py and OrdinaryDiffEq's Rodas5 tableau. Stiffly
# accurate in the transformed form: rows 5-7 of a extend one another, the stage inputs of stages 6-8 are the
# embedded solution's partial sums, and y1 = y0 + Σ a_8j u_j + u_8 (OrdinaryDiffEq's b = [a_8., 1]); the embedded
# 4th-order solution omits u_8, so the error estimate is u_8. (diffrax's m_sol ends in 0 — that is the embedded
# solution, of order 4, as the convergence test shows.)
# Rodas5's continuous extension: the H matrix of OrdinaryDiffEq.jl's Rodas5Tableau (rosenbrock_tableaus.jl), whose
# A, C, γ, c (= α) and d are the coefficients below digit for digit (its k_i are the u_i here: the same W = I/(hγ)
# - J, the same C/h and h d scaling). Order 4 (local error O(h^5) between the steps' ends):
# tests/test_rodas5_dense.py measures it; the cubic Hermite it replaces is order 3.
_RODAS5_DENSE = (
    (27.354592673333357, -6.925207756232857, 26.40037733258859, 0.5635230501052979, -4.699151156849391,
     -1.6008677469422725, -1.5306074446748028, -1.3929872940716344),
    (44.19024239501722, 1.3677947663381929e-13, 202.93261852171622, -35.5669339789154, -181.91095152160645,
     3.4116351403665033, 2.5793540257308067, 2.2435122582734066),
    (-44.0988150021747, -5.755396159656812e-13, -181.26175034586677, 56.99302194811676, 183.21182741427398,
     -7.480257918273637, -5.792426076169686, -5.32503859794143),
)
_RA = [-14.09640773051259, 6.925207756232704, -41.47510893210728, 2.343771018586405, 24.13215229196062]
RODAS5 = RosenbrockTableau(
    name="rodas5", gamma=0.19,
    alpha=(0.0, 0.38, 0.3878509998321533, 0.4839718937873840, 0.4570477008819580, 1.0, 1.0, 1.0),
    d=(0.19, -0.1823079225333714636, -0.319231832186874912, 0.3449828624725343, -0.377417564392089818,
       0.0, 0.0, 0.0),
    a=((), (2.0,), (3.040894194418781, 1.041747909077569),
       (2.576417536461461, 1.622083060776640, -0.9089668560264532),
       (2.760842080225597, 1.446624659844071, -0.3036980084553738, 0.2877498600325443),
       tuple(_RA), (*_RA, 1.0), (*_RA, 1.0, 1.0)),
    c=((), (-10.31323885133993,), (-21.04823117650003, -7.234992135176716),
       (32.22751541853323, -4.943732386540191, 19.44922031041879),
       (-20.69865579590063, -8.816374604402768, 1.260436877740897, -0.7495647613787146),
       (-46.22004352711257, -17.49534862857472, -289.6389582892057, 93.60855400400906, 318.3822534212147),
       (34.20013733472935, -14.15535402717690, 57.82335640988400, 25.83362985412365, 1.408950972071624,
        -6.551835421242162),
       (42.57076742291101, -13.80770672017997, 93.98938432427124, 18.77919633714503, -31.58359187223370,
        -6.685968952921985, -5.810979938412932)),
    m=(*_RA, 1.0, 1.0, 1.0),
    m_err=(0.0,) * 7 + (1.0,),
    order=5,
    dense=_RODAS5_DENSE,
)

ROSENBROCK_TABLEAUX = {RODAS5.name: RODAS5}
