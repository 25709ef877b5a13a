"""Continuous extensions of a Runge-Kutta step, written as weights on the step's stages.

Every interpolant used by pyode has the form ``y(t0 + θh) = y0 + h * Σ_j W_j(θ) k_j`` where the k_j are
the stage derivatives (plus ``f1 = f(t1, y1)`` for non-FSAL tableaux), and ``W_j(θ) = Σ_p θ^p P[p-1][j]``.
So dense output at many times is one ``lincomb`` call, with no per-method code.
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = list[list[float]]


def _unit(j: int, size: int) -> list[float]:
    v = [0.0] * size
    v[j] = 1.0
    return v


def _combine(terms: Sequence[tuple[float, Sequence[float]]]) -> list[float]:
    out = [0.0] * len(terms[0][1])
    for coef, vec in terms:
        for j, x in enumerate(vec):
            out[j] += coef * x
    return out


def quartic_fit(b: Sequence[float], mid: Sequence[float], f1_index: int, size: int) -> Matrix:
    """torchdiffeq's 4th-order fit through y0, y1, y(h/2), f0 and f1, as a (4, size) matrix P.

    The quartic p(θ) with p(0)=y0, p(1)=y1, p(1/2)=y_mid, p'(0)=h f0, p'(1)=h f1 has, in units of h and
    with Y = Σ b_j k_j, M = Σ mid_j k_j, F0 = k_0, F1 = k_{f1_index}:
    θ: F0;  θ²: F1 - 4F0 - 5Y + 16M;  θ³: 5F0 - 3F1 + 14Y - 32M;  θ⁴: 2F1 - 2F0 - 8Y + 16M.
    """
    y, m = list(b) + [0.0] * (size - len(b)), list(mid) + [0.0] * (size - len(mid))
    f0, f1 = _unit(0, size), _unit(f1_index, size)
    return [f0,
            _combine([(1, f1), (-4, f0), (-5, y), (16, m)]),
            _combine([(5, f0), (-3, f1), (14, y), (-32, m)]),
            _combine([(2, f1), (-2, f0), (-8, y), (16, m)])]


def cubic_hermite(b: Sequence[float], f1_index: int, size: int) -> Matrix:
    """Cubic Hermite interpolation through (y0, h f0) and (y1, h f1), as a (3, size) matrix P."""
    y = list(b) + [0.0] * (size - len(b))
    f0, f1 = _unit(0, size), _unit(f1_index, size)
    return [f0, _combine([(3, y), (-2, f0), (-1, f1)]), _combine([(1, f0), (1, f1), (-2, y)])]


def linear(b: Sequence[float], size: int) -> Matrix:
    """Linear interpolation between y0 and y1, as a (1, size) matrix P."""
    return [list(b) + [0.0] * (size - len(b))]


def weights_at(P: Matrix, thetas: Sequence[float], h: float) -> Matrix:
    """``h * W(θ)`` for each θ: the ``lincomb`` weights of the interpolant at those points. (m, size)"""
    rows = []
    for theta in thetas:
        row = [0.0] * len(P[0])
        power = h
        for coeffs in P:
            power *= theta
            for j, c in enumerate(coeffs):
                row[j] += power * c
        rows.append(row)
    return rows
