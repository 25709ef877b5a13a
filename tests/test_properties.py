"""Property tests (issue 7), with hypothesis: the compiled kernels equal the reference path for random
tableau-like coefficients, shapes (0, 1, odd, across cache blocks), dtypes and per-row segments; the public
API rejects non-contiguous/expanded/2-D inputs or copies them correctly; random linear ODEs match
``scipy.linalg.expm``; the asynchronous leapfrog step (ALF, MALI: Zhuang et al., ICLR 2021) inverts exactly.

Examples are derandomized (the same ones every run): 1500 in all, about 10 s on two cores.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyode
from pyode import _kernels
from pyode._kernels import Segments, reference
from pyode._solvers.alf import alf_inverse, alf_step

compiled = pytest.importorskip("pyode._kernels.compiled", reason="compiled extension not built")

WATCHDOG_S = 120


def examples(n: int):
    """Hypothesis settings: ``n`` derandomized examples, no deadline (shared CI cores), no database."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


pytestmark = pytest.mark.usefixtures("watchdog")


DTYPES = st.sampled_from([torch.float32, torch.float64])
# 0 and 1, small odd sizes, the cache-block edges (kBlock = 2048) and sizes spanning several blocks.
SIZES = st.one_of(st.sampled_from([0, 1, 3, 2047, 2048, 2049, 4097]), st.integers(0, 6000))
SEEDS = st.integers(0, 2**31 - 1)
# Tableau-like coefficients: many exact zeros (the kernels skip them), the rest of either sign.
COEFFS = st.one_of(st.just(0.0), st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False))
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-12, "atol": 1e-12}}
NORM_REL = {torch.float32: 1e-4, torch.float64: 1e-11}
# float32 kernels square the scaled error in float32 (vectorised within a 2048-element block), so an error
# ratio below ~1e-19 squares to 0: tiny norms are compared absolutely. Acceptance never depends on it.
NORM_ABS = {torch.float32: 1e-18, torch.float64: 1e-300}


def _vectors(count: int, n: int, dtype, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64).to(dtype) for _ in range(count)]


def _assert_close(got, want, dtype, scale: float = 1.0):
    tol = TOL[dtype]
    torch.testing.assert_close(got, want, rtol=tol["rtol"], atol=tol["atol"] * max(scale, 1.0))


# ---- kernels: compiled == reference ----------------------------------------------------------------------

@examples(300)
@given(dtype=DTYPES, n=SIZES, s=st.integers(0, 6), m=st.integers(0, 4), with_base=st.booleans(), seed=SEEDS,
       data=st.data())
def test_lincomb_compiled_equals_reference(dtype, n, s, m, with_base, seed, data):
    if s == 0 and not with_base:
        with_base = True  # the kernel needs a base or a term to know n
    base, *ks = _vectors(s + 1, n, dtype, seed)
    base = base if with_base else None
    weights = [data.draw(st.lists(COEFFS, min_size=s, max_size=s)) for _ in range(m)]
    got = compiled.lincomb(base, ks, weights)
    want = reference.lincomb(base, ks, weights)
    assert got.shape == want.shape == (m, n) and got.dtype == want.dtype == dtype
    scale = max((sum(abs(w) for w in row) for row in weights), default=1.0) * 5.0
    _assert_close(got, want, dtype, scale)


def _segments(n: int, cuts: list[int]) -> Segments:
    """Segments of [0, n) at sorted cut points (repeated cuts make empty segments)."""
    return Segments([0, *sorted(min(c, n) for c in cuts), n])


@examples(300)
@given(dtype=DTYPES, n=SIZES, s=st.integers(1, 7), seed=SEEDS, fsal=st.booleans(), data=st.data())
def test_rk_finish_compiled_equals_reference(dtype, n, s, seed, fsal, data):
    y0, *ks = _vectors(s + 1, n, dtype, seed)
    b = data.draw(st.lists(COEFFS, min_size=s, max_size=s))
    e = data.draw(st.one_of(st.none(), st.lists(st.floats(-0.1, 0.1), min_size=s, max_size=s)))
    atol, rtol = data.draw(st.floats(1e-8, 1.0)), data.draw(st.floats(0.0, 1.0))
    segments = data.draw(st.one_of(st.none(), st.lists(st.integers(0, n), max_size=6).map(lambda c: _segments(n, c))))
    y1_ref, norm_ref, seg_ref = reference.rk_finish(y0, None, ks, b, e, atol, rtol, segments)
    if fsal:  # y1 given (the FSAL form): only the error is computed
        y1, norm, seg = compiled.rk_finish(y0, y1_ref.clone(), ks, None, e, atol, rtol, segments)
    else:
        y1, norm, seg = compiled.rk_finish(y0, None, ks, b, e, atol, rtol, segments)
    _assert_close(y1, y1_ref, dtype, sum(abs(x) for x in b) * 5.0)
    assert norm == pytest.approx(norm_ref, rel=NORM_REL[dtype], abs=NORM_ABS[dtype])
    if segments is not None and e is not None:
        torch.testing.assert_close(seg, seg_ref.to(seg.dtype), rtol=NORM_REL[dtype], atol=NORM_ABS[dtype])


@examples(200)
@given(dtype=DTYPES, n=SIZES, s=st.integers(1, 7), seed=SEEDS, h=st.floats(1e-3, 2.0), data=st.data())
def test_fused_workspace_equals_reference(dtype, n, s, seed, h, data):
    """The per-solve C++ workspace (one call per stage) against reference lincomb/rk_finish, for a random
    explicit tableau: strictly lower-triangular a, weights b and error weights e."""
    a = [data.draw(st.lists(COEFFS, min_size=i, max_size=i)) for i in range(s)]
    b = data.draw(st.lists(COEFFS, min_size=s, max_size=s))
    e = data.draw(st.one_of(st.none(), st.lists(st.floats(-0.1, 0.1), min_size=s, max_size=s)))
    segments = data.draw(st.one_of(st.none(), st.lists(st.integers(0, n), max_size=4).map(lambda c: _segments(n, c))))
    tableau = SimpleNamespace(num_stages=s, a=a, b=b, b_err=e)
    y0, *ks = _vectors(s + 1, n, dtype, seed)
    ws = compiled.make_workspace(tableau, n, dtype, segments)
    ws.set_base(y0)
    for j, k in enumerate(ks):
        ws.set_term(j, k)
    for i in range(1, s):
        out = torch.empty(n, dtype=dtype)
        ws.stage(i, out, h)
        want = reference.lincomb(y0, ks[:i], [[h * x for x in a[i]]])[0]
        _assert_close(out, want, dtype, h * sum(abs(x) for x in a[i]) * 5.0)
    y1 = torch.empty(n, dtype=dtype)
    norm = ws.finish(y1, h, 1e-6, 1e-3, False)
    hb, he = [h * x for x in b], None if e is None else [h * x for x in e]
    y1_ref, norm_ref, seg_ref = reference.rk_finish(y0, None, ks, hb, he, 1e-6, 1e-3, segments)
    _assert_close(y1, y1_ref, dtype, sum(abs(x) for x in hb) * 5.0)
    assert norm == pytest.approx(norm_ref, rel=NORM_REL[dtype], abs=NORM_ABS[dtype])
    if segments is not None and e is not None:
        np.testing.assert_allclose(ws.segment_norms(), seg_ref.numpy(), rtol=NORM_REL[dtype], atol=NORM_ABS[dtype])


@examples(150)
@given(dtype=DTYPES, n=SIZES, s=st.integers(2, 8), seed=SEEDS, h=st.floats(1e-3, 2.0), data=st.data())
def test_carried_error_equals_the_plain_finish_bitwise(dtype, n, s, seed, h, data):
    """An FSAL step whose last stage carries the partial error (set_error_carry): the stage input and the error
    norms are bitwise those of the plain stage + finish, and the carry is refused when a[s-1] and e[:s-1] have
    different zero patterns."""
    a = [data.draw(st.lists(COEFFS, min_size=i, max_size=i)) for i in range(s)]
    e = data.draw(st.lists(COEFFS, min_size=s, max_size=s))
    if data.draw(st.booleans()):  # usually give e the zero pattern of the last row, as FSAL pairs have
        e = [0.0 if x == 0.0 else (y if y != 0.0 else 0.5) for x, y in zip(a[-1] + [1.0], e)]
    segments = data.draw(st.one_of(st.none(), st.lists(st.integers(0, n), max_size=4).map(lambda c: _segments(n, c))))
    tableau = SimpleNamespace(num_stages=s, a=a, b=a[-1] + [0.0], b_err=e)
    y0, *ks = _vectors(s + 1, n, dtype, seed)
    results = []
    for carried in (False, True):
        ws = compiled.make_workspace(tableau, n, dtype, segments)
        carry = torch.full((n,), float("nan"), dtype=dtype)
        if carried:
            same_pattern = all((x != 0.0) == (y != 0.0) for x, y in zip(a[-1], e))
            assert ws.set_error_carry(carry) == same_pattern
        ws.set_base(y0)
        for j, k in enumerate(ks):
            ws.set_term(j, k)
        y1 = torch.empty(n, dtype=dtype)
        ws.stage(s - 1, y1, h)
        norm = ws.finish(y1, h, 1e-6, 1e-3, True)
        results.append((y1, norm, list(ws.segment_norms())))
    (y1_plain, norm_plain, seg_plain), (y1_carried, norm_carried, seg_carried) = results
    assert torch.equal(y1_plain, y1_carried)
    assert norm_plain == norm_carried or (math.isnan(norm_plain) and math.isnan(norm_carried))
    assert seg_plain == seg_carried or np.array_equal(seg_plain, seg_carried, equal_nan=True)


@examples(150)
@given(dtype=DTYPES, n=SIZES, seed=SEEDS, with_b=st.booleans(), atol=st.floats(1e-8, 1.0),
       rtol=st.floats(0.0, 1.0))
def test_scaled_norm_compiled_equals_reference(dtype, n, seed, with_b, atol, rtol):
    a, b, y = _vectors(3, n, dtype, seed)
    b = b if with_b else None
    got = compiled.scaled_norm(a, b, y, atol, rtol)
    assert got == pytest.approx(reference.scaled_norm(a, b, y, atol, rtol), rel=NORM_REL[dtype], abs=NORM_ABS[dtype])


# ---- the public kernel API: odd layouts are rejected clearly, or computed exactly like contiguous copies ----

LAYOUTS = ("contiguous", "storage offset", "strided", "expanded", "2-D row", "2-D column")


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x`` (n,) with the same values in another memory layout or shape."""
    n = x.numel()
    if layout == "storage offset":
        return torch.cat([x.new_zeros(3), x])[3:]
    if layout == "strided":
        return torch.stack([x, x.new_zeros(n)], dim=1).reshape(-1)[::2]
    if layout == "expanded":  # stride 0: every element aliases the first (values: x[0] repeated)
        return x[:1].expand(n) if n else x
    if layout == "2-D row":
        return x.reshape(1, n)
    if layout == "2-D column":
        return x.reshape(n, 1)
    return x


@examples(200)
@given(dtype=DTYPES, n=st.integers(0, 40), s=st.integers(1, 4), seed=SEEDS,
       layouts=st.lists(st.sampled_from(LAYOUTS), min_size=5, max_size=5), data=st.data())
def test_public_kernels_reject_or_copy_odd_layouts(dtype, n, s, seed, layouts, data):
    base, *ks = (_layout(x, layouts[i]) for i, x in enumerate(_vectors(s + 1, n, dtype, seed)))
    weights = [data.draw(st.lists(COEFFS, min_size=s, max_size=s))]
    accepted = all(x.dim() == 1 and x.is_contiguous() for x in [base, *ks])
    if not accepted:
        with pytest.raises(ValueError, match="contiguous|1-D"):
            _kernels.lincomb(base, ks, weights)
        with pytest.raises(ValueError, match="contiguous|1-D"):
            _kernels.rk_finish(base, ks, weights[0], None, 1e-6, 1e-3)
        return
    want = reference.lincomb(base.contiguous(), [k.contiguous() for k in ks], weights)
    torch.testing.assert_close(_kernels.lincomb(base, ks, weights), want, rtol=0, atol=0)
    y1, _, _ = _kernels.rk_finish(base, ks, weights[0], None, 1e-6, 1e-3)
    torch.testing.assert_close(y1, want[0], rtol=0, atol=0)


# ---- random linear ODEs y' = A y against the matrix exponential ----------------------------------------

def _stable_matrix(dim: int, seed: int) -> np.ndarray:
    """Random (dim, dim) matrix with spectral abscissa <= 0.5 (moderate growth) and norm O(1)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim)) / math.sqrt(dim)
    shift = max(0.0, float(np.linalg.eigvals(a).real.max()) - 0.5)
    return a - shift * np.eye(dim)


METHOD_SETUPS = {
    "dopri5": {"rtol": 1e-10, "atol": 1e-12},
    "tsit5": {"rtol": 1e-10, "atol": 1e-12},
    "dopri8": {"rtol": 1e-10, "atol": 1e-12},
    "rk4": {"options": {"step_size": 0.01, "interp": "cubic"}},  # cubic Hermite keeps order 4 between steps
}


@examples(150)
@given(dim=st.integers(1, 4), batch=st.integers(1, 3), seed=SEEDS, t1=st.floats(0.1, 2.0),
       backwards=st.booleans(), method=st.sampled_from(sorted(METHOD_SETUPS)), dtype=DTYPES,
       layout=st.sampled_from(["contiguous", "transposed", "strided", "expanded"]))
def test_linear_ode_matches_matrix_exponential(dim, batch, seed, t1, backwards, method, dtype, layout):
    a = _stable_matrix(dim, seed)
    y0_np = np.random.default_rng(seed + 1).normal(size=(batch, dim))
    times = np.array([0.0, t1 / 3, t1]) * (-1.0 if backwards else 1.0)
    a_t = torch.tensor(a, dtype=dtype)
    y0 = torch.tensor(y0_np, dtype=dtype)
    if layout == "transposed":  # a non-contiguous view with the same values
        y0 = y0.T.contiguous().T
    elif layout == "strided":  # every other column of a wider tensor
        y0 = torch.stack([y0, torch.full_like(y0, math.nan)], dim=-1).reshape(batch, 2 * dim)[:, ::2]
    elif layout == "expanded":  # stride-0 rows: every row is the first one
        y0, y0_np = y0[:1].expand(batch, dim), np.repeat(y0_np[:1], batch, axis=0)
    kwargs = dict(METHOD_SETUPS[method])
    if dtype == torch.float32 and "rtol" in kwargs:
        kwargs.update(rtol=1e-6, atol=1e-7)
    ys = pyode.odeint(lambda t, y: y @ a_t.T, y0, torch.tensor(times, dtype=dtype), method=method, **kwargs)
    exact = np.stack([y0_np @ scipy.linalg.expm(a * t).T for t in times])
    scale = 1.0 + np.abs(exact).max()
    tol = 1e-7 if dtype == torch.float64 else 2e-4
    np.testing.assert_allclose(ys.double().numpy(), exact, rtol=0, atol=tol * scale)
    if layout != "contiguous":  # the solver copies odd layouts: bitwise the same as a contiguous y0
        again = pyode.odeint(lambda t, y: y @ a_t.T, y0.contiguous(), torch.tensor(times, dtype=dtype),
                             method=method, **kwargs)
        assert torch.equal(ys, again)


# ---- ALF inverts exactly -------------------------------------------------------------------------------

@examples(200)
@given(n=st.integers(1, 40), seed=SEEDS, steps=st.lists(st.floats(1e-3, 0.5), min_size=1, max_size=30),
       t0=st.floats(-2.0, 2.0), kern=st.sampled_from(["compiled", "reference"]))
def test_alf_step_inverts_exactly(n, seed, steps, t0, kern):
    """Random step sequences: stepping forward then applying alf_inverse in reverse returns (y0, v0) up to
    float64 rounding (the scheme is algebraically invertible; MALI relies on it)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n)
    c = torch.randn(n, generator=g, dtype=torch.float64)

    def fn(t: float, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(w @ y) + math.sin(t) * c

    backend = compiled if kern == "compiled" else reference
    y0 = torch.randn(n, generator=g, dtype=torch.float64)
    v0 = fn(t0, y0)
    y, v, t = y0, v0, t0
    starts = []
    for h in steps:
        starts.append(t)
        y, v = alf_step(fn, backend, t, y, v, h)
        t += h
    for start, h in zip(reversed(starts), reversed(steps)):
        y, v = alf_inverse(fn, backend, start, y, v, h)
    # Rounding grows at most linearly with the step count here (|h| <= 0.5, Lipschitz(fn) = O(1)).
    tol = 1e-13 * (len(steps) + 1) * (1.0 + float(y0.abs().max()) + float(v0.abs().max()))
    torch.testing.assert_close(y, y0, rtol=0, atol=tol)
    torch.testing.assert_close(v, v0, rtol=0, atol=tol)
