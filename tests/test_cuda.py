"""The CUDA backend (pyode._C_cuda): kernels against their reference twins and solvers against the CPU.

GPU tests skip with a reason when no GPU is visible; the build, dispatch and argument-checking tests run on
any machine (they never launch a kernel).
"""

import importlib.util
import os
import shutil

import pytest
import torch

import pyode
from pyode import _kernels
from pyode._kernels import Segments, reference
from pyode.errors import BackendUnavailableError

HAS_GPU = torch.cuda.is_available()
CUDA_BUILT = importlib.util.find_spec("pyode._C_cuda") is not None
needs_gpu = pytest.mark.skipif(not (HAS_GPU and CUDA_BUILT),
                               reason="no CUDA GPU visible" if CUDA_BUILT else
                               "pyode._C_cuda not built (build with PYODE_CUDA=ON and nvcc)")
needs_module = pytest.mark.skipif(not CUDA_BUILT, reason="pyode._C_cuda not built (no nvcc, or PYODE_CUDA=OFF)")

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: {"rtol": 2e-6, "atol": 2e-6}, torch.float64: {"rtol": 1e-13, "atol": 1e-13}}
NORM_REL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _terms(n, s, dtype, seed=0, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64).to(dtype).to(device) for _ in range(s)]


def _cuda():
    from pyode._kernels import cuda
    return cuda


# ------------------------------------------------------------------------------------ build and dispatch
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH: the CUDA module is not expected")
@pytest.mark.skipif(os.environ.get("PYODE_CUDA", "AUTO").upper() == "OFF", reason="PYODE_CUDA=OFF")
def test_cuda_module_is_built_when_nvcc_is_present():
    cpu_spec, cuda_spec = importlib.util.find_spec("pyode._C"), importlib.util.find_spec("pyode._C_cuda")
    assert cuda_spec is not None, "nvcc is on PATH but pyode._C_cuda was not built (PYODE_CUDA=AUTO should build it)"
    assert os.path.dirname(cuda_spec.origin) == os.path.dirname(cpu_spec.origin)


@needs_module
def test_cuda_module_loads_and_reports_devices():
    """Static CUDA runtime: the module imports on machines without a driver and reports 0 devices there."""
    from pyode import _C_cuda

    assert _C_cuda.runtime_version() >= 12000
    assert _C_cuda.device_count() == (torch.cuda.device_count() if HAS_GPU else 0)
    info = pyode.backend_info()
    assert info["cuda_built"] and info["cuda"], info
    assert info["cuda_devices"] == _C_cuda.device_count()


@needs_module
@pytest.mark.skipif(HAS_GPU, reason="checks the error raised when no GPU is visible")
def test_kernel_call_without_gpu_raises_cleanly():
    from pyode import _C_cuda

    with pytest.raises(RuntimeError, match="pyode CUDA kernel"):  # the device guard fails before any launch
        _C_cuda.lincomb(4096, 4, 4, 0, 0, [8192], [4], [1.0], 1, 4, 0, 0, 0)


@needs_module
def test_bindings_recheck_sizes_before_touching_the_device():
    from pyode import _C_cuda

    with pytest.raises(ValueError, match="shorter than n"):
        _C_cuda.lincomb(4096, 4, 4, 0, 0, [8192], [2], [1.0], 1, 4, 0, 0, 0)
    with pytest.raises(ValueError, match="too small"):
        _C_cuda.lincomb(4096, 4, 4, 0, 0, [8192], [4], [1.0, 1.0], 2, 4, 0, 0, 0)
    with pytest.raises(ValueError, match="device"):
        _C_cuda.lincomb(4096, 4, 4, 0, 0, [8192], [4], [1.0], 1, 4, 0, -1, 0)
    no_segments = _C_cuda.FinishBuffers(0, 0, 0, 5, 4096, 5, 8192, 1)  # n = 10 needs 1 chunk, not 5
    with pytest.raises(ValueError, match="nchunks"):
        _C_cuda.rk_finish_async(4096, 10, 0, 0, 4096, 10, [4096], [10], [1.0], [1.0], 10, 1e-6, 1e-3,
                                no_segments, 0, 0, 0)
    short_norms = _C_cuda.FinishBuffers(4096, 8192, 3, 2, 4096, 2, 8192, 1)  # 3 segments need 1 + 3 norms
    with pytest.raises(ValueError, match="norms"):
        _C_cuda.rk_finish_async(4096, 10, 0, 0, 4096, 10, [4096], [10], [1.0], [1.0], 10, 1e-6, 1e-3,
                                short_norms, 0, 0, 0)


@needs_module
def test_segment_chunk_table():
    """Segment q owns ceil(len_q / chunk) blocks of the kernel; empty segments own none."""
    cuda = _cuda()
    c = cuda.CHUNK_ELEMENTS
    seg = Segments([0, 0, 2 * c + 1, 2 * c + 2, 2 * c + 2])
    offsets, starts, nchunks = cuda._segment_tables(seg, torch.device("cpu"))
    assert starts.tolist() == [0, 0, 3, 4, 4] and nchunks == 4
    assert offsets.tolist() == seg.offsets
    assert cuda._segment_tables(seg, torch.device("cpu"))[1] is starts  # cached per (segments, device)


def test_without_cuda_module_auto_falls_back_and_forced_cuda_raises(monkeypatch):
    monkeypatch.setattr(_kernels, "_cuda_backend", lambda: (None, "test: module missing"))
    monkeypatch.setenv("PYODE_BACKEND", "cuda")
    with pytest.raises(BackendUnavailableError, match="PYODE_CUDA=ON pip install --no-build-isolation"):
        _kernels.get_backend(torch.device("cuda", 0))
    monkeypatch.setenv("PYODE_BACKEND", "auto")
    with pytest.warns(RuntimeWarning, match="PYODE_CUDA=ON"):
        assert _kernels.get_backend(torch.device("cuda", 0)) is reference.BACKEND


def test_forced_backend_refuses_other_devices(monkeypatch):
    monkeypatch.setenv("PYODE_BACKEND", "cuda")
    with pytest.raises(BackendUnavailableError, match="cannot run tensors on cpu"):
        _kernels.get_backend(torch.device("cpu"))
    monkeypatch.setenv("PYODE_BACKEND", "cpu")
    with pytest.raises(BackendUnavailableError, match="cannot run tensors on cuda"):
        _kernels.get_backend(torch.device("cuda", 0))
    assert pyode.backend_info()["cpu_backend"] == "cpu"
    monkeypatch.setenv("PYODE_BACKEND", "cuda")  # backend_info reports, never raises
    assert pyode.backend_info()["cpu_backend"].startswith("unavailable: PYODE_BACKEND=cuda")


# ------------------------------------------------------------------------------------- kernels on a GPU
@needs_gpu
def test_auto_backend_for_cuda_tensors_is_cuda(monkeypatch):
    monkeypatch.setenv("PYODE_BACKEND", "auto")
    assert _kernels.get_backend(torch.device("cuda", 0)).name == "cuda"


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 2049, 1_000_003])
@pytest.mark.parametrize("s", [1, 4, 13, 20])
def test_lincomb_matches_reference(dtype, n, s):
    cuda = _cuda()
    base, *ks = _terms(n, s + 1, dtype)
    weights = [[0.1 * (j + 1) * (-1) ** r if (j + r) % 3 else 0.0 for j in range(s)] for r in range(3)]
    got = cuda.lincomb(base, ks, weights)
    assert got.shape == (3, n) and got.device == base.device
    torch.testing.assert_close(got, reference.lincomb(base, ks, weights), **TOL[dtype])
    got0 = cuda.lincomb(None, ks, weights[:1])
    torch.testing.assert_close(got0, reference.lincomb(None, ks, weights[:1]), **TOL[dtype])


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_lincomb_many_rows_and_unaligned_views(dtype):
    """More rows than one launch takes (dense output at many times), and terms that are unaligned views
    (the scalar path): both against the reference."""
    cuda = _cuda()
    base, *ks = _terms(1001, 6, dtype, seed=5)
    weights = [[(r - 10) * 0.03 + j for j in range(5)] for r in range(37)]
    torch.testing.assert_close(cuda.lincomb(base, ks, weights), reference.lincomb(base, ks, weights), **TOL[dtype])
    rows = torch.stack(ks)[:, 1:].contiguous().reshape(-1)[3:3 + 5 * 999].reshape(5, 999).unbind(0)
    torch.testing.assert_close(cuda.lincomb(base[2:], list(rows), weights),
                               reference.lincomb(base[2:], list(rows), weights), **TOL[dtype])


@needs_gpu
def test_lincomb_zero_weight_skips_non_finite_terms():
    cuda = _cuda()
    ks = [torch.full((9,), float("inf"), device="cuda"), torch.ones(9, device="cuda")]
    out = cuda.lincomb(None, ks, [[0.0, 2.0]])
    assert torch.equal(out, torch.full((1, 9), 2.0, device="cuda"))


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 2049, 1_000_003])
@pytest.mark.parametrize("s", [2, 7, 17])
def test_rk_finish_matches_reference(dtype, n, s):
    cuda = _cuda()
    y0, *ks = _terms(n, s + 1, dtype, seed=1)
    b = [0.01 * (j + 1) for j in range(s)]
    e = [1e-4 * (-1) ** j for j in range(s)]
    y1, norm, _ = cuda.rk_finish(y0, None, ks, b, e, 1e-6, 1e-3, None)
    y1_ref, norm_ref, _ = reference.rk_finish(y0, None, ks, b, e, 1e-6, 1e-3, None)
    torch.testing.assert_close(y1, y1_ref, **TOL[dtype])
    assert norm == pytest.approx(norm_ref, rel=NORM_REL[dtype], abs=1e-300)
    _, norm_given, _ = cuda.rk_finish(y0, y1_ref.clone(), ks, None, e, 1e-6, 1e-3, None)  # FSAL form
    assert norm_given == pytest.approx(norm_ref, rel=NORM_REL[dtype], abs=1e-300)
    y1_fixed, zero, _ = cuda.rk_finish(y0, None, ks, b, None, 1e-6, 1e-3, None)  # fixed step: no norm
    torch.testing.assert_close(y1_fixed, y1_ref, **TOL[dtype])
    assert zero == 0.0


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("offsets", [[0, 5], [0, 0, 3, 3, 5000, 5001], list(range(0, 1025, 2)),
                                     [0, 100_000, 100_000, 300_001]])
def test_rk_finish_per_segment_norms(dtype, offsets):
    cuda = _cuda()
    n = offsets[-1]
    y0, k0, k1 = _terms(n, 3, dtype, seed=2)
    seg = Segments(offsets)
    _, norm, got = cuda.rk_finish(y0, None, [k0, k1], [0.5, 0.5], [0.1, -0.1], 1e-5, 1e-4, seg)
    _, norm_ref, want = reference.rk_finish(y0, None, [k0, k1], [0.5, 0.5], [0.1, -0.1], 1e-5, 1e-4, seg)
    assert got.device.type == "cpu" and got.dtype == torch.float64 and got.shape == (seg.count,)
    torch.testing.assert_close(got, want.cpu(), rtol=NORM_REL[dtype], atol=0)
    assert norm == pytest.approx(norm_ref, rel=NORM_REL[dtype])


@needs_gpu
def test_rk_finish_is_deterministic():
    cuda = _cuda()
    y0, k0, k1 = _terms(3_000_001, 3, torch.float32, seed=4)
    seg = Segments([0, 1_000_000, 3_000_001])
    runs = [cuda.rk_finish(y0, None, [k0, k1], [0.5, 0.5], [0.1, -0.1], 1e-6, 1e-3, seg) for _ in range(3)]
    assert len({r[1] for r in runs}) == 1  # bitwise: fixed-order block and final sums
    assert all(torch.equal(r[2], runs[0][2]) for r in runs)


@needs_gpu
def test_rk_finish_device_keeps_norms_on_device_and_captures_in_a_graph():
    """The no-sync variant: norms stay on the device, so a whole stage + finish sequence can be captured in
    a CUDA graph (capture fails on any host synchronisation)."""
    cuda = _cuda()
    y0, k0, k1 = _terms(10_007, 3, torch.float64, seed=6)
    seg = Segments.equal_rows(1, 10_007)
    _, norm, _ = cuda.rk_finish(y0, None, [k0, k1], [0.5, 0.5], [0.1, -0.1], 1e-6, 1e-3, seg)
    norms = torch.empty(2, dtype=torch.float64, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside capture (kernel loading, allocations, segment table)
        cuda.lincomb(y0, [k0], [[0.25]])
        cuda.rk_finish_device(y0, None, [k0, k1], [0.5, 0.5], [0.1, -0.1], 1e-6, 1e-3, seg, norms_out=norms)
    torch.cuda.current_stream().wait_stream(stream)
    norms.zero_()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        stage = cuda.lincomb(y0, [k0], [[0.25]])[0]
        _, out = cuda.rk_finish_device(stage, None, [k0, k1], [0.5, 0.5], [0.1, -0.1], 1e-6, 1e-3, seg,
                                       norms_out=norms)
    assert out is norms
    graph.replay()
    torch.cuda.synchronize()
    _, norm_ref, _ = reference.rk_finish(y0 + 0.25 * k0, None, [k0, k1], [0.5, 0.5], [0.1, -0.1], 1e-6, 1e-3, seg)
    assert float(norms[0]) == pytest.approx(norm_ref, rel=1e-12)
    assert float(norms[1]) == pytest.approx(norm_ref, rel=1e-12)  # one segment: the same RMS
    assert norm != pytest.approx(norm_ref, rel=1e-3)  # the graph really computed from the new stage


@needs_gpu
def test_lincomb_backward_matches_reference():
    cuda = _cuda()
    base, *ks = _terms(33, 4, torch.float64, seed=3)
    w = [[0.5, -1.0, 0.0], [2.0, 0.25, 1.5]]
    inputs = [x.clone().requires_grad_() for x in [base, *ks]]
    torch.autograd.gradcheck(lambda b, *k: cuda.lincomb(b, list(k), w), inputs)


@needs_gpu
def test_mixed_devices_raise():
    cuda = _cuda()
    x = torch.zeros(4, device="cuda")
    with pytest.raises(ValueError, match="cuda"):
        _kernels.lincomb(x, [torch.zeros(4)], [[1.0]])
    with pytest.raises(ValueError, match="move them"):  # the backend itself never hands a host pointer down
        cuda.lincomb(x, [torch.zeros(4)], [[1.0]])
    with pytest.raises(ValueError, match="move them"):
        cuda.rk_finish(x, None, [torch.zeros(4)], [1.0], [1.0], 1e-6, 1e-3, None)


# ------------------------------------------------------------------------------------ solvers on a GPU
def _decay_problem(device, dtype=torch.float64):
    """y' = A y for a batch of 16 states of size 5 (A fixed, stable): (16, 5) state, 6 output times."""
    g = torch.Generator().manual_seed(7)
    a = (torch.randn(5, 5, generator=g, dtype=torch.float64) - 3.0 * torch.eye(5, dtype=torch.float64)) * 0.5
    a = a.to(device=device, dtype=dtype)
    y0 = torch.randn(16, 5, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    t = torch.linspace(0.0, 2.0, 6, dtype=dtype, device=device)
    return (lambda t, y: y @ a.T), y0, t


@needs_gpu
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "dopri8", "rk4"])
def test_solver_on_cuda_matches_cpu(monkeypatch, method):
    monkeypatch.setenv("PYODE_BACKEND", "auto")
    options = {"step_size": 0.05} if method == "rk4" else None
    results = {}
    for device in ("cpu", "cuda"):
        func, y0, t = _decay_problem(device)
        results[device] = pyode.solve(func, y0, t, rtol=1e-9, atol=1e-10, method=method, options=options)
    gpu, cpu = results["cuda"], results["cpu"]
    assert gpu.ys.device.type == "cuda"
    torch.testing.assert_close(gpu.ys.cpu(), cpu.ys, rtol=1e-7, atol=1e-8)
    assert abs(gpu.stats.n_accepted - cpu.stats.n_accepted) <= 1


@needs_gpu
def test_tuple_state_mixed_norm_on_cuda_matches_cpu(monkeypatch):
    out = {}
    for device in ("cpu", "cuda"):
        monkeypatch.setenv("PYODE_BACKEND", "cpu" if device == "cpu" else "cuda")
        x0 = torch.tensor([1.0, 0.0], dtype=torch.float64, device=device)
        v0 = torch.tensor([0.5], dtype=torch.float64, device=device)
        t = torch.linspace(0, 3, 4, dtype=torch.float64, device=device)
        out[device] = pyode.odeint(lambda t, y: (torch.stack([y[0][1], -y[0][0]]), -0.1 * y[1]), (x0, v0), t,
                                   rtol=1e-8, atol=1e-9)
    for got, want in zip(out["cuda"], out["cpu"]):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-7, atol=1e-9)


@needs_gpu
def test_backprop_gradient_on_cuda_matches_cpu(monkeypatch):
    monkeypatch.setenv("PYODE_BACKEND", "auto")
    grads = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double().to(device)
        y0 = torch.linspace(-1, 1, 12, dtype=torch.float64, device=device).reshape(4, 3)
        t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64, device=device)
        ys = pyode.odeint(lambda t, y, net=net: net(y), y0, t, rtol=1e-9, atol=1e-10)
        (ys ** 2).sum().backward()
        grads[device] = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    torch.testing.assert_close(grads["cuda"].cpu(), grads["cpu"], rtol=1e-6, atol=1e-8)


@needs_gpu
def test_float32_large_state_matches_cpu(monkeypatch):
    monkeypatch.setenv("PYODE_BACKEND", "auto")
    ys = {}
    for device in ("cpu", "cuda"):
        y0 = torch.randn(200_003, generator=torch.Generator().manual_seed(9)).to(device)
        t = torch.tensor([0.0, 1.0], device=device)

        def func(t, y):
            return 0.25 * (torch.roll(y, 1) - 2 * y + torch.roll(y, -1)) - 0.5 * y

        ys[device] = pyode.odeint(func, y0, t, rtol=1e-5, atol=1e-5)
    # rtol = atol = 1e-5 solves: the two may pick slightly different steps, so agree to ~10x the tolerance
    torch.testing.assert_close(ys["cuda"].cpu(), ys["cpu"], rtol=1e-4, atol=1e-4)
