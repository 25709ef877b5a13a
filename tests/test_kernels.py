"""Compiled kernels against their reference twins (pyode._kernels.reference is the specification)."""

import pytest
import torch

from pyode import _kernels
from pyode._kernels import Segments, reference

compiled = pytest.importorskip("pyode._kernels.compiled", reason="compiled extension not built")

SIZES = [0, 1, 7, 2049, 1_000_003]
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: {"rtol": 2e-6, "atol": 2e-6}, torch.float64: {"rtol": 1e-13, "atol": 1e-13}}


def _terms(n, s, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64).to(dtype) for _ in range(s)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("s", [1, 4, 13])
def test_lincomb_matches_reference(dtype, n, s):
    base, *ks = _terms(n, s + 1, dtype)
    weights = [[0.1 * (j + 1) * (-1) ** r if (j + r) % 3 else 0.0 for j in range(s)] for r in range(3)]
    got = compiled.lincomb(base, ks, weights)
    want = reference.lincomb(base, ks, weights)
    assert got.shape == (3, n)
    torch.testing.assert_close(got, want, **TOL[dtype])
    got0 = compiled.lincomb(None, ks, weights[:1])
    torch.testing.assert_close(got0, reference.lincomb(None, ks, weights[:1]), **TOL[dtype])
    for b in (base, None):  # one row: (n,), the same values
        torch.testing.assert_close(compiled.lincomb_row(b, ks, weights[1]), reference.lincomb_row(b, ks, weights[1]),
                                   **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("s", [2, 7])
def test_rk_finish_matches_reference(dtype, n, s):
    y0, *ks = _terms(n, s + 1, dtype, seed=1)
    b = [0.01 * (j + 1) for j in range(s)]
    e = [1e-4 * (-1) ** j for j in range(s)]
    y1, norm, _ = compiled.rk_finish(y0, None, ks, b, e, 1e-6, 1e-3, None)
    y1_ref, norm_ref, _ = reference.rk_finish(y0, None, ks, b, e, 1e-6, 1e-3, None)
    torch.testing.assert_close(y1, y1_ref, **TOL[dtype])
    assert norm == pytest.approx(norm_ref, rel=1e-5 if dtype == torch.float32 else 1e-12, abs=1e-300)
    # FSAL form: y1 given, only the error norm computed
    _, norm_given, _ = compiled.rk_finish(y0, y1_ref.clone(), ks, None, e, 1e-6, 1e-3, None)
    assert norm_given == pytest.approx(norm_ref, rel=1e-5 if dtype == torch.float32 else 1e-12, abs=1e-300)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,row_size", [(1, 5), (512, 2), (3, 5000), (4, 0)])
def test_rk_finish_per_row_norms(dtype, rows, row_size):
    n = rows * row_size
    y0, k0, k1 = _terms(n, 3, dtype, seed=2)
    seg = Segments.equal_rows(rows, n) if n else Segments([0] * (rows + 1))
    _, norm, rows_got = compiled.rk_finish(y0, None, [k0, k1], [0.5, 0.5], [0.1, -0.1], 1e-5, 1e-4, seg)
    _, norm_ref, rows_ref = reference.rk_finish(y0, None, [k0, k1], [0.5, 0.5], [0.1, -0.1], 1e-5, 1e-4, seg)
    torch.testing.assert_close(rows_got, rows_ref, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)
    assert norm == pytest.approx(norm_ref, rel=1e-5)


def test_lincomb_backward_matches_reference():
    base, *ks = _terms(33, 4, torch.float64, seed=3)
    w = [[0.5, -1.0, 0.0], [2.0, 0.25, 1.5]]
    inputs = [x.clone().requires_grad_() for x in [base, *ks]]
    torch.autograd.gradcheck(lambda b, *k: compiled.lincomb(b, list(k), w), inputs)
    # one row, recorded as stack + addmv (small state with a base) or through the kernel (no base)
    torch.autograd.gradcheck(lambda b, *k: compiled.lincomb_row(b, list(k), w[1]), inputs)
    torch.autograd.gradcheck(lambda *k: compiled.lincomb_row(None, list(k), w[1]), inputs[1:])


def test_public_api_validates_inputs():
    x = torch.zeros(4)
    with pytest.raises(ValueError, match="contiguous"):
        _kernels.lincomb(x, [torch.zeros(8)[::2]], [[1.0]])
    with pytest.raises(ValueError, match="dtype|float64"):
        _kernels.lincomb(x, [torch.zeros(4, dtype=torch.float64)], [[1.0]])
    with pytest.raises(ValueError, match="elements"):
        _kernels.lincomb(x, [torch.zeros(5)], [[1.0]])
    with pytest.raises(ValueError, match="len\\(ks\\)"):
        _kernels.lincomb(x, [x], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="float32 and float64"):
        _kernels.lincomb(torch.zeros(4, dtype=torch.int64), [], [[]])
    with pytest.raises(ValueError, match="non-negative"):
        _kernels.rk_finish(x, [x], [1.0], [0.0], atol=-1.0, rtol=0.0)


def test_cpp_layer_rechecks_sizes():
    """The raw binding refuses sizes that would read out of bounds, even when Python is bypassed."""
    from pyode import _C

    x = torch.zeros(4)
    with pytest.raises(ValueError, match="shorter than n"):
        _C.lincomb(out=x, rows=1, n=4, base=None, ks=[x[:2]], weights=[1.0], dtype=0)
    with pytest.raises(ValueError, match="too small"):
        _C.lincomb(out=x, rows=2, n=4, base=None, ks=[x], weights=[1.0, 1.0], dtype=0)
    with pytest.raises(ValueError, match="dtype"):
        _C.lincomb(out=x, rows=1, n=4, base=None, ks=[x], weights=[1.0], dtype=7)
    with pytest.raises(ValueError, match="base is shorter"):
        _C.lincomb(out=x, rows=1, n=4, base=x[:3], ks=[x], weights=[1.0], dtype=0)
    with pytest.raises(ValueError, match="y0/y1 shorter"):
        _C.rk_finish(y1=x[:3], err=None, y0=x, ks=[x], b=[1.0], e=[], atol=0.0, rtol=0.0, seg_offsets=None,
                     seg_norms=None, dtype=0)
    with pytest.raises(ValueError, match="seg_norms shorter"):
        _C.rk_finish(y1=x, err=None, y0=x, ks=[x], b=[1.0], e=[1.0], atol=1.0, rtol=0.0,
                     seg_offsets=torch.tensor([0, 2, 4]), seg_norms=torch.zeros(1, dtype=torch.float64), dtype=0)
    with pytest.raises(ValueError, match="shorter than n"):
        _C.scaled_norm(a=x[:2], b=None, y=x, atol=1.0, rtol=0.0, dtype=0)
    with pytest.raises(TypeError, match="expected a tensor"):
        _C.scaled_norm(a=[0.0] * 4, b=None, y=x, atol=1.0, rtol=0.0, dtype=0)
    with pytest.raises(TypeError):  # keywords only: no positional argument lists
        _C.scaled_norm(x, None, x, 1.0, 0.0, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offset", [0, 1, 3])
@pytest.mark.parametrize("n", [2 * 2049 + 5, 70_001])  # one block; several blocks across threads
def test_non_temporal_stage_writes_equal_plain_ones(dtype, offset, n):
    """Stage inputs above the size threshold are written around the cache (whole aligned lines, plain
    stores at the ragged ends): bitwise the same values as plain stores, for any output alignment."""
    from pyode import _C

    base, *ks = _terms(n, 7, dtype, seed=5)
    weights = [[0.3, -0.2, 0.0, 0.7, 0.1, -0.4]]
    default = _C.non_temporal()
    try:
        results = []
        for min_bytes in (1 << 62, 0):  # plain stores, then non-temporal for every size
            _C.set_non_temporal(min_bytes)
            out = torch.full((n + offset + 1,), float("nan"), dtype=dtype)  # the sentinel ends must survive
            window = out[offset:offset + n].view(1, n)
            compiled.lincomb_raw(base, ks, weights, like=base, out=window)
            assert torch.isnan(out[:offset]).all() and torch.isnan(out[offset + n:]).all()
            results.append(window.clone())
        assert torch.equal(results[0], results[1])
        torch.testing.assert_close(results[1], reference.lincomb(base, ks, weights), **TOL[dtype])
    finally:
        _C.set_non_temporal(default)
    with pytest.raises(ValueError, match="min_bytes"):
        _C.set_non_temporal(-1)


def test_results_independent_of_thread_count():
    y0, k0, k1 = _terms(1_000_000, 3, torch.float32, seed=4)
    old = torch.get_num_threads()
    try:
        norms = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            norms.append(compiled.rk_finish(y0, None, [k0, k1], [0.5, 0.5], [0.1, -0.1], 1e-6, 1e-3, None)[1])
        assert norms[0] == norms[1]  # bitwise: fixed-order block reduction
    finally:
        torch.set_num_threads(old)


def test_backend_info_reports_compiled_extension():
    info = _kernels.backend_info()
    assert info["compiled_cpu"] is True, info
    assert info["cpu_backend"] in ("cpu", "reference")


def test_scratch_pool_reuses_only_unreferenced_buffers():
    """The stage-buffer pool hands a buffer out again only when nothing else refers to it or its storage."""
    from pyode._solvers.scratch import ScratchPool

    pool, like = ScratchPool(), torch.empty(70_000)
    a, b = pool.take(like), pool.take(like)
    assert a.data_ptr() != b.data_ptr()
    freed = a.data_ptr()
    del a
    c = pool.take(like)
    assert c.data_ptr() == freed
    view = c.view(-1)  # a view (like y1 of the last stage) keeps the storage busy
    del c
    assert pool.take(like).data_ptr() != freed
    del view
    assert pool.take(like).data_ptr() == freed
    small = ScratchPool(limit_bytes=like.numel() * 4)
    kept, extra = small.take(like), small.take(like)  # over the limit: an ordinary, unlisted tensor
    assert small.cached_bytes == like.numel() * 4 and kept.data_ptr() != extra.data_ptr()
    small.clear()
    assert small.cached_bytes == 0


def test_large_state_solve_with_pooled_buffers_matches_reference(monkeypatch):
    """A state above the pooling threshold (pooled stage buffers, streaming kernels) gives the reference
    backend's answer, also when the solve is repeated (buffers from the previous solve reused)."""
    import pyode

    y0 = torch.randn(100_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)

    def f(t, y):
        return 0.25 * (torch.roll(y, 1) - 2 * y + torch.roll(y, -1)) - 0.5 * y

    first = pyode.odeint(f, y0, t, rtol=1e-8, atol=1e-8)
    second = pyode.odeint(f, y0, t, rtol=1e-8, atol=1e-8)
    monkeypatch.setenv("PYODE_BACKEND", "reference")
    reference = pyode.odeint(f, y0, t, rtol=1e-8, atol=1e-8)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, reference, rtol=1e-12, atol=1e-12)
    pyode.empty_cache()


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_error_carried_by_the_last_stage_gives_the_same_solve(monkeypatch, method):
    """Large FSAL solves let the last stage carry the partial error (the finish then reads 4 arrays instead of
    s + 2): every output and every step decision is bitwise that of the plain finish."""
    import pyode
    from pyode import _tuning
    from pyode._solvers import rk_step

    y0 = torch.randn(100_000, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.0, 0.3, 1.0])

    def f(t, y):
        return 0.25 * (torch.roll(y, 1) - 2 * y + torch.roll(y, -1)) - 0.5 * y + torch.sin(t)

    carried = []
    real_make = rk_step.RKStepper._make_workspace

    def spy(self, y0):
        ws = real_make(self, y0)
        carried.append(self._error_carry is not None)
        return ws

    monkeypatch.setattr(rk_step.RKStepper, "_make_workspace", spy)
    from pyode import _C

    solutions, default = {}, _C.non_temporal()
    try:
        for label, threshold, non_temporal in (("plain", 1 << 62, default), ("carried", 0, default),
                                               ("carried, non-temporal", 0, 0)):
            monkeypatch.setattr(_tuning, "ERROR_CARRY_MIN_BYTES", threshold)
            _C.set_non_temporal(non_temporal)
            with torch.no_grad():
                solutions[label] = pyode.solve(f, y0, t, method=method, rtol=1e-6, atol=1e-6)
    finally:
        _C.set_non_temporal(default)
    assert carried == [False, True, True], "the carried-error path was not taken"
    plain = solutions.pop("plain")
    for other in solutions.values():
        assert torch.equal(plain.ys, other.ys)
        assert (plain.stats.n_accepted, plain.stats.n_rejected) == (other.stats.n_accepted, other.stats.n_rejected)
    pyode.empty_cache()


def test_solutions_are_never_overwritten_by_later_solves():
    """Large no-grad solutions are fresh tensors the caller owns: a solution still held, or a view of one whose
    tensor was dropped, keeps its values through later solves of the same size (results are never pooled)."""
    import pyode

    y0 = torch.randn(70_000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def f(t, y):
        return -y

    with torch.no_grad():
        first = pyode.odeint(f, y0, t)
        kept = first.clone()
        second = pyode.odeint(f, 2 * y0, t)
        view, view_kept = second[1], second[1].clone()
        del second
        for k in range(3, 6):
            pyode.odeint(f, k * y0, t)
    assert torch.equal(first, kept) and torch.equal(view, view_kept)
    torch.testing.assert_close(first[1], y0 * torch.exp(torch.tensor(-1.0, dtype=torch.float64)),
                               rtol=1e-6, atol=1e-6)
