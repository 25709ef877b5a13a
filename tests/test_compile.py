"""torch.compile support: the ``pyode::lincomb`` custom op and the traceable fixed-step solve.

Most compiles use the ``eager``/``aot_eager`` backends (inductor compiles take ~15 s on 2 cores); one test
runs the default inductor backend with ``fullgraph=True``.
"""

import shutil

import pytest
import torch

import pyode
from pyode._solvers.tableaux import TABLEAUX

dynamo = pytest.importorskip("torch._dynamo", reason="torch.compile (dynamo) is not available")
if not dynamo.is_dynamo_supported():
    pytest.skip("torch.compile is not supported on this Python/platform", allow_module_level=True)

from pyode._kernels import library  # registers torch.ops.pyode.lincomb
from pyode._solvers.traced import traced_fixed_solve

WATCHDOG_S = 120
# Compiled (fused, reordered) against eager: a 10-step rk4 solve of a small MLP accumulates ~10 steps x 4 stages x
# width-32 reductions of rounding, a random walk of ~sqrt(1280) eps ~ 40 eps in relative terms (float32: 5e-6;
# float64: 9e-15). The bounds sit 2-100x above that and hold whatever order inductor or MKL sums in.
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
F32_TOL = TOLERANCE[torch.float32]
OPCHECK_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.fixture(autouse=True)
def fresh_dynamo(one_thread, watchdog):
    """Each test compiles from scratch (no cache hits or recompile limits carried over between tests)."""
    dynamo.reset()
    yield
    dynamo.reset()


def _lincomb_args(dtype, m, s, with_base, n=7, weights_dtype=torch.float64):
    gen = torch.Generator().manual_seed(1000 * m + 10 * s + with_base)
    base = torch.randn(n, dtype=dtype, generator=gen).requires_grad_() if with_base else None
    ks = [torch.randn(n, dtype=dtype, generator=gen).requires_grad_() for _ in range(s)]
    weights = torch.randn(m, s, dtype=weights_dtype, generator=gen).requires_grad_()
    return base, ks, weights


def _mlp_problem(dtype, batch=8, num_times=11, decreasing=False):
    """A small MLP vector field (2 -> 16 -> 2), y0 (batch, 2) and the times (num_times,)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).to(dtype)
    y0 = torch.randn(batch, 2, dtype=dtype)
    t = torch.linspace(0.0, 1.0, num_times, dtype=dtype)
    return net, y0, t.flip(0) if decreasing else t


def _vector_field(net):
    return lambda t, y: net(y) * torch.cos(t)  # uses t: the stage times must match the eager solver's


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("m", "s", "with_base"), [(1, 1, True), (1, 3, False), (3, 2, True), (4, 4, False),
                                                   (2, 0, True), (0, 2, True)])
def test_lincomb_opcheck(dtype, m, s, with_base):
    results = torch.library.opcheck(torch.ops.pyode.lincomb.default, _lincomb_args(dtype, m, s, with_base),
                                    test_utils=OPCHECK_UTILS)
    assert results == dict.fromkeys(OPCHECK_UTILS, "SUCCESS")


def test_lincomb_opcheck_reference_backend(monkeypatch):
    """Without the compiled extension (or with PYODE_BACKEND=reference) the op runs the pure-torch kernel."""
    monkeypatch.setenv("PYODE_BACKEND", "reference")
    results = torch.library.opcheck(torch.ops.pyode.lincomb.default, _lincomb_args(torch.float64, 3, 2, True),
                                    test_utils=OPCHECK_UTILS)
    assert results == dict.fromkeys(OPCHECK_UTILS, "SUCCESS")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lincomb_matches_reference(dtype):
    from pyode._kernels import reference

    base, ks, weights = _lincomb_args(dtype, 3, 4, True, n=33, weights_dtype=torch.float32)
    out = torch.ops.pyode.lincomb(base, ks, weights)
    expected = reference.lincomb(base, ks, weights.double().tolist())
    assert out.shape == (3, 33) and out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def test_lincomb_gradcheck_float64():
    base, ks, weights = _lincomb_args(torch.float64, 2, 3, True, n=5)

    def fn(base, weights, *ks):
        return library.lincomb(base, list(ks), weights)

    assert torch.autograd.gradcheck(fn, (base, weights, *ks))
    assert torch.autograd.gradgradcheck(fn, (base, weights, *ks))  # the backward is the op itself


def test_lincomb_rejects_bad_weights_shape():
    base, ks, _ = _lincomb_args(torch.float64, 1, 2, True)
    with pytest.raises(ValueError, match=r"weights must be \(m, len\(ks\) = 2\)"):
        torch.ops.pyode.lincomb(base, ks, torch.ones(1, 3, dtype=torch.float64))


def _compiled_solve(func, t, method, backend, **kwargs):
    return torch.compile(lambda y0: traced_fixed_solve(func, y0, t, TABLEAUX[method], **kwargs),
                         fullgraph=True, backend=backend)


@pytest.mark.parametrize("combine", ["op", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_traced_solve_matches_eager(dtype, method, combine):
    """The op path is pyode's kernel (equal to eager to rounding of one ulp); plain torch ops sum the stages in
    another order (float32: a few ulps over 10 steps)."""
    net, y0, t = _mlp_problem(dtype)
    func = _vector_field(net)
    with torch.no_grad():
        expected = pyode.odeint(func, y0, t, method=method)
        out = _compiled_solve(func, t, method, backend="eager", combine=combine)(y0)
    assert out.shape == (11, 8, 2)
    tol = TOLERANCE[dtype] * (10 if combine == "torch" and dtype == torch.float32 else 1)
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)


def test_traced_solve_decreasing_times():
    net, y0, t = _mlp_problem(torch.float64, num_times=6, decreasing=True)
    func = _vector_field(net)
    with torch.no_grad():
        expected = pyode.odeint(func, y0, t, method="midpoint")
        out = _compiled_solve(func, t, "midpoint", backend="eager")(y0)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("dtype", "backend"), [(torch.float32, "eager"), (torch.float64, "aot_eager")])
def test_traced_solve_gradients_match_eager_backprop(dtype, backend):
    """aot_eager traces the op's registered backward ahead of time; eager runs it from dynamo's graph."""
    net, y0, t = _mlp_problem(dtype)
    func = _vector_field(net)
    y0.requires_grad_()
    inputs = [y0, *net.parameters()]

    def grads(ys):
        return torch.autograd.grad(ys.pow(2).sum(), inputs)

    expected = grads(pyode.odeint(func, y0, t, method="rk4"))
    got = grads(_compiled_solve(func, t, "rk4", backend=backend)(y0))
    tol = 10 * TOLERANCE[dtype]  # sums over a batch and 10 steps of float32 rounding
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=tol, atol=tol)


def test_scan_loop_matches_eager_with_gradients():
    """loop='scan' traces the step once; values and gradients are those of the eager solve."""
    net, y0, t = _mlp_problem(torch.float64, decreasing=True)
    func = _vector_field(net)
    y0.requires_grad_()
    inputs = [y0, *net.parameters()]
    expected = pyode.odeint(func, y0, t, method="rk4")
    got = _compiled_solve(func, t, "rk4", backend="aot_eager", loop="scan")(y0)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for g, e in zip(torch.autograd.grad(got.sum(), inputs), torch.autograd.grad(expected.sum(), inputs)):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_traced_graph_uses_the_custom_op():
    """One opaque pyode::lincomb node per stage input and per step result, in a single graph."""
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    net, y0, t = _mlp_problem(torch.float32, num_times=4)
    with torch.no_grad():
        _compiled_solve(_vector_field(net), t, "rk4", backend=recording_backend, combine="op")(y0)
    assert len(graphs) == 1
    ops = [node.target for node in graphs[0].graph.nodes if node.op == "call_function"]
    # per step: s - 1 stage inputs and the new state
    assert ops.count(torch.ops.pyode.lincomb.default) == (len(t) - 1) * TABLEAUX["rk4"].num_stages


def test_odeint_under_compile_is_fullgraph():
    """Through the public API (needs the wiring in pyode.odeint that routes to traced_fixed_solve)."""
    net, y0, t = _mlp_problem(torch.float32)
    func = _vector_field(net)
    compiled = torch.compile(lambda y0: pyode.odeint(func, y0, t, method="rk4"), fullgraph=True,
                             backend="eager")
    with torch.no_grad():
        expected = pyode.odeint(func, y0, t, method="rk4")
        torch.testing.assert_close(compiled(y0), expected, rtol=F32_TOL, atol=F32_TOL)


def test_step_size_under_compile_asks_for_a_grid():
    net, y0, t = _mlp_problem(torch.float32, num_times=2)
    solve = _compiled_solve(_vector_field(net), t, "rk4", backend="eager", options={"step_size": 0.1})
    # fullgraph=True reports the ValueError raised while tracing as Unsupported, with its message.
    with pytest.raises((ValueError, dynamo.exc.Unsupported), match="pass the grid as t"):
        solve(y0)


def test_single_time_returns_y0():
    _, y0, t = _mlp_problem(torch.float32, num_times=1)
    out = traced_fixed_solve(lambda t, y: -y, y0, t, TABLEAUX["rk4"])
    assert out.shape == (1, *y0.shape) and torch.equal(out[0], y0)


def test_times_must_be_a_tensor():
    _, y0, _ = _mlp_problem(torch.float32)
    with pytest.raises(TypeError, match="pass a tensor, not a list"):
        traced_fixed_solve(lambda t, y: -y, y0, [0.0, 1.0], TABLEAUX["rk4"])


def test_tuple_state_is_rejected():
    _, y0, t = _mlp_problem(torch.float32)
    with pytest.raises(NotImplementedError, match="needs a single tensor y0"):
        traced_fixed_solve(lambda t, y: y, (y0, y0), t, TABLEAUX["euler"])


def _cxx_compiler_available() -> bool:
    return any(shutil.which(name) for name in ("c++", "g++", "clang++", "cl"))


@pytest.mark.skipif(not _cxx_compiler_available(), reason="inductor's CPU backend needs a C++ compiler")
def test_inductor_fullgraph_rk4():
    net, y0, t = _mlp_problem(torch.float32, num_times=6)  # a short grid: inductor compiles are slow
    func = _vector_field(net)
    with torch.no_grad():
        out = torch.compile(lambda y0: traced_fixed_solve(func, y0, t, TABLEAUX["rk4"]), fullgraph=True)(y0)
        expected = pyode.odeint(func, y0, t, method="rk4")
    torch.testing.assert_close(out, expected, rtol=F32_TOL, atol=F32_TOL)


def test_odeint_with_step_size_under_compile_falls_back_to_eager():
    """A step_size grid cannot be traced (its length depends on t's values): without fullgraph, odeint
    still works under torch.compile, through graph breaks into the eager solver."""
    net, y0, t = _mlp_problem(torch.float64, num_times=3)
    func = _vector_field(net)
    with torch.no_grad():
        expected = pyode.odeint(func, y0, t, method="rk4", options={"step_size": 0.05})
        compiled = torch.compile(lambda y: pyode.odeint(func, y, t, method="rk4", options={"step_size": 0.05}),
                                 backend="eager")
        torch.testing.assert_close(compiled(y0), expected, rtol=1e-12, atol=1e-12)
