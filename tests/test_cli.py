"""The command line: `python -m pyode info` reports what is installed; nothing prints progress bars into a pipe."""

import json
import subprocess
import sys

import pytest

import pyode
from pyode.__main__ import info


def _run(*args: str) -> subprocess.CompletedProcess:
    # -P: the installed package, as a user runs it; stdout and stderr are pipes, not a terminal
    return subprocess.run([sys.executable, "-P", "-m", "pyode", *args], check=False, capture_output=True, text=True,
                          timeout=300)


def test_info_reports_version_backends_and_optional_packages():
    report = json.loads(_run("info").stdout)
    assert report["version"] == pyode.__version__ == info()["version"]
    assert report["backends"]["cpu_backend"] in ("cpu", "reference")
    assert set(report["optional"]) >= {"numba", "cffi", "scipy", "dask"}
    assert _run("info", "--quiet").stdout.strip() == pyode.__version__


def test_version_comes_from_one_place():
    from importlib import metadata

    assert metadata.version("pyode") == pyode.__version__  # pyproject reads pyode/_version.py


@pytest.mark.parametrize("flags", [(), ("--quiet",)])
def test_demo_into_a_pipe_writes_no_progress_updates(tmp_path, flags):
    done = _run("demo", "spiral", "--quick", "--out", str(tmp_path), *flags)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr + done.stdout  # tqdm's carriage-return redraws
    assert (tmp_path / "spiral.png").is_file()


def test_removed_bench_subcommand_points_to_the_suite():
    done = _run("bench")
    assert done.returncode != 0 and "invalid choice" in done.stderr
    assert "bench/run.py" in _run("--help").stdout
