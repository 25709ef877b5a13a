"""Continuous-depth models: the Neural ODE layer and the Augmented Neural ODE.

Replacing a stack of residual blocks by the ODE they discretise gives the Neural ODE (Chen et al. 2018,
"Neural ordinary differential equations"); every solve goes through :func:`pyode.odeint`, so any pyode
method and gradient mode can be used.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

import pyode
from pyode._solvers.problem import ADAPTIVE_METHODS

from ._checks import check_feature_shape, check_non_negative_int, check_positive_int, check_tensor

Tensor = torch.Tensor

__all__ = ["AugmentedNODE", "CountingField", "ODEBlock", "TimeMLP"]


class _Elementwise(nn.Module):
    """A plain function (e.g. ``torch.tanh``) as a module."""

    def __init__(self, fn: Callable[[Tensor], Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def _activation_factory(activation: object) -> Callable[[], nn.Module]:
    """A no-argument constructor of fresh activation modules from a module class (``nn.Tanh``), a module
    instance (``nn.Tanh()``, deep-copied per layer so layers never share parameters, e.g. of ``nn.PReLU``)
    or a plain function (``torch.tanh``). Anything else raises ``TypeError`` at construction."""
    if isinstance(activation, type):
        if issubclass(activation, nn.Module):
            return activation
    elif isinstance(activation, nn.Module):
        return lambda: copy.deepcopy(activation)
    elif callable(activation):
        return lambda: _Elementwise(activation)
    raise TypeError("activation must be an nn.Module class (nn.Tanh), an instance (nn.Tanh()) or a function "
                    f"(torch.tanh), got {activation!r}")


class TimeMLP(nn.Module):
    """Time-dependent MLP vector field ``f(t, y)``: ``[y, t] -> hidden -> ... -> dim``.

    ``t``: 0-dim tensor; ``y: (batch, dim) -> (batch, dim)``. Smooth activations (softplus, tanh) keep
    the field smooth, which adaptive solvers need for few steps. ``activation`` may be a module class
    (``nn.Tanh``), an instance (``nn.Tanh()``, copied per layer) or a function (``torch.tanh``).

    Args:
        dim (int): state dimension (input ``dim + 1`` with the time, output ``dim``).
        hidden (int): width of the hidden layers (default 64).
        n_hidden (int): number of hidden layers (default 2; 0 gives one linear map of ``[y, t]``).
        activation (type[nn.Module] | nn.Module | Callable): the hidden layers' activation (default
            ``nn.Softplus``).

    Raises:
        ValueError: a non-positive ``dim``/``hidden`` or a negative ``n_hidden``; ``y`` not ``(batch, dim)``
            in ``forward``.
        TypeError: an ``activation`` that is none of the three forms.

    Examples:
        >>> import torch
        >>> from pyode.nn import TimeMLP
        >>> f = TimeMLP(2, hidden=8)
        >>> f(torch.tensor(0.5), torch.zeros(5, 2)).shape
        torch.Size([5, 2])
    """

    def __init__(self, dim: int, hidden: int = 64, n_hidden: int = 2,
                 activation: type[nn.Module] | nn.Module | Callable[[Tensor], Tensor] = nn.Softplus):
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("hidden", hidden)
        check_non_negative_int("n_hidden", n_hidden)
        make_activation = _activation_factory(activation)
        self.state_shape = (dim,)
        widths = [dim + 1] + [hidden] * n_hidden
        layers: list[nn.Module] = []
        for w_in, w_out in itertools.pairwise(widths):
            layers += [nn.Linear(w_in, w_out), make_activation()]
        layers.append(nn.Linear(widths[-1], dim))
        self.net = nn.Sequential(*layers)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        check_feature_shape("y", y, self.state_shape)
        t_column = t.to(y).expand(y.shape[0], 1)
        return self.net(torch.cat([y, t_column], dim=1))


class CountingField(nn.Module):
    """Wraps ``func(t, y)`` to count evaluations (NFE) and check it returns a state-shaped tensor.

    Args:
        func (Callable[[Tensor, Tensor], Tensor]): the vector field ``func(t, y) -> dy/dt``, any shape.

    Attributes:
        nfe (int): evaluations so far (reset it by assigning 0).

    Raises:
        TypeError: ``func`` is not callable.
        ValueError: in ``forward``, ``func`` returned something not shaped like ``y``.

    Examples:
        >>> import torch, pyode
        >>> from pyode.nn import CountingField
        >>> f = CountingField(lambda t, y: -y)
        >>> t = torch.tensor([0.0, 1.0])
        >>> ys = pyode.odeint(f, torch.ones(2), t, method="rk4", options={"step_size": 0.25})
        >>> f.nfe  # 4 steps x 4 stages
        16
    """

    def __init__(self, func: Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        if not callable(func):
            raise TypeError(f"func must be callable as func(t, y) -> dy/dt, got {type(func).__name__}")
        self.func = func
        self.nfe = 0

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.nfe += 1
        dy = self.func(t, y)
        if not isinstance(dy, Tensor) or dy.shape != y.shape:
            got = tuple(dy.shape) if isinstance(dy, Tensor) else type(dy).__name__
            raise ValueError(f"func(t, y) must return dy/dt shaped like y {tuple(y.shape)}, got {got}")
        return dy


def _as_time_grid(t: Sequence[float] | Tensor) -> Tensor:
    """``t`` as a float64 ``(T,)`` tensor of finite times, ``T >= 2``; a clear error otherwise."""
    if isinstance(t, Tensor):
        t = t.detach().clone()
    else:
        try:  # a str is a sequence too, but of characters, not times
            t = torch.as_tensor(t, dtype=torch.float64) if not isinstance(t, (str, bytes)) else None
        except (TypeError, ValueError, RuntimeError):
            t = None
        if t is None:
            raise TypeError("t must be a 1-D sequence of float times or a tensor, e.g. (0.0, 1.0)")
    if t.dim() != 1 or t.numel() < 2:
        raise ValueError(f"t must be a 1-D sequence of at least 2 times, got shape {tuple(t.shape)}")
    return t


def _solver_kwargs(method: str | None, rtol: float | None, atol: float | None, options: dict | None,
                  gradient: str, default_rtol: float, default_atol: float, t: Tensor) -> dict:
    """Keyword arguments for :func:`pyode.odeint`, with the two silent traps of fixed-grid methods caught.

    A fixed-grid method (``rk4``, ``euler``, ``alf``, the Adams methods, ...) without
    ``options['step_size']`` (or ``grid_constructor``) steps on the output times only, e.g. one step over
    ``[0, 1]``: that raises ``ValueError``. ``rtol``/``atol`` passed with a fixed-grid method have no effect:
    that warns. ``None`` tolerances take the defaults for adaptive methods.
    """
    effective = method if method is not None else ("alf" if gradient == "reversible" else "dopri5")
    kwargs = {"method": method, "options": options, "gradient": gradient}
    if effective in ADAPTIVE_METHODS or effective not in pyode.METHODS:  # unknown: odeint names the choices
        kwargs["rtol"] = default_rtol if rtol is None else rtol
        kwargs["atol"] = default_atol if atol is None else atol
        return kwargs
    opts = options if isinstance(options, dict) else {}
    if opts.get("step_size") is None and opts.get("grid_constructor") is None:
        raise ValueError(
            f"method={effective!r} takes fixed steps, but options has no 'step_size': it would take one step per "
            f"interval of t ({t.numel() - 1} step(s) over [{float(t[0]):g}, {float(t[-1]):g}]). Pass "
            f"options={{'step_size': h}}, or an adaptive method such as 'dopri5' with rtol/atol")
    if rtol is not None or atol is not None:
        warnings.warn(f"rtol/atol are ignored by the fixed-grid method {effective!r}; its accuracy is set by "
                      f"options['step_size'] (use an adaptive method such as 'dopri5' for tolerances)",
                      UserWarning, stacklevel=3)
    return kwargs


class ODEBlock(nn.Module):
    """Neural ODE layer: ``x -> y(t[-1])`` where ``dy/dt = func(t, y)``, ``y(t[0]) = x`` (Chen et al. 2018).

    Args:
        func (nn.Module): the vector field, called as ``func(t, y)`` with ``y: (batch, *state_shape)``.
        t (Sequence[float] | Tensor): (T,) integration times, T >= 2 (default ``(0.0, 1.0)``);
            :meth:`trajectory` returns every one of them, ``forward`` the state at ``t[-1]``.
        method (str): a :data:`pyode.METHODS` name (default ``'dopri5'``).
        rtol (float | None): default None: 1e-3 for adaptive methods.
        atol (float | None): default None: 1e-4 for adaptive methods.
        options (dict | None): solver options for :func:`pyode.odeint` (default None). A fixed-grid method
            (``'rk4'``, ``'euler'``, ...) needs ``options={'step_size': h}`` (``ValueError`` otherwise: it
            would step on ``t`` alone) and ignores tolerances (``UserWarning`` if they are passed).
        gradient (str): ``'backprop'`` (default), ``'checkpoint'``, ``'adjoint'`` or ``'reversible'``.
        state_shape (Sequence[int] | None): per-sample shape of ``x`` (checked on entry); default None:
            ``func.state_shape`` if set, else unchecked.

    ``x: (batch, *state_shape) -> (batch, *state_shape)``. After each call ``nfe_forward`` holds the number
    of function evaluations of the solve; ``nfe_backward`` those spent by the following backward pass.

    Raises:
        ValueError: a fixed-grid method without ``step_size``, a bad ``t``, or ``x`` of the wrong shape.
        TypeError: ``func`` not callable, or ``t`` not a sequence of times.

    Examples:
        >>> import torch
        >>> from pyode.nn import ODEBlock, TimeMLP
        >>> block = ODEBlock(TimeMLP(2, hidden=8))
        >>> x = torch.randn(4, 2)
        >>> block(x).shape, block.nfe_forward > 0
        (torch.Size([4, 2]), True)
        >>> block.trajectory(x, torch.linspace(0.0, 1.0, 5)).shape
        torch.Size([5, 4, 2])
        >>> rk4 = ODEBlock(TimeMLP(2, hidden=8), method="rk4", options={"step_size": 0.25},
        ...                gradient="adjoint")
        >>> rk4(x).sum().backward()
        >>> rk4.nfe_forward, rk4.nfe_backward > 0
        (16, True)
    """

    def __init__(self, func: nn.Module, t: Sequence[float] | Tensor = (0.0, 1.0), *, method: str = "dopri5",
                 rtol: float | None = None, atol: float | None = None, options: dict | None = None,
                 gradient: str = "backprop", state_shape: Sequence[int] | None = None):
        super().__init__()
        self.field = CountingField(func)
        self.register_buffer("t", _as_time_grid(t), persistent=False)
        self.solver_kwargs = _solver_kwargs(method, rtol, atol, options, gradient, 1e-3, 1e-4, self.t)
        shape = state_shape if state_shape is not None else getattr(func, "state_shape", None)
        self.state_shape = None if shape is None else tuple(shape)
        self.nfe_forward = 0
        self._nfe_at_forward_end = 0

    @property
    def nfe_backward(self) -> int:
        """Evaluations since the last forward solve ended (the backward pass's, for adjoint-type modes)."""
        return self.field.nfe - self._nfe_at_forward_end

    def trajectory(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        """Solution at every time of ``t`` (default ``self.t``): ``(len(t), batch, *state)``.

        Args:
            x (Tensor): (batch, *state_shape) initial states.
            t (Tensor | None): (T,) times (default None: ``self.t``); ``t[0]`` is the initial time.

        Returns:
            Tensor: (T, batch, *state_shape).
        """
        check_tensor("x", x)
        if self.state_shape is not None:
            check_feature_shape("x", x, self.state_shape)
        t = self.t if t is None else _as_time_grid(t)
        start = self.field.nfe
        ys = pyode.odeint(self.field, x, t.to(x.dtype), **self.solver_kwargs)
        self._nfe_at_forward_end = self.field.nfe
        self.nfe_forward = self.field.nfe - start
        return ys

    def forward(self, x: Tensor) -> Tensor:
        return self.trajectory(x, self.t[[0, -1]])[-1]


class AugmentedNODE(ODEBlock):
    """Augmented Neural ODE (Dupont et al. 2019, "Augmented neural ODEs").

    Concatenates ``augment_dim`` zero channels to ``x`` along dim 1 before solving, so trajectories can
    move around each other instead of being forced to keep their order (a 1-D Neural ODE cannot map
    1 -> -1 and -1 -> 1). ``func`` acts on ``(batch, channels + augment_dim, ...)``.

    Returns the original ``channels`` by default, ``(batch, channels, ...)``, so a loss against a target
    shaped like the input lines up (a ``(batch, channels + augment_dim)`` output would broadcast silently
    against a ``(batch, 1)`` target). ``keep_augmented=True`` returns the whole augmented state, e.g. to
    feed a learned read-out layer.

    Args:
        func (nn.Module): the vector field on ``(batch, channels + augment_dim, ...)``.
        augment_dim (int): number of zero channels appended (>= 0).
        keep_augmented (bool): return all ``channels + augment_dim`` channels (default False).
        **kwargs: ``t``, ``method``, ``rtol``, ``atol``, ``options``, ``gradient``, ``state_shape`` (of
            ``func``'s augmented state) as for :class:`ODEBlock`.

    Raises:
        ValueError: ``func``'s state has no more channels than ``augment_dim``; ``x`` of the wrong shape.

    Examples:
        >>> import torch
        >>> from pyode.nn import AugmentedNODE, TimeMLP
        >>> model = AugmentedNODE(TimeMLP(3, hidden=8), augment_dim=2)
        >>> x = torch.randn(4, 1)
        >>> model(x).shape, model.augment(x).shape
        (torch.Size([4, 1]), torch.Size([4, 3]))
        >>> AugmentedNODE(TimeMLP(3, hidden=8), augment_dim=2, keep_augmented=True)(x).shape
        torch.Size([4, 3])
    """

    def __init__(self, func: nn.Module, augment_dim: int, *, keep_augmented: bool = False, **kwargs):
        self.augment_dim = check_non_negative_int("augment_dim", augment_dim)
        func_shape = kwargs.pop("state_shape", None) or getattr(func, "state_shape", None)
        super().__init__(func, **kwargs)
        self.state_shape = None  # the block checks the *input* shape itself (below)
        self.input_shape = None
        if func_shape is not None:
            if func_shape[0] <= augment_dim:
                raise ValueError(f"func's state has {func_shape[0]} channels; it must exceed augment_dim="
                                 f"{augment_dim} (func acts on the input channels plus the augmentation)")
            self.input_shape = (func_shape[0] - augment_dim, *func_shape[1:])
        self.keep_augmented = keep_augmented

    def augment(self, x: Tensor) -> Tensor:
        """``(batch, c, ...) -> (batch, c + augment_dim, ...)`` with zeros appended.

        Args:
            x (Tensor): (batch, c, ...) input.

        Returns:
            Tensor: (batch, c + augment_dim, ...).

        Raises:
            ValueError: ``x`` with fewer than 2 dimensions or of the wrong per-sample shape.
        """
        check_tensor("x", x)
        if self.input_shape is not None:
            check_feature_shape("x", x, self.input_shape)
        if x.dim() < 2:
            raise ValueError(f"x must be (batch, channels, ...), got shape {tuple(x.shape)}")
        zeros = x.new_zeros(x.shape[0], self.augment_dim, *x.shape[2:])
        return torch.cat([x, zeros], dim=1)

    def trajectory(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        ys = super().trajectory(self.augment(x), t)
        return ys if self.keep_augmented else ys[:, :, : x.shape[1]]
