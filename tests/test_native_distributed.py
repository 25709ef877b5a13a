"""pyode.native.distributed: an ensemble in chunks over a two-worker Dask LocalCluster, in order, with a
failing chunk retried."""

import numpy as np
import pytest

pytest.importorskip("numba")
distributed = pytest.importorskip("dask.distributed")

import pyode.native as pn
import pyode.native.distributed as pnd


def decay(t, y, dy, p):
    dy[0] = -p[0] * y[0]
    dy[1] = -2.0 * p[0] * y[1]


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_chunks_in_order_and_retried(client, monkeypatch, tmp_path):
    rates = np.linspace(0.1, 3.0, 23)[:, None]
    t = np.array([0.0, 0.5, 1.0])
    ref = pn.solve(decay, np.ones(2), t, rates, rtol=1e-8, atol=1e-10)
    marker = tmp_path / "failed_once"  # a file: the task is pickled, so in-memory state would be a copy
    real = pnd._solve_chunk

    def flaky(rhs, y0, tt, params, kwargs):  # the chunk starting at rate[5] fails once (a lost worker)
        if params[0, 0] == rates[5, 0] and not marker.exists():
            marker.touch()
            raise RuntimeError("worker lost")
        return real(rhs, y0, tt, params, kwargs)

    monkeypatch.setattr(pnd, "_solve_chunk", flaky)
    out = pnd.solve_distributed(decay, np.ones(2), t, rates, client=client, chunk_size=5, retries=1, rtol=1e-8,
                                atol=1e-10)
    assert marker.exists()  # the chunk did fail once, and was retried
    assert out.ys.shape == (3, 23, 2) and out.success
    np.testing.assert_array_equal(out.ys, ref.ys)  # same per-row solves, gathered in order
    np.testing.assert_array_equal(out.n_accepted, ref.n_accepted)


def test_without_retries_the_failure_propagates(client, monkeypatch):
    def broken(*args):
        raise RuntimeError("worker lost")

    monkeypatch.setattr(pnd, "_solve_chunk", broken)
    with pytest.raises(RuntimeError, match="worker lost"):
        pnd.solve_distributed(decay, np.ones(2), np.array([0.0, 1.0]), np.ones((4, 1)), client=client, chunk_size=2,
                              retries=0)
