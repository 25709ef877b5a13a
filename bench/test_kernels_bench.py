"""Micro-benchmarks of pyode's fused kernels (pytest-benchmark), compiled backend vs the reference path.

Run: ``pytest bench/test_kernels_bench.py`` (add ``--benchmark-only`` / ``--benchmark-json=out.json``;
``--benchmark-disable`` runs each once as a plain test). The calls go through the public kernel API
``pyode._kernels.lincomb`` / ``rk_finish`` -- validation included, as the solver pays it -- with
``PYODE_BACKEND`` choosing the backend. Each benchmark also checks its result against plain torch maths,
so a fast wrong kernel fails.
"""

import pytest
import torch

pytest.importorskip("pytest_benchmark")
kernels = pytest.importorskip("pyode._kernels")

# dopri5 (Dormand & Prince 1980): the 6th stage input combines 5 slopes; the step completion 7 (FSAL)
STAGE_WEIGHTS = [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656]
B_WEIGHTS = [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0]
E_WEIGHTS = [71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40]
SIZES = [1024, 1_000_000]
BACKENDS = ["cpu", "reference"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "cpu" and not kernels.backend_info()["compiled_cpu"]:
        pytest.skip("pyode._C is not built")
    monkeypatch.setenv("PYODE_BACKEND", request.param)
    return request.param


def _vectors(count: int, n: int, dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(n + count)
    return [torch.randn(n, generator=gen, dtype=dtype) for _ in range(count)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lincomb_dopri5_stage(benchmark, backend, n, dtype):
    base, *ks = _vectors(1 + len(STAGE_WEIGHTS), n, dtype)
    h = 0.01
    weights = [[h * w for w in STAGE_WEIGHTS]]
    benchmark.group = f"lincomb n={n} {dtype}"
    out = benchmark(kernels.lincomb, base, ks, weights)
    expected = base.double() + sum(w * k.double() for w, k in zip(weights[0], ks))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out[0].double(), expected, rtol=tol, atol=tol)


def _expected_norm(y0, ks, b, e, atol, rtol):
    y0d, ksd = y0.double(), [k.double() for k in ks]
    y1 = y0d + sum(w * k for w, k in zip(b, ksd))
    err = sum(w * k for w, k in zip(e, ksd))
    scaled = err / (atol + rtol * torch.maximum(y0d.abs(), y1.abs()))
    return y1, scaled, scaled.pow(2).mean().sqrt().item()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("per_row", [False, True], ids=["global_norm", "per_row_norm"])
def test_rk_finish_dopri5(benchmark, backend, n, per_row):
    y0, *ks = _vectors(1 + len(B_WEIGHTS), n, torch.float32)
    h, atol, rtol = 0.01, 1e-6, 1e-5
    b, e = [h * w for w in B_WEIGHTS], [h * w for w in E_WEIGHTS]
    rows = 64
    segments = kernels.Segments.equal_rows(rows, n) if per_row else None
    benchmark.group = f"rk_finish n={n} {'per-row' if per_row else 'global'}"
    y1, norm, row_norms = benchmark(kernels.rk_finish, y0, ks, b, e, atol, rtol, segments)
    y1_expected, scaled, norm_expected = _expected_norm(y0, ks, b, e, atol, rtol)
    torch.testing.assert_close(y1.double(), y1_expected, rtol=1e-5, atol=1e-5)
    assert norm == pytest.approx(norm_expected, rel=1e-4)
    if per_row:
        expected_rows = scaled.reshape(rows, -1).pow(2).mean(1).sqrt()
        torch.testing.assert_close(row_norms.double(), expected_rows, rtol=1e-4, atol=0)
    else:
        assert row_norms is None
