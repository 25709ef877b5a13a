"""Right-hand sides and events as C function pointers: a plain Python function compiled once with numba
(``numba.cfunc``, cached per function and sizes), or an existing numba cfunc / cffi function pointer whose
signature is checked before it is ever called."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

RHS_C = "void(double, double *, double *, double *)"
EVENT_C = "double(double, double *, double *)"
JAC_C = "void(double t, const double *y, double *J, const double *p)"
_POINTER_TYPES = {"rhs": "void(*)(double, double *, double *, double *)",
                  "jac": "void(*)(double, double *, double *, double *)",
                  "event": "double(*)(double, double *, double *)"}
_C_SIGNATURES = {"rhs": RHS_C, "jac": JAC_C, "event": EVENT_C}
_CALLS = {"rhs": "rhs(t, y, dy, p) writing dy in place", "event": "event(t, y, p) -> float",
          "jac": "jac(t, y, J, p) writing the (n, n) Jacobian J[i, j] = d f_i / d y_j in place"}
_CACHE: dict = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class NativeFunction:
    """A compiled ``rhs(t, y, dy, p)`` or ``event(t, y, p) -> float`` with the C signature of
    ``pyode_native.h``.

    Attributes:
        address: the C function pointer; kind: "rhs" or "event"; name: for messages;
        py_func: the Python source function (None for a foreign pointer); keepalive: what owns the code.
    """

    address: int
    kind: str
    name: str
    py_func: Callable | None
    keepalive: object


def _name(func) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or type(func).__name__


def _signatures():
    from numba import types

    ptr = types.CPointer(types.float64)
    return {"rhs": types.void(types.float64, ptr, ptr, ptr), "jac": types.void(types.float64, ptr, ptr, ptr),
            "event": types.float64(types.float64, ptr, ptr)}


def _from_numba_cfunc(func, kind: str) -> NativeFunction:
    expected = _signatures()[kind]
    if func._sig != expected:
        raise TypeError(f"pyode.native: the numba cfunc {_name(func)!r} has signature {func._sig}, but {kind} must "
                        f"be {expected} (C: {_C_SIGNATURES[kind]}); declare it as "
                        f"@numba.cfunc({str(expected)!r}) or pass the plain Python function")
    return NativeFunction(func.address, kind, _name(func), getattr(func, "__wrapped__", None), func)


def _from_cffi(func, kind: str) -> NativeFunction:
    import cffi

    ffi = cffi.FFI()
    ctype = ffi.typeof(func)
    want = ffi.typeof(_POINTER_TYPES[kind])
    if ctype.kind != "function" or _plain(ctype) != _plain(want):
        raise TypeError(f"pyode.native: the cffi object for {kind} has C type {ctype.cname!r}; it must be a function "
                        f"pointer of type {want.cname!r}")
    return NativeFunction(int(ffi.cast("uintptr_t", func)), kind, ctype.cname, None, func)


def _plain(ctype) -> tuple:
    """A function pointer type without const qualifiers: (result, args)."""
    return ctype.result.cname, tuple(arg.cname.replace("const ", "") for arg in ctype.args)


def _compile(func, kind: str, n: int, k: int) -> NativeFunction:
    """Compiles ``func`` in nopython mode behind a C wrapper that views the pointers as arrays (n,) / (k,)
    (a Jacobian as (n, n), row-major)."""
    import numba
    from numba import carray
    from numba.core.errors import NumbaError

    jitted = func if isinstance(func, numba.core.dispatcher.Dispatcher) else numba.njit(func)
    sig = _signatures()[kind]
    try:
        if kind == "rhs":
            def wrapper(t, y, dy, p):
                jitted(t, carray(y, (n,)), carray(dy, (n,)), carray(p, (k,)))
        elif kind == "jac":
            def wrapper(t, y, J, p):
                jitted(t, carray(y, (n,)), carray(J, (n, n)), carray(p, (k,)))
        else:
            def wrapper(t, y, p):
                return jitted(t, carray(y, (n,)), carray(p, (k,)))
        cf = numba.cfunc(sig, nopython=True)(wrapper)
    except NumbaError as exc:
        reason = str(exc).strip().splitlines()
        short = "\n".join(reason[:12])
        call = _CALLS[kind]
        raise TypeError(f"pyode.native: numba could not compile {kind} {_name(func)!r} in nopython mode (as "
                        f"{call}, y: ({n},), p: ({k},) float64 arrays). numba says:\n{short}") from None
    py = getattr(func, "py_func", func)
    return NativeFunction(cf.address, kind, _name(func), py, cf)


def native_function(func, kind: str, n: int, k: int) -> NativeFunction:
    """``func`` as a :class:`NativeFunction` for a state of size ``n`` and ``k`` parameters.

    Accepts a :class:`NativeFunction`, a numba cfunc, a cffi function pointer, a numba ``njit`` function or a
    plain Python function (compiled once per (function, n, k) and cached for the process)."""
    if isinstance(func, NativeFunction):
        if func.kind != kind:
            raise TypeError(f"pyode.native: {func.name!r} was compiled as {func.kind}, not as {kind}")
        return func
    module = type(func).__module__ or ""
    if module.startswith("numba") and type(func).__name__ == "CFunc":
        return _from_numba_cfunc(func, kind)
    if module.startswith("_cffi_backend"):
        return _from_cffi(func, kind)
    if not callable(func):
        raise TypeError(f"pyode.native: {kind} must be a Python function (numba nopython subset), a numba cfunc or "
                        f"a cffi function pointer, got {type(func).__name__}")
    key = (func, kind, n, k)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is None:
            hit = _CACHE[key] = _compile(func, kind, n, k)
    return hit


def compile_rhs(func, n: int, k: int = 0) -> NativeFunction:
    """Compiles ``rhs(t, y, dy, p)`` (writes ``dy`` in place; y, dy: (n,), p: (k,)) to a C function pointer."""
    return native_function(func, "rhs", int(n), int(k))


def compile_event(func, n: int, k: int = 0) -> NativeFunction:
    """Compiles ``event(t, y, p) -> float`` (the solve stops where it changes sign) to a C function pointer."""
    return native_function(func, "event", int(n), int(k))


def compile_jac(func, n: int, k: int = 0) -> NativeFunction:
    """Compiles ``jac(t, y, J, p)`` (writes the (n, n) Jacobian ``J[i, j] = d f_i / d y_j`` in place) to a C
    function pointer, for the stiff methods of :func:`pyode.native.solve`."""
    return native_function(func, "jac", int(n), int(k))
