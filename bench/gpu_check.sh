#!/usr/bin/env bash
# GPU check of pyode's CUDA kernels (issue 4), for a machine with a GPU, nvcc, torch and no network:
# builds pyode with its CUDA module, runs the whole test suite with the GPU visible, then the large-state
# benchmark (bench/gpu_bench.py: P3 at N = 1e8 float32). Aims at under 8 minutes; each stage has a timeout.
#
#   bash bench/gpu_check.sh            # on the GPU machine, from anywhere in the repository
#   bash bench/gpu_check.sh prepare    # beforehand, on a machine that has torchode installed: copies
#                                      # torchode and its pure-Python dependencies to build/gpu-pydeps,
#                                      # which the check puts on PYTHONPATH (carry that folder along)
#
# Logs and results go to $OUT (if set, e.g. by the device tool) or bench/results/gpu. Exit status: 0 when
# the build, the tests and the benchmark all succeeded.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=${OUT:-bench/results/gpu}
PYDEPS=build/gpu-pydeps
mkdir -p "$RESULTS"

stage() { echo; echo "=== $* (t = ${SECONDS}s)"; }

prepare() {
  mkdir -p "$PYDEPS"
  local site
  site=$($PY -c "import torchode, pathlib; print(pathlib.Path(torchode.__file__).parent.parent)") || {
    echo "prepare: torchode is not installed here"; exit 1; }
  for pkg in torchode torchtyping typeguard; do
    cp -r "$site/$pkg" "$PYDEPS/"
  done
  echo "copied torchode, torchtyping and typeguard into $PYDEPS ($(du -sh "$PYDEPS" | cut -f1))"
}

if [ "${1:-}" = "prepare" ]; then
  prepare
  exit 0
fi
if [ -d "$PYDEPS" ]; then  # peers the GPU machine lacks, carried as pure-Python packages
  export PYTHONPATH="$PWD/$PYDEPS${PYTHONPATH:+:$PYTHONPATH}"
fi

stage "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi failed"
nvcc --version | tail -n 2
$PY -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.is_available())"

stage "build (PYODE_CUDA=ON)"
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
if ! PYODE_CUDA=ON timeout 300 $PY -m pip install --no-build-isolation --no-deps --no-index -e . \
    >"$RESULTS/build.log" 2>&1; then
  tail -n 40 "$RESULTS/build.log"
  echo "BUILD FAILED (log: $RESULTS/build.log)"
  exit 2
fi
$PY - <<'PY' || { echo "the CUDA backend is not usable here (see backend_info above)"; exit 3; }
import torch

import pyode
from pyode import _kernels

info = pyode.backend_info()
print(info)
assert info["compiled_cpu"] and info["cuda"], info
assert info["cuda_devices"] >= 1 and _kernels.get_backend(torch.device("cuda")).name == "cuda", info
PY

stage "tests: CUDA and kernel tests (serial)"
timeout 200 $PY -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_kernels.py \
  >"$RESULTS/pytest_cuda.log" 2>&1
cuda_tests_rc=$?
grep -E "^(FAILED|ERROR)|passed|failed" "$RESULTS/pytest_cuda.log" | head -n 30
grep -E "^SKIPPED" "$RESULTS/pytest_cuda.log" | head -n 10  # on a GPU only the no-GPU error check skips

stage "tests: the rest of the suite, GPU visible"
parallel=()  # pytest-xdist, when there, keeps the whole suite within the time budget
if [ -z "${GPU_CHECK_SERIAL:-}" ] && $PY -c "import xdist" 2>/dev/null; then parallel=(-n 8); fi
OMP_NUM_THREADS=2 timeout 270 $PY -m pytest -q -p no:cacheprovider "${parallel[@]}" \
  --ignore=tests/test_cuda.py --ignore=tests/test_kernels.py >"$RESULTS/pytest_rest.log" 2>&1
rest_rc=$?
grep -E "^(FAILED|ERROR)|passed|failed" "$RESULTS/pytest_rest.log" | head -n 30
if [ "$rest_rc" -eq 124 ]; then echo "TIMED OUT; last lines:"; tail -n 5 "$RESULTS/pytest_rest.log"; fi
tests_rc=$(( cuda_tests_rc != 0 || rest_rc != 0 ))

stage "benchmark (P3, N = 1e8 float32)"
timeout 180 $PY bench/gpu_bench.py --n 1e8 --reps 3 --json "$RESULTS/gpu_bench.json" 2>&1 | tee "$RESULTS/gpu_bench.log"
bench_rc=${PIPESTATUS[0]}

stage "done: CUDA tests rc=$cuda_tests_rc, other tests rc=$rest_rc, benchmark rc=$bench_rc"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
