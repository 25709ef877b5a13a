#!/usr/bin/env bash
# CI (no GPU): prove that the CUDA module pyode._C_cuda compiles for sm_80 and sm_90 (+ sm_90 PTX) and
# imports without a GPU or driver (static CUDA runtime). Builds only that target, with cmake directly, into
# a temporary folder (about 30-60 s on 2 cores). Skips, successfully, when nvcc is not on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1; then
  echo "cuda_compile_check: nvcc not on PATH; skipped"
  exit 0
fi
PY=${PYTHON:-python3}
BUILD=$(mktemp -d "${TMPDIR:-/tmp}/pyode-cuda-check.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT

if ! cmake -S . -B "$BUILD" -G Ninja -DPYODE_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
    -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
    >"$BUILD/configure.log" 2>&1; then
  cat "$BUILD/configure.log"
  echo "cuda_compile_check: cmake configure failed"
  exit 1
fi
time cmake --build "$BUILD" --target _C_cuda

module=$(ls "$BUILD"/_C_cuda*.so)
strings "$module" >"$BUILD/strings.txt"
for arch in sm_80 sm_90; do  # ptxas records "-arch sm_XX" in each cubin it embeds
  grep -q -- "-arch $arch" "$BUILD/strings.txt" || { echo "cuda_compile_check: no $arch code in $module"; exit 1; }
done
grep -q "code=\[compute_90\]" "$BUILD/build.ninja" || { echo "cuda_compile_check: no compute_90 PTX"; exit 1; }

PYTHONPATH="$BUILD" "$PY" - <<'PY'
import _C_cuda

assert _C_cuda.runtime_version() >= 12000, _C_cuda.runtime_version()
print(f"cuda_compile_check: _C_cuda built (sm_80, sm_90, compute_90 PTX) and imports; "
      f"runtime {_C_cuda.runtime_version()}, driver {_C_cuda.driver_version()}, devices {_C_cuda.device_count()}")
PY
