"""pyode's exceptions. Solver failures carry the time reached and the reason."""

from __future__ import annotations


class PyodeError(Exception):
    """Base class of every error pyode raises on purpose.

    Examples:
        >>> import pyode
        >>> issubclass(pyode.ODESolverError, pyode.PyodeError)
        True
        >>> issubclass(pyode.BackendUnavailableError, pyode.PyodeError)
        True
    """


class BackendUnavailableError(PyodeError, RuntimeError):
    """A kernel backend was requested (``PYODE_BACKEND``) but is not built or cannot load.

    Also a ``RuntimeError``. :func:`pyode.backend_info` says which backends load and why not.

    Examples:
        >>> import pyode
        >>> issubclass(pyode.BackendUnavailableError, RuntimeError)
        True
    """


class ODESolverError(PyodeError, RuntimeError):
    """The solver could not reach the requested time.

    Attributes:
        t_reached (float): the last time the solver reached (in the caller's time direction).
        reason (str): a short machine-readable cause: ``"max_num_steps"``, ``"step_underflow"``,
            ``"non_finite"``, and for implicit methods ``"newton"``, ``"singular_jacobian"``,
            ``"non_finite_jacobian"``.
        message (str): the cause in words, without the time (``str(exc)`` adds it).

    Args:
        reason (str): the machine-readable cause (stored as ``reason``).
        t_reached (float): the last time reached (stored as a float).
        message (str): the cause in words, without the time.

    Examples:
        Catch every solver failure at once; a subclass names the cause:

        >>> import torch, pyode
        >>> try:
        ...     pyode.odeint(lambda t, y: -y, torch.ones(1, dtype=torch.float64),
        ...                  torch.tensor([0.0, 10.0], dtype=torch.float64), options={"max_num_steps": 2})
        ... except pyode.ODESolverError as exc:
        ...     print(type(exc).__name__, exc.reason, 0.0 < exc.t_reached < 10.0)
        MaxStepsError max_num_steps True
    """

    def __init__(self, reason: str, t_reached: float, message: str):
        self.reason, self.message = reason, message
        self.t_reached = float(t_reached)
        super().__init__(f"{message} (t reached = {self.t_reached:.10g})")


class MaxStepsError(ODESolverError):
    """More than ``options['max_num_steps']`` steps were needed (``reason == "max_num_steps"``).

    Examples:
        >>> import torch, pyode
        >>> t = torch.tensor([0.0, 10.0], dtype=torch.float64)
        >>> try:
        ...     pyode.odeint(lambda t, y: -y, torch.ones(1, dtype=torch.float64), t,
        ...                  options={"max_num_steps": 2})
        ... except pyode.MaxStepsError as exc:
        ...     print(exc.message)  # doctest: +ELLIPSIS
        max_num_steps=2 exceeded; raise options['max_num_steps'] or loosen rtol/atol ...
    """


class StepSizeUnderflowError(ODESolverError):
    """The adaptive step size fell below the resolution of the time variable (``reason ==
    "step_underflow"``), e.g. at a finite-time blow-up.

    Examples:
        ``y' = y**2`` from ``y(0) = 1`` blows up at ``t = 1``:

        >>> import torch, pyode
        >>> try:
        ...     pyode.odeint(lambda t, y: y**2, torch.ones(1, dtype=torch.float64),
        ...                  torch.tensor([0.0, 2.0], dtype=torch.float64))
        ... except pyode.StepSizeUnderflowError as exc:
        ...     print(exc.reason, round(exc.t_reached, 3))
        step_underflow 1.0
    """


class NonFiniteStateError(ODESolverError):
    """The state or its derivative became NaN or infinite (``reason == "non_finite"``).

    Examples:
        >>> import torch, pyode
        >>> try:
        ...     pyode.odeint(lambda t, y: y * float("nan"), torch.ones(1, dtype=torch.float64),
        ...                  torch.tensor([0.0, 1.0], dtype=torch.float64))
        ... except pyode.NonFiniteStateError as exc:
        ...     print(exc.reason, exc.t_reached)
        non_finite 0.0
    """


class ImplicitSolveError(ODESolverError):
    """The stage equations of an implicit method could not be solved: Newton did not converge within
    ``options['max_iters']`` or diverged at the minimum step, or its Jacobian was singular or not finite.

    ``reason`` is ``"newton"``, ``"singular_jacobian"`` or ``"non_finite_jacobian"``.

    Examples:
        >>> import pyode
        >>> exc = pyode.ImplicitSolveError("newton", 0.5, "Newton did not converge")
        >>> str(exc), exc.message, exc.t_reached
        ('Newton did not converge (t reached = 0.5)', 'Newton did not converge', 0.5)
        >>> isinstance(exc, pyode.ODESolverError)
        True
    """
