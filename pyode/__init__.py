"""pyode: fast ODE solvers, gradients and models for deep learning on PyTorch."""

from pyode._kernels import backend_info
from pyode._kernels import library as _library  # noqa: F401  (registers torch.ops.pyode.lincomb, ~2 ms)
from pyode._solvers.perturb import Perturb
from pyode._solvers.scratch import empty_cache
from pyode._version import __version__ as __version__
from pyode.errors import (
    BackendUnavailableError,
    ImplicitSolveError,
    MaxStepsError,
    NonFiniteStateError,
    ODESolverError,
    PyodeError,
    StepSizeUnderflowError,
)
from pyode.odeint import GRADIENT_MODES, METHODS, odeint, odeint_adjoint, odeint_event, solve
from pyode.solution import Solution, SolverStats

__all__ = [
    "GRADIENT_MODES",
    "METHODS",
    "BackendUnavailableError",
    "ImplicitSolveError",
    "MaxStepsError",
    "NonFiniteStateError",
    "ODESolverError",
    "Perturb",
    "PyodeError",
    "Solution",
    "SolverStats",
    "StepSizeUnderflowError",
    "backend_info",
    "empty_cache",
    "odeint",
    "odeint_adjoint",
    "odeint_event",
    "solve",
]
