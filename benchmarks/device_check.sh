#!/usr/bin/env bash
# The cuda backend on a GPU machine that reaches no package registry: install netc from the repository and
# the wheels carried beside it, run the cuda tests, then the GPU benchmark, and write both logs under $OUT.
#
# Here, once (the wheels go to .whl/, which git ignores; the GPU machine's python3 is 3.12 on x86-64):
#     pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#         -d .whl lark scipy-openblas32 graphviz
# There, from the repository root, with .whl carried along:
#     bash benchmarks/device_check.sh                              # tests, then batch 1, 64 and 512 vs eager
#     BENCH_ARGS="--batches 64" bash benchmarks/device_check.sh    # torch.compile too, at batch 64
# (as a device run: command "OUT=$OUT bash benchmarks/device_check.sh", carry [".whl"]).
#
# Writes $OUT/environment.txt (GPU, driver, versions), $OUT/tests.log, $OUT/bench.log and $OUT/memory.log (the
# arena against PyTorch's peak, benchmarks/bench_memory.py), and exits with the tests' status. Each stage has a
# time limit (TESTS_TIMEOUT, BENCH_TIMEOUT, MEMORY_TIMEOUT seconds) so that a hang still leaves the logs of what
# ran.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-${TMPDIR:-/tmp}/netc_device_check}"
TESTS_TIMEOUT="${TESTS_TIMEOUT:-300}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-240}"
MEMORY_TIMEOUT="${MEMORY_TIMEOUT:-90}"
BENCH_ARGS="${BENCH_ARGS:---no-compile --batches 1 64 512}"  # torch.compile takes minutes per example
PYTHON="${PYTHON:-python3}"
DEPS="${TMPDIR:-/tmp}/netc_device_deps"  # the carried wheels, installed apart from the machine's own packages
mkdir -p "$OUT" "$DEPS"
export PYTHONPATH="$DEPS${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi failed"
    "$PYTHON" --version
    "$PYTHON" -m pip list 2>/dev/null | grep -i -E "^(cupy|torch|numpy|nvidia-cublas|cuda-pathfinder|jinja2|pytest) "
} >"$OUT/environment.txt" 2>&1

# A carried wheel is installed only where the machine lacks its package, so the machine's own builds stay.
missing=()
for wheel in .whl/*.whl; do
    [ -e "$wheel" ] || continue
    module="$(basename "$wheel" | cut -d- -f1 | tr 'A-Z' 'a-z')"
    "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)" \
        || missing+=("$wheel")
done
if [ ${#missing[@]} -gt 0 ]; then
    "$PYTHON" -m pip install --no-index --no-deps --target "$DEPS" "${missing[@]}" >>"$OUT/environment.txt" 2>&1 \
        || { echo "installing the carried wheels failed: see environment.txt"; exit 3; }
fi
"$PYTHON" -m pip install --no-index --no-deps --no-build-isolation -e . >>"$OUT/environment.txt" 2>&1 \
    || { echo "installing netc failed: see environment.txt"; tail -20 "$OUT/environment.txt"; exit 3; }
"$PYTHON" - >>"$OUT/environment.txt" 2>&1 <<'EOF' || { echo "netc, CuPy or the GPU is missing:"; tail -5 "$OUT/environment.txt"; exit 3; }
import ctypes
import cupy, netc
from netc.runtime.cuda import import_cupy
from netc.runtime.cuda_libs import load_cuda_library
import_cupy()
major = cupy.cuda.runtime.runtimeGetVersion() // 1000
lt = load_cuda_library("cublasLt", major)
lt.cublasLtGetVersion.restype = ctypes.c_size_t
print("CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(), "cuBLASLt", lt.cublasLtGetVersion())
EOF

echo "== tests (limit ${TESTS_TIMEOUT} s)"
timeout "$TESTS_TIMEOUT" "$PYTHON" -m pytest -p no:cacheprovider -q -rfE \
    tests/test_cuda_runtime.py tests/test_cuda_gemm.py tests/test_cuda_blas.py 2>&1 | tee "$OUT/tests.log"
tests_status=${PIPESTATUS[0]}

echo "== benchmark (limit ${BENCH_TIMEOUT} s): $BENCH_ARGS"
# shellcheck disable=SC2086 # BENCH_ARGS is a list of arguments
timeout "$BENCH_TIMEOUT" "$PYTHON" benchmarks/bench_cuda.py $BENCH_ARGS 2>&1 | tee "$OUT/bench.log"
bench_status=${PIPESTATUS[0]}

echo "== memory: the arena against torch.cuda.max_memory_allocated (limit ${MEMORY_TIMEOUT} s)"
timeout "$MEMORY_TIMEOUT" "$PYTHON" benchmarks/bench_memory.py --device cuda 2>&1 | tee "$OUT/memory.log"
echo "tests: exit status $tests_status; benchmark: exit status $bench_status; logs in $OUT"
exit "$tests_status"
