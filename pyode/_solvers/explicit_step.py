"""One explicit Runge-Kutta step written with plain torch ops, for the models that are a discretisation: a layer
of :mod:`pyode.nn` (ResNet = Euler, RK2, RK4 blocks) or a step of :class:`pyode.control.FixedStepODENet`.

The solvers' loops step through fused kernels on a flat state; a layer is differentiated by autograd (and by the
PMP costate pass, which needs the step's exact graph), so it keeps the state's own shape and records every
operation. Both read the same tableaux (:mod:`pyode._solvers.tableaux`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor


def explicit_rk_step(f: Callable[[float, Tensor], Tensor], t: float, x: Tensor, h: float,
                     a: Sequence[Sequence[float]], b: Sequence[float], c: Sequence[float]) -> Tensor:
    """``x + h Σ_i b_i k_i`` with ``k_i = f(t + c_i h, x + h Σ_{j<i} a_ij k_j)``; zero coefficients skip their
    term (no multiply-add by 0, so a Euler layer is exactly ``x + h f(x)``).

    Args:
        f: ``f(t, x) -> dx/dt`` shaped like ``x``; t: the step's start; x: (*state); h: the step size;
        a: strictly lower rows (``a[i]`` has at least ``i`` entries, the rest ignored); b: (s,) weights;
        c: (s,) nodes.

    Returns:
        The state after one step, shaped like ``x``.
    """
    stages: list[Tensor] = []
    for i, (row, c_i) in enumerate(zip(a, c)):
        x_stage = x
        for coeff, k in zip(row[:i], stages):
            if coeff != 0.0:
                x_stage = x_stage + (h * coeff) * k
        stages.append(f(t + c_i * h, x_stage))
    return x + h * sum(w * k for w, k in zip(b, stages) if w != 0.0)


def tableau_rows(tableau) -> tuple[list[list[float]], list[float], list[float]]:
    """(a, b, c) of a :class:`~pyode._solvers.tableaux.ButcherTableau` as float lists."""
    return [list(map(float, row)) for row in tableau.a], list(map(float, tableau.b)), list(map(float, tableau.c))
