"""``pyode.native.solve``: whole solves in the C++ loop with a compiled right-hand side, one trajectory or
an ensemble spread over threads, with the GIL released for the whole solve."""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
from dataclasses import dataclass

import numpy as np

from pyode import _validation as check
from pyode._solvers.adaptive import AdaptiveOptions
from pyode._solvers.bdf import BdfOptions, check_bdf_options
from pyode._solvers.fixed_grid import FixedOptions, check_adams_options, check_step_count
from pyode.errors import MaxStepsError, NonFiniteStateError, ODESolverError, StepSizeUnderflowError
from pyode.native import _arrays
from pyode.native._compile import native_function
from pyode.native._lib import load
from pyode.native._methods import (
    ADAPTIVE,
    FIXED,
    GRID_KINDS,
    WITH_JACOBIAN,
    bdf_method_data,
    grid_kind_data,
    implicit_method_data,
    method_data,
)

SUCCESS, MAX_STEPS, STEP_UNDERFLOW, NON_FINITE, EVENT, CANCELLED = 0, 1, 2, 3, 4, 5
STATUS_NAMES = {SUCCESS: "success", MAX_STEPS: "max_num_steps", STEP_UNDERFLOW: "step_underflow",
                NON_FINITE: "non_finite", EVENT: "event", CANCELLED: "cancelled"}
_ERRORS = {MAX_STEPS: MaxStepsError, STEP_UNDERFLOW: StepSizeUnderflowError, NON_FINITE: NonFiniteStateError}
# Options of pyode's Python loops that the native loop does not run (yet): refused, never ignored.
_UNSUPPORTED = ("per_sample", "grid_constructor", "perturb")


@dataclass
class NativeSolution:
    """Result of :func:`pyode.native.solve`; arrays of the input's kind (NumPy or torch).

    Attributes:
        ys: (T, n) for one trajectory, (T, M, n) for an ensemble; NaN after a trajectory stopped.
        t: (T,) the output times.
        status: (M,) int codes (see ``STATUS_NAMES``): 0 success, 1 max_num_steps, 2 step_underflow,
            3 non_finite, 4 event.
        t_reached: (M,) the last time each trajectory reached; event_t: (M,) event times (NaN: none).
        y_event: (M, n) state at the event (NaN: none), or None without an event function.
        n_accepted, n_rejected, n_feval: (M,) int64 counters.

    From :func:`pyode.native.solve`, the six (M,) per-trajectory arrays are views of the fields of one (M,)
    record array that the C solver filled (strided, no copy).
    """

    ys: object
    t: object
    status: np.ndarray
    t_reached: np.ndarray
    event_t: np.ndarray
    y_event: object
    n_accepted: np.ndarray
    n_rejected: np.ndarray
    n_feval: np.ndarray

    @property
    def success(self) -> bool:
        """True when every trajectory reached the last time (or its event)."""
        return bool(np.all((self.status == SUCCESS) | (self.status == EVENT)))

    def status_names(self) -> list[str]:
        return [STATUS_NAMES[int(s)] for s in self.status]


def _parse_options(method: str, options: dict | None, sign: float):
    """Validated options: (the options dataclass, num_threads); cached for hashable options (a solve in a loop
    would otherwise spend most of its ~100 us fixed cost here). The result is never modified."""
    try:
        key = (method, None if options is None else tuple(sorted(options.items())), sign)
        hash(key)
    except TypeError:  # a list-valued option: parse every time
        return _parse_options_uncached(method, options, sign)
    return _parse_options_cached(key)


@functools.lru_cache(maxsize=256)
def _parse_options_cached(key):
    method, items, sign = key
    return _parse_options_uncached(method, None if items is None else dict(items), sign)


def _parse_options_uncached(method: str, options: dict | None, sign: float):
    if method == "bdf":
        opts, extra = check.parse_options(options, BdfOptions, method, extra=("num_threads",))
        check_bdf_options(opts)
        if opts.jacobian != "dense" or opts.norm != "rms":  # a native trajectory's J is dense (n x n)
            raise ValueError("pyode.native.solve: bdf takes its Jacobian from jac (forward differences without it); "
                             "options['jacobian'] and options['norm'] do not apply")
        return opts, _threads(extra)
    cls = AdaptiveOptions if method in ADAPTIVE + WITH_JACOBIAN else FixedOptions
    opts, extra = check.parse_options(options, cls, method, extra=("num_threads",))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in _UNSUPPORTED:
        default = fields.get(name)
        if default is not None and getattr(opts, name) != _default_of(default):
            raise ValueError(f"options[{name!r}] is not supported by pyode.native.solve; use pyode.solve with a torch "
                             "func for it")
    threads = _threads(extra)
    if method in WITH_JACOBIAN:
        check.adaptive_options(opts, sign)
        if opts.interp not in ("auto", "cubic"):
            raise ValueError(f"options['interp'] must be 'auto' or 'cubic' (Hermite) for {method}, got {opts.interp!r}")
    elif method in ADAPTIVE:
        check.adaptive_options(opts, sign)
        if opts.interp not in ("auto", "quartic", "cubic", "linear", "restep"):
            raise ValueError(f"options['interp'] must be auto, quartic, cubic, linear or restep, got {opts.interp!r}")
    else:
        if method in GRID_KINDS and method != "alf":
            check_adams_options(opts)
        if opts.step_size is None and method == "alf":  # one step per output interval
            return opts, threads
        if opts.step_size is None:
            raise ValueError(f"the fixed-grid method {method!r} needs options['step_size'] (e.g. {{'step_size': 0.01}}), "
                             "or pick an adaptive method such as 'dopri5'")
        opts.step_size = check.positive("step_size", opts.step_size, allow_none=False)
        opts.max_num_steps = check.positive_int("max_num_steps", opts.max_num_steps)
        if opts.interp not in ("linear", "cubic"):
            raise ValueError(f"options['interp'] must be 'linear' or 'cubic' for fixed-grid methods, got {opts.interp!r}")
    return opts, threads


def _threads(extra: dict) -> int:
    threads = extra.get("num_threads", 0)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"options['num_threads'] must be an int >= 0 (0: all cores), got {threads!r}")
    return threads


def _default_of(field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


_METHOD_STRUCTS: dict = {}  # id(MethodData) -> (data, struct, arrays): built once per method (method_data caches)


def _method_struct(ffi, data, keep: list):
    """The C ``pyode_method`` of ``data``, built once and reused (the solver only reads it; ~10 us a call)."""
    hit = _METHOD_STRUCTS.get(id(data))
    if hit is None or hit[0] is not data:
        arrays: list = []
        hit = _METHOD_STRUCTS[id(data)] = (data, _build_method_struct(ffi, data, arrays), arrays)
    keep.append(hit)
    return hit[1]


def _build_method_struct(ffi, data, keep: list):
    m = ffi.new("pyode_method *")
    s = data.num_stages
    m.num_stages, m.order, m.fsal = s, data.tableau.order, int(getattr(data.tableau, "fsal", False))
    m.interp_degree, m.interp_terms = data.P.shape
    m.interp_restep = int(data.restep)
    for name in ("c", "a", "b", "b_err"):
        arr = getattr(data, name)
        setattr(m, name, ffi.NULL if arr is None else _arrays.pointer(ffi, arr, keep))
    m.interp_P = _arrays.pointer(ffi, data.P, keep) if data.P.size else ffi.NULL
    m.kind, m.gamma = data.kind, data.gamma
    if data.fsal is not None:
        m.fsal = int(data.fsal)
    for name in ("ros_c", "ros_d", "predictor"):
        arr = getattr(data, name)
        setattr(m, name, ffi.NULL if arr is None else _arrays.pointer(ffi, arr, keep))
    m.adams_history, m.max_iters = data.adams_history, data.max_iters
    for name in ("adams_ab", "adams_am"):
        arr = getattr(data, name)
        setattr(m, name, ffi.NULL if arr is None else _arrays.pointer(ffi, arr, keep))
    if data.stiff is not None:  # kept alive with the arrays
        partner = _build_method_struct(ffi, data.stiff, keep)
        keep.append(partner)
        m.stiff_partner = partner
    return m


_CONTROLLER_CODES = {"auto": 0, "pid": 1, "predictive": 2}  # PYODE_CONTROLLER_* in pyode_native.h


def _build_options_struct(ffi, method: str, opts, rtol: float, atol: float, threads: int, sign: float, keep: list):
    o = ffi.new("pyode_options *")
    o.struct_size = ffi.sizeof("pyode_options")
    o.rtol, o.atol, o.event_tol, o.num_threads = rtol, atol, atol, threads
    o.safety, o.ifactor, o.dfactor, o.pcoeff, o.icoeff, o.dcoeff = 0.9, 10.0, 0.2, 0.0, 1.0, 0.0
    o.min_step, o.max_step, o.max_num_steps = 0.0, math.inf, opts.max_num_steps
    if method == "bdf":  # its own step control: only the first step and the step limit apply
        o.first_step = opts.first_step or 0.0
    elif method in ADAPTIVE + WITH_JACOBIAN:
        for name in ("step_t", "jump_t"):  # validated and sorted into solver time: back to the caller's
            times = np.asarray([sign * x for x in getattr(opts, name)], dtype=np.float64)
            setattr(o, name, _arrays.pointer(ffi, times, keep))
            setattr(o, f"num_{name}", times.size)
        o.first_step = opts.first_step or 0.0
        for name in ("safety", "ifactor", "dfactor", "pcoeff", "icoeff", "dcoeff", "min_step", "max_step"):
            setattr(o, name, float(getattr(opts, name)))
        o.controller = _CONTROLLER_CODES[opts.controller]
    else:
        o.step_size = opts.step_size or 0.0  # ALF without a step_size: 0, one step per output interval
    return o


def _raise_failures(status: np.ndarray, t_reached: np.ndarray, ensemble: bool) -> None:
    if status.size == 1 and int(status[0]) in (SUCCESS, EVENT):  # one trajectory: no NumPy reductions
        return
    bad = np.flatnonzero((status != SUCCESS) & (status != EVENT))
    if bad.size == 0:
        return
    first = int(bad[0])
    code = int(status[first])
    which = f"trajectory {first} ({bad.size} of {status.size} failed)" if ensemble else "the solve"
    hints = {MAX_STEPS: "raise options['max_num_steps'] or loosen rtol/atol (the problem may be stiff)",
             STEP_UNDERFLOW: "the step size underflowed; the problem may be stiff or singular there",
             NON_FINITE: "rhs produced NaN/inf and shrinking the step did not help"}
    hint = hints.get(code, "the solve was cancelled")
    raise _ERRORS.get(code, ODESolverError)(STATUS_NAMES[code], float(t_reached[first]),
                                            f"pyode.native: {which} stopped: {hint}")


def solve(rhs, y0, t, params=None, *, method: str = "dopri5", rtol: float = 1e-6, atol: float = 1e-9,
          options: dict | None = None, event=None, raise_on_failure: bool | None = None,
          device: str = "cpu", jac=None) -> NativeSolution:
    """Solves ``dy/dt = rhs(t, y, p)`` entirely in compiled code (the C++ loop, GIL released).

    Args:
        rhs: ``rhs(t, y, dy, p)`` in numba's nopython subset writing ``dy`` in place (compiled once with
            ``numba.cfunc`` and cached), or a numba cfunc / cffi pointer with the C signature
            ``void rhs(double t, const double *y, double *dy, const double *p)``.
        y0: (n,) one trajectory or (M, n) an ensemble; NumPy array or CPU torch tensor.
        t: (T,) output times, strictly monotonic; t[0] is the initial time.
        params: None, (k,) shared by every trajectory, or (M, k) one row per trajectory (a (n,) ``y0`` is then
            shared by the M trajectories).
        method: any explicit method of pyode (adaptive: dopri5, tsit5, dopri8, bosh3, fehlberg2, adaptive_heun;
            fixed grid with ``options['step_size']``: euler, midpoint, heun2, heun3, rk4, explicit_adams,
            implicit_adams / fixed_adams (``max_order``, ``max_iters``), alf (``step_size`` optional: each output
            interval in equal steps)), or a stiff one: rodas5
            (Rosenbrock, one LU per step), kvaerno5 / kvaerno3 (ESDIRK, simplified Newton with Jacobian reuse),
            or "auto" (tsit5 while not stiff, kvaerno5 while stiff, switching both ways per trajectory), or "bdf"
            (variable-order NDF/BDF, ``max_order``; no events), the same steps as ``pyode.solve`` with these methods; dense output by rodas5's own 4th-order continuous
            extension (``options['interp'] = 'cubic'``: cubic Hermite) and cubic Hermite for the ESDIRKs.
        rtol, atol: tolerances of the adaptive methods (pyode's error norm and PID controller).
        options: pyode's solver options (first_step, safety, ifactor, dfactor, pcoeff, icoeff, dcoeff, min_step,
            max_step, max_num_steps, interp; step_size for fixed grids) plus ``num_threads`` (0: all cores).
        event: terminal event ``event(t, y, p) -> float`` (compiled like ``rhs``): a trajectory stops where it
            changes sign (located to ``atol`` in time), with status "event".
        raise_on_failure: raise pyode's exception if any trajectory failed; default True for one trajectory,
            False for an ensemble (inspect ``status``).
        jac: stiff methods and "auto" only: ``jac(t, y, J, p)`` writing the (n, n) Jacobian ``J[i, j] = d f_i / d y_j``
            in place (compiled like ``rhs``; a numba cfunc / cffi pointer with rhs's C signature), or None for
            forward differences (n evaluations of rhs per Jacobian).
        device: "cpu" (the C++ loop on threads) or "cuda" (numba CUDA, one trajectory per GPU thread; ``rhs``
            must then be a Python or njit function, compiled as a CUDA device function; no events).

    Returns:
        :class:`NativeSolution`; ``ys`` is (T, n) or (T, M, n), float64 (or y0's float32 when given float32).
    """
    prob = _arrays.Problem.build(y0, t, params)
    if device == "cpu":
        plan = _plan(rhs, jac, event, method, options, rtol, atol, prob)
        if method in FIXED + GRID_KINDS:
            _arrays.check_times(prob.t)
            check_step_count([prob.sign * x for x in prob.t.tolist()], plan.opts.step_size, plan.opts.max_num_steps,
                             prob.sign, per_interval=method == "alf")
        out = plan.run(prob)
    elif device == "cuda":
        _arrays.check_times(prob.t)
        data, opts, _, rtol, atol = _validated(method, jac, event, options, rtol, atol, prob.sign)
        if method in JAC_METHODS + GRID_KINDS:
            raise ValueError(f"device='cuda' runs explicit methods only (Runge-Kutta tableaux); solve {method!r} "
                             "on device='cpu'")
        out = _run_cuda(rhs, data, opts, rtol, atol, prob, event)
    else:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if raise_on_failure or (raise_on_failure is None and not prob.ensemble):
        _raise_failures(out.status, out.t_reached, prob.ensemble)
    return out


# Every method pyode.native.solve runs; the stiff ones (and bdf) take ``jac``.
NATIVE_METHODS = ADAPTIVE + FIXED + WITH_JACOBIAN + GRID_KINDS + ("bdf",)
JAC_METHODS = (*WITH_JACOBIAN, "bdf")


def _validated(method: str, jac, event, options: dict | None, rtol, atol, sign: float):
    """Checked arguments that do not depend on the arrays: (method data, options, num_threads, rtol, atol)."""
    if method not in NATIVE_METHODS:
        raise ValueError(f"unknown method {method!r} for pyode.native.solve; valid: {', '.join(NATIVE_METHODS)}")
    if jac is not None and method not in JAC_METHODS:
        raise ValueError(f"jac is used by the stiff methods ({', '.join(JAC_METHODS)}) only; method={method!r} "
                         "needs none")
    rtol, atol = check.check_tolerance("rtol", rtol), check.check_tolerance("atol", atol)
    adaptive = method in ADAPTIVE + JAC_METHODS
    if adaptive and rtol == 0 and atol == 0:
        raise ValueError("rtol and atol cannot both be 0 for an adaptive method; set atol > 0 (e.g. 1e-9)")
    opts, threads = _parse_options(method, options, sign)
    if event is not None and (not adaptive or method == "bdf"):
        raise ValueError("event needs an adaptive Runge-Kutta method (e.g. method='dopri5')")
    if method == "bdf":
        data = bdf_method_data(opts.max_order)
    elif method in WITH_JACOBIAN:
        data = implicit_method_data(method, opts.interp)
    else:
        data = grid_kind_data(method, opts) if method in GRID_KINDS else method_data(method, opts.interp)
    return data, opts, threads, rtol, atol


@dataclass(frozen=True)
class _Plan:
    """Everything of a CPU solve but its arrays: the checked options, the compiled functions and the C structs,
    bound to the solver in ``call`` (:class:`pyode._C.NativeCall`). Built once per (functions, method, options,
    tolerances, n, k, direction) and reused: a small solve's C part is tens of microseconds, and checking and
    building all this again was as much."""

    opts: object
    call: object
    has_event: bool
    options: object  # the C options ``call`` reads at every run (its ``cancel`` flag: see the tests)

    def run(self, prob: _arrays.Problem) -> NativeSolution:
        M, n = prob.M, prob.n
        ys = np.empty((prob.T, M, n))
        y_event = np.empty((M, n)) if self.has_event else None
        stats = np.zeros(M, dtype=_STATS_DTYPE)  # the C pyode_traj_stats[M], written in place; the result views it
        # Ctrl-C: in the main thread (where Python raises KeyboardInterrupt), the library wraps Python's SIGINT
        # handler for the call: every trajectory stops at its next step, the call returns, and Python raises the
        # KeyboardInterrupt its own handler recorded (csrc/native/sigint_watch.h). Elsewhere SIGINT is not ours.
        rc = self.call.run(prob.y0, M, n, prob.params, prob.k, prob.k if prob.params_per_traj else 0, prob.t, ys,
                           y_event, stats, threading.get_ident() == _MAIN_THREAD_ID)
        if rc != 0:  # the solver refused its input: t's values are checked there, named here
            _arrays.check_times(prob.t)
            ffi, lib = load()
            raise ValueError(ffi.string(lib.pyode_last_error()).decode())
        return prob.wrap(ys, y_event, stats)


_PLANS: dict = {}


def _plan(rhs, jac, event, method: str, options: dict | None, rtol, atol, prob: _arrays.Problem) -> _Plan:
    """The cached :class:`_Plan` of a CPU solve (built when new; options with list values are never cached)."""
    try:
        key = (_identity(rhs), _identity(jac), _identity(event), method, rtol, atol, prob.n, prob.k, prob.sign,
               None if options is None else tuple(sorted(options.items())))
        plan = _PLANS.get(key)
    except TypeError:  # unhashable: a list-valued option (step_t, ...)
        key = plan = None
    if plan is None:
        plan = _build_plan(rhs, jac, event, method, options, rtol, atol, prob)
        if key is not None:
            if len(_PLANS) >= 256:  # a sweep over tolerances or functions: start over rather than grow
                _PLANS.clear()
            _PLANS[key] = plan
    return plan


def _identity(fn):
    """``fn`` as a cache key: cffi pointers compare equal by address whatever their C type, so theirs is in the key."""
    if type(fn).__module__ == "_cffi_backend":
        return fn, load()[0].typeof(fn)
    return fn


def _build_plan(rhs, jac, event, method: str, options: dict | None, rtol, atol, prob: _arrays.Problem) -> _Plan:
    from pyode import _C

    data, opts, threads, rtol, atol = _validated(method, jac, event, options, rtol, atol, prob.sign)
    f = native_function(rhs, "rhs", prob.n, prob.k)
    ev = None if event is None else native_function(event, "event", prob.n, prob.k)
    jf = None if jac is None else native_function(jac, "jac", prob.n, prob.k)
    ffi, lib = load()
    keep: list = [f, ev, jf, lib]
    m = _method_struct(ffi, data, keep)
    o = _build_options_struct(ffi, method, opts, rtol, atol, threads, prob.sign, keep)
    keep += [m, o]
    address = lambda x: int(ffi.cast("uintptr_t", x))
    call = _C.NativeCall(address(lib.pyode_solve_jac), address(m), address(o), f.address,
                         0 if jf is None else jf.address, 0 if ev is None else ev.address, keep)
    return _Plan(opts, call, ev is not None, o)


_MAIN_THREAD_ID = threading.main_thread().ident

# pyode_traj_stats (csrc/include/pyode/pyode_native.h), field for field (tests/test_native.py checks the offsets
# against the header's).
_STATS_DTYPE = np.dtype([("status", "<i4"), ("n_unconverged", "<i4"), ("t_reached", "<f8"), ("event_t", "<f8"),
                         ("n_accepted", "<i8"), ("n_rejected", "<i8"), ("n_feval", "<i8")])


def _run_cuda(rhs, data, opts, rtol, atol, prob, event) -> NativeSolution:
    """The ensemble on the GPU (:mod:`pyode.native.cuda`)."""
    from pyode.native.cuda import solve_cuda

    if event is not None or getattr(opts, "step_t", None) or getattr(opts, "jump_t", None):
        raise ValueError("event, step_t and jump_t are not supported with device='cuda' yet; solve with device='cpu'")
    if getattr(opts, "controller", "auto") == "predictive":
        raise ValueError("options['controller']='predictive' is not supported with device='cuda' (its kernel runs the "
                         "PID controller); use 'pid' or 'auto', or solve with device='cpu'")
    py = getattr(rhs, "py_func", rhs)
    if not callable(py) or type(py).__name__ != "function":
        raise TypeError("device='cuda' compiles rhs as a numba CUDA device function: pass the plain Python (or njit) "
                        f"function, not {type(rhs).__name__}")
    params = prob.params if prob.params_per_traj else prob.params[None, :]
    ys, raw = solve_cuda(py, data, opts, rtol, atol, prob.y0, params, prob.t, prob.sign)
    stats = np.zeros(prob.M, dtype=_STATS_DTYPE)
    for q, name in enumerate(("status", "t_reached", "event_t", "n_accepted", "n_rejected", "n_feval")):
        stats[name] = raw[:, q]
    return prob.wrap(ys, None, stats)
