"""Which tensors a custom gradient method differentiates with respect to."""

from __future__ import annotations

from torch import Tensor, nn


def resolve_params(func, params, mode: str) -> tuple[Tensor, ...]:
    """The parameters of ``func`` that need gradients.

    Args:
        func: the user's function; its parameters are used when it is an ``nn.Module``.
        params: explicit tensors (``adjoint_params``), or None.
        mode: the gradient mode, for the error message.
    Returns:
        the tensors of ``params`` (or of the module) that require grad; others are skipped silently.
    """
    if params is None:
        if not isinstance(func, nn.Module):
            raise ValueError(f"gradient={mode!r} needs to know func's parameters: pass func as an nn.Module, or "
                             "adjoint_params=(tensors func uses) (adjoint_params=() if it uses none)")
        params = tuple(func.parameters())
    params = tuple(params)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"adjoint_params[{i}] must be a torch.Tensor, got {type(p).__name__}")
    return tuple(p for p in params if p.requires_grad)
