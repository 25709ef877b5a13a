"""pyode._tuning: every size threshold in one module, overridable through PYODE_TUNING (read at import, so the
overrides are checked in a fresh interpreter)."""

import ast
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

import pyode
from pyode import _tuning

PACKAGE = pathlib.Path(pyode.__file__).parent
ROOT = PACKAGE.parent


def _run(code: str, tuning: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != _tuning.ENV}
    if tuning is not None:
        env[_tuning.ENV] = tuning
    return subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120)


def test_overrides_reach_the_modules_that_use_them():
    """Overridden values are in force where they are used: the pool's limit, the compiled extension's
    non-temporal threshold (when built); the rest keep their defaults."""
    code = ("import json, pyode\nfrom pyode import _tuning\nfrom pyode._solvers import scratch\n"
            "try:\n    from pyode import _C\n    nt = _C.non_temporal()\nexcept ImportError:\n    nt = None\n"
            "print(json.dumps({'values': _tuning.current(), 'pool': scratch.ScratchPool().limit_bytes, 'nt': nt}))")
    out = _run(code, " POOL_LIMIT_BYTES=0x1000 , ERROR_CARRY_MIN_BYTES=1_024,NON_TEMPORAL_MIN_BYTES=4096,")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    expected = dict(_tuning._DEFAULTS, POOL_LIMIT_BYTES=4096, ERROR_CARRY_MIN_BYTES=1024, NON_TEMPORAL_MIN_BYTES=4096)
    assert got["values"] == expected
    assert got["pool"] == 4096
    assert got["nt"] in (None, 4096)


def test_a_bad_override_fails_at_import_naming_it():
    out = _run("import pyode", "POOL_MIN_BYTES=1,POOL_MIN=3")
    assert out.returncode != 0
    assert "ValueError: PYODE_TUNING: unknown key 'POOL_MIN'" in out.stderr


@pytest.mark.parametrize(("tuning", "message"), [
    ("POOL_MIN_BYTES=-1", "POOL_MIN_BYTES='-1' must be a non-negative integer"),
    ("POOL_MIN_BYTES=1k", "POOL_MIN_BYTES='1k' must be a non-negative integer"),
    ("POOL_MIN_BYTES", "'POOL_MIN_BYTES' is not NAME=value"),
])
def test_bad_values_are_named(tuning, message):
    with pytest.raises(ValueError, match=re.escape(f"PYODE_TUNING: {message}")):
        _tuning.parse(tuning)


def test_defaults_without_override():
    assert _tuning.parse("") == {}
    out = _run("import json, pyode._tuning as t; print(json.dumps(t.current()))", None)
    assert json.loads(out.stdout) == _tuning._DEFAULTS


def test_non_temporal_default_mirrors_the_cpp_default():
    header = ROOT / "csrc" / "include" / "pyode" / "stream_terms.h"
    if not header.exists():
        pytest.skip("no source checkout")
    found = re.search(r"non_temporal_min_bytes\{int64_t\((\d+)\) << (\d+)\}", header.read_text())
    assert found, "the C++ default's declaration changed: update this test and pyode._tuning"
    assert int(found[1]) << int(found[2]) == _tuning._DEFAULTS["NON_TEMPORAL_MIN_BYTES"]


def _literal_size_constants(path: pathlib.Path) -> list[str]:
    """Names with a size unit (BYTES, ELEMENTS, ROWS, NUMEL) assigned a number (not read from
    an extension): a threshold defined outside pyode._tuning."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            is_number = all(isinstance(n, (ast.Constant, ast.BinOp, ast.UnaryOp)) for n in ast.walk(node.value)
                            if not isinstance(n, (ast.operator, ast.unaryop)))
            found += [t.id for t in targets if isinstance(t, ast.Name) and is_number
                      and re.search(r"(BYTES|ELEMENTS|ROWS|NUMEL)", t.id)]
    return found


def test_no_size_threshold_outside_the_tuning_module():
    files = [p for layer in ("_solvers", "_kernels", "_gradients") for p in sorted((PACKAGE / layer).glob("*.py"))]
    defined = {p.name: names for p in files if (names := _literal_size_constants(p))}
    assert defined == {}
