"""Native whole solves: a compiled right-hand side (numba ``cfunc`` or a cffi pointer) runs through pyode's
C++ integration loop (``csrc/include/pyode/core``), one trajectory or an ensemble on threads.

- :func:`solve`: from Python (NumPy or CPU torch in, the same out).
- :mod:`pyode.native.nopython`: the C entry point for numba's ``@njit`` code (via cffi).
- :func:`rhs`: marks a numba-compilable function so :func:`pyode.odeint` / :func:`pyode.solve` run it natively.
"""

from pyode.native._compile import NativeFunction, compile_event, compile_rhs
from pyode.native._solve import STATUS_NAMES, NativeSolution, solve
from pyode.native._torch import NativeRHS, rhs

__all__ = ["STATUS_NAMES", "NativeFunction", "NativeRHS", "NativeSolution", "compile_event", "compile_rhs", "rhs",
           "solve"]
