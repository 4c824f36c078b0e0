#!/usr/bin/env bash
# All GPU checks of the cuda backend in one run (under 8 minutes on one GPU):
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#
# 1. the device and versions (nvidia-smi, CuPy, numba-cuda);
# 2. the GPU-marked tests (tests/test_gpu.py: Philox bits, every pair's parity with the NumPy
#    reference, SIGKILL + resume, the physics oracles with backend="cuda"), <= 200 s, spread
#    over pytest-xdist workers when it is installed (GPU_TEST_WORKERS, default: the CPU cores
#    less 4, 12 at most: the tests are bound by kernel compilation, one CPU core each; run 1
#    ran 114 of them on 8), each test at most GPU_TEST_TIMEOUT (150) s where pytest-timeout
#    is installed;
# 3. the throughput benchmark (benchmarks/gpu_throughput.py: W1-W4, float32 and float64,
#    next to the Philox-only rate, copy bandwidth, cuBLAS GEMM and JAX when installed (true
#    float32 matmuls; its TF32 default beside it); W2 and W3 without their GEMMs and by the
#    dense step kernel at 1, 4, 8 and 16 threads per replica (at 16 also with per-thread
#    arrays instead of streaming, cuda_kernels.GEMM_STREAM); CUDA graphs at a launch-bound
#    size; the grokking net fused against the generic path; W4 with its batch loops opaque
#    and unrolled; W1 with its registers capped at 40; the dense Quadratic at d = 32 and 64
#    by the row kernel and by the GEMM path), in what the tests left of 470 s (>= 250 s);
#    the threads-per-replica and register-cap A/Bs first, the workloads' table then at the
#    settings they chose (the report's "Settings" section names the defaults to set); cut
#    short by the budget, it still writes its report with what it measured, saying where it
#    was cut (exit status 124).
# Everything is printed, and written to ONE file: benchmarks/results/gpu-<model>.md (the
# benchmark report, then the test summary, then this script's full log of both steps); when
# $OUT names a folder (the device tool's output folder), the file is copied there too. The
# output ends with a summary (the tests' counts and failures, the settings the benchmark chose,
# the targets), for a caller that keeps only its tail.
#
# It needs no install and no network: with `pip install -e ".[cuda12,dev]"` (or cuda13) done
# it uses that; otherwise it puts the repository on PYTHONPATH (the package is pure Python:
# its kernels compile at run time) and runs with what the machine has (CuPy, numba-cuda,
# h5py, SciPy, pytest). Wheels of anything missing, saved under .whl/ (for the device tool:
# see docs/gpu.md), are installed into /tmp/gpu-check-site first (their .pth files run, by
# benchmarks/gpu_check_site.py: a carried numba-cuda takes over numba.cuda). PYTHON picks the
# interpreter (default: python3). GPU_CHECK_DRY=1 runs the same steps under numba's CUDA
# simulator (the GPU tests then skip, the benchmark runs --tiny: the numbers mean nothing), to
# try the script itself on a machine without a GPU; its report is gpu-simulator.md, not kept.
#
# A second call after a fix, when the device time left holds no full run, can run a part:
# GPU_TESTS adds pytest arguments (shell words: GPU_TESTS='-k "graph or resume"'), GPU_BENCH
# benchmark arguments (GPU_BENCH="--only W2,W3 --dtypes float32", or "--ab-only"); either
# set to "none" skips its step; TEST_BUDGET (200) and BENCH_BUDGET (seconds; default what the
# tests left of TOTAL_BUDGET, 470) cut each step.
set -u
cd "$(dirname "$0")/.."
unset NUMBA_ENABLE_CUDASIM LANGEVIN_SIM_CUDA_SIM
BENCH_ARGS=(--seconds 1.0)
TEST_SEL=() BENCH_MORE=()
[[ "${GPU_TESTS:-none}" == none ]] || eval "TEST_SEL=(${GPU_TESTS})"
[[ "${GPU_BENCH:-none}" == none ]] || eval "BENCH_MORE=(${GPU_BENCH})"
if [[ "${GPU_CHECK_DRY:-0}" == 1 ]]; then
    export NUMBA_ENABLE_CUDASIM=1
    BENCH_ARGS=(--tiny --seconds 0.2 --no-jax)
fi
PY=${PYTHON:-python3}
TEST_BUDGET=${TEST_BUDGET:-200}
TOTAL_BUDGET=${TOTAL_BUDGET:-470}      # both steps and the setup: under 8 minutes
KILL_AFTER=${KILL_AFTER:-20}           # a step deaf to its budget's SIGINT (a hung kernel, a
#                                        wedged xdist worker) is killed this much later
CORES=$(nproc 2>/dev/null || echo 8)
WORKERS=${GPU_TEST_WORKERS:-$(( CORES > 16 ? 12 : (CORES > 5 ? CORES - 4 : 1) ))}
LOG=$(mktemp -t gpu_check.XXXXXX.log)
start=$(date +%s)
export PYTHONUNBUFFERED=1

SITE=/tmp/gpu-check-site
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl 2>&1 | tee -a "$LOG"
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
    if compgen -G "$SITE/*.pth" > /dev/null; then
        # a PYTHONPATH folder's .pth files are not run (numba-cuda's redirects numba.cuda)
        cp benchmarks/gpu_check_site.py "$SITE/sitecustomize.py"
    fi
fi
if ! (cd / && "$PY" -c "import langevin_sim") 2>/dev/null; then
    # (from /: `python -c` puts the current folder on sys.path, a script its own folder)
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    echo "langevin_sim is not installed: running it from $PWD (PYTHONPATH)" | tee -a "$LOG"
fi

echo "== device" | tee -a "$LOG"
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi failed") 2>&1 | tee -a "$LOG"
MODEL=$("$PY" - <<'EOF' 2>>"$LOG"
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
REPORT=benchmarks/results/gpu-$MODEL.md
if [[ "${GPU_CHECK_DRY:-0}" == 1 ]]; then
    REPORT=$(dirname "$LOG")/gpu-simulator.md
    rm -f "$REPORT"
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib, os, sys
import numba.cuda
print("numba.cuda is", os.path.dirname(numba.cuda.__file__))
print("python", sys.version.split()[0], *(
    f"{m} {getattr(importlib.import_module(m), '__version__', '?')}" if importlib.util.find_spec(m)
    else f"{m} missing" for m in ("numpy", "numba", "numba_cuda", "cupy", "h5py", "scipy", "jax")))
EOF
"$PY" -m pip list 2>/dev/null | grep -i -E "^(cupy|numba|jax|cuda)" | tee -a "$LOG"

echo "== GPU tests (budget ${TEST_BUDGET}s)" | tee -a "$LOG"
OPTS=()
if [[ "$WORKERS" -gt 1 ]] && "$PY" -c "import xdist" 2>/dev/null; then
    OPTS=(-n "$WORKERS")
fi
if "$PY" -c "import pytest_timeout" 2>/dev/null; then
    OPTS+=(--timeout "${GPU_TEST_TIMEOUT:-150}")   # a hung test fails alone
fi
if [[ "${GPU_TESTS:-}" == none ]]; then
    echo "skipped (GPU_TESTS=none)" | tee -a "$LOG"
    TESTS=0
else
    timeout --signal=INT --kill-after="$KILL_AFTER" "$TEST_BUDGET" "$PY" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider \
        "${OPTS[@]}" -ra --durations=10 "${TEST_SEL[@]}" 2>&1 | tee -a "$LOG"
    TESTS=${PIPESTATUS[0]}
fi
echo "pytest exit status: $TESTS" | tee -a "$LOG"

# the benchmark gets what the tests left of the total (at least 250 s when they keep to theirs)
BENCH_BUDGET=${BENCH_BUDGET:-$(( TOTAL_BUDGET - ($(date +%s) - start) ))}
(( BENCH_BUDGET > 30 )) || BENCH_BUDGET=30
echo "== throughput (budget ${BENCH_BUDGET}s)" | tee -a "$LOG"
if [[ "${GPU_BENCH:-}" == none ]]; then
    echo "skipped (GPU_BENCH=none)" | tee -a "$LOG"
    BENCH=0
else
    timeout --signal=INT --kill-after="$KILL_AFTER" "$BENCH_BUDGET" "$PY" benchmarks/gpu_throughput.py "${BENCH_ARGS[@]}" "${BENCH_MORE[@]}" \
        --out "$REPORT" 2>&1 | tee -a "$LOG"
    BENCH=${PIPESTATUS[0]}
fi
echo "benchmark exit status: $BENCH" | tee -a "$LOG"

if [[ "${GPU_BENCH:-}" == none ]]; then
    echo "# GPU check on $MODEL (the benchmark skipped: GPU_BENCH=none)" > "$REPORT"
elif [[ ! -f "$REPORT" ]]; then
    echo "# GPU check on $MODEL (the benchmark wrote no report: exit status $BENCH)" > "$REPORT"
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
} >> "$REPORT"
echo "wrote $REPORT ($(( $(date +%s) - start )) s)"
if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
    cp "$REPORT" "$OUT"/ && echo "copied to $OUT/$(basename "$REPORT")"
    # the benchmark's JSON (its rows, limits and settings in full) beside it
    if [[ -f "${REPORT%.md}.json" ]]; then
        cp "${REPORT%.md}.json" "$OUT"/ && echo "copied to $OUT/$(basename "${REPORT%.md}.json")"
    fi
fi
# the answers last, where a caller that keeps only the output's tail sees them
echo "== summary: tests exit $TESTS, benchmark exit $BENCH"
grep -E "^[0-9]+ (passed|failed|skipped)|^FAILED|^ERROR" "$LOG" | tail -25
awk '/^## GPU tests/ {exit} /^## Settings the table ran with/ {on = 1} /^## Chain-steps/ {on = 0}
     /^## Targets/ {on = 1} /^.with records.:/ {on = 0} on' "$REPORT"
[[ $TESTS -eq 0 && $BENCH -eq 0 ]]
