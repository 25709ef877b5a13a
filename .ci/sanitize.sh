#!/usr/bin/env bash
# CI: build pyode._C with AddressSanitizer + UndefinedBehaviorSanitizer (CMake option PYODE_SANITIZE=ON) into
# build/sanitize, and run the kernel and solver tests against it. Zero sanitizer reports = exit 0.
#
# The normal (editable) install is not touched: the sanitized module goes into a throwaway overlay --
# a copy of the pyode sources plus the sanitized _C, and a bare venv that sees the active environment's
# packages (torch, pytest, hypothesis) through a .pth path line. A path line does not run the editable
# install's import hook, so `import pyode` there finds the overlay's copy and nothing else.
#
# Usage: .ci/sanitize.sh [pytest args...]   (default: the kernel, solver, per-sample, property, bad-input and thread tests)
# Env:   PYTHON (default python3: the environment that has torch, pytest, hypothesis and pybind11)
# Time:  about 2 min on 2 cores from a clean build/sanitize (build ~45 s, tests ~70 s); docs/hardening.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=$(command -v "${PYTHON:-python3}")
BUILD=$ROOT/build/sanitize
OVERLAY=$BUILD/overlay
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$PY" -c "import pybind11" 2>/dev/null; then  # an isolated-build install leaves no pybind11 behind
  "$PY" -m pip install -q -c <(echo "torch==$("$PY" -c 'import torch; print(torch.__version__)')") "pybind11>=2.12"
fi

# ---- build: only the CPU module; CUDA's static runtime and ASan do not mix, and CUDA has its own check ----
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
[ -f "$BUILD/CMakeCache.txt" ] && GEN=()  # the generator is fixed at the first configure
cmake -S . -B "$BUILD" "${GEN[@]}" -DPYODE_SANITIZE=ON -DPYODE_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPython_EXECUTABLE="$PY" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >"$BUILD.configure.log" 2>&1 \
  || { cat "$BUILD.configure.log"; echo "sanitize: cmake configure failed"; exit 1; }
time cmake --build "$BUILD" --target _C -j "$(nproc)"
MODULE=$(ls "$BUILD"/_C*.so)

# ---- overlay: sources + sanitized module, and a bare venv that sees the active env's site-packages ----
rm -rf "$OVERLAY"
mkdir -p "$OVERLAY/src"
cp -r pyode tests "$OVERLAY/src/"  # the tests too: some import tests.problems from the working directory
find "$OVERLAY/src" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
cp "$MODULE" "$OVERLAY/src/pyode/"
"$PY" -m venv --without-pip "$OVERLAY/venv"
SITE=$("$OVERLAY/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
{
  echo "$OVERLAY/src"
  "$PY" -c "import sysconfig; p = sysconfig.get_paths(); print(p['purelib']); print(p['platlib'])"
} >"$SITE/pyode_sanitize_overlay.pth"
SPY=$OVERLAY/venv/bin/python

# ---- sanitizer runtime: ASan must be the first DSO loaded, so it is preloaded into python ----
LIBASAN=$(gcc -print-file-name=libasan.so)
LIBUBSAN=$(gcc -print-file-name=libubsan.so)
[ -f "$LIBASAN" ] || { echo "sanitize: libasan.so not found (install gcc's libasan)"; exit 1; }
export LD_PRELOAD="$LIBASAN${LD_PRELOAD:+:$LD_PRELOAD}"
[ -f "$LIBUBSAN" ] && export LD_PRELOAD="$LD_PRELOAD:$LIBUBSAN"
# Leak checking is off: CPython and torch keep allocations alive until exit by design (pure noise).
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PYODE_BACKEND=cpu  # a module that fails to load must fail the run, not fall back to pure torch
cd "$OVERLAY/src"  # never the repo root: its pyode/ has no _C and would shadow the overlay

"$SPY" - "$OVERLAY" <<'PY'
import sys
import pyode
import pyode._C as C
assert C.__file__.startswith(sys.argv[1]), f"wrong module loaded: {C.__file__}"
assert pyode.backend_info()["compiled_cpu"], pyode.backend_info()
print("sanitize: testing", C.__file__)
PY

# Canary: a deliberate out-of-bounds read must be caught, else the sanitizer is not really active.
set +e
("$SPY" -c "
import torch, pyode._C as C
class Liar:  # a tensor-like whose numel() lies: x has 4 elements
    def __init__(self, t): self.t = t
    def data_ptr(self): return self.t.data_ptr()
    def numel(self): return 64
x = torch.zeros(4, dtype=torch.float64); out = torch.empty(64, dtype=torch.float64)
C.lincomb(out=out, rows=1, n=64, base=Liar(x), ks=[], weights=[], dtype=1)
" || true) >"$BUILD.canary.log" 2>&1
set -e
if ! grep -q "heap-buffer-overflow" "$BUILD.canary.log"; then
  cat "$BUILD.canary.log"; echo "sanitize: ASan did not catch the canary overflow; the build is not sanitized"; exit 1
fi
echo "sanitize: canary overflow caught (ASan active)"

TESTS=("$@")  # paths relative to the repo root; they run from the overlay's copy
if [ ${#TESTS[@]} -eq 0 ]; then
  for f in test_kernels test_solvers test_per_sample test_bad_input test_properties test_bad_input_battery test_threads; do
    [ -f "tests/$f.py" ] && TESTS+=("tests/$f.py")
  done
fi
LOG=$BUILD.pytest.log
set +e
time "$SPY" -m pytest -q -p no:cacheprovider -c "$ROOT/pyproject.toml" --rootdir "$OVERLAY/src" "${TESTS[@]}" 2>&1 \
  | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
if grep -qE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$LOG"; then
  echo "sanitize: sanitizer reports found (see above)"; exit 1
fi
[ "$rc" -eq 0 ] || { echo "sanitize: tests failed (rc=$rc)"; exit "$rc"; }
echo "sanitize: OK, zero ASan/UBSan reports"
