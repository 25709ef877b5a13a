"""ODE-Net classifier vs ResNet: structure, parameter counts, NFE."""

import pytest
import torch

from pyode.nn.classifier import ODENetClassifier, ResNetClassifier, count_parameters

pytestmark = pytest.mark.usefixtures("one_thread")


def test_odenet_has_about_a_third_of_the_resnet_parameters():
    odenet, resnet = ODENetClassifier(channels=32), ResNetClassifier(channels=32, n_blocks=6)
    ratio = count_parameters(odenet) / count_parameters(resnet)
    assert 0.2 < ratio < 0.35, ratio


def test_forward_gives_logits_and_counts_nfe():
    torch.manual_seed(0)
    images = torch.rand(5, 1, 8, 8)
    odenet = ODENetClassifier(channels=8)
    logits = odenet(images)
    assert logits.shape == (5, 10) and torch.isfinite(logits).all()
    assert odenet.nfe >= 6
    logits.logsumexp(1).sum().backward()
    assert odenet.body.field.func.conv1.conv.weight.grad.abs().sum() > 0
    assert ResNetClassifier(channels=8, n_blocks=2)(images).shape == (5, 10)


def test_fixed_step_odenet_nfe_is_predictable():
    odenet = ODENetClassifier(channels=8, method="rk4", options={"step_size": 0.25})
    odenet(torch.rand(2, 1, 8, 8))
    assert odenet.nfe == 4 * 4


def test_wrong_image_shape_raises():
    with pytest.raises(ValueError, match=r"images must have shape \(batch, 1, 8, 8\)"):
        ODENetClassifier()(torch.rand(2, 8, 8))
