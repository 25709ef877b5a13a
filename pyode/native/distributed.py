"""Ensembles too large for one machine: chunks of trajectories solved by :func:`pyode.native.solve` on the
workers of a Dask cluster (``dask.distributed``), gathered in order; a chunk whose worker fails is retried.

Workers compile ``rhs`` themselves (once per process), so pass the plain Python function (it is pickled;
numba cfuncs and cffi pointers cannot cross processes).
"""

from __future__ import annotations

import inspect

import numpy as np

from pyode.native import _solve
from pyode.native._arrays import Problem


def _solve_chunk(rhs, y0: np.ndarray, t: np.ndarray, params, kwargs: dict) -> _solve.NativeSolution:
    """One chunk on a worker: y0 (m, n), params (m, k) / (k,) / None; always returns, never raises on a
    failed trajectory (statuses say)."""
    return _solve.solve(rhs, y0, t, params, raise_on_failure=False, **kwargs)


def solve_distributed(rhs, y0, t, params=None, *, client, chunk_size: int = 1000, retries: int = 2,
                      raise_on_failure: bool = False, **kwargs) -> _solve.NativeSolution:
    """:func:`pyode.native.solve` of an ensemble split into chunks of ``chunk_size`` trajectories over the Dask
    ``client``'s workers. Same arguments and result as ``solve`` (NumPy arrays; ys (T, M, n)).

    Args:
        client: a ``dask.distributed.Client``.
        chunk_size: trajectories per task (each task also runs its chunk on the worker's threads).
        retries: how often a chunk whose task failed (e.g. its worker died) is resubmitted.
        raise_on_failure: raise pyode's exception if any trajectory failed.
    """
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    if not (inspect.isfunction(rhs) or hasattr(rhs, "py_func")):
        raise TypeError("solve_distributed needs rhs as a plain Python (or numba njit) function, which the workers "
                        f"compile; got {type(rhs).__name__}")
    prob = Problem.build(y0, t, params)
    futures = []
    for lo in range(0, prob.M, chunk_size):
        hi = min(lo + chunk_size, prob.M)
        p = prob.params[lo:hi] if prob.params_per_traj else (prob.params if prob.k else None)
        futures.append(client.submit(_solve_chunk, rhs, prob.y0[lo:hi], prob.t, p, kwargs, retries=retries,
                                     pure=False))
    parts = client.gather(futures)  # in submission order
    out = _concatenate(parts, prob.t)
    if raise_on_failure:
        _solve._raise_failures(out.status, out.t_reached, True)
    return out


def _concatenate(parts: list, t: np.ndarray) -> _solve.NativeSolution:
    def cat(name, axis=0):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else np.concatenate([np.asarray(v) for v in values], axis=axis)

    ys = np.concatenate([np.asarray(p.ys).reshape(len(t), -1, np.asarray(p.ys).shape[-1]) for p in parts], axis=1)
    y_event = None
    if parts[0].y_event is not None:
        y_event = np.concatenate([np.asarray(p.y_event).reshape(-1, ys.shape[-1]) for p in parts])
    return _solve.NativeSolution(ys, t, cat("status"), cat("t_reached"), cat("event_t"), y_event, cat("n_accepted"),
                                 cat("n_rejected"), cat("n_feval"))
