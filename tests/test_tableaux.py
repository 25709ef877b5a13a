"""Butcher tableaux: order conditions from rooted trees, midpoint weights, validation, registry.

The order conditions are Butcher's: a method with weights w has order p iff Σ_i w_i Φ_i(τ) = 1/γ(τ) for
every rooted tree τ with |τ| <= p (Hairer, Nørsett & Wanner, "Solving ODEs I", Thm. II.2.13); a midpoint
formula approximates y(t0 + θh) to order q iff Σ_i w_i Φ_i(τ) = θ^|τ|/γ(τ) for |τ| <= q.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache

import pytest

from pyode._solvers.tableaux import RK4, RK4_CLASSIC, TABLEAUX, ButcherTableau, get_tableau

Tree = tuple  # a rooted tree is the sorted tuple of its children's subtrees; the single node is ()

ALL_TABLEAUX = {**TABLEAUX, "rk4_classic": RK4_CLASSIC}
ADAPTIVE = sorted(name for name, tab in TABLEAUX.items() if tab.adaptive)
WITH_MID = sorted(name for name, tab in TABLEAUX.items() if tab.mid is not None)

# Order of the embedded solution b_hat = b - b_err of each registered pair.
EMBEDDED_ORDER = {"adaptive_heun": 1, "fehlberg2": 1, "bosh3": 2, "dopri5": 4, "tsit5": 4, "dopri8": 7}

# A condition that fails does so by far more than this (relative to 1/γ); satisfied ones hold to ~1e-14.
FAILED_CONDITION = 1e-6


# ---------------------------------------------------------------------------------------------------------
# Rooted trees and elementary weights
# ---------------------------------------------------------------------------------------------------------

def _with_one_more_leaf(tree: Tree):
    """Every tree obtained by attaching a new leaf to one node of ``tree`` (in canonical form)."""
    yield tuple(sorted(tree + ((),)))
    for i, child in enumerate(tree):
        for grown in _with_one_more_leaf(child):
            yield tuple(sorted(tree[:i] + (grown,) + tree[i + 1:]))


@cache
def rooted_trees(order: int) -> tuple[Tree, ...]:
    """All rooted trees with ``order`` nodes: each arises by adding a leaf to a tree with one node less."""
    if order == 1:
        return ((),)
    grown = {bigger for tree in rooted_trees(order - 1) for bigger in _with_one_more_leaf(tree)}
    return tuple(sorted(grown))


def tree_order(tree: Tree) -> int:
    return 1 + sum(tree_order(child) for child in tree)


def density(tree: Tree) -> int:
    """γ(τ) = |τ| Π γ(children)."""
    return tree_order(tree) * math.prod(density(child) for child in tree)


@cache
def stage_weights(tree: Tree, a: tuple[tuple[float, ...], ...]) -> tuple[float, ...]:
    """(s,) per-stage elementary weights: Φ_i(τ) = Π_children (Σ_j a_ij Φ_j(child)); Φ_i(•) = 1."""
    phi = [1.0] * len(a)
    for child in tree:
        child_phi = stage_weights(child, a)
        phi = [p * math.fsum(a_ij * child_phi[j] for j, a_ij in enumerate(row)) for p, row in zip(phi, a)]
    return tuple(phi)


def condition_residual(weights, tableau: ButcherTableau, tree: Tree, theta: float = 1.0) -> float:
    """Σ_i w_i Φ_i(τ) - θ^|τ|/γ(τ): zero iff the order condition of ``tree`` holds."""
    phi = stage_weights(tree, tableau.a)
    return math.fsum(w * p for w, p in zip(weights, phi)) - theta ** tree_order(tree) / density(tree)


def assert_exact_order(weights, tableau: ButcherTableau, order: int, theta: float = 1.0) -> None:
    """All conditions up to ``order`` hold, and some condition of order ``order + 1`` clearly fails."""
    tol = 1e-12 * tableau.num_stages
    for n in range(1, order + 1):
        worst = max(abs(condition_residual(weights, tableau, t, theta)) for t in rooted_trees(n))
        assert worst < tol, f"{tableau.name}: order-{n} conditions violated by {worst:.2e}"
    n = order + 1
    worst_relative = max(abs(condition_residual(weights, tableau, t, theta)) * density(t) / theta**n
                         for t in rooted_trees(n))
    assert worst_relative > FAILED_CONDITION, f"{tableau.name}: order {n} also holds; the order is understated"


# ---------------------------------------------------------------------------------------------------------
# The tree machinery itself
# ---------------------------------------------------------------------------------------------------------

def test_number_of_rooted_trees():
    """OEIS A000081."""
    assert [len(rooted_trees(n)) for n in range(1, 10)] == [1, 1, 2, 4, 9, 20, 48, 115, 286]


def test_density_of_bushy_and_tall_trees():
    """The bushy tree with n nodes has γ = n; the tall tree (a chain) has γ = n!."""
    for n in range(1, 9):
        bushy = tuple(() for _ in range(n - 1))
        tall: Tree = ()
        for _ in range(n - 1):
            tall = (tall,)
        assert tree_order(bushy) == tree_order(tall) == n
        assert density(bushy) == n and density(tall) == math.factorial(n)


# ---------------------------------------------------------------------------------------------------------
# Orders of the registered methods
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ALL_TABLEAUX))
def test_propagated_solution_has_exactly_the_claimed_order(name):
    tableau = ALL_TABLEAUX[name]
    assert_exact_order(tableau.b, tableau, tableau.order)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_embedded_solution_has_exactly_its_order(name):
    tableau = TABLEAUX[name]
    b_hat = [b - e for b, e in zip(tableau.b, tableau.b_err)]
    assert_exact_order(b_hat, tableau, EMBEDDED_ORDER[name])


def test_every_adaptive_method_states_its_embedded_order():
    assert set(EMBEDDED_ORDER) == set(ADAPTIVE)


# ---------------------------------------------------------------------------------------------------------
# Midpoint weights
# ---------------------------------------------------------------------------------------------------------

def test_mid_is_given_for_the_high_order_pairs():
    """torchdiffeq's quartic dense output needs mid for dopri5 and dopri8; tsit5 has its own extension."""
    assert {"dopri5", "tsit5", "dopri8"} <= set(WITH_MID)


@pytest.mark.parametrize("name", WITH_MID)
def test_mid_satisfies_the_half_step_conditions_to_order_4(name):
    tableau = TABLEAUX[name]
    tol = 1e-12 * tableau.num_stages
    for n in range(1, 5):
        worst = max(abs(condition_residual(tableau.mid, tableau, t, theta=0.5)) for t in rooted_trees(n))
        assert worst < tol, (name, n, worst)


def _exp_exact(x: Fraction, terms: int = 40) -> Fraction:
    """exp(x) by its Taylor series, exact to far below double precision for |x| <= 1."""
    total, term = Fraction(0), Fraction(1)
    for n in range(1, terms):
        total, term = total + term, term * x / n
    return total


def _midpoint_error_on_exponential(tableau: ButcherTableau, h: float) -> float:
    """|y0 + h Σ mid_j k_j - exp(h/2)| for y' = y, y0 = 1, in exact arithmetic on the stored coefficients."""
    h_q = Fraction(h)
    k: list[Fraction] = []
    for row in tableau.a:
        k.append(1 + h_q * sum((Fraction(a_ij) * k_j for a_ij, k_j in zip(row, k)), Fraction(0)))
    y_mid = 1 + h_q * sum((Fraction(m) * k_j for m, k_j in zip(tableau.mid, k)), Fraction(0))
    return abs(float(y_mid - _exp_exact(h_q / 2)))


# Step sizes in the asymptotic range of each method's midpoint error and well above the floor (~1e-16 h) left
# by rounding the coefficients to double. dopri8's midpoint is 6th-order accurate, so it needs larger steps.
MID_STEP_SIZES = {"dopri8": (0.4, 0.2, 0.1)}


@pytest.mark.parametrize("name", WITH_MID)
def test_mid_error_on_exponential_is_order_h5(name):
    tableau = TABLEAUX[name]
    hs = MID_STEP_SIZES.get(name, (0.04, 0.02, 0.01))
    errors = [_midpoint_error_on_exponential(tableau, h) for h in hs]
    slopes = [math.log(e0 / e1) / math.log(h0 / h1) for e0, e1, h0, h1 in zip(errors, errors[1:], hs, hs[1:])]
    assert min(slopes) > 4.7, (name, errors, slopes)


# ---------------------------------------------------------------------------------------------------------
# Properties and validation
# ---------------------------------------------------------------------------------------------------------

def test_fsal_exactly_for_the_pairs_ending_at_y1():
    assert {name for name, tab in TABLEAUX.items() if tab.fsal} == {"bosh3", "dopri5", "tsit5", "dopri8"}


def test_fsal_requires_the_last_stage_to_be_y1():
    heun_with_extra_stage = {"name": "heun_fsal", "c": [0, 1, 1], "a": [[], [1], [0.5, 0.5]], "b": [0.5, 0.5, 0],
                             "order": 2}
    assert ButcherTableau(**heun_with_extra_stage).fsal
    shifted_last_stage = {**heun_with_extra_stage, "a": [[], [1], [0.25, 0.75]]}
    assert not ButcherTableau(**shifted_last_stage).fsal
    assert not RK4_CLASSIC.fsal  # c[-1] == 1 but its last stage is not at y1


def test_adaptive_means_an_error_estimate():
    assert all(tab.adaptive == (tab.b_err is not None) for tab in TABLEAUX.values())
    assert set(ADAPTIVE) == {"adaptive_heun", "fehlberg2", "bosh3", "dopri5", "tsit5", "dopri8"}


def test_num_stages_and_tuple_storage():
    tableau = ButcherTableau(name="heun", c=[0, 1], a=[[], [1]], b=[0.5, 0.5], order=2, b_err=[-0.5, 0.5])
    assert tableau.num_stages == 2 and tableau.adaptive and not tableau.fsal
    assert tableau.a == ((), (1.0,)) and isinstance(tableau.b, tuple)
    hash(tableau)  # frozen and made of tuples


_GOOD = {"name": "heun", "c": [0, 1], "a": [[], [1]], "b": [0.5, 0.5], "order": 2}


@pytest.mark.parametrize("change, message", [
    ({"a": [[], [0.9]]}, r"row sum of 'a' at row 1"),
    ({"c": [0.1, 1]}, r"row sum of 'a' at row 0"),
    ({"b": [0.5, 0.6]}, r"'b' must sum to 1"),
    ({"b_err": [0.5, 0.5]}, r"'b_err'"),
    ({"a": [[], [0.5, 0.5]]}, r"row a\[1\]"),
    ({"a": [[], [1], [1, 0]]}, r"'a' has 3 entries"),
    ({"b": [1.0]}, r"'b' has 1 entries"),
    ({"mid": [0.5, 0.5]}, r"'mid' must sum to 1/2"),
    ({"mid": [0.5]}, r"'mid' has 1 entries"),
    ({"b": [float("nan"), 0.5]}, r"'b' must sum to 1"),
    ({"order": 0}, r"'order'"),
    ({"c": []}, r"'c' is empty"),
    ({"b": ["x", 1]}, r"'b' must be a sequence of numbers"),
])
def test_bad_tableau_raises_naming_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        ButcherTableau(**{**_GOOD, **change})


def test_registry_names_and_lookup():
    assert set(TABLEAUX) == {"euler", "midpoint", "heun2", "heun3", "rk4", "adaptive_heun", "fehlberg2",
                             "bosh3", "dopri5", "tsit5", "dopri8"}
    for name, tableau in TABLEAUX.items():
        assert get_tableau(name) is tableau and tableau.name == name
    assert get_tableau("rk4") is RK4 and RK4 != RK4_CLASSIC  # 'rk4' is the 3/8 rule, as in torchdiffeq
    with pytest.raises(ValueError, match="valid names are: adaptive_heun, bosh3, dopri5, dopri8, euler"):
        get_tableau("dopri9")


# ---------------------------------------------------------------------------------------------------------
# Agreement with torchdiffeq and torchode (optional: only where they are installed)
# ---------------------------------------------------------------------------------------------------------

def _close(xs, ys, tol=1e-15) -> bool:
    return len(xs) == len(ys) and all(math.isclose(x, y, rel_tol=tol, abs_tol=tol) for x, y in zip(xs, ys))


@pytest.mark.parametrize("name", ["adaptive_heun", "fehlberg2", "bosh3", "dopri5", "dopri8"])
def test_adaptive_tableaux_match_torchdiffeq(name):
    """Same nodes, stages, solution and midpoint weights; error weights equal up to sign (the norm matters)."""
    pytest.importorskip("torchdiffeq")
    from torchdiffeq._impl.odeint import SOLVERS

    theirs = SOLVERS[name].tableau
    ours = TABLEAUX[name]
    assert _close(ours.c[1:], theirs.alpha.tolist())
    assert all(_close(row, beta.tolist()) for row, beta in zip(ours.a[1:], theirs.beta, strict=True))
    assert _close(ours.b, theirs.c_sol.tolist())
    their_err = theirs.c_error.tolist()
    assert _close(ours.b_err, their_err) or _close(ours.b_err, [-x for x in their_err])
    if ours.mid is not None:
        assert _close(ours.mid, SOLVERS[name].mid.tolist())


def _one_step(tableau: ButcherTableau, f, t0: float, y0: float, h: float) -> float:
    k: list[float] = []
    for ci, row in zip(tableau.c, tableau.a):
        k.append(f(t0 + ci * h, y0 + h * math.fsum(a_ij * k_j for a_ij, k_j in zip(row, k))))
    return y0 + h * math.fsum(b * k_j for b, k_j in zip(tableau.b, k))


@pytest.mark.parametrize("name", ["euler", "midpoint", "heun2", "heun3", "rk4"])
def test_fixed_step_tableaux_match_torchdiffeq_step(name):
    torch = pytest.importorskip("torch")
    torchdiffeq = pytest.importorskip("torchdiffeq")

    def f(t, y):  # nonlinear and time dependent, so every stage shows
        return math.sin(t) * y - y**3 if isinstance(y, float) else torch.sin(t) * y - y**3

    t0, y0, h = 0.3, 0.8, 0.25
    t = torch.tensor([t0, t0 + h], dtype=torch.float64)
    theirs = torchdiffeq.odeint(f, torch.tensor([y0], dtype=torch.float64), t, method=name)[-1].item()
    assert abs(_one_step(TABLEAUX[name], f, t0, y0, h) - theirs) < 1e-14


def test_tsit5_matches_torchode():
    pytest.importorskip("torchode")
    from torchode.single_step_methods.tsit5 import Tsit5

    theirs = Tsit5.TABLEAU
    ours = TABLEAUX["tsit5"]
    assert _close(ours.c, theirs.c.tolist())
    assert all(_close(row, their_row[:i].tolist()) for i, (row, their_row) in enumerate(zip(ours.a, theirs.a)))
    assert _close(ours.b, theirs.b.tolist()) and _close(ours.b_err, theirs.b_err.tolist(), tol=1e-14)
    # torchode's interpolant is y0 + h (θ k_1 + Σ_{p=2..4} θ^p Σ_j B[p-2][j] k_j); at θ = 1/2:
    their_mid = [0.5 * (j == 0) + sum(0.5**p * theirs.b_other[p - 2][j].item() for p in (2, 3, 4))
                 for j in range(ours.num_stages)]
    assert _close(ours.mid, their_mid, tol=1e-14)
