"""pyode.native.solve(device="cuda"): the numba CUDA ensemble against the CPU path, under numba's CUDA
simulator (NUMBA_ENABLE_CUDASIM=1 must be set before numba is imported, hence a subprocess)."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

SCRIPT = textwrap.dedent("""
    import math
    import numpy as np
    import pyode.native as pn

    def osc(t, y, dy, p):
        dy[0] = y[1]
        dy[1] = -p[0] * y[0] - p[1] * y[1] + math.sin(t)

    y0 = np.array([[1.0, 0.0], [0.5, 0.2], [0.0, 1.0]])
    params = np.array([[2.0, 0.3], [5.0, 0.1], [1.0, 1.0]])
    t = np.array([0.0, 0.4, 1.3, 2.0])
    for method, opts in (("dopri5", None), ("bosh3", None), ("fehlberg2", None), ("dopri8", None),
                         ("rk4", {"step_size": 0.3}), ("tsit5", {"pcoeff": 0.3, "icoeff": 0.4})):
        cpu = pn.solve(osc, y0, t, params, method=method, rtol=1e-6, atol=1e-9, options=opts)
        gpu = pn.solve(osc, y0, t, params, method=method, rtol=1e-6, atol=1e-9, options=opts, device="cuda")
        assert np.array_equal(cpu.n_accepted, gpu.n_accepted), (method, cpu.n_accepted, gpu.n_accepted)
        assert np.array_equal(cpu.n_rejected, gpu.n_rejected), method
        assert np.array_equal(cpu.n_feval, gpu.n_feval), (method, cpu.n_feval, gpu.n_feval)
        # Same steps; the simulator evaluates with Python floats, the CPU path in C++: a few ulp apart.
        assert np.allclose(cpu.ys, gpu.ys, rtol=1e-12, atol=1e-12), (method, np.abs(cpu.ys - gpu.ys).max())
    rev = pn.solve(osc, y0, t[::-1].copy(), params, device="cuda")
    ref = pn.solve(osc, y0, t[::-1].copy(), params)
    assert np.allclose(rev.ys, ref.ys, rtol=1e-12, atol=1e-12)
    print("OK")
""")


def test_cuda_ensemble_matches_cpu_in_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT], check=False, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
