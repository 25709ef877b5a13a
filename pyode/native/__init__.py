"""Native whole solves: a compiled right-hand side runs through pyode's C++ integration loop
(``csrc/include/pyode/core``, a header-only loop over R independent rows), one trajectory or an ensemble on
threads, with the GIL released and without calling Python.

- :func:`solve`: ``rhs(t, y, dy, p)`` in numba's nopython subset (compiled once with ``numba.cfunc``), a
  numba cfunc or a cffi function pointer; NumPy or CPU torch in, the same kind out. Every explicit method
  of pyode, its PID controller, initial step and dense output (the same steps as ``pyode.solve``), terminal
  events, step_t/jump_t, per-trajectory status; ``device="cuda"`` runs a numba CUDA ensemble. The stiff
  methods rodas5 (Rosenbrock) and kvaerno3/kvaerno5 (ESDIRK) run in the same loop, with a Jacobian from a
  compiled ``jac(t, y, J, p)`` or forward differences and a dense LU.
- :mod:`pyode.native.nopython`: the C entry point for ``@numba.njit`` code (through cffi).
- :mod:`pyode.native.distributed`: ensembles in chunks over a Dask cluster.
- :func:`rhs`: marks a function so that :func:`pyode.odeint` / :func:`pyode.solve` run it natively (no autograd).

The C ABI is ``csrc/include/pyode/pyode_native.h`` (library ``libpyode_native.so``, next to the package).
"""

from pyode.native._compile import NativeFunction, compile_event, compile_jac, compile_rhs
from pyode.native._solve import STATUS_NAMES, NativeSolution, solve
from pyode.native._torch import NativeRHS, rhs

__all__ = ["STATUS_NAMES", "NativeFunction", "NativeRHS", "NativeSolution", "compile_event", "compile_jac",
           "compile_rhs", "rhs",
           "solve"]
