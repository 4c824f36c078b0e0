#!/usr/bin/env bash
# All GPU checks of the cuda backend in one run (under 8 minutes on one GPU), for a machine
# with an NVIDIA GPU and `pip install -e ".[cuda12,dev]"` (or cuda13) done:
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#
# 1. the device and versions (nvidia-smi, CuPy, numba-cuda);
# 2. the GPU-marked tests (tests/test_gpu.py: Philox bits, every pair's parity with the NumPy
#    reference, SIGKILL + resume, the physics oracles with backend="cuda"), <= 300 s;
# 3. the throughput benchmark (benchmarks/gpu_throughput.py: W1-W4, float32 and float64, next
#    to the Philox-only rate, copy bandwidth, cuBLAS GEMM and JAX when installed), <= 150 s.
# Everything is printed, and written to ONE file: benchmarks/results/gpu-<model>.md (the
# benchmark report, then the test summary, then this script's full log of both steps).
set -u
cd "$(dirname "$0")/.."
unset NUMBA_ENABLE_CUDASIM LANGEVIN_SIM_CUDA_SIM
TEST_BUDGET=${TEST_BUDGET:-300}
BENCH_BUDGET=${BENCH_BUDGET:-150}
LOG=$(mktemp -t gpu_check.XXXXXX.log)
start=$(date +%s)

echo "== device" | tee -a "$LOG"
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi failed") | tee -a "$LOG"
MODEL=$(python - <<'EOF' 2>>"$LOG"
import re
try:
    from langevin_sim.backends import cuda_runtime as rt
    desc = rt.require()
except Exception as e:
    print(f"ERROR {e}")
    raise SystemExit(0)
print(re.sub(r"[^A-Za-z0-9]+", "-", desc.split(",")[0]).strip("-"))
EOF
)
if [[ "$MODEL" == ERROR* || -z "$MODEL" ]]; then
    echo "the cuda backend cannot run here: ${MODEL#ERROR }" | tee -a "$LOG"
    exit 2
fi
OUT=benchmarks/results/gpu-$MODEL.md
python -c "import cupy, numba; print('cupy', cupy.__version__, 'numba', numba.__version__)" 2>&1 | tee -a "$LOG"
pip list 2>/dev/null | grep -i -E "^(cupy|numba|jax|cuda)" | tee -a "$LOG"

echo "== GPU tests (budget ${TEST_BUDGET}s)" | tee -a "$LOG"
timeout --signal=INT "$TEST_BUDGET" python -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
    -ra --durations=10 2>&1 | tee -a "$LOG"
TESTS=${PIPESTATUS[0]}
echo "pytest exit status: $TESTS" | tee -a "$LOG"

echo "== throughput (budget ${BENCH_BUDGET}s)" | tee -a "$LOG"
timeout --signal=INT "$BENCH_BUDGET" python benchmarks/gpu_throughput.py --seconds 1.5 --out "$OUT" 2>&1 | tee -a "$LOG"
BENCH=${PIPESTATUS[0]}
echo "benchmark exit status: $BENCH" | tee -a "$LOG"

if [[ ! -f "$OUT" ]]; then
    echo "# GPU check on $MODEL (the benchmark wrote no report: exit status $BENCH)" > "$OUT"
fi
{
    echo
    echo "## GPU tests (pytest -m gpu tests/test_gpu.py): exit status $TESTS"
    echo
    echo '```'
    grep -E "passed|failed|error|PASSED|FAILED|ERROR|SKIPPED|slowest|^[0-9.]+s (call|setup)" "$LOG" | head -80
    echo '```'
    echo
    echo "## Full log ($(( $(date +%s) - start )) s)"
    echo
    echo '```'
    cat "$LOG"
    echo '```'
} >> "$OUT"
echo "wrote $OUT ($(( $(date +%s) - start )) s)"
[[ $TESTS -eq 0 && $BENCH -eq 0 ]]
