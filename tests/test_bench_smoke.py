"""The benchmark suite (bench/) runs end to end in its tiny ``--quick`` configuration.

Timings are never asserted (the machines are noisy); only that every problem ran, every library
produced positive timings, and the answers agree with the reference solutions.
"""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchdiffeq")
pytest.importorskip("torchode")

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("pyode", "torchdiffeq", "torchode")
PROBLEMS = ("P1", "P2", "P3", "P4", "P5")


def _bench_run():
    if not (ROOT / "bench" / "run.py").is_file():
        pytest.skip("bench/ is not part of this checkout")
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))  # appended: an installed pyode still wins over the source folder
    from bench import run

    return run


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    _bench_run().main(["--quick", "--threads", "1", "--no-progress", "--out", str(out)])
    return out, json.loads((out / "results.json").read_text())


def test_quick_run_covers_every_problem_and_library(quick_results):
    _, results = quick_results
    records = results["records"]
    assert {r["problem"] for r in records} == set(PROBLEMS)
    assert not [r for r in records if r["status"] == "error"], "a library failed on a case"
    ok = [r for r in records if r["status"] == "ok"]
    for problem in PROBLEMS:
        assert "torchdiffeq" in {r["library"] for r in ok if r["problem"] == problem}, problem
        assert "pyode" in {r["library"] for r in records if r["problem"] == problem}, problem
    assert {r["library"] for r in ok} == set(LIBRARIES)
    # a mode a library lacks (e.g. torchode's seminorm) is recorded as n/a with the reason
    assert all(r["reason"] for r in records if r["status"] == "n/a")


def test_quick_run_reports_positive_timings_and_counts(quick_results):
    _, results = quick_results
    for record in (r for r in results["records"] if r["status"] == "ok"):
        summary = record["summary"]
        assert summary["wall_s"]["min"] > 0 and summary["func_fwd_s"]["min"] > 0, record["library"]
        assert summary["nfe_fwd"]["min"] >= 2
        assert summary["wall_s"]["min"] <= summary["wall_s"]["median"] <= summary["wall_s"]["max"]
        assert record["eager_op_s"] > 0
        if "loop_per_step_s" in summary:
            assert summary["iterations_fwd"]["min"] >= 1
            assert summary["loop_per_step_eager_ops"]["median"] > 0


def test_quick_run_answers_agree_with_the_reference(quick_results):
    _, results = quick_results
    for record in (r for r in results["records"] if r["status"] == "ok"):
        summary = record["summary"]
        assert summary["sol_err"]["max"] < 1e-2, (record["problem"], record["library"], record["mode"])
        if record["mode"] in ("backprop", "adjoint", "adjoint_seminorm"):
            assert summary["grad_err"]["max"] < 5e-2, (record["problem"], record["library"], record["mode"])


def test_quick_run_writes_the_large_problem_bandwidth_and_the_charts(quick_results):
    out, results = quick_results
    p3 = [r for r in results["records"] if r["problem"] == "P3" and r["status"] == "ok"]
    assert p3 and all(r["triad_bytes_per_s"] > 0 and r["summary"]["bandwidth_fraction"]["median"] > 0
                      for r in p3)
    for chart in ("loop_per_step.png", "wall_time.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_problem_is_rejected_with_the_valid_names(tmp_path):
    with pytest.raises(ValueError, match="P1, P2, P3, P4, P5"):
        _bench_run().main(["--quick", "--problems", "P9", "--out", str(tmp_path)])


def test_thp_flag_reruns_with_huge_page_allocations(tmp_path):
    """``--thp`` restarts the command with torch's huge-page switch and records it; called as a function
    (not from the command line) it refuses instead of replacing the caller's process."""
    import os
    import subprocess

    run = _bench_run()
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--thp", "--problems", "P3",
                    "--libraries", "pyode", "--threads", "1", "--reps", "1", "--no-progress", "--out", str(tmp_path)],
                   check=True, env=env, capture_output=True, timeout=600)
    meta = json.loads((tmp_path / "results.json").read_text())["meta"]
    assert meta["thp"].startswith("THP_MEM_ALLOC_ENABLE=1")
    if os.environ.get("THP_MEM_ALLOC_ENABLE") != "1":
        with pytest.raises(SystemExit, match="command line"):
            run.main(["--quick", "--thp", "--out", str(tmp_path)])



def test_work_precision_sweep_runs_and_matches_accuracy(tmp_path, capsys):
    """bench/work_precision.py: every library at each tolerance factor, a chart, and the matched-accuracy rows
    (pyode's fastest run with no larger gradient error than the faster peer's at the suite's tolerance)."""
    _bench_run()
    from bench import work_precision

    work_precision.main(["--quick", "--reps", "1", "--factors", "3,1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert (tmp_path / "work_precision.png").stat().st_size > 0
    for library in work_precision.LIBRARIES:
        assert f"| {library} | 3 |" in printed and f"| {library} | 1 |" in printed
    assert "| pyode / peer |" in printed


def test_callback_cost_runs_and_puts_the_time_back(capsys):
    """bench/callback_cost.py: the per-call figures print, and afterwards the C++ loop calls func again (the
    measurement without func swaps CoreSolver._rhs) and torch's thread count is what it was."""
    _bench_run()
    import torch

    import pyode
    from bench import callback_cost
    from pyode._solvers import core_loop

    if not core_loop.available():
        pytest.skip("the C++ loop is not built here")
    original, threads = core_loop.CoreSolver._rhs, torch.get_num_threads()
    callback_cost.main(["--reps", "3"])
    printed = capsys.readouterr().out
    assert "per call, trivial func:" in printed and "without func/FlatFunc" in printed
    assert core_loop.CoreSolver._rhs is original and torch.get_num_threads() == threads
    with torch.no_grad():
        ys = pyode.solve(lambda t, y: -y, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0],
                         dtype=torch.float64), rtol=1e-10, atol=1e-12).ys
    assert torch.allclose(ys[-1], torch.full((2,), torch.e ** -1, dtype=torch.float64), rtol=1e-8)


def test_per_sample_rows_benchmark_builds_and_its_rows_equal_the_joint_loop(tmp_path):
    """bench/per_sample_rows.cpp compiles against the core headers and, with one timed solve per case, finds every
    row of a 256-row per-sample batch bitwise equal to the joint loop's solve of that row (float32 and float64)."""
    import shutil
    import subprocess

    compiler = shutil.which("g++")
    source = ROOT / "bench" / "per_sample_rows.cpp"
    if compiler is None or not source.is_file():
        pytest.skip("needs g++ and bench/ in this checkout")
    binary = tmp_path / "per_sample_rows"
    subprocess.run([compiler, "-std=c++17", "-O2", "-ffp-contract=off", f"-I{ROOT / 'csrc' / 'include'}", "-o",
                    str(binary), str(source)], check=True, capture_output=True)
    done = subprocess.run([str(binary), "1"], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("rows equal to the joint loop: yes") == 2
