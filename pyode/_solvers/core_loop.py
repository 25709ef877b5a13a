"""The torch path's solves through the C++ loop: the user's ``func`` is the loop's right-hand side.

The C++ loop (``csrc/include/pyode/core``, the one :mod:`pyode.native` runs with compiled right-hand sides)
takes a right-hand side as a C function pointer. Here that pointer is ``pyode._C.TorchRhs``
(``csrc/torch_rhs.cpp``), a C function that copies the loop's state into one tensor of the solve, calls the
solve's :class:`~pyode._solvers.flat_func.FlatFunc` on it through the Python C API and copies ``func``'s output
back; the loop runs with the GIL released (``_C.run_native_solve``) and takes it only for these calls.
The Jacobian of the stiff kinds and the event function, called a few times a step at most, are cffi callbacks
on views of the loop's own buffers. Step size control, the initial step, accept/reject, dense output and
step_t/jump_t are the loop's; ``func`` sees exactly the calls the Python loops would make (the step-parity
tests pin the two together).

A solve takes this route when nothing in it is recorded for autograd (no gradient flows through the loop:
the forward solve of the adjoint, any solve under ``torch.no_grad()`` or of inputs that carry no gradient),
the state is a CPU tensor of at most ``_tuning.CORE_LOOP_MAX_ELEMENTS`` elements (larger ones are faster in the
Python loop's fused kernels) of float64 (every method the loop has, stiff ones included) or float32 (the
explicit methods, adaptive and fixed grid: ``pyode_solve_f32``, whose state, stages and outputs are float and
whose steps are computed as the compiled float32 kernels compute them; float32 stiff solves stay in Python), and
the solve uses only what the C++ loop runs: the kernels' RMS norm (no callable norm, per-element tolerances or mixed tuple
norm), no func callbacks or ``perturb``, no loop hooks (checkpoint's records, a step log), no torch.compile
tracing, and jump_t only with float64 times (the loop nudges past a jump by a float64 ulp; the Python loop by
one of the time dtype). Terminal events run in it too (``event_fn`` is a third callback). Everything else runs
the Python loops, which remain the reference.

An exception raised by ``func`` (KeyboardInterrupt included) is kept, the loop is cancelled at its next
step, and the same exception object is raised once the loop has returned.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from typing import ClassVar

import torch
from torch import Tensor

from pyode import _tuning


@functools.lru_cache(maxsize=1)
def _native():
    """``(ffi, lib)`` of the native library, or None where it is not built (the Python loops then run)."""
    try:
        from pyode.native._lib import load

        return load()
    except (ImportError, OSError):
        return None


@functools.lru_cache(maxsize=1)
def _C():
    """``pyode._C`` (its TorchRhs and run_native_solve), or None where it is not built."""
    try:
        from pyode import _C as module

        return module if hasattr(module, "TorchRhs") else None
    except ImportError:
        return None


@functools.lru_cache(maxsize=4)
def _entry_address(ffi, lib, name: str) -> int:
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))


def available() -> bool:
    return _native() is not None and _C() is not None


# The C side of each state dtype the loop runs: (C scalar, rhs and event callback types, problem struct).
_C_TYPES = {
    torch.float64: ("double", "pyode_rhs_fn", "pyode_event_fn", "pyode_problem"),
    torch.float32: ("float", "pyode_rhs_f32_fn", "pyode_event_f32_fn", "pyode_problem_f32"),
}


class _Views:
    """Tensors of ``dtype`` over the loop's buffers, one per address: the loop reuses a handful of buffers for
    a whole solve, so each view is made once. A cdata pointer hashes and compares by its address.

    One instance per layout (shape, dtype) is shared by every solve (:meth:`shared`): a one-trajectory solve
    reuses its thread's workspace, so the next solve of the same layout passes the same addresses, and making
    a dozen views (~5 us each) was a large part of a short solve's overhead. A view is only ever used for an
    address the loop passes in a callback, which the loop guarantees holds ``shape`` elements then; entries for
    addresses no longer in use are never read (and are dropped with the rest past ``_MAX_VIEWS``)."""

    _MAX_VIEWS = 256
    _instances: ClassVar[dict] = {}

    @classmethod
    def shared(cls, ffi, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> _Views:
        key = (tuple(shape), dtype)
        views = cls._instances.get(key)
        if views is None:
            if len(cls._instances) >= 64:  # many layouts: start over rather than grow
                cls._instances.clear()
            views = cls._instances[key] = cls(ffi, tuple(shape), dtype)
        elif len(views.cache) >= cls._MAX_VIEWS:
            views.cache.clear()
        return views

    def __init__(self, ffi, shape: tuple[int, ...], dtype: torch.dtype = torch.float64):
        self.ffi, self.shape, self.numel, self.cache = ffi, shape, math.prod(shape), {}
        self.dtype, self.c_ptr = dtype, _C_TYPES[dtype][0] + " *"
        self.nbytes = self.numel * dtype.itemsize

    def __call__(self, ptr) -> Tensor:
        view = self.cache.get(ptr)
        if view is None:
            buf = self.ffi.buffer(self.ffi.cast(self.c_ptr, ptr), self.nbytes)
            # A normal tensor even when made under torch.inference_mode: the cache outlives the solve, and an
            # inference tensor could not be written or differentiated in a later solve outside that mode.
            with torch.inference_mode(False):
                view = self.cache[ptr] = torch.frombuffer(buf, dtype=self.dtype).view(self.shape)
        return view


class CoreSolver:
    """Runs one loop's solves in the C++ loop (see the module docstring for when).

    Args:
        fn: the solve's :class:`FlatFunc`; method_struct, opts_struct: the C ``pyode_method`` and
        ``pyode_options`` (built once per problem, kept alive with ``keep``); jacobian: for the stiff kinds,
        ``jacobian(s, y) -> (1, n, n)`` (:class:`pyode._solvers.newton.Jacobian`), else None; stats: the
        solve's counters; time_sign: -1 for decreasing time.
    """

    def __init__(self, fn, method_struct, opts_struct, keep: list, jacobian, stats, time_sign: float):
        self.fn, self.method, self.opts, self.keep = fn, method_struct, opts_struct, keep
        self.jacobian, self.stats, self.time_sign = jacobian, stats, time_sign
        self.error: BaseException | None = None
        self.f0: tuple[float, Tensor] | None = None  # f(t0, y0), already evaluated (and counted) by the caller
        from pyode.native._methods import KIND_ALF

        self.alf = method_struct.kind == KIND_ALF  # ALF: the loop also returns its final v, kept in final_v
        self.final_v: Tensor | None = None

    def _rhs(self, n: int, cancel: int):
        """The right-hand side (``_C.TorchRhs``): per evaluation it copies the loop's state into ``y_in``, a tensor
        of the solve shaped like y0, runs ``func`` on it and copies the output's n values into the loop's buffer.
        ``call`` returns FlatFunc's checked output (contiguous, the state's dtype, on the CPU), or for the first
        evaluation the caller's f0."""
        fn = self.fn
        shaped = not fn.structured
        y_in = torch.empty(n, dtype=fn.dtype)
        y = y_in.view(fn.shapes[0]) if shaped else y_in
        func = fn.shaped_caller() if shaped else fn

        def call(s: float) -> Tensor:
            f0 = self.f0
            if f0 is not None and s == f0[0]:
                self.f0 = None
                return f0[1]
            return func(s, y)

        return _C().TorchRhs(call=call, y_in=y_in, n=n, item_size=fn.dtype.itemsize, cancel=cancel)

    def _jac(self, ffi, n: int, y_views: _Views, flag):
        J_views = _Views.shared(ffi, (n, n))
        flat = y_views.shape != (n,)

        def jac(s, y_ptr, J_ptr, _p):
            if flag[0]:  # cancelled: an exception in this or another callback
                return
            y = y_views(y_ptr)
            with torch.enable_grad():  # the loop runs under no_grad (integrate); autograd's Jacobian needs it
                J = self.jacobian(s, y.view(-1) if flat else y)[0]
            J_views(J_ptr).copy_(J)

        return jac

    def _onerror(self, flag):
        def onerror(exc_type, exc_value, tb):
            if self.error is None:  # with its traceback, which still ends inside func
                self.error = (exc_value if exc_value is not None else exc_type()).with_traceback(tb)
            flag[0] = 1  # cancel: every row stops at its next step

        return onerror

    def _event(self, events, views: _Views, flag):
        """The event callback: ``events``' own evaluation (a NaN value fails the row; the Python loop then
        reruns the solve and raises its error naming it)."""

        def event(s, y_ptr, _p):
            if flag[0]:  # cancelled: an exception in this or another callback
                return 1.0
            return events.value_or_nan(s, views(y_ptr).view(-1))

        return event

    def _callbacks(self, ffi, n: int, flag, events) -> tuple:
        """The callbacks of one solve for the state's dtype: (TorchRhs, the C Jacobian or NULL, the C event or
        NULL). The Jacobian and the event (called a few times a step at most) are cffi callbacks."""
        _, _, event_type, _ = _C_TYPES[self.fn.dtype]
        rhs = self._rhs(n, int(ffi.cast("uintptr_t", flag)))
        onerror = self._onerror(flag)
        need_views = self.jacobian is not None or events is not None
        views = _Views.shared(ffi, self.fn.shapes[0] if not self.fn.structured else (n,), self.fn.dtype) \
            if need_views else None
        jac = ffi.NULL if self.jacobian is None else \
            ffi.callback("pyode_jac_fn", self._jac(ffi, n, views, flag), onerror=onerror)
        event = ffi.NULL if events is None else \
            ffi.callback(event_type, self._event(events, views, flag), onerror=onerror)
        return rhs, jac, event

    def _call(self, ffi, lib, rhs, jac, event, problem, stats) -> int:
        """The C entry for the state's dtype (float32: ``pyode_solve_f32``, explicit methods, no Jacobian), called
        through ``_C.run_native_solve`` with the GIL released; the callbacks take it back for each call."""
        f32 = self.fn.dtype == torch.float32
        entry = _entry_address(ffi, lib, "pyode_solve_f32" if f32 else "pyode_solve_jac")

        def address(ptr) -> int:
            return int(ffi.cast("uintptr_t", ptr))

        return _C().run_native_solve(solve=entry, f32=f32, method=address(self.method), options=address(self.opts),
                                     rhs=rhs.function, jac=address(jac), event=address(event),
                                     problem=address(problem), stats=address(stats), stats_len=1)

    def integrate(self, y0: Tensor, t_out: list[float], f0: Tensor | None = None, events=None) -> list[Tensor] | None:
        """Solves from ``y0`` (n,) through the solver times ``t_out`` (increasing); returns ``[ys]``, (T, n), or
        with ``events`` (:class:`~pyode._solvers.events.EventLocator`) that stopped the solve ``[y_event]``,
        (1, n), its ``event_t`` set, as the Python loop. ``f0``: ``fn(t_out[0], y0)`` if the caller has it.

        A solve that fails (max_num_steps, step underflow, a non-finite state) returns None with the counters
        as they were: the caller reruns it in the Python loop, which takes the same steps to the same failure
        and raises the reference error with its diagnosis (which rule stopped it, Newton's failure, the hints).
        Failures are rare and their rerun costs one more solve; the error text then has one source.
        An exception from ``func`` or ``event_fn`` propagates as it is."""
        ffi, lib = _native()
        n = y0.numel()
        flag = ffi.new("int32_t *", 0)
        rhs, jac, event = self._callbacks(ffi, n, flag, events)
        problem, ys, y_event = _problem(ffi, y0.detach().contiguous(), t_out, events is not None or self.alf,
                                        rhs.context)
        stats = ffi.new("pyode_traj_stats[]", 1)
        if f0 is not None and (f0.numel() != n or f0.dtype != self.fn.dtype or not f0.is_cpu):
            raise ValueError(f"f0 must hold the state's {n} values ({self.fn.dtype}, on the CPU)")
        self.f0 = None if f0 is None else (t_out[0], f0.detach().contiguous())
        nfe_before = self.stats.nfe
        self.opts.cancel = flag
        try:
            # Nothing the C++ loop computes carries a gradient (its outputs are plain buffers), so func runs without
            # autograd's bookkeeping (~4% of a small func's time); the Jacobian callback turns it back on.
            with torch.no_grad():
                rc = self._call(ffi, lib, rhs, jac, event, problem.struct, stats)
        finally:
            self.opts.cancel, self.f0 = ffi.NULL, None
        error = rhs.take_error()  # the first callback that raised set the flag: no other one ran after it
        error, self.error = (self.error if error is None else error), None
        if error is not None:
            raise error
        if rc != 0:
            raise ValueError(ffi.string(lib.pyode_last_error()).decode())
        row = stats[0]
        if row.n_unconverged:  # as AdamsLoop._corrector warns (after the solve: Python's warning filters)
            warnings.warn("implicit_adams: the corrector iteration did not converge in options['max_iters'] = "
                          f"{self.method.max_iters} iterations; the solution may be inaccurate", RuntimeWarning,
                          stacklevel=6)
        if row.status not in (_SUCCESS, _EVENT):  # the Python loop reruns it and raises its own error
            self.stats.nfe = nfe_before
            return None
        self.stats.n_accepted += int(row.n_accepted)
        self.stats.n_rejected += int(row.n_rejected)
        self.stats.t_reached = self.time_sign * float(row.t_reached)
        if row.status == _EVENT:
            events.event_t = float(row.event_t)
            return [y_event[None]]
        self.final_v = y_event if self.alf else None
        return [ys]


class _Problem:
    """The C ``pyode_problem`` of one trajectory and the tensors it points to (kept alive with it)."""

    def __init__(self, struct, *tensors):
        self.struct, self.tensors = struct, tensors


def _problem(ffi, y0: Tensor, t_out: list[float], with_event: bool,
             context: int | None = None) -> tuple[_Problem, Tensor, Tensor | None]:
    """(problem, ys (T, n), y_event (n,) or None) for the C loop: outputs in fresh tensors of y0's dtype (float64:
    a ``pyode_problem``, float32: a ``pyode_problem_f32``; times float64 in both) that the caller owns. The
    right-hand side's ``context`` (if given) travels as the parameter pointer, the C ABI's user data: the solver
    hands it to rhs untouched (one shared "parameter", never read as one)."""
    n, T = y0.numel(), len(t_out)
    scalar, _, _, struct = _C_TYPES[y0.dtype]
    ys = torch.empty((T, n), dtype=y0.dtype)
    y_event = torch.empty(n, dtype=y0.dtype) if with_event else None
    times = torch.tensor(t_out, dtype=torch.float64)
    p = ffi.new(struct + " *")
    p.num_traj, p.n, p.num_params, p.params_stride, p.num_times = 1, n, 0, 0, T
    if context is not None:
        p.num_params, p.params, p.params_len = 1, ffi.cast(scalar + " *", context), 1
    p.y0, p.y0_len = ffi.cast(scalar + " *", y0.data_ptr()), n
    p.t, p.t_len = ffi.cast("double *", times.data_ptr()), T
    p.ys, p.ys_len = ffi.cast(scalar + " *", ys.data_ptr()), T * n
    if y_event is not None:
        p.y_event, p.y_event_len = ffi.cast(scalar + " *", y_event.data_ptr()), n
    return _Problem(p, y0, ys, y_event, times), ys, y_event


def _static_eligible(fn, kern) -> bool:
    """What a solve must be, whatever its options, for the C++ loop to run it (see the module docstring)."""
    from pyode._solvers.callbacks import step_callbacks

    return (os.environ.get("PYODE_CORE_LOOP", "1") != "0" and kern.name == "cpu"
            and fn.dtype in _C_TYPES and fn.device.type == "cpu" and sum(fn.sizes) > 0 and _size_ok(fn)
            and not fn.pass_perturb and step_callbacks(fn) is None and available())


def _size_ok(fn) -> bool:
    """States up to ``_tuning.CORE_LOOP_MAX_ELEMENTS`` (larger ones are faster in the Python loop's fused kernels;
    see :mod:`pyode._tuning`)."""
    return sum(fn.sizes) <= _tuning.CORE_LOOP_MAX_ELEMENTS


def adaptive_solver(stepper, kern, method: str, opts, extra: dict, segments, rtol: float, atol: float, stats,
                    time_sign: float) -> CoreSolver | None:
    """The C++ loop for an adaptive solve (explicit, or for float64 states rodas5/kvaerno5/kvaerno3 and "auto"
    with the Python stepper's Jacobian, ``stepper.jac``), or None when the Python loop must run it."""
    fn = stepper.fn
    if segments is not None or opts.per_sample or not _static_eligible(fn, kern):
        return None
    if opts.jump_t and fn.t_dtype != torch.float64:  # the Python loop nudges by an ulp of the time dtype
        return None
    from pyode.native._methods import ADAPTIVE, WITH_JACOBIAN, implicit_method_data, method_data

    stiff = method in WITH_JACOBIAN
    if stiff and (fn.dtype != torch.float64 or extra.get("max_iters") is not None
                  or extra.get("jacobian") not in (None, "dense", "differences") or opts.interp not in ("auto", "cubic")):
        return None
    if not stiff and method not in ADAPTIVE:
        return None
    data = implicit_method_data(method, opts.interp) if stiff else method_data(method, opts.interp)
    jac = stepper.stiff.jac if method == "auto" else stepper.jac if stiff else None  # auto: its stiff partner's
    return _solver(fn, data, method, opts, rtol, atol, jac and _jacobian_callback(jac), stats, time_sign)


def _jacobian_callback(jac):
    """The Jacobian (:class:`~pyode._solvers.newton.Jacobian`) the C++ loop calls back for the steps, or None where
    they are forward differences: the loop then differences func itself (fd_jacobian, the twin of
    Jacobian._differences), one callback per column. A func with its own exact Jacobian keeps it, as in Python."""
    return None if jac.steps_by_differences and not jac.has_own_jacobian() else jac


def _grid_eligible(fn, kern, opts) -> bool:
    """What a fixed-grid solve needs for the C++ loop: its own grid (no grid_constructor), no perturb, and the
    static conditions."""
    return opts.grid_constructor is None and not opts.perturb and _static_eligible(fn, kern)


def fixed_solver(fn, kern, method: str, opts, stats, time_sign: float, rtol: float = 0.0,
                 atol: float = 0.0) -> CoreSolver | None:
    """The C++ loop for an explicit fixed-grid solve on ``options['step_size']`` (no grid_constructor, no
    perturb): a Runge-Kutta method, or for float64 states an Adams one (``rtol``/``atol``: its corrector's test, one
    number each: per-component tolerances stay in Python), or None."""
    if opts.step_size is None or not _grid_eligible(fn, kern, opts):
        return None
    from pyode._solvers.tableaux import ADAMS_METHODS
    from pyode.native._methods import FIXED, adams_method_data, method_data

    if method in ADAMS_METHODS and fn.dtype == torch.float64 and all(isinstance(x, (int, float)) for x in (rtol, atol)):
        data = adams_method_data(method, opts.max_order, opts.max_iters)
        return _solver(fn, data, method, opts, rtol, atol, None, stats, time_sign)
    if method not in FIXED:
        return None
    return _solver(fn, method_data(method, opts.interp), method, opts, 0.0, 0.0, None, stats, time_sign)


def implicit_fixed_solver(stepper, kern, method: str, opts, jacobian: str | None, max_iters: int | None, stats,
                          time_sign: float) -> CoreSolver | None:
    """The C++ loop for a diagonally implicit method of torchdiffeq's fixed-grid set (``FIXED_DIRK``: implicit_euler,
    implicit_midpoint, trapezoid, sdirk2, trbdf2) on ``options['step_size']``, float64, with a dense Jacobian
    (``jacobian``: None/"dense" by the stepper's autograd callback, "differences" in the loop), or None."""
    fn = stepper.fn
    if opts.step_size is None or fn.dtype != torch.float64 or jacobian not in (None, "dense", "differences") \
            or not _grid_eligible(fn, kern, opts):
        return None
    from pyode.native._methods import FIXED_DIRK, fixed_dirk_data

    if method not in FIXED_DIRK:
        return None
    data = fixed_dirk_data(method, opts.interp, max_iters or 0)
    return _solver(fn, data, method, opts, 0.0, 0.0, _jacobian_callback(stepper.jac), stats, time_sign)


def alf_solver(fn, kern, opts, stats, time_sign: float) -> CoreSolver | None:
    """The C++ loop for an ALF solve (float64 states; ``options['step_size']`` or one step per output interval), or
    None. Its ``final_v`` holds the last v after each solve (the reversible gradient starts from it)."""
    if fn.dtype != torch.float64 or not _grid_eligible(fn, kern, opts):
        return None
    from pyode.native._methods import alf_method_data

    return _solver(fn, alf_method_data(), "alf", opts, 0.0, 0.0, None, stats, time_sign)


def bdf_solver(fn, kern, opts, jac, rtol: float, atol: float, stats, time_sign: float) -> CoreSolver | None:
    """The C++ loop for a ``method="bdf"`` solve of a float64 state (``jac``: the steps' Jacobian, called back
    unless it is forward differences of func, which the loop computes itself), or None."""
    if fn.dtype != torch.float64 or jac.rows != 1 or not _static_eligible(fn, kern):  # "rows": Python's blocks
        return None
    from pyode.native._methods import bdf_method_data

    return _solver(fn, bdf_method_data(opts.max_order), "bdf", opts, rtol, atol, _jacobian_callback(jac), stats,
                   time_sign)


def _solver(fn, data, method, opts, rtol, atol, jacobian, stats, time_sign) -> CoreSolver:
    from pyode.native._solve import _build_options_struct, _method_struct

    ffi, _ = _native()
    keep: list = []
    # The options are already in solver time (increasing, step_t/jump_t flipped): the C loop runs with sign +1
    # and FlatFunc turns solver time back into the user's. Built per problem (the options object is the problem's).
    opts_struct = _build_options_struct(ffi, method, opts, rtol, atol, 1, 1.0, keep)
    return CoreSolver(fn, _method_struct(ffi, data, keep), opts_struct, keep, jacobian, stats, time_sign)


_SUCCESS, _EVENT = 0, 4  # pyode_native.h's trajectory status codes


def per_sample_eligible(stepper, y: Tensor) -> bool:
    """Whether per-sample mode's rows can run in the C++ loop (:func:`solve_per_sample`): the compiled CPU backend,
    an adaptive explicit tableau, a float32/float64 CPU state (the caller checks autograd, hooks and
    on_failure)."""
    from pyode._solvers.rk_step import RKStepper

    return (isinstance(stepper, RKStepper) and stepper.kern.name == "cpu" and stepper.tableau.b_err is not None
            and y.dtype in _C_TYPES and y.device.type == "cpu" and os.environ.get("PYODE_CORE_LOOP", "1") != "0"
            and _C() is not None)


def solve_per_sample(stepper, opts, predictive: bool, t_out: list[float], y: Tensor, f0: Tensor, h0: float,
                     out: Tensor, y_stage: Tensor, t_stage: Tensor, sign: float, call):
    """Per-sample mode as rows of the C++ loop (``csrc/per_sample_rows.cpp``: a RowSolver per batch row, func called
    once per stage on the whole batch; dense output by the stepper's interpolant ``P``). y, f0: (rows, width) at
    ``t_out[0]``; out (T, rows, width) receives the outputs; ``call(t_stage, y_stage)`` runs func on y_stage
    (rows, width) at t_stage (rows,) (float32 or float64 solver times times ``sign``) and returns its (rows, width)
    output. Returns None when that output records autograd (nothing of the solve is then kept), else (calls, first
    failed row or -1, per-row (status, t_reached, accepted, rejected))."""
    from pyode._kernels.compiled import flat_stage_matrix

    tab = stepper.tableau
    method = _C().RowMethod(num_stages=tab.num_stages, order=tab.order, fsal=stepper.fsal,
                            c=[float(x) for x in tab.c], a=flat_stage_matrix(tab), b=[float(x) for x in tab.b],
                            b_err=[float(x) for x in tab.b_err], P=[float(x) for row in stepper.P for x in row],
                            num_terms=stepper.num_terms)
    controller = _C().ControllerParams(
        safety=float(opts.safety), ifactor=float(opts.ifactor), dfactor=float(opts.dfactor),
        pcoeff=float(opts.pcoeff), icoeff=float(opts.icoeff), dcoeff=float(opts.dcoeff),
        min_step=float(opts.min_step), max_step=float(opts.max_step), predictive=predictive)
    return _C().solve_per_sample(
        method=method, controller=controller, rtol=float(stepper.rtol), atol=float(stepper.atol),
        max_num_steps=int(opts.max_num_steps), first_step=float(h0), t_out=[float(x) for x in t_out],
        y0=y.contiguous(), f0=f0.contiguous(), out=out, y_stage=y_stage, t_stage=t_stage,
        dtype=0 if y.dtype == torch.float32 else 1, t_dtype=0 if t_stage.dtype == torch.float32 else 1,
        sign=float(sign), call=call)
