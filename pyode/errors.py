"""pyode's exceptions. Solver failures carry the time reached and the reason."""

from __future__ import annotations


class PyodeError(Exception):
    """Base class of every error pyode raises on purpose."""


class BackendUnavailableError(PyodeError, RuntimeError):
    """A kernel backend was requested (``PYODE_BACKEND``) but is not built or cannot load."""


class ODESolverError(PyodeError, RuntimeError):
    """The solver could not reach the requested time.

    Attributes:
        t_reached: the last time the solver reached (in the caller's time direction).
        reason: a short machine-readable cause: ``"max_num_steps"``, ``"step_underflow"``,
            ``"non_finite"``, and for implicit methods ``"newton"``, ``"singular_jacobian"``,
            ``"non_finite_jacobian"``.
        message: the cause in words, without the time (``str(exc)`` adds it).
    """

    def __init__(self, reason: str, t_reached: float, message: str):
        self.reason, self.message = reason, message
        self.t_reached = float(t_reached)
        super().__init__(f"{message} (t reached = {self.t_reached:.10g})")


class MaxStepsError(ODESolverError):
    """More than ``options['max_num_steps']`` steps were needed."""


class StepSizeUnderflowError(ODESolverError):
    """The adaptive step size fell below the resolution of the time variable."""


class NonFiniteStateError(ODESolverError):
    """The state or its derivative became NaN or infinite."""


class ImplicitSolveError(ODESolverError):
    """The stage equations of an implicit method could not be solved: Newton did not converge within
    ``options['max_iters']`` or diverged at the minimum step, or its Jacobian was singular or not finite."""
