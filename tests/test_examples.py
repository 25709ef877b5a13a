"""Every script in examples/ runs at smoke size (``--smoke``) in a fresh interpreter, writes its figure, and
stays quiet when its output is not a terminal (no tqdm carriage-return updates)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# script -> (figure it writes, modules it needs beyond torch and pyode)
CASES = {
    "spiral.py": ("spiral.png", ("matplotlib", "tqdm")),
    "cnf.py": ("cnf_moons.png", ("matplotlib", "tqdm")),
    "latent_ode.py": ("latent_ode.png", ("matplotlib", "tqdm")),
    "stiff_neural_ode.py": ("stiff_neural_ode.png", ("matplotlib", "tqdm")),
    "native_bifurcation.py": ("native_bifurcation.png", ("matplotlib", "numba", "cffi")),
    "per_sample_steps.py": ("per_sample_steps.png", ("matplotlib",)),
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_every_example_is_tested():
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(CASES)


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_smoke(script, tmp_path):
    figure, needs = CASES[script]
    for module in needs:
        pytest.importorskip(module)
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--smoke", "--out", str(tmp_path)],
                          check=False, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    png = tmp_path / figure
    assert png.read_bytes()[:8] == PNG_SIGNATURE, f"{figure} is not a PNG"
    assert f"wrote {png}" in proc.stdout
    assert "\r" not in proc.stderr + proc.stdout, "progress output must be silent when not on a terminal"
