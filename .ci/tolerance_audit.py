"""How close does each tolerance sit to the error it guards?  Runs the suite on an instrumented copy of
``tests/`` and lists every comparison site whose observed error is within a factor of the bound.

Usage (from the repository root, in an environment with pyode installed):

    python .ci/tolerance_audit.py                      # the whole suite, sites within 10x of their bound
    MKL_ENABLE_INSTRUCTIONS=SSE4_2 python .ci/tolerance_audit.py tests/test_gradients.py --within 3

What is measured, per call site (file:line) and test, as ``observed / allowed`` (1.0 = at the bound):
- ``torch.testing.assert_close``: max |actual - expected| / (atol + rtol |expected|);
- ``x == pytest.approx(y, ...)`` on scalars: |x - y| / tolerance;
- ``assert a < b`` / ``assert a <= b`` with 0 < b < 1 (an error against a small bound): |a| / b.
A ratio above 0.1 is a tolerance within 10x of what it observes: derive it from the dtype and the problem's
conditioning, or justify it (e.g. a bound attained by construction, a seeded statistical test).
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

RECORDER = '''
import builtins, json, os, traceback
import pytest, torch

_OUT = os.environ["TOL_AUDIT_OUT"]


def _site():
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/test_" in frame.filename:
            return f"{os.path.basename(frame.filename)}:{frame.lineno}"
    return "?"


def _record(site, ratio):
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].split("::", 1)[-1]
    with open(_OUT, "a") as fh:
        fh.write(json.dumps({"site": site, "test": test, "ratio": ratio}) + "\\n")


def _tol_audit_cmp(a, b, site, inclusive):
    result = (a <= b) if inclusive else (a < b)
    try:
        if 0.0 < float(b) < 1.0:
            _record(site, abs(float(a)) / float(b))
    except Exception:
        pass
    return result


def _wrap_assert_close(original):
    from torch.testing._comparison import default_tolerances

    def assert_close(actual, expected, *args, rtol=None, atol=None, **kwargs):
        try:
            a, e = torch.as_tensor(actual).detach(), torch.as_tensor(expected).detach()
            if a.is_complex():
                a, e = torch.view_as_real(a), torch.view_as_real(e)
            if a.is_floating_point() and a.shape == e.shape and e.numel():
                r0, a0 = default_tolerances(a, e)
                r, t = (r0 if rtol is None else rtol), (a0 if atol is None else atol)
                allowed = (t + r * e.double().abs()).clamp_min(1e-300)
                _record(_site(), float(((a.double() - e.double()).abs() / allowed).max()))
        except Exception:
            pass
        return original(actual, expected, *args, rtol=rtol, atol=atol, **kwargs)

    return assert_close


def _wrap_approx(original):
    def approx(expected, rel=None, abs=None, nan_ok=False):
        obj = original(expected, rel=rel, abs=abs, nan_ok=nan_ok)
        if not hasattr(obj, "tolerance"):
            return obj
        site, base = _site(), type(obj)

        class Audited(base):
            def __eq__(self, actual):
                try:
                    if self.tolerance > 0:
                        _record(site, builtins.abs(float(actual) - float(self.expected)) / self.tolerance)
                except Exception:
                    pass
                return super().__eq__(actual)

        obj.__class__ = Audited
        return obj

    return approx


builtins._tol_audit_cmp = _tol_audit_cmp
torch.testing.assert_close = _wrap_assert_close(torch.testing.assert_close)
pytest.approx = _wrap_approx(pytest.approx)
'''


class _RewriteAsserts(ast.NodeTransformer):
    """``assert a < b`` -> ``assert _tol_audit_cmp(a, b, "file:line", False)`` (same truth value)."""

    def __init__(self, filename: str):
        self.filename = filename

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        test = node.test
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Lt, ast.LtE)):
            args = [test.left, test.comparators[0], ast.Constant(f"{self.filename}:{node.lineno}"),
                    ast.Constant(isinstance(test.ops[0], ast.LtE))]
            node.test = ast.copy_location(ast.Call(ast.Name("_tol_audit_cmp", ast.Load()), args, []), test)
        return node


def instrumented_copy(tests: pathlib.Path, dest: pathlib.Path) -> None:
    shutil.copytree(tests, dest)
    for path in dest.glob("test_*.py"):
        tree = ast.fix_missing_locations(_RewriteAsserts(path.name).visit(ast.parse(path.read_text())))
        path.write_text(ast.unparse(tree))
    (dest / "tol_audit_recorder.py").write_text(RECORDER)
    conftest = dest / "conftest.py"
    conftest.write_text(conftest.read_text() + "\nimport tol_audit_recorder  # noqa: E402,F401\n")


def report(records: pathlib.Path, within: float) -> None:
    worst: dict[tuple[str, str], float] = collections.defaultdict(float)
    if records.exists():
        for line in records.read_text().splitlines():
            r = json.loads(line)
            worst[(r["site"], r["test"])] = max(worst[(r["site"], r["test"])], r["ratio"])
    rows = sorted(((v, s, t) for (s, t), v in worst.items() if v >= 1.0 / within), reverse=True)
    print(f"{len(rows)} comparison sites within {within:g}x of their bound (observed / allowed):")
    for ratio, site, test in rows:
        print(f"  {ratio:9.3g}  {site:34s} {test}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--within", type=float, default=10.0, help="list sites within this factor of the bound")
    args, pytest_args = parser.parse_known_args()
    root = pathlib.Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        copy, records = pathlib.Path(tmp) / "tests", pathlib.Path(tmp) / "records.jsonl"
        instrumented_copy(root / "tests", copy)
        targets = [str(copy / pathlib.Path(a).name) if a.startswith("tests/") else a for a in pytest_args]
        env = dict(os.environ, TOL_AUDIT_OUT=str(records))
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", tmp,
               *(targets or [str(copy)])]
        rc = subprocess.call(cmd, cwd=root, env=env)
        report(records, args.within)
    return rc


if __name__ == "__main__":
    sys.exit(main())
