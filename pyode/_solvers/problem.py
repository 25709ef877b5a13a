"""A validated solve ready to run: input checks, option parsing, the flat function and state, and the
integration loop for the chosen method. The gradient methods and the public API build on this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pyode import _validation as check
from pyode._kernels import Segments, get_backend, reference
from pyode._solvers import core_loop, tolerances
from pyode._solvers.adaptive import AdaptiveLoop, AdaptiveOptions
from pyode._solvers.alf import AlfLoop
from pyode._solvers.bdf import BdfLoop, BdfOptions, check_bdf_options
from pyode._solvers.events import EventLocator
from pyode._solvers.fixed_grid import (
    AdamsLoop,
    FixedGridLoop,
    FixedOptions,
    check_adams_options,
    check_step_count,
    constructed_grid,
    make_grid,
)
from pyode._solvers.flat_func import FlatFunc
from pyode._solvers.hooks import NO_HOOKS, LoopHooks, require
from pyode._solvers.implicit_auto import AUTO_PAIR, AutoSwitchStepper
from pyode._solvers.implicit_rosenbrock import RosenbrockStepper
from pyode._solvers.implicit_step import ImplicitStepper
from pyode._solvers.implicit_tableaux import IMPLICIT_TABLEAUX, ROSENBROCK_TABLEAUX
from pyode._solvers.newton import jacobian_for
from pyode._solvers.norms import NormKernels, StructuredNorm, rms_norm
from pyode._solvers.per_sample import PerSampleLoop
from pyode._solvers.rk_step import RKStepper
from pyode._solvers.scipy_wrapper import ScipyLoop, ScipyOptions
from pyode._solvers.scipy_wrapper import check_options as check_scipy_options
from pyode._solvers.tableaux import ADAMS_METHODS, TABLEAUX
from pyode.solution import SolverStats

FIXED_RK_METHODS = tuple(name for name, tab in TABLEAUX.items() if not tab.adaptive)
# Implicit (stiff) methods: torchdiffeq's fixed-grid set and the adaptive ESDIRK pairs (a stepper kind of the
# same loops, see pyode._solvers.implicit_step).
IMPLICIT_FIXED_METHODS = tuple(name for name, tab in IMPLICIT_TABLEAUX.items() if not tab.adaptive)
IMPLICIT_ADAPTIVE_METHODS = (tuple(name for name, tab in IMPLICIT_TABLEAUX.items() if tab.adaptive)
                             + tuple(ROSENBROCK_TABLEAUX) + ("auto",))  # auto: tsit5 <-> kvaerno5
# Adaptive multistep methods with their own step and order control (pyode._solvers.bdf).
MULTISTEP_ADAPTIVE_METHODS = ("bdf",)
ADAPTIVE_METHODS = (tuple(name for name, tab in TABLEAUX.items() if tab.adaptive) + IMPLICIT_ADAPTIVE_METHODS
                    + MULTISTEP_ADAPTIVE_METHODS)
METHODS = (ADAPTIVE_METHODS + FIXED_RK_METHODS + tuple(ADAMS_METHODS) + ("alf", "scipy_solver")
           + IMPLICIT_FIXED_METHODS)
_NORMS = ("rms", "mixed")


def _check_method(method: str | None) -> str:
    method = "dopri5" if method is None else method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    return method


def _prepare(func, y0, t, rtol, atol, method, event_fn):
    """Validates the inputs; returns (states, is_tuple, t, rtol, atol, method, tol_vectors): scalar tolerances
    (the smallest, for per-element ones) and the per-element vectors or None (:mod:`tolerances`)."""
    check.check_func(func)
    states, is_tuple = check.check_state(y0)
    t = check.check_times(t, states[0].device)
    rtol, atol, tol_vectors = tolerances.split(rtol, atol, states, is_tuple)
    method = _check_method(method)
    if method in ADAPTIVE_METHODS and (tol_vectors.both_zero() if tol_vectors else rtol == 0 and atol == 0):
        raise ValueError("rtol and atol cannot both be 0 for an adaptive method; set atol > 0 (e.g. 1e-9)")
    if event_fn is not None and not callable(event_fn):
        raise TypeError("event_fn must be callable as event_fn(t, y) -> scalar tensor")
    return states, is_tuple, t, rtol, atol, method, tol_vectors


def _kernel_backend(y: Tensor):
    if y.dtype not in (torch.float32, torch.float64):
        return reference.BACKEND  # half precision: the reference path computes in torch's own kernels
    return get_backend(y.device)


def _norm_option(options, is_tuple: bool):
    """``options['norm']``: "rms", "mixed" (the default for tuple states) or a callable ``norm(y) -> scalar``
    on the user's state structure (torchdiffeq's)."""
    norm = options.get("norm") if isinstance(options, dict) else None
    if norm is None:
        return "mixed" if is_tuple else "rms"
    if not callable(norm) and norm not in _NORMS:
        raise ValueError(f"options['norm'] must be one of {_NORMS} or a callable norm(y) -> scalar tensor, got {norm!r}")
    return norm


def _structured_norm(fn: FlatFunc, norm, tol_vectors=None) -> StructuredNorm | None:
    """The Python error norm, where the kernels' flat RMS does not apply: a callable norm, a complex state
    (RMS over complex magnitudes, per component for "mixed"), or per-element tolerances. None: the
    kernels' own norms."""
    if callable(norm):
        return StructuredNorm(norm, fn.unflatten, fn.is_tuple)
    if not (fn.is_complex or tol_vectors is not None):
        return None
    if norm == "rms" and fn.is_tuple:
        return StructuredNorm(lambda ys: rms_norm(torch.cat([y.reshape(-1) for y in ys])), fn.unflatten, True)
    return StructuredNorm(None, fn.unflatten, fn.is_tuple)


def _adaptive_loop(fn, kern, method, options, rtol, atol, offsets, sign, stats, norm_segments, tol_vectors=None):
    implicit = method in IMPLICIT_ADAPTIVE_METHODS
    opts, extra = check.parse_options(options, AdaptiveOptions, method,
                                      extra=("norm", "dtype", "max_iters", "jacobian") if implicit else ("norm", "dtype"))
    check.adaptive_options(opts, sign)
    if opts.interp not in ("auto", "quartic", "cubic", "linear", "restep"):
        raise ValueError(f"options['interp'] must be auto, quartic, cubic, linear or restep, got {opts.interp!r}")
    if opts.on_failure not in ("raise", "mark") or (opts.on_failure == "mark" and not opts.per_sample):
        raise ValueError("options['on_failure'] must be 'raise' or, with options['per_sample']=True, 'mark' (finish "
                         f"the other rows, report each row's status in sol.stats), got {opts.on_failure!r}")
    norm = _norm_option(options, fn.is_tuple)
    if tol_vectors is not None and (norm_segments is not None or method in IMPLICIT_ADAPTIVE_METHODS):
        raise ValueError(f"per-component or per-element rtol/atol are not supported by method {method!r} (nor by "
                         "the adjoint's backward solve); pass float tolerances")
    custom = None if norm_segments is not None else _structured_norm(fn, norm, tol_vectors)
    segments = None
    if custom is not None:
        kern = NormKernels(kern, custom, fn.is_complex, tol_vectors)
    elif norm_segments is not None or (norm == "mixed" and len(offsets) > 2):
        segments = Segments(offsets)
        norm_segments = segments.count if norm_segments is None else norm_segments
    if implicit:
        stepper = _implicit_stepper(method, fn, kern, sign, rtol, atol, segments, norm_segments, opts, extra)
    else:
        stepper = RKStepper(TABLEAUX[method], fn, kern, rtol, atol, segments, norm_segments, interp=opts.interp)
    if opts.per_sample:
        if opts.step_t or opts.jump_t or opts.interp == "restep":
            raise ValueError("options['per_sample'] does not combine with step_t, jump_t or interp='restep'")
        if custom is not None:
            raise ValueError("options['per_sample'] does not combine with a callable options['norm'], a complex y0 "
                             "or per-element rtol/atol (each row's norm is the RMS of its real entries)")
        return PerSampleLoop(stepper, opts, stats, sign)
    core = core_loop.adaptive_solver(stepper, kern, method, opts, extra, segments, rtol, atol, stats, sign)
    return AdaptiveLoop(stepper, opts, stats, sign, core=core)


def _implicit_stepper(method, fn, kern, sign, rtol, atol, segments, norm_segments, opts, extra):
    """The stepper of an adaptive implicit method: ESDIRK (Newton) or Rosenbrock (linearly implicit)."""
    _check_implicit_dtype(fn, method)
    if opts.per_sample and (method not in ("kvaerno3", "kvaerno5", "rodas5") or extra.get("jacobian") == "gmres"):
        raise ValueError(f"options['per_sample'] supports the stiff methods kvaerno3, kvaerno5 and rodas5 with a dense "
                         f"or 'rows' Jacobian (each row its own block), not method={method!r} with "
                         f"options['jacobian']={extra.get('jacobian')!r}; use one of those or leave per_sample unset")
    if method == "auto":
        explicit_name, stiff_name = AUTO_PAIR
        explicit = RKStepper(TABLEAUX[explicit_name], fn, kern, rtol, atol, segments, norm_segments, interp=opts.interp)
        stiff_interp = opts.interp if opts.interp in ("linear", "cubic") else "auto"
        stiff = ImplicitStepper(IMPLICIT_TABLEAUX[stiff_name], fn, kern, sign, rtol, atol, segments, norm_segments,
                                interp=stiff_interp, max_iters=_max_iters(extra.get("max_iters")),
                                jacobian_rows=_jacobian_rows(extra.get("jacobian"), fn))
        return AutoSwitchStepper(explicit, stiff, sign)
    if method in ROSENBROCK_TABLEAUX:
        if extra.get("max_iters") is not None:
            raise ValueError(f"{method} solves no nonlinear equations: options['max_iters'] does not apply; remove it")
        if opts.interp not in ("auto", "cubic"):
            raise ValueError(f"options['interp'] must be 'auto' or 'cubic' for {method}, got {opts.interp!r}")
        return RosenbrockStepper(ROSENBROCK_TABLEAUX[method], fn, kern, sign, rtol, atol, segments, norm_segments,
                                 jacobian_rows=_jacobian_rows(extra.get("jacobian"), fn), interp=opts.interp)
    return ImplicitStepper(IMPLICIT_TABLEAUX[method], fn, kern, sign, rtol, atol, segments, norm_segments,
                           interp=opts.interp, max_iters=_max_iters(extra.get("max_iters")),
                           jacobian_rows=_jacobian_rows(extra.get("jacobian"), fn))


def _check_implicit_dtype(fn: FlatFunc, method: str) -> None:
    if fn.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"method {method!r} factors Newton matrices (LU), which torch supports in float32 and float64 "
                        f"only, not {fn.dtype}; pass y0 as float32 or float64, or use an explicit method")


def _jacobian_rows(value, fn: FlatFunc) -> int | str | None:
    """``options['jacobian']`` of an implicit method: "dense" (default; exact, by autograd), "differences" (dense,
    by forward differences: n evaluations of func, no autograd), or "rows" for a (batch, *state) y0 whose
    rows evolve independently (a batch of trajectories): the Jacobian is then block-diagonal, one (m, m) block per
    row from m products instead of n, and factored as a batch of small LUs. Returns the batch size, the string
    ("gmres", "differences") or None."""
    if value is None or value == "dense":
        return None
    if value in ("gmres", "differences"):  # matrix-free Newton-Krylov (pyode._solvers.krylov), or a dense J by
        return value                       # forward differences (pyode._solvers.newton.jacobian_for)
    if value != "rows":
        raise ValueError(f"options['jacobian'] must be 'dense', 'differences', 'rows' or 'gmres', got {value!r}")
    if fn.is_tuple or len(fn.shapes[0]) < 2:
        raise ValueError("options['jacobian']='rows' needs a tensor y0 of shape (batch, *state) whose rows evolve "
                         "independently; use 'dense' for other states")
    return fn.shapes[0][0]


def _max_iters(value) -> int | None:
    """``options['max_iters']`` of an implicit method: Newton iterations per stage solve (None: the default,
    100 on a fixed grid as torchdiffeq, 10 for adaptive methods, which shrink the step instead)."""
    return None if value is None else check.positive_int("max_iters", value)


def _bdf_loop(fn, kern, options, rtol, atol, offsets, sign, stats, norm_segments, tol_vectors) -> BdfLoop:
    opts, _ = check.parse_options(options, BdfOptions, "bdf", extra=("dtype",))
    _check_implicit_dtype(fn, "bdf")
    check_bdf_options(opts)
    if opts.norm != "rms":
        raise ValueError(f"bdf's error norm is the RMS over the state: options['norm'] must be 'rms', got {opts.norm!r}")
    if tol_vectors is not None or fn.is_complex:
        raise ValueError("bdf takes float rtol/atol and a real state; pass float tolerances (a complex state: "
                         "its real and imaginary parts as separate real components)")
    norm_len = None if norm_segments is None else offsets[norm_segments]
    jac = jacobian_for(fn, _jacobian_rows(opts.jacobian, fn))
    core = core_loop.bdf_solver(fn, kern, opts, jac, rtol, atol, stats, sign) if norm_len is None else None
    return BdfLoop(fn, kern, jac, rtol, atol, stats, sign, max_order=opts.max_order, first_step=opts.first_step,
                   max_num_steps=opts.max_num_steps, norm_len=norm_len, core=core)


def _fixed_grid(opts, func, y0, t, t_out, sign) -> list[float]:
    """The grid of a fixed-grid method: from ``step_size``, from ``grid_constructor``, or ``t`` itself."""
    if opts.grid_constructor is None:
        return make_grid(t_out, opts.step_size)
    if opts.step_size is not None:
        raise ValueError("options['step_size'] and options['grid_constructor'] are mutually exclusive; pass one")
    return constructed_grid(opts.grid_constructor, func, y0, t, sign)


def _fixed_loop(fn, kern, method, options, t_out, sign, stats, rtol, atol, user):
    """``user``: (func, y0, t) as the caller gave them, for ``grid_constructor``."""
    opts, extra = check.parse_options(options, FixedOptions, method, extra=(
        ("dtype", "norm", "jacobian") if method in IMPLICIT_TABLEAUX else ("dtype", "norm")))
    opts.step_size = check.positive("step_size", opts.step_size)
    opts.max_num_steps = check.positive_int("max_num_steps", opts.max_num_steps)
    check_step_count(t_out, opts.step_size, opts.max_num_steps, sign, per_interval=method == "alf")
    if opts.interp not in ("linear", "cubic"):
        raise ValueError(f"options['interp'] must be 'linear' or 'cubic' for fixed-grid methods, got {opts.interp!r}")
    if not isinstance(opts.perturb, bool):
        raise TypeError(f"options['perturb'] must be True or False, got {opts.perturb!r}")
    if method == "alf":
        return AlfLoop(fn, kern, t_out, opts.step_size, stats, sign,
                       core=core_loop.alf_solver(fn, kern, opts, stats, sign))
    grid = _fixed_grid(opts, *user, t_out, sign)
    if method in ADAMS_METHODS:
        check_adams_options(opts)
        core = core_loop.fixed_solver(fn, kern, method, opts, stats, sign, rtol, atol)  # float64 only
        loop = AdamsLoop(fn, kern, grid, stats, sign, implicit=ADAMS_METHODS[method], max_order=opts.max_order,
                         max_iters=opts.max_iters, rtol=rtol, atol=atol, perturb=opts.perturb, core=core)
    else:
        if method in IMPLICIT_TABLEAUX:
            _check_implicit_dtype(fn, method)
            max_iters = _max_iters((options or {}).get("max_iters"))
            stepper = ImplicitStepper(IMPLICIT_TABLEAUX[method], fn, kern, sign, interp=opts.interp,
                                      max_iters=max_iters, jacobian_rows=_jacobian_rows(extra.get("jacobian"), fn))
            core = core_loop.implicit_fixed_solver(stepper, kern, method, opts, extra.get("jacobian"), max_iters,
                                                   stats, sign)  # the diagonally implicit ones
        else:
            stepper = RKStepper(TABLEAUX[method], fn, kern, interp=opts.interp)
            core = core_loop.fixed_solver(fn, kern, method, opts, stats, sign)
        loop = FixedGridLoop(stepper, grid, stats, sign, perturb=opts.perturb, core=core)
    loop.step_size, loop.max_num_steps = opts.step_size, opts.max_num_steps  # for the event search
    return loop


@dataclass
class Problem:
    """A validated solve, ready to integrate: the flat function and state, times in the solver's
    direction, and the integration loop. Gradient methods build one and own how it is run.

    Attributes:
        fn: :class:`FlatFunc`; y0: (n,) flat initial state; t: the user's times (T,);
        t_out: the times as floats in the solver's (increasing) direction; sign: -1 for decreasing t;
        loop: the integration loop; stats: its counters; offsets: tuple component boundaries in y0.
    """

    fn: FlatFunc
    y0: Tensor
    t: Tensor
    t_out: list
    sign: float
    loop: object
    stats: SolverStats
    method: str
    rtol: float
    atol: float
    offsets: list


def build_problem(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None,
                  norm_segments: int | None = None, stats: SolverStats | None = None) -> Problem:
    """Validates everything and builds the loop. ``norm_segments``: error norm over only the first
    ``norm_segments`` tuple components (the adjoint's seminorm). ``stats``: counters to add to."""
    states, is_tuple, t, rtol, atol, method, tol_vectors = _prepare(func, y0, t, rtol, atol, method, event_fn)
    t_list = t.detach().double().tolist()
    check.check_time_values(t_list)
    sign = -1.0 if len(t_list) > 1 and t_list[1] < t_list[0] else 1.0
    t_out = [sign * x for x in t_list]
    stats = SolverStats() if stats is None else stats
    stats.t_reached = t_list[0]
    # func sees t in y0's real dtype, as torchdiffeq hands it (its func wrapper casts t to y.abs().dtype): a float32
    # model given a float64 t would otherwise fail in its first matmul. options['dtype'] overrides. The solver's
    # own time bookkeeping is in Python floats (float64) either way.
    t_dtype = check.time_dtype(options) or states[0].real.dtype
    fn = FlatFunc(func, [s.shape for s in states], is_tuple, states[0].dtype, states[0].device, t_dtype,
                  sign < 0, stats)
    y_flat = _flat_state(states, is_tuple)
    kern = _kernel_backend(y_flat)
    offsets = [0]
    for size in fn.sizes:
        offsets.append(offsets[-1] + size)
    if method in MULTISTEP_ADAPTIVE_METHODS:
        loop = _bdf_loop(fn, kern, options, rtol, atol, offsets, sign, stats, norm_segments, tol_vectors)
    elif method in ADAPTIVE_METHODS:
        loop = _adaptive_loop(fn, kern, method, options, rtol, atol, offsets, sign, stats, norm_segments, tol_vectors)
    elif method == "scipy_solver":
        tols = (tol_vectors.rtol.cpu().numpy(), tol_vectors.atol.cpu().numpy()) if tol_vectors else (rtol, atol)
        loop = _scipy_loop(fn, options, *tols, stats, sign)
    else:
        tols = (tol_vectors.rtol, tol_vectors.atol) if tol_vectors else (rtol, atol)  # the Adams corrector's test
        loop = _fixed_loop(fn, kern, method, options, t_out, sign, stats, *tols, (func, y0, t))
    return Problem(fn, y_flat, t, t_out, sign, loop, stats, method, rtol, atol, offsets)


def _flat_state(states: list[Tensor], is_tuple: bool) -> Tensor:
    """The solver's flat real state (n,): the components concatenated, complex ones as real pairs."""
    if states[0].is_complex():  # resolve_conj: view_as_real refuses a lazily conjugated tensor
        states = [torch.view_as_real(s.resolve_conj()) for s in states]
    # contiguous(): reshape(-1) of a strided or expanded y0 can be a non-contiguous view, and the kernels
    # read n consecutive elements from its address (wrong values, or past the end of its storage).
    return torch.cat([s.reshape(-1) for s in states]) if len(states) > 1 else states[0].reshape(-1).contiguous()


def _scipy_loop(fn, options, rtol, atol, stats, sign) -> ScipyLoop:
    opts, _ = check.parse_options(options, ScipyOptions, "scipy_solver", extra=("dtype",))
    check_scipy_options(opts)
    return ScipyLoop(fn, opts, rtol, atol, stats, sign)


def integrate(problem: Problem, y0: Tensor | None = None, hooks: LoopHooks = NO_HOOKS) -> Tensor:
    """Runs the loop from ``y0`` (default: the problem's) and returns the flat outputs (T, n). ``hooks``: what
    the caller watches per step (:mod:`pyode._solvers.hooks`); ValueError if the loop never calls one."""
    y0 = problem.y0 if y0 is None else y0
    require(problem.loop, hooks)
    if len(problem.t_out) == 1:
        return y0.unsqueeze(0)
    return concatenate_outputs(problem.loop.integrate(y0, problem.t_out, hooks=hooks))


def concatenate_outputs(blocks: list[Tensor]) -> Tensor:
    """The (T, n) solution from the loop's (m, n) blocks, in a fresh tensor the caller owns (the C++ loop's
    single block is one already). Never a pooled buffer: a result the caller keeps only through a NumPy view
    or a storage alias must not be handed to a later solve."""
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks)


def integrate_until_event(problem: Problem, event_fn: Callable) -> tuple[float, Tensor]:
    """Integrates until ``event_fn`` changes sign. Returns the event time (solver direction) and the
    flat state there (n,). Adaptive methods step as usual; fixed-grid ones (RK and Adams) step by
    ``options['step_size']`` and locate the event on the step's interpolant (torchdiffeq's semantics)."""
    loop = problem.loop
    if not isinstance(loop, (AdaptiveLoop, BdfLoop, FixedGridLoop, AdamsLoop)):
        raise ValueError(f"event_fn is not supported with method={problem.method!r}; use an adaptive method "  # noqa: TRY004
                         "(e.g. 'dopri5') or a fixed-grid one with options['step_size']")
    events = EventLocator(event_fn, problem.fn, problem.atol)
    events.start(problem.t_out[0], problem.y0)
    # Like torchdiffeq, only t[0] (and the direction of t) matter: integrate until the event.
    if isinstance(loop, (AdaptiveLoop, BdfLoop)):
        y_event = loop.integrate(problem.y0, [problem.t_out[0], problem.t_out[0] + 1e30], events)[0]
    else:
        y_event = loop.until_event(problem.y0, problem.t_out[0], events)
    if events.event_t is None:
        raise ValueError("no event occurred; check that event_fn changes sign along the solution")
    problem.stats.status, problem.stats.t_reached = "event", problem.sign * events.event_t
    return events.event_t, y_event[0]


def combined_event_fn(event_fn: Callable, problem: Problem) -> Callable:
    """torchdiffeq's multi-valued events: an ``event_fn`` returning several values stops the solve where the
    first of them changes sign. Each is multiplied by its sign at ``t0`` (so all start positive) and their
    minimum is the event function. A one-element ``event_fn`` is returned unchanged."""
    with torch.no_grad():
        first = event_fn(problem.t[0].detach(), problem.fn.unflatten(problem.y0.detach()))
    if not isinstance(first, Tensor) or first.numel() <= 1:
        return event_fn
    signs = torch.sign(first.detach())

    def combined(t, y):
        return torch.min(event_fn(t, y) * signs)

    return combined
