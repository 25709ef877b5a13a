"""The demos in quick mode (seconds), and the reference densities they report against."""

import math

import pytest
import torch

from pyode.nn.demos import (
    circles_true_log_prob,
    gaussian_baseline_nll,
    run_cnf_demo,
    run_digits_comparison,
    run_spiral_comparison,
)

pytest.importorskip("sklearn")


def test_true_two_circles_density_integrates_to_one():
    axis = torch.linspace(-1.6, 1.6, 801, dtype=torch.float64)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    density = circles_true_log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
    cell = (axis[1] - axis[0]) ** 2
    assert abs(density.sum().item() * cell.item() - 1.0) < 1e-3


def test_gaussian_baseline_equals_gaussian_entropy_for_gaussian_data():
    torch.manual_seed(0)
    data = torch.randn(40000, 2, dtype=torch.float64) * torch.tensor([0.5, 2.0], dtype=torch.float64)
    entropy = 1 + math.log(2 * math.pi) + math.log(0.5 * 2.0)  # ½ log det(2πe Σ)
    assert abs(gaussian_baseline_nll(data[:20000], data[20000:]) - entropy) < 0.02


def test_quick_cnf_demo_reports_figures_and_writes_pngs(tmp_path):
    figures = run_cnf_demo(tmp_path, quick=True, progress=False)
    assert 1.6 < figures["gaussian_nll"] < 1.8  # the issue's ≈ 1.69
    assert 0.7 < figures["true_density_nll"] < 0.85  # the entropy floor ≈ 0.79
    assert math.isfinite(figures["test_nll"]) and figures["test_nll"] > figures["true_density_nll"] - 0.05
    assert figures["train_steps"] == 30 and figures["eval_nfe"] > 0
    for key in ("density_png", "samples_png"):
        with open(figures[key], "rb") as png:
            assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_quick_spiral_and_digits_comparisons_run(tmp_path):
    spiral = run_spiral_comparison(tmp_path, quick=True, progress=False)
    assert all(math.isfinite(spiral[f"{m}_extrap_rmse"]) for m in ("latent_ode", "rnn"))
    assert (tmp_path / "spiral_extrapolation.png").exists()
    digits = run_digits_comparison(tmp_path, quick=True, progress=False)
    assert digits["odenet_nfe"] > 0 and 0 <= digits["odenet_test_accuracy"] <= 1
    assert 0.2 < digits["param_ratio"] < 0.35
    assert (tmp_path / "digits_comparison.json").exists()
