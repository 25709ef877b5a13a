"""The kernel backend type: declared capabilities, one backward formula for lincomb, the CUDA backend without the
CPU extension, and workspaces that hold on to the buffers they point into."""

import gc
import os
import subprocess
import sys
import textwrap
import weakref
from types import SimpleNamespace

import pytest
import torch

import pyode
from pyode._kernels import KernelBackend, get_backend, reference
from pyode._tuning import NATIVE_GRAD_MAX_ELEMENTS

COMPILED = pyode.backend_info()["cpu_backend"] == "cpu"
needs_compiled = pytest.mark.skipif(not COMPILED, reason="compiled CPU backend not built")


def test_reference_backend_declares_no_fused_capabilities():
    kern = reference.BACKEND
    assert isinstance(kern, KernelBackend) and kern.name == "reference" and kern.device_type is None
    assert not (kern.fused_workspace or kern.fused_out or kern.async_finish)
    with pytest.raises(NotImplementedError, match="fused_workspace is False"):
        kern.make_workspace(None, 4, torch.float64, None)


@needs_compiled
def test_cpu_backend_is_a_singleton_with_its_capabilities(monkeypatch):
    from pyode._kernels import compiled

    monkeypatch.setenv("PYODE_BACKEND", "auto")
    kern = get_backend(torch.device("cpu"))
    assert kern is compiled.BACKEND and kern.name == "cpu" and kern.device_type == "cpu"
    assert kern.fused_workspace and kern.fused_out
    monkeypatch.setenv("PYODE_BACKEND", "reference")
    assert get_backend(torch.device("cpu")) is reference.BACKEND


@needs_compiled
@pytest.mark.parametrize("m", [0, 1, 3])
def test_lincomb_function_and_custom_op_share_one_backward_bitwise(m):
    """Above the native-ops size the eager compiled lincomb is LincombFunction; its gradients are bitwise those
    of torch.ops.pyode.lincomb (the same lincomb_vjp on the same kernel), also for m = 0 rows."""
    from pyode._kernels import compiled

    n, s = NATIVE_GRAD_MAX_ELEMENTS + 3, 4
    gen = torch.Generator().manual_seed(m)
    base = torch.randn(n, dtype=torch.float64, generator=gen, requires_grad=True)
    ks = [torch.randn(n, dtype=torch.float64, generator=gen, requires_grad=True) for _ in range(s)]
    weights = torch.randn(m, s, dtype=torch.float64, generator=gen).tolist()
    grad = torch.randn(m, n, dtype=torch.float64, generator=gen)
    eager = compiled.lincomb(base, ks, weights)
    assert eager.grad_fn is not None and "LincombFunction" in type(eager.grad_fn).__name__
    op = torch.ops.pyode.lincomb(base, ks, torch.tensor(weights, dtype=torch.float64).reshape(m, s))
    assert torch.equal(eager, op)
    got = torch.autograd.grad(eager, [base, *ks], grad)
    want = torch.autograd.grad(op, [base, *ks], grad)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    if m:  # and both are the exact adjoint of the forward: grad_k_j = sum_r w[r][j] grad_r
        w = torch.tensor(weights, dtype=torch.float64)
        torch.testing.assert_close(got[1], w[:, 0] @ grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[0], grad.sum(0), rtol=1e-12, atol=1e-12)


def _run_isolated(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYODE_BACKEND="auto")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False, capture_output=True, text=True,
                          timeout=120, env=env)


def test_cuda_backend_imports_without_the_cpu_extension():
    """pyode._kernels.cuda needs pyode._C_cuda only: with pyode._C blocked (and a stand-in _C_cuda, so that this
    runs without a CUDA build) it imports and never loads pyode._C; with _C_cuda blocked too, the ImportError is
    about _C_cuda."""
    result = _run_isolated("""
        import sys, types
        sys.modules["pyode._C"] = None  # any import of it raises ImportError
        fake = types.ModuleType("pyode._C_cuda")
        fake.max_terms, fake.chunk_elements = 16, 2048
        sys.modules["pyode._C_cuda"] = fake
        from pyode._kernels import cuda
        assert sys.modules["pyode._C"] is None
        assert cuda.BACKEND.name == "cuda" and cuda.BACKEND.device_type == "cuda"
        assert cuda.BACKEND.async_finish and not cuda.BACKEND.fused_workspace
        import importlib, pyode._kernels
        del sys.modules["pyode._kernels.cuda"], pyode._kernels.cuda
        sys.modules["pyode._C_cuda"] = None
        try:
            importlib.import_module("pyode._kernels.cuda")
        except ImportError as exc:
            assert "_C_cuda" in str(exc), exc
            print("OK")
    """)
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr[-2000:]


def _tableau(s: int):
    a = [[0.5 / (j + 1) for j in range(i)] for i in range(s)]
    return SimpleNamespace(num_stages=s, a=a, b=[1.0 / s] * s, b_err=[0.1 * (-1) ** j for j in range(s)])


@needs_compiled
def test_rk_workspace_holds_the_buffers_it_points_into():
    """Buffers registered with the workspace stay alive while it holds their address, with no Python reference
    left (here: temporaries), and the stage computed from them is the reference's; re-registering a slot
    or dropping the workspace lets them go."""
    from pyode._kernels import compiled

    n, s, h = 1000, 3, 0.1
    gen = torch.Generator().manual_seed(0)
    y0, k0, k1 = (torch.randn(n, dtype=torch.float64, generator=gen) for _ in range(3))
    ws = compiled.make_workspace(_tableau(s), n, torch.float64, None)
    ws.set_base(y0.clone())
    ws.set_term(0, k0.clone())
    ws.set_term(1, k1.clone())
    gc.collect()
    out = torch.empty(n, dtype=torch.float64)
    ws.stage(2, out, h)
    want = reference.lincomb(y0, [k0, k1], [[h * x for x in _tableau(s).a[2]]])[0]
    assert torch.equal(out, want)

    held = torch.randn(n, dtype=torch.float64, generator=gen)
    ref = weakref.ref(held)
    ws.set_term(0, held)
    del held
    gc.collect()
    assert ref() is not None  # pinned by the workspace
    ws.set_term(0, k0)
    gc.collect()
    assert ref() is None  # the slot took another buffer: released
    carry = torch.empty(n, dtype=torch.float64)
    carry_ref = weakref.ref(carry)
    ws.set_error_carry(carry)
    del carry, ws
    gc.collect()
    assert carry_ref() is None  # the workspace died: nothing pinned any more


@needs_compiled
def test_workspace_arguments_are_typed():
    """Unknown dtype codes are refused by the one dtype check; the per-sample rows' structs take keywords only; a
    buffer must be a tensor-like object."""
    from pyode import _C

    with pytest.raises(ValueError, match="unsupported dtype code 7"):
        _C.RKWorkspace(1, [0.0], [1.0], [], 4, 7)
    with pytest.raises(TypeError):
        _C.ControllerParams(0.9, 10.0, 0.2, 0.0, 1.0, 0.0, 0.0, 1.0, False)
    with pytest.raises(TypeError):
        _C.RowMethod(2, 1, True, [0.0, 1.0], [0.0] * 4, [0.5, 0.5], [0.1, -0.1], [1.0, 0.0], 2)
    ws = _C.RKWorkspace(1, [0.0], [1.0], [], 4, 1)
    with pytest.raises(TypeError, match="expected a tensor"):
        ws.set_base([0.0] * 4)
