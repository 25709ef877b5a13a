"""A native right-hand side in pyode's torch API: :func:`pyode.odeint` / :func:`pyode.solve` recognise it and
run the whole solve in the C++ loop (forward only; there is no autograd through compiled code)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_GRADIENT_HELP = ("gradients exist for torch funcs: pyode.solve/odeint with gradient='backprop', 'adjoint', "
                  "'checkpoint' or 'reversible'; write the right-hand side as a torch func (e.g. a "
                  "torch.nn.Module) for them, or detach the inputs to solve natively without gradients")


@dataclass(frozen=True)
class NativeRHS:
    """A right-hand side ``func(t, y, dy, p)`` (numba nopython subset) with its parameters, for pyode's torch
    API. ``params``: None or a (k,) array/tensor of the ODE's parameters; ``jac``: None or ``jac(t, y, J, p)``
    writing the (n, n) Jacobian, for the stiff methods (rodas5, kvaerno5, kvaerno3)."""

    func: Callable
    params: object = None
    jac: Callable | None = None

    def __call__(self, t, y):
        raise TypeError("a pyode.native.rhs(...) right-hand side is compiled code: pass it to pyode.odeint / "
                        "pyode.solve / pyode.native.solve instead of calling it with torch tensors")


def rhs(func: Callable | None = None, *, params=None, jac=None):
    """Marks ``func(t, y, dy, p)`` as a native right-hand side (usable as ``@pyode.native.rhs`` or
    ``pyode.native.rhs(f, params=p)``); :func:`pyode.odeint` then runs it in compiled code. ``jac``: an optional
    compiled Jacobian ``jac(t, y, J, p)`` for the stiff methods."""
    if func is None:
        return lambda f: NativeRHS(f, params, jac)
    return NativeRHS(func, params, jac)


def is_native_rhs(func) -> bool:
    """True for a :class:`NativeRHS`, a numba cfunc or a cffi function pointer (cheap: imports nothing)."""
    if isinstance(func, NativeRHS):
        return True
    cls = type(func)
    module = cls.__module__ or ""
    return (module.startswith("numba") and cls.__name__ == "CFunc") or module.startswith("_cffi_backend")


def _check_no_gradients(y0, params, gradient: str, adjoint_kwargs: dict) -> None:
    import torch

    wants = [name for name, x in (("y0", y0), ("params", params))
             if isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled()]
    if wants:
        raise ValueError(f"{' and '.join(wants)} require grad, but a native right-hand side has no autograd; "
                         + _GRADIENT_HELP)
    if gradient != "backprop" or any(v is not None for v in adjoint_kwargs.values()):
        raise ValueError(f"gradient={gradient!r} (or adjoint arguments) was given with a native right-hand side, "
                         "which has no autograd; " + _GRADIENT_HELP)


def native_solve(func, y0, t, *, rtol: float = 1e-7, atol: float = 1e-9, method: str | None = None,
                 options: dict | None = None, event_fn=None, gradient: str = "backprop", **adjoint_kwargs):
    """:func:`pyode.solve` for a native right-hand side: returns a :class:`pyode.Solution` of torch tensors."""
    import torch

    from pyode.native._solve import solve
    from pyode.solution import Solution, SolverStats

    params = func.params if isinstance(func, NativeRHS) else None
    jac = func.jac if isinstance(func, NativeRHS) else None
    inner = func.func if isinstance(func, NativeRHS) else func
    _check_no_gradients(y0, params, gradient, adjoint_kwargs)
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"y0 must be a torch.Tensor for pyode.odeint/solve (a tuple state is not supported with a "
                        f"native right-hand side), got {type(y0).__name__}; or call pyode.native.solve")
    t = torch.as_tensor(t, dtype=torch.float64) if not isinstance(t, torch.Tensor) else t
    times = t.detach()
    if event_fn is not None:  # like pyode: only t[0] and the direction of t matter, integrate until the event
        direction = -1.0 if t.numel() > 1 and float(t[1]) < float(t[0]) else 1.0
        times = torch.stack([t[0].detach().double(), t[0].detach().double() + direction * 1e30])
    if isinstance(params, torch.Tensor):
        params = params.detach()
    sol = solve(inner, y0.detach().reshape(-1), times.cpu().double(), params, method=method or "dopri5",
                rtol=rtol, atol=atol, options=options, event=event_fn, raise_on_failure=True, jac=jac)
    stats = SolverStats(nfe=int(sol.n_feval[0]), n_accepted=int(sol.n_accepted[0]),
                        n_rejected=int(sol.n_rejected[0]), t_reached=float(sol.t_reached[0]))
    ys = sol.ys.to(y0.dtype)
    if event_fn is None:
        return Solution(ys.reshape(len(times), *y0.shape), t, stats)
    stats.status = "event"
    event_t = torch.tensor(float(sol.event_t[0]), dtype=t.dtype)
    y_event = sol.y_event.to(y0.dtype).reshape(y0.shape)
    return Solution(torch.stack([y0.detach(), y_event]), torch.stack([t[0].detach(), event_t]), stats, event_t)


def native_odeint(func, y0, t, **kwargs):
    """:func:`pyode.odeint` for a native right-hand side: ys, or (event_t, ys) with an event."""
    sol = native_solve(func, y0, t, **kwargs)
    return sol.ys if kwargs.get("event_fn") is None else (sol.event_t, sol.ys)
