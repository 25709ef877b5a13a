"""Adversarial training as a differential game: YOPO-m-n, the PGD-k baseline and a PGD evaluator.

YOPO ("You Only Propagate Once", Zhang, Zhang, Lu, Zhu & Dong, NeurIPS 2019) views adversarial
training through Pontryagin's maximum principle (Li, Chen, Tai & E, JMLR 2018): the perturbation η
enters only through the first layer ``z = f_0(x + η)``, so by the PMP the input gradient is
``∇_η ℓ = ∇_η [p · f_0(x + η)]`` with ``p = ∂ℓ/∂z`` (the costate at layer one, up to sign). YOPO-m-n
does per batch m full forward/backward passes (each also accumulating the weight gradient) and after
each, n cheap perturbation updates that only back-propagate through ``f_0`` with ``p`` frozen.
PGD-k (Madry et al., 2018) needs k + 1 full passes per batch.

Perturbations are L∞-bounded, ``‖η‖_∞ <= eps``, and ``x + η`` stays inside ``input_range``.
Shapes: ``x, η: (batch, *input_shape)``, ``y: (batch,)`` class indices for the default loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_count, check_number

LossFn = Callable[[Tensor, Tensor], Tensor]


def _check_eps(eps: float) -> float:
    return check_number("eps", eps, minimum=0.0, hint=" (the L-infinity radius)")


def _check_step_size(step_size: float | None, default: float) -> float:
    if step_size is None:
        return default
    return check_number("step_size", step_size, minimum=0.0, hint=" (or None for the default)")


def project_perturbation(x: Tensor, eta: Tensor, eps: float,
                         input_range: tuple[float, float] | None = (0.0, 1.0)) -> Tensor:
    """Project ``η`` onto ``{‖η‖_∞ <= eps, x + η in input_range}``; ``x, η: (batch, *shape)``.

    Args:
        x (Tensor): (batch, *shape) clean inputs.
        eta (Tensor): (batch, *shape) perturbation.
        eps (float): L∞ radius.
        input_range (tuple[float, float] | None): valid input interval (default ``(0.0, 1.0)``; None: no
            bound).

    Returns:
        Tensor: (batch, *shape) the projected perturbation, detached.

    Raises:
        ValueError: ``eta`` and ``x`` of different shapes.

    Examples:
        >>> import torch
        >>> from pyode.control import project_perturbation
        >>> project_perturbation(torch.tensor([[0.95, 0.5]]), torch.tensor([[0.2, -0.3]]), eps=0.1)
        tensor([[ 0.0500, -0.1000]])
    """
    if eta.shape != x.shape:
        raise ValueError(f"perturbation has shape {tuple(eta.shape)} but input x has shape "
                         f"{tuple(x.shape)}; they must match")
    eta = eta.clamp(-eps, eps)
    if input_range is not None:
        eta = (x + eta).clamp(*input_range) - x
    return eta.detach()


def random_perturbation(x: Tensor, eps: float, input_range: tuple[float, float] | None = (0.0, 1.0),
                        generator: torch.Generator | None = None) -> Tensor:
    """Uniform random start in the ε-ball (projected into ``input_range``), shape of ``x``.

    Args:
        x (Tensor): (batch, *shape) clean inputs.
        eps (float): L∞ radius.
        input_range (tuple[float, float] | None): valid input interval (default ``(0.0, 1.0)``).
        generator (torch.Generator | None): random generator (default None: torch's global one).

    Returns:
        Tensor: (batch, *shape) perturbation ``η``, detached.

    Examples:
        >>> import torch
        >>> from pyode.control import random_perturbation
        >>> x = torch.rand(8, 4)
        >>> eta = random_perturbation(x, 0.1)
        >>> bool(eta.abs().max() <= 0.1), bool(((x + eta >= 0) & (x + eta <= 1)).all())
        (True, True)
    """
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return project_perturbation(x, (2 * noise - 1) * eps, eps, input_range)


def pgd_step(model: nn.Module, x: Tensor, eta: Tensor, y: Tensor, eps: float, step_size: float,
             loss_fn: LossFn = F.cross_entropy,
             input_range: tuple[float, float] | None = (0.0, 1.0)) -> Tensor:
    """One PGD ascent step ``η <- Proj(η + step_size · sign(∇_η ℓ(model(x + η), y)))``.

    The gradient comes from a full forward/backward pass; parameter gradients are not touched.

    Args:
        model (nn.Module): classifier ``(batch, *shape) -> (batch, classes)``.
        x (Tensor): (batch, *shape) clean inputs.
        eta (Tensor): (batch, *shape) current perturbation.
        y (Tensor): (batch,) labels (for the default loss).
        eps (float): L∞ radius.
        step_size (float): ascent step.
        loss_fn (Callable[[Tensor, Tensor], Tensor]): ``loss_fn(logits, y)`` (default ``F.cross_entropy``).
        input_range (tuple[float, float] | None): valid input interval (default ``(0.0, 1.0)``).

    Returns:
        Tensor: (batch, *shape) the updated perturbation, detached.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import pgd_step
        >>> x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
        >>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        >>> eta = pgd_step(model, x, torch.zeros_like(x), y, eps=0.1, step_size=0.05)
        >>> eta.shape, round(float(eta.abs().max()), 4)  # one sign step of 0.05
        (torch.Size([8, 4]), 0.05)
    """
    eta = eta.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model(x + eta), y)
        (grad,) = torch.autograd.grad(loss, eta)
    return project_perturbation(x, eta.detach() + step_size * grad.sign(), eps, input_range)


def yopo_step(first_layer: nn.Module, x: Tensor, eta: Tensor, costate: Tensor, eps: float,
              step_size: float, input_range: tuple[float, float] | None = (0.0, 1.0)) -> Tensor:
    """YOPO's cheap perturbation update, back-propagating through the first layer only.

    ``η <- Proj(η + step_size · sign(∇_η [costate · f_0(x + η)]))`` with ``costate = ∂ℓ/∂z: (batch, *z_shape)``
    frozen from the last full pass (Zhang et al., NeurIPS 2019). When ``costate`` was computed at this
    same ``η`` the step equals :func:`pgd_step` exactly (the PMP identity).

    Args:
        first_layer (nn.Module): f_0, ``(batch, *shape) -> (batch, *z_shape)``.
        x (Tensor): (batch, *shape) clean inputs.
        eta (Tensor): (batch, *shape) current perturbation.
        costate (Tensor): (batch, *z_shape) ``∂ℓ/∂z`` from the last full pass.
        eps (float): L∞ radius.
        step_size (float): ascent step.
        input_range (tuple[float, float] | None): valid input interval (default ``(0.0, 1.0)``).

    Returns:
        Tensor: (batch, *shape) the updated perturbation, detached.

    Raises:
        ValueError: ``costate`` not shaped like the first layer's output.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> import torch.nn.functional as F
        >>> from pyode.control import pgd_step, yopo_step
        >>> x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
        >>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        >>> z = model[:1](x).detach().requires_grad_(True)
        >>> (costate,) = torch.autograd.grad(F.cross_entropy(model[1:](z), y), z)
        >>> eta = yopo_step(model[:1], x, torch.zeros_like(x), costate, eps=0.1, step_size=0.05)
        >>> torch.equal(eta, pgd_step(model, x, torch.zeros_like(x), y, eps=0.1, step_size=0.05))
        True
    """
    eta = eta.detach().requires_grad_(True)
    with torch.enable_grad():
        z = first_layer(x + eta)
        if costate.shape != z.shape:
            raise ValueError(f"costate has shape {tuple(costate.shape)} but the first layer's output has "
                             f"shape {tuple(z.shape)}; they must match")
        (grad,) = torch.autograd.grad((costate * z).sum(), eta)
    return project_perturbation(x, eta.detach() + step_size * grad.sign(), eps, input_range)


def pgd_attack(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int = 20,
               step_size: float | None = None, loss_fn: LossFn = F.cross_entropy,
               input_range: tuple[float, float] | None = (0.0, 1.0), random_start: bool = True,
               generator: torch.Generator | None = None) -> Tensor:
    """L∞ PGD-``steps`` attack (Madry et al., 2018); returns ``x_adv = x + η: (batch, *shape)``, detached.

    ``step_size`` defaults to ``2.5 · eps / steps``.

    Args:
        model (nn.Module): classifier ``(batch, *shape) -> (batch, classes)``.
        x (Tensor): (batch, *shape) clean inputs.
        y (Tensor): (batch,) labels (for the default loss).
        eps (float): L∞ radius (> 0).
        steps (int): ascent steps (>= 1, default 20).
        step_size (float | None): default None: ``2.5 · eps / steps``.
        loss_fn (Callable[[Tensor, Tensor], Tensor]): ``loss_fn(logits, y)`` (default ``F.cross_entropy``).
        input_range (tuple[float, float] | None): valid input interval (default ``(0.0, 1.0)``).
        random_start (bool): start from :func:`random_perturbation` (default True) instead of ``η = 0``.
        generator (torch.Generator | None): for the random start (default None).

    Returns:
        Tensor: (batch, *shape) adversarial inputs, detached.

    Raises:
        ValueError: ``eps <= 0``, ``steps < 1`` or ``step_size <= 0``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import pgd_attack
        >>> x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
        >>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        >>> x_adv = pgd_attack(model, x, y, eps=0.1, steps=5)
        >>> x_adv.shape, bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
        (torch.Size([8, 4]), True)
    """
    eps = _check_eps(eps)
    steps = check_count("steps", steps)
    step_size = _check_step_size(step_size, 2.5 * eps / steps)
    x = x.detach()
    eta = random_perturbation(x, eps, input_range, generator) if random_start else torch.zeros_like(x)
    for _ in range(steps):
        eta = pgd_step(model, x, eta, y, eps, step_size, loss_fn, input_range)
    return (x + eta).detach()


@torch.no_grad()
def _count_correct(model: nn.Module, x: Tensor, y: Tensor) -> int:
    return int((model(x).argmax(dim=1) == y).sum())


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int = 20,
                    step_size: float | None = None, batch_size: int = 512,
                    input_range: tuple[float, float] | None = (0.0, 1.0),
                    generator: torch.Generator | None = None) -> tuple[float, float]:
    """PGD evaluator: ``(clean accuracy, accuracy under PGD-steps)`` in [0, 1] (default PGD-20).

    Runs in eval mode (restoring the training mode after), ``batch_size`` samples at a time.

    Args:
        model (nn.Module): classifier ``(batch, *shape) -> (batch, classes)``.
        x (Tensor): (n, *shape) inputs.
        y (Tensor): (n,) labels.
        eps (float): L∞ radius (> 0).
        steps (int): PGD steps (default 20).
        step_size (float | None): default None: ``2.5 · eps / steps``.
        batch_size (int): samples per attack batch (default 512).
        input_range (tuple[float, float] | None): valid input interval (default ``(0.0, 1.0)``).
        generator (torch.Generator | None): for the random starts (default None).

    Returns:
        tuple[float, float]: clean and robust accuracy.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import robust_accuracy
        >>> x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
        >>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        >>> clean, robust = robust_accuracy(model, x, y, eps=0.1, steps=5)
        >>> 0.0 <= robust <= clean <= 1.0
        True
    """
    check_count("batch_size", batch_size)
    was_training = model.training
    model.eval()
    clean = robust = 0
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        clean += _count_correct(model, xb, yb)
        x_adv = pgd_attack(model, xb, yb, eps, steps, step_size, input_range=input_range,
                           generator=generator)
        robust += _count_correct(model, x_adv, yb)
    model.train(was_training)
    return clean / x.shape[0], robust / x.shape[0]


class _AdversarialTrainer:
    """Shared bookkeeping: counts full forward/backward passes and first-layer-only passes."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, eps: float,
                 loss_fn: LossFn, input_range: tuple[float, float] | None,
                 generator: torch.Generator | None):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.model = model
        self.optimizer = optimizer
        self.eps = _check_eps(eps)
        self.loss_fn = loss_fn
        self.input_range = input_range
        self.generator = generator
        self.full_passes = 0
        self.first_layer_passes = 0

    def train_batch(self, x: Tensor, y: Tensor) -> float:
        """One adversarial weight update on ``x: (batch, *shape)``, ``y``; returns the mean loss."""
        raise NotImplementedError

    def train_epoch(self, batches: Iterable[tuple[Tensor, Tensor]]) -> float:
        """Run :meth:`train_batch` over ``(x, y)`` batches; returns the mean training loss."""
        self.model.train()
        losses = [self.train_batch(x, y) for x, y in batches]
        return sum(losses) / max(len(losses), 1)


class PGDTrainer(_AdversarialTrainer):
    """PGD-k adversarial training (Madry et al., 2018): k + 1 full passes per batch.

    Args:
        model (nn.Module): any classifier ``(batch, *shape) -> (batch, classes)``.
        optimizer (torch.optim.Optimizer): optimizer over ``model``'s parameters.
        eps (float): L∞ radius (> 0).
        steps (int): k >= 1 attack steps per batch (default 10).
        step_size (float | None): attack step; default None: ``2.5 · eps / steps``.
        loss_fn (Callable[[Tensor, Tensor], Tensor]): ``loss_fn(logits, y)`` (default ``F.cross_entropy``).
        input_range (tuple[float, float] | None): valid input interval (default ``(0.0, 1.0)``).
        generator (torch.Generator | None): for the random starts (default None).

    ``train_batch(x, y)`` returns the mean adversarial loss; ``train_epoch(batches)`` the mean over
    batches; ``full_passes`` counts forward/backward passes.

    Raises:
        TypeError: ``optimizer`` not a ``torch.optim.Optimizer``.
        ValueError: ``eps <= 0``, ``steps < 1`` or ``step_size <= 0``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import PGDTrainer
        >>> x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
        >>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        >>> trainer = PGDTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), eps=0.1, steps=3)
        >>> loss = trainer.train_epoch([(x, y)])
        >>> trainer.full_passes  # k + 1 per batch
        4
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, eps: float, steps: int = 10,
                 step_size: float | None = None, loss_fn: LossFn = F.cross_entropy,
                 input_range: tuple[float, float] | None = (0.0, 1.0),
                 generator: torch.Generator | None = None):
        super().__init__(model, optimizer, eps, loss_fn, input_range, generator)
        self.steps = check_count("steps", steps)
        self.step_size = _check_step_size(step_size, 2.5 * self.eps / self.steps)

    def train_batch(self, x: Tensor, y: Tensor) -> float:
        x_adv = pgd_attack(self.model, x, y, self.eps, self.steps, self.step_size, self.loss_fn,
                           self.input_range, generator=self.generator)
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x_adv), y)
        loss.backward()
        self.optimizer.step()
        self.full_passes += self.steps + 1
        return loss.item()


class YOPOTrainer(_AdversarialTrainer):
    """YOPO-m-n adversarial training (Zhang et al., NeurIPS 2019): m full passes per batch.

    Per batch: random start η; then m times: one full forward/backward pass at ``x + η`` (accumulating
    the gradient of the layers after f_0 and reading the costate ``p = ∂ℓ/∂z`` at f_0's output z),
    n updates of η through f_0 only (:func:`yopo_step`), and f_0's weight gradient ``∇_θ0 [p · f_0]``
    at the updated η (as in the authors' code). Gradients are averaged over the m rounds; one optimizer
    step per batch. Per batch: m full passes, m·(n + 1) first-layer passes.

    Args:
        model (nn.Sequential): its first ``first_layer_depth`` children form the layer f_0 that the
            perturbation couples to (e.g. ``nn.Sequential(nn.Conv2d(..), nn.ReLU())``).
        optimizer (torch.optim.Optimizer): optimizer over ``model``'s parameters.
        eps (float): L∞ radius (> 0).
        m (int): full passes per batch (>= 1, default 3).
        n (int): first-layer updates per full pass (>= 1, default 5).
        step_size (float | None): first-layer update step; default None: ``2 · eps / n``.
        first_layer_depth (int): children of ``model`` in f_0 (default 1, fewer than ``len(model)``).
        loss_fn (Callable[[Tensor, Tensor], Tensor]): ``loss_fn(logits, y)`` (default ``F.cross_entropy``).
        input_range (tuple[float, float] | None): valid input interval (default ``(0.0, 1.0)``).
        generator (torch.Generator | None): for the random starts (default None).

    Raises:
        TypeError: ``model`` not an ``nn.Sequential``, ``optimizer`` not an optimizer.
        ValueError: ``first_layer_depth >= len(model)``, ``eps <= 0``, ``m`` or ``n`` < 1.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from pyode.control import YOPOTrainer
        >>> x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
        >>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        >>> trainer = YOPOTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), eps=0.1, m=2, n=3)
        >>> loss = trainer.train_epoch([(x, y)])
        >>> trainer.full_passes, trainer.first_layer_passes  # m, m (n + 1)
        (2, 8)
    """

    def __init__(self, model: nn.Sequential, optimizer: torch.optim.Optimizer, eps: float, m: int = 3,
                 n: int = 5, step_size: float | None = None, first_layer_depth: int = 1,
                 loss_fn: LossFn = F.cross_entropy, input_range: tuple[float, float] | None = (0.0, 1.0),
                 generator: torch.Generator | None = None):
        if not isinstance(model, nn.Sequential):
            raise TypeError("model must be an nn.Sequential so its first layer can be split off, got "
                            f"{type(model).__name__}")
        depth = check_count("first_layer_depth", first_layer_depth)
        if depth >= len(model):
            raise ValueError(f"first_layer_depth must be < len(model) = {len(model)}, got {depth}")
        super().__init__(model, optimizer, eps, loss_fn, input_range, generator)
        self.m = check_count("m", m)
        self.n = check_count("n", n)
        self.step_size = _check_step_size(step_size, 2.0 * self.eps / self.n)
        self.first_layer, self.rest = model[:depth], model[depth:]

    def full_pass(self, x: Tensor, eta: Tensor, y: Tensor, weight: float = 1.0) -> tuple[Tensor, float]:
        """Forward/backward at ``x + η``; adds ``weight ·`` the gradient of all layers *after* f_0.

        f_0's own weights get their gradient from :meth:`first_layer_gradient` instead, at the updated η.

        Args:
            x (Tensor): (batch, *shape) clean inputs.
            eta (Tensor): (batch, *shape) perturbation.
            y (Tensor): (batch,) labels.
            weight (float): factor of the accumulated gradient (default 1.0; ``1/m`` in :meth:`train_batch`).

        Returns:
            tuple[Tensor, float]: the costate ``∂ℓ/∂z`` at the first layer's output, (batch, *z_shape), and
            the loss.
        """
        z = self.first_layer(x + eta.detach())
        loss = self.loss_fn(self.rest(z), y)
        rest_params = [param for param in self.rest.parameters() if param.requires_grad]
        costate, *grads = torch.autograd.grad(loss, [z, *rest_params])
        _accumulate(rest_params, grads, weight)
        self.full_passes += 1
        return costate, loss.item()

    def first_layer_gradient(self, x: Tensor, eta: Tensor, costate: Tensor, weight: float = 1.0) -> None:
        """Add ``weight · ∇_θ0 [p · f_0(x + η, θ_0)]`` (the PMP gradient of layer one, ``−∇_θ0 H``).

        Args:
            x (Tensor): (batch, *shape) clean inputs.
            eta (Tensor): (batch, *shape) perturbation.
            costate (Tensor): (batch, *z_shape) ``p = ∂ℓ/∂z`` from :meth:`full_pass`.
            weight (float): factor of the accumulated gradient (default 1.0).
        """
        params = [param for param in self.first_layer.parameters() if param.requires_grad]
        if params:
            z = self.first_layer(x + eta.detach())
            _accumulate(params, torch.autograd.grad((costate * z).sum(), params), weight)
        self.first_layer_passes += 1

    def train_batch(self, x: Tensor, y: Tensor) -> float:
        eta = random_perturbation(x, self.eps, self.input_range, self.generator)
        self.optimizer.zero_grad()
        losses = []
        for _ in range(self.m):
            costate, loss = self.full_pass(x, eta, y, weight=1.0 / self.m)
            losses.append(loss)
            for _ in range(self.n):
                eta = yopo_step(self.first_layer, x, eta, costate, self.eps, self.step_size,
                                self.input_range)
                self.first_layer_passes += 1
            self.first_layer_gradient(x, eta, costate, weight=1.0 / self.m)
        self.optimizer.step()
        return sum(losses) / self.m


def _accumulate(params: list[nn.Parameter], grads: Iterable[Tensor], weight: float) -> None:
    """``param.grad += weight · grad`` (creating ``.grad`` where it is None)."""
    for param, grad in zip(params, grads):
        if param.grad is None:
            param.grad = weight * grad
        else:
            param.grad.add_(grad, alpha=weight)
