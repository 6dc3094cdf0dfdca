#!/usr/bin/env bash
# The one device script: GPU tests (plain, then under compute-sanitizer) and the GPU benchmarks,
# for a short slot on a lent GPU machine (one H100/H200, 16 cores, CuPy + CUDA, NumPy, SciPy, numba
# and pytest system-wide as python3; no scikit-sparse, so every step uses ICF or synthetic factors;
# no network, so nothing is installed: the checkout is imported through PYTHONPATH).
#
#   OUT=/some/empty/folder bash benchmarks/gpu_check.sh        # from the repository root
#   (carry devdata/ with factors from benchmarks/save_factors.py for the real-data refine case)
#
# Steps, in order (timeout in seconds; expected on one H100 + 16 cores in brackets):
#   device_info   10  $OUT/device.json: GPU, driver, CuPy, CUDA runtime, date, git commit   [~3]
#   warmup_*      45  in parallel: numba compiles the CPU twins (refine, fit, recommend; cached on
#                     disk for the later steps) while the GPU kernel smoke test runs under
#                     compute-sanitizer memcheck (memcheck_smoke; warmup_kernels if none)    [~25]
#   gpu_tests     35  python3 -m pytest -q -m gpu tests                                      [~15]
#   memcheck      60  the same tests under compute-sanitizer --tool memcheck                  [?]
#   racecheck     45  ... --tool racecheck (shared-memory hazards)                            [?]
#   refine_bench  40  refinement sweep GPU vs CPU twin: devdata/*.npz, synthetic n=100k, 1M   [~30]
#   score_bench   60  batch scoring, 1M synthetic users, k=20, 40k-item ICF model at densities
#                     5e-5 and 5e-4: users/s with transfers (API) and kernel-only (CUDA events,
#                     same pass), top-k vs the CPU path on 10k users; one pass each, cut at 10 s [~45]
#   e2e_fit       40  SANSA(factorizer="icf") fit, device="gpu" then "cpu", 200k items       [~30]
# then, only while the budget allows (time the steps above did not use):
#   synccheck           45  the tests under compute-sanitizer --tool synccheck
#   score_bench_1m_items 50  scoring 200k users against 1M-item synthetic factors (density 2e-5,
#                            no fit: a 1M-item ICF fit does not fit the slot)
#
# Sanitizer passes run with SANSA_GPU_NO_POOL=1 (the test suite then disables CuPy's memory pools,
# so pooled blocks cannot hide an overrun) and --error-exitcode 9; pytest runs without -x.
# The whole run stops starting steps, and cuts the running one, at GPU_CHECK_BUDGET_S (default 340 s)
# after the start. No step stops the others: each one's exit status, duration and whether it timed
# out go to $OUT/steps.jsonl as {"step", "rc", "seconds", "timed_out", ...}, its output to
# $OUT/<step>.log, benchmark results to $OUT/*.jsonl as they are produced.
# GPU_CHECK_STEPS="score_bench e2e_fit" runs only the named steps (device_info always runs).

OUT="${OUT:-/tmp/sansa_gpu_out}"
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)  # absolute: the script changes directory
cd "$(dirname "$0")/.." || exit 1           # the repository root
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# compiled code shared by all steps (the warm-up fills them), kept out of the checkout
export CUPY_CACHE_DIR="${CUPY_CACHE_DIR:-${TMPDIR:-/tmp}/sansa_gpu_cupy_cache}"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-${TMPDIR:-/tmp}/sansa_gpu_numba_cache}"
PY="${PYTHON:-python3}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-340}"
START=$(date +%s)
STEPS_FILE="$OUT/steps.jsonl"

want() {  # is step $1 selected by GPU_CHECK_STEPS (all when unset; device_info always)?
  [ -z "${GPU_CHECK_STEPS:-}" ] || [ "$1" = device_info ] || [[ " $GPU_CHECK_STEPS " == *" $1 "* ]]
}

left() { echo $(( START + BUDGET_S - $(date +%s) )); }

record() {  # record STEP RC SECONDS TIMED_OUT EXTRA_JSON
  printf '{"step": "%s", "rc": %s, "seconds": %s, "timed_out": %s%s}\n' "$1" "$2" "$3" "$4" "${5:+, $5}" >>"$STEPS_FILE"
}

# run_step NAME TIMEOUT_S MIN_S CMD...: run CMD under timeout (cut to what is left of the budget),
# output to $OUT/NAME.log; skipped (and recorded so) when fewer than MIN_S seconds are left.
run_step() {
  local name=$1 limit=$2 min=$3
  shift 3
  want "$name" || return 0
  local remaining
  remaining=$(left)
  if [ "$remaining" -lt "$min" ]; then
    record "$name" null 0 false "\"skipped\": \"${remaining}s of the budget left, needs ${min}s\""
    echo "== $name: skipped (${remaining}s of the budget left)"
    return 0
  fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  echo "== $name (timeout ${limit}s)"
  local t0 t1 rc secs timed_out=false
  t0=$(date +%s.%N)
  timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1 </dev/null
  rc=$?
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  if { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && awk -v s="$secs" -v l="$limit" 'BEGIN { exit !(s >= l - 0.5) }'; then
    timed_out=true
  fi
  record "$name" "$rc" "$secs" "$timed_out" "\"timeout_s\": $limit"
  echo "   $name: rc=$rc ${secs}s timed_out=$timed_out"
  tail -n 4 "$OUT/$name.log" | cut -c1-400 | sed "s/^/   | /"
}

find_sanitizer() {  # path of compute-sanitizer: PATH, the CUDA toolkit, or a pip wheel of NVIDIA's
  local s
  if s=$(command -v compute-sanitizer 2>/dev/null); then echo "$s"; return 0; fi
  for s in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer /opt/nvidia/*/compute-sanitizer/compute-sanitizer; do
    if [ -x "$s" ]; then echo "$s"; return 0; fi
  done
  timeout 15 "$PY" - <<'EOF' 2>/dev/null
import glob, os, site
for root in site.getsitepackages() + [site.getusersitepackages()]:
    for p in glob.glob(os.path.join(root, "nvidia", "**", "compute-sanitizer"), recursive=True):
        if os.path.isfile(p) and os.access(p, os.X_OK):
            print(p)
            raise SystemExit(0)
EOF
}

sanitizer_pass() {  # sanitizer_pass TOOL TIMEOUT_S MIN_S: the GPU tests under compute-sanitizer TOOL
  local tool=$1
  if [ -z "$SANITIZER" ]; then
    if want "$tool"; then
      record "$tool" 127 0 false '"skipped": "compute-sanitizer not found"'
      echo "== $tool: skipped (compute-sanitizer not found)"
    fi
    return 0
  fi
  run_step "$tool" "$2" "$3" env SANSA_GPU_NO_POOL=1 SANSA_GPU_TEST_KINDS=cuda "$SANITIZER" --tool "$tool" \
    --error-exitcode 9 --print-limit 100 "$PY" -m pytest -q -m gpu -p no:cacheprovider --junitxml="$OUT/$tool.xml" tests
}

echo "== sansa_gpu device check: OUT=$OUT, budget ${BUDGET_S}s, $(date -u +%FT%TZ)"
SANITIZER=$(find_sanitizer)
export SANITIZER
echo "   compute-sanitizer: ${SANITIZER:-not found}"

# ---- 1. what machine this is
run_step device_info 10 1 "$PY" benchmarks/_device_info.py "$OUT/device.json"
if [ ! -s "$OUT/device.json" ]; then  # Python failed: keep what bash can see
  smi=$(timeout 10 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1 | tr -d '"\\')
  printf '{"nvidia_smi": "%s", "date_utc": "%s", "git_commit": "%s", "note": "fallback, benchmarks/_device_info.py failed"}\n' \
    "$smi" "$(date -u +%FT%TZ)" "$(git rev-parse HEAD 2>/dev/null || echo unknown)" >"$OUT/device.json"
fi

# ---- 2. compile caches (numba, NVRTC) in parallel; the kernel smoke test under memcheck
run_step warmup_refine 45 10 "$PY" benchmarks/_warmup.py refine &
run_step warmup_fit 45 10 "$PY" benchmarks/_warmup.py fit &
run_step warmup_recommend 45 10 "$PY" benchmarks/_warmup.py recommend &
if [ -n "$SANITIZER" ]; then
  run_step memcheck_smoke 45 10 env SANSA_GPU_NO_POOL=1 "$SANITIZER" --tool memcheck --error-exitcode 9 --print-limit 100 \
    "$PY" benchmarks/_warmup.py kernels &
else
  run_step warmup_kernels 45 10 "$PY" benchmarks/_warmup.py kernels &
fi
wait

# ---- 3. tests, plain and under the sanitizers
run_step gpu_tests 35 10 env SANSA_GPU_TEST_KINDS=cuda "$PY" -m pytest -q -m gpu -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml" tests
sanitizer_pass memcheck 60 20
sanitizer_pass racecheck 45 20

# ---- 4. benchmarks (JSON lines appended as each case finishes)
REFINE_INPUTS=()
for f in devdata/*.npz; do [ -f "$f" ] && REFINE_INPUTS+=("$f"); done
if [ ${#REFINE_INPUTS[@]} -gt 0 ]; then
  REFINE_INPUTS=(--factors "${REFINE_INPUTS[@]}")
else
  want refine_bench && echo "   no devdata/*.npz carried: refine_bench runs on synthetic factors only"
fi
run_step refine_bench 40 15 "$PY" benchmarks/refine_bench.py "${REFINE_INPUTS[@]}" --synthetic 100000 1000000 \
  --cpu-max-n 1000000 --repeats 3 --device gpu --out "$OUT/refine_bench.jsonl"
run_step score_bench 60 25 "$PY" benchmarks/score_bench.py --synthetic-users 1000000 --items 40000 --densities 5e-5 5e-4 \
  --k 20 --device gpu --repeats 1 --time-cap 10 --check-users 10000 --out "$OUT/score.jsonl"
run_step e2e_fit 40 20 "$PY" benchmarks/e2e_fit.py --items 200000 --density 5e-5 --devices gpu cpu \
  --out "$OUT/e2e_fit.jsonl"

# ---- 5. extras while time is left
sanitizer_pass synccheck 45 25
run_step score_bench_1m_items 50 30 "$PY" benchmarks/score_bench.py --synthetic-users 200000 --items 1000000 \
  --model synthetic --densities 2e-5 --k 20 --device gpu --repeats 1 --time-cap 10 --check-users 2000 \
  --out "$OUT/score.jsonl"

echo "== done in $(( $(date +%s) - START ))s"
timeout 5 "$PY" benchmarks/_summary.py "$OUT" 2>&1 || cat "$STEPS_FILE"
exit 0
