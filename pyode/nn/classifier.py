"""ODE-Net image classifier and the ResNet it replaces (Chen et al. 2018, section 3 / table 1).

Both share a downsampling stem and a classification head; the ResNet has ``n_blocks`` residual blocks,
the ODE-Net a single ODE block whose field has the parameters of *one* residual block — which is where
the review's "similar accuracy with about a third of the parameters" comes from.
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_feature_shape, check_positive_int
from .continuous import ODEBlock

Tensor = torch.Tensor

__all__ = ["ConvODEField", "ODENetClassifier", "ResNetClassifier", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars (parameters with ``requires_grad``).

    Args:
        model (nn.Module): any module.

    Returns:
        int: the count.

    Examples:
        >>> import torch
        >>> from pyode.nn import count_parameters
        >>> count_parameters(torch.nn.Linear(3, 2))  # 3 x 2 weights + 2 biases
        8
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class _ConcatTimeConv(nn.Module):
    """3x3 convolution of ``[h, t]`` (time as an extra constant channel), as in Chen et al.'s ODE-Net."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        t_channel = t.to(h).expand(h.shape[0], 1, *h.shape[2:])
        return self.conv(torch.cat([h, t_channel], dim=1))


class ConvODEField(nn.Module):
    """``f(t, h)`` = norm-ReLU-conv(t)-norm-ReLU-conv(t)-norm: ``(batch, C, H, W) -> (batch, C, H, W)``.

    The field of Chen et al.'s ODE-Net: 3x3 convolutions that see the time as an extra channel, GroupNorm
    with ``min(8, C)`` groups.

    Args:
        channels (int): ``C``.

    Examples:
        >>> import torch
        >>> from pyode.nn import ConvODEField
        >>> ConvODEField(8)(torch.tensor(0.0), torch.randn(2, 8, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = _norm(channels), _norm(channels), _norm(channels)
        self.conv1, self.conv2 = _ConcatTimeConv(channels), _ConcatTimeConv(channels)

    def forward(self, t: Tensor, h: Tensor) -> Tensor:
        h = self.conv1(t, torch.relu(self.norm1(h)))
        h = self.conv2(t, torch.relu(self.norm2(h)))
        return self.norm3(h)


class _ResidualBlock(nn.Module):
    """Pre-activation residual block ``h + conv(relu(norm(conv(relu(norm(h))))))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_norm(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  _norm(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, h: Tensor) -> Tensor:
        return h + self.body(h)


def _stem(in_channels: int, channels: int) -> nn.Sequential:
    """``(batch, in, H, W) -> (batch, C, H/2, W/2)``."""
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), _norm(channels), nn.ReLU(),
                         nn.Conv2d(channels, channels, 4, stride=2, padding=1))


def _head(channels: int, n_classes: int) -> nn.Sequential:
    return nn.Sequential(_norm(channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(channels, n_classes))


def _check_sizes(**sizes: int) -> None:
    """Raise ``ValueError`` naming the first of ``sizes`` (channels, widths, counts) that is not an int >= 1."""
    for name, value in sizes.items():
        check_positive_int(name, value)


class _StemBodyHead(nn.Module):
    """``images: (batch, in_channels, H, W) -> logits: (batch, n_classes)``."""

    def __init__(self, body: nn.Module, in_channels: int, image_size: int, channels: int, n_classes: int):
        _check_sizes(in_channels=in_channels, image_size=image_size, channels=channels, n_classes=n_classes)
        super().__init__()
        self.input_shape = (in_channels, image_size, image_size)
        self.stem, self.body, self.head = _stem(in_channels, channels), body, _head(channels, n_classes)

    def forward(self, images: Tensor) -> Tensor:
        check_feature_shape("images", images, self.input_shape)
        return self.head(self.body(self.stem(images)))


class ODENetClassifier(_StemBodyHead):
    """ODE-Net (Chen et al. 2018): stem, one :class:`~pyode.nn.ODEBlock` on ``[0, 1]``, head.

    ``solver_kwargs`` go to the ODE block (default dopri5, rtol 1e-3, atol 1e-4; a fixed-grid method needs
    ``options={'step_size': h}``); ``nfe`` reports the
    evaluations of the last forward solve.

    ``images: (batch, in_channels, image_size, image_size) -> logits: (batch, n_classes)``.

    Args:
        in_channels (int): image channels (default 1).
        image_size (int): image height and width (default 8).
        channels (int): feature channels after the stem (default 32).
        n_classes (int): number of classes (default 10).
        **solver_kwargs: ``t``, ``method``, ``rtol``, ``atol``, ``options``, ``gradient`` of the
            :class:`~pyode.nn.ODEBlock`.

    Raises:
        ValueError: a size that is not an int >= 1; images of the wrong shape.

    Examples:
        >>> import torch
        >>> from pyode.nn import ODENetClassifier
        >>> net = ODENetClassifier(in_channels=1, image_size=8, channels=8, n_classes=3,
        ...                        method="rk4", options={"step_size": 1.0})  # default: dopri5
        >>> net(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 3])
        >>> net.nfe  # 1 step x 4 stages
        4
    """

    def __init__(self, in_channels: int = 1, image_size: int = 8, channels: int = 32, n_classes: int = 10,
                 **solver_kwargs):
        _check_sizes(channels=channels)  # before ConvODEField(channels) builds a layer from it
        block = ODEBlock(ConvODEField(channels), **solver_kwargs)
        super().__init__(block, in_channels, image_size, channels, n_classes)

    @property
    def nfe(self) -> int:
        return self.body.nfe_forward


class ResNetClassifier(_StemBodyHead):
    """ResNet baseline: stem, ``n_blocks`` residual blocks (forward Euler with step 1), head.

    ``images: (batch, in_channels, image_size, image_size) -> logits: (batch, n_classes)``.

    Args:
        in_channels (int): image channels (default 1).
        image_size (int): image height and width (default 8).
        channels (int): feature channels after the stem (default 32).
        n_classes (int): number of classes (default 10).
        n_blocks (int): pre-activation residual blocks (default 6).

    Raises:
        ValueError: a size that is not an int >= 1; images of the wrong shape.

    Examples:
        >>> import torch
        >>> from pyode.nn import ODENetClassifier, ResNetClassifier, count_parameters
        >>> resnet = ResNetClassifier(channels=8, n_classes=3, n_blocks=2)
        >>> resnet(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 3])
        >>> count_parameters(ODENetClassifier(channels=8, n_classes=3)) < count_parameters(resnet)
        True
    """

    def __init__(self, in_channels: int = 1, image_size: int = 8, channels: int = 32, n_classes: int = 10,
                 n_blocks: int = 6):
        _check_sizes(channels=channels, n_blocks=n_blocks)  # before the blocks are built from them
        body = nn.Sequential(*(_ResidualBlock(channels) for _ in range(n_blocks)))
        super().__init__(body, in_channels, image_size, channels, n_classes)
