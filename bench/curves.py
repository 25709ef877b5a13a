"""Work-precision curves of the benchmarks: a solver's front over its runs, and its time at a given error
(``bench/native_stiff.py``, ``bench/stiff.py``)."""

from __future__ import annotations

import itertools

import numpy as np

EXTRAPOLATE = 2.0  # a method's time is extrapolated at most this factor in error beyond its least accurate run


def front(points: list) -> list:
    """The (error, time) points of one solver that no other of its points beats on both, by error ascending (so
    time descends): its work-precision curve."""
    out = []
    for e, t in sorted(points):
        if np.isfinite(e) and (not out or t < out[-1][1]):
            out.append((e, t))
    return out


def time_at(curve: list, err: float):
    """(time, how) of a method at error ``err``: log-log interpolation between the two curve points bracketing
    it ("", or "=" on a point); beyond its least accurate point, along its last segment (its slope clamped to >= -1)
    up to EXTRAPOLATE x that error ("extrapolated"), farther the least accurate point's time ("at most": the method would be faster at
    ``err``, so the speed-up against it is an upper bound, as in the discrete rule). None: the method never
    reached ``err`` (more accurate than its best run)."""
    if not curve or err < curve[0][0]:
        return None
    for (e0, t0), (e1, t1) in itertools.pairwise(curve):
        if e0 <= err <= e1:
            w = np.log(err / e0) / np.log(e1 / e0)
            return float(np.exp(np.log(t0) + w * np.log(t1 / t0))), ""
    e_last, t_last = curve[-1]
    if err == e_last:
        return t_last, "="
    if err > EXTRAPOLATE * e_last or len(curve) < 2:
        return t_last, "at most"
    (e0, t0) = curve[-2]
    # no steeper than time ~ 1/error (a first-order method's): two runs with nearly the same error (a plateau,
    # as Radau's on Robertson, where atol bounds it) would otherwise extrapolate to any time
    slope = max(np.log(t_last / t0) / np.log(e_last / e0), -1.0)
    return float(t_last * (err / e_last) ** slope), "extrapolated"
