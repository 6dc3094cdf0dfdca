#!/usr/bin/env bash
# The one device script: GPU tests, the GPU benchmarks, then compute-sanitizer on our kernels, for a
# short slot on a lent GPU machine (one H100/H200, 16 cores; CuPy 14 for CUDA 13, NumPy, SciPy, numba
# and pytest system-wide as python3; no scikit-sparse, so every step uses ICF or synthetic factors;
# no network: nothing is installed, the checkout is imported through PYTHONPATH). docs/device_check.md
# says how to run it and what comes back.
#
#   OUT=/an/empty/folder bash benchmarks/gpu_check.sh            # from anywhere; OUT must be empty
#   bash benchmarks/gpu_check.sh --dry-run                          # here, no GPU (GPU_CHECK_DRY_RUN=1)
#   (carry devdata/ with factors from benchmarks/save_factors.py for the real-data refine case)
#
# What comes back: at most 8 files in $OUT, every JSON line of them with a "device" field naming the
# GPU (CuPy's device name, e.g. "NVIDIA H200"; "CPU executor (dry run)" in a dry run), the lines
# of the CPU twins and the GPU-over-CPU speedups included:
#   steps.jsonl     one line per step: rc, seconds, timed_out, timeout_s, or why it was skipped
#   device.jsonl    one line: GPU, driver, CuPy, CUDA runtime / NVRTC, date, git commit and changes
#   predicted.jsonl benchmarks/predict_device.py's predictions, made before anything is measured
#                   (only when that script exists; called as `predict_device.py ARGS --out FILE`,
#                   ARGS from $GPU_CHECK_PREDICT_ARGS, $GPU_CHECK_DEVICE_INFO naming device.jsonl;
#                   without FILE its JSON stdout lines are taken). Its own "device" text is kept
#                   as "device_note".
#   refine.jsonl    refine_bench.py       score.jsonl  score_bench.py (both cases)
#   e2e_fit.jsonl   e2e_fit.py            tests.jsonl  per pytest step: counts, failing tests,
#                                                      the sanitizer's error count
#   logs.tar.gz     logs/<step>.log and logs/<step>.xml (junit) of every step, and anything else a
#                   step left in $OUT (moved there, so the folder never holds more than 8 files)
# Logs are written outside $OUT and archived after every step and on exit (a trap), so a run cut
# short still returns them.
#
# Steps, in order: timeout in seconds, then the PREDICTED seconds on one H100/H200 + 16 cores in
# brackets. No GPU run has happened yet: the brackets are estimates from CPU runs on a 2-core VM,
# not measurements. Timeouts are 2-3x the prediction, so the 1M-item cases fit with margin.
#   device_info      20  device.jsonl (the device's name is read first, ~2 s)              [~5]
#   predicted        75  benchmarks/predict_device.py, if present, in the background beside the
#                        warm-ups and gpu_tests (CPU only: the executor's counts; measured at 20k
#                        items, predicted for 100k and 1M; ~48 s on the 2-core VM)  [~30, hidden]
#   warmup_*         60  in parallel: numba compiles the CPU twins (refine, fit, recommend; cached on
#                        disk for the later steps); the GPU kernel smoke test (NVRTC cache)   [~30]
#   gpu_tests        90  python3 -m pytest -m gpu tests, on the device only                  [~20]
#   refine_bench    150  one refinement sweep GPU vs CPU twin: devdata/*.npz, synthetic n=100k and
#                        1M items (20 off-diagonals per column; CPU twin up to 1M)           [~50]
#   score_bench     150  1M synthetic users, k=20, against 40k-item ICF models (densities 5e-5,
#                        5e-4; fitted on the CPU): users/s with transfers and kernel-only, top-k vs
#                        the CPU path on 10k users; one pass each, cut at 10 s              [~70]
#   e2e_fit         120  SANSA(factorizer="icf") fit, device="gpu" then "cpu", 200k items    [~40]
#   score_bench_1m_items 150  200k users against 1M-item synthetic factors (density 2e-5, no fit:
#                        a 1M-item ICF fit does not fit the slot)                             [~50]
# then the compute-sanitizer passes, after the benchmarks and only on our kernels:
#   sanitizer_filter 45  memcheck on benchmarks/_warmup.py canary: proves the kernel-name filter
#                        reaches NVRTC-compiled kernels (else the passes below run unfiltered) [~10]
#   memcheck        120  the GPU tests under compute-sanitizer --tool memcheck              [~45]
#   racecheck       120  ... --tool racecheck (shared-memory hazards)                        [~50]
#   synccheck        90  ... --tool synccheck, only while the budget allows                  [~40]
#   memcheck_smoke   60  benchmarks/_warmup.py kernels under memcheck, while the budget allows [~15]
# Predicted total ~435 s of the default budget of 480 s (GPU_CHECK_BUDGET_S); call the device tool
# with a timeout of at least the budget + 60 s (archive and summary), e.g. timeout_s=560.
#
# Budget: no step starts, and the running one is cut, once GPU_CHECK_BUDGET_S seconds have passed;
# the benchmarks may not use the last GPU_CHECK_SANITIZER_RESERVE_S (default 150) of it, which are
# kept for the sanitizer passes. No step stops the others; the script exits 0 after a full pass
# (each step's outcome is in steps.jsonl), 2 on bad arguments or a non-empty $OUT.
#
# Sanitizer passes: compute-sanitizer from PATH, the CUDA toolkit or an NVIDIA pip wheel;
# --kernel-name kns=NAME for each kernel of sansa_gpu.gpu._kernels.KERNELS (the one list; see
# `python benchmarks/_device_info.py --sanitizer-kernels`), SANSA_GPU_NO_POOL=1 (no CuPy pool
# blocks hiding an overrun), --error-exitcode 9; pytest runs without -x. Kernels compile with
# NVRTC's -lineinfo (sansa_gpu.gpu._kernels.NVRTC_OPTIONS), so reports name the .cu line.
#
# Dry run (--dry-run or GPU_CHECK_DRY_RUN=1): every step here, at small sizes (2k-5k items, a few
# thousand users), with the CPU executor of the kernels standing in for the device
# (SANSA_GPU_EXECUTOR=1 for the benchmark scripts, SANSA_GPU_TEST_KINDS=executor for the tests);
# the sanitizer steps are recorded as skipped. Python: $PYTHON, else .venv/bin/python when present.
#
# The dry run's timeouts are 3x the above (GPU_CHECK_TIMEOUT_SCALE); it takes ~90 s here with
# warm caches (numba, the executor's build), ~160 s with cold ones on a busy 2-core VM.
#
# Environment: OUT (default: a new folder under $TMPDIR), PYTHON (default python3),
# GPU_CHECK_BUDGET_S, GPU_CHECK_SANITIZER_RESERVE_S, GPU_CHECK_TIMEOUT_SCALE, GPU_CHECK_STEPS=
# "score_bench e2e_fit" (only these steps; device_info always runs), GPU_CHECK_TESTS (pytest
# arguments of the test steps, default "-m gpu tests"), GPU_CHECK_PREDICT_ARGS.

DRY_RUN="${GPU_CHECK_DRY_RUN:-0}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$arg' (--dry-run, --help)" >&2; exit 2 ;;
  esac
done
case "$DRY_RUN" in ""|0|no|false) DRY_RUN=0 ;; *) DRY_RUN=1 ;; esac

if [ -z "${OUT:-}" ]; then
  OUT=$(mktemp -d "${TMPDIR:-/tmp}/sansa_gpu_out.XXXXXX") || exit 2
fi
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2  # absolute: the script changes directory
if [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  echo "gpu_check.sh: OUT=$OUT is not empty (the run leaves at most 8 files there; give an empty folder)" >&2
  exit 2
fi
cd "$(dirname "$0")/.." || exit 2  # the repository root
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# compiled code shared by all steps (the warm-up fills them), kept out of the checkout
export CUPY_CACHE_DIR="${CUPY_CACHE_DIR:-${TMPDIR:-/tmp}/sansa_gpu_cupy_cache}"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-${TMPDIR:-/tmp}/sansa_gpu_numba_cache}"
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ "$DRY_RUN" = 1 ] && [ -x .venv/bin/python ]; then
  PY=$PWD/.venv/bin/python
else
  PY=python3
fi
BUDGET_S="${GPU_CHECK_BUDGET_S:-480}"
# every step's timeout is multiplied by this (a dry run: the executor and 2 cores are far slower than a GPU)
TIMEOUT_SCALE="${GPU_CHECK_TIMEOUT_SCALE:-$([ "$DRY_RUN" = 1 ] && echo 3 || echo 1)}"
SAN_RESERVE_S="${GPU_CHECK_SANITIZER_RESERVE_S:-150}"
RESERVE=0  # seconds of the budget the running phase must leave (the sanitizers' reserve during the benchmarks)
read -r -a TEST_ARGS <<<"${GPU_CHECK_TESTS:--m gpu tests}"
if [ "$DRY_RUN" = 1 ]; then PREDICT_DEFAULT="--measure-items 3000 --items 5000 --score-sample-users 64 --score-users 2000"
else PREDICT_DEFAULT="--measure-items 20000 --items 100000 1000000 --score-sample-users 128"; fi
read -r -a PREDICT_ARGS <<<"${GPU_CHECK_PREDICT_ARGS:-$PREDICT_DEFAULT}"
START=$(date +%s)
STEPS_FILE="$OUT/steps.jsonl"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/sansa_gpu_check.XXXXXX") || exit 2
LOGS="$SCRATCH/logs"  # every step's log and junit XML; archived into $OUT/logs.tar.gz
mkdir -p "$LOGS" "$SCRATCH/running"
KEEP="steps.jsonl device.jsonl predicted.jsonl refine.jsonl score.jsonl e2e_fit.jsonl tests.jsonl logs.tar.gz"
ARCHIVE_EACH=1
DEVICE="unknown"

if [ "$DRY_RUN" = 1 ]; then
  export SANSA_GPU_EXECUTOR="${SANSA_GPU_EXECUTOR:-1}"  # the benchmark scripts install the CPU executor
  TEST_KINDS=executor
else
  unset SANSA_GPU_EXECUTOR  # the real device, whatever the caller's environment says
  TEST_KINDS=cuda
fi

want() {  # is step $1 selected by GPU_CHECK_STEPS (all when unset; device_info always)?
  [ -z "${GPU_CHECK_STEPS:-}" ] || [ "$1" = device_info ] || [[ " $GPU_CHECK_STEPS " == *" $1 "* ]]
}

left() { echo $(( START + BUDGET_S - RESERVE - $(date +%s) )); }

json_str() { printf '%s' "$1" | tr -d '"\\' | tr '\n\t' '  '; }  # safe inside a JSON string

record() {  # record STEP RC SECONDS TIMED_OUT EXTRA_JSON
  printf '{"step": "%s", "device": "%s", "rc": %s, "seconds": %s, "timed_out": %s%s}\n' \
    "$1" "$(json_str "$DEVICE")" "$2" "$3" "$4" "${5:+, $5}" >>"$STEPS_FILE"
}

skip() {  # skip STEP REASON: record a step that does not run
  want "$1" || return 0
  record "$1" null 0 false "\"skipped\": \"$(json_str "$2")\""
  echo "== $1: skipped ($2)"
}

tests_summary() {  # $OUT/tests.jsonl from the junit XML and sanitizer logs so far (stdlib Python, ~0.1 s)
  timeout 30 "$PY" benchmarks/_check_records.py tests "$LOGS" "$DEVICE" >"$SCRATCH/tests.jsonl" 2>>"$LOGS/finish.log"
  if [ -s "$SCRATCH/tests.jsonl" ]; then mv -f "$SCRATCH/tests.jsonl" "$OUT/tests.jsonl"; else rm -f "$SCRATCH/tests.jsonl"; fi
}

archive() {  # tests.jsonl, then the logs (and anything moved there) into $OUT/logs.tar.gz, built next to $SCRATCH
  tests_summary
  tar -czf "$SCRATCH.tgz" -C "$SCRATCH" logs 2>/dev/null && mv -f "$SCRATCH.tgz" "$OUT/logs.tar.gz"
}

# run_step NAME TIMEOUT_S MIN_S CMD...: run CMD under timeout (cut to what is left of the budget),
# output to $LOGS/NAME.log; skipped (and recorded so) when fewer than MIN_S seconds are left.
# A function after_NAME, when defined, is called with the exit status and prints extra JSON fields.
run_step() {
  local name=$1 limit=$(( $2 * TIMEOUT_SCALE )) min=$3
  shift 3
  want "$name" || return 0
  local remaining
  remaining=$(left)
  if [ "$remaining" -lt "$min" ]; then
    record "$name" null 0 false "\"skipped\": \"${remaining}s of the budget left, needs ${min}s\", \"timeout_s\": $limit"
    echo "== $name: skipped (${remaining}s of the budget left, needs ${min}s)"
    return 0
  fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  echo "== $name (timeout ${limit}s)"
  local t0 t1 rc secs timed_out=false extra="\"timeout_s\": $limit"
  t0=$(date +%s.%N)
  echo "$t0 $limit" >"$SCRATCH/running/$name"  # until the step is recorded (finish records it if cut)
  timeout -k 5 "$limit" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  wait $!  # (in the background and waited for, so that INT / TERM run the exit trap at once)
  rc=$?
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  if { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && awk -v s="$secs" -v l="$limit" 'BEGIN { exit !(s >= l - 0.5) }'; then
    timed_out=true
  fi
  if declare -F "after_$name" >/dev/null; then
    local more
    more=$("after_$name" "$rc")
    [ -n "$more" ] && extra="$extra, $more"
  fi
  record "$name" "$rc" "$secs" "$timed_out" "$extra"
  rm -f "$SCRATCH/running/$name"
  echo "   $name: rc=$rc ${secs}s timed_out=$timed_out"
  tail -n 4 "$LOGS/$name.log" | cut -c1-400 | sed "s/^/   | /"
  [ "$ARCHIVE_EACH" = 1 ] && archive
  return 0
}

finish() {  # on every exit: tests.jsonl, the summary, at most 8 files in $OUT, the archive (tests.jsonl again)
  local rc=$?
  trap - EXIT INT TERM
  local pid
  for pid in $(jobs -p); do  # steps still running when interrupted: our own jobs and their children only
    pkill -TERM -P "$pid" 2>/dev/null  # a background step's timeout (it passes the signal on to the step)
    kill -TERM "$pid" 2>/dev/null
  done
  wait 2>/dev/null
  local f t0 limit
  for f in "$SCRATCH"/running/*; do  # steps cut by the interruption
    [ -f "$f" ] || continue
    read -r t0 limit <"$f"
    record "$(basename "$f")" null "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" false \
      "\"timeout_s\": $limit, \"interrupted\": \"the script was stopped (exit $rc) while the step ran\""
  done
  tests_summary
  echo "== done in $(( $(date +%s) - START ))s (exit $rc)"
  timeout 10 "$PY" benchmarks/_summary.py "$OUT" 2>>"$LOGS/finish.log" || cat "$STEPS_FILE"
  local name
  for f in "$OUT"/* "$OUT"/.[!.]*; do  # the 8-file limit: anything else goes into the archive
    [ -e "$f" ] || continue
    name=$(basename "$f")
    if [[ " $KEEP " != *" $name "* ]] || [ -d "$f" ]; then
      mkdir -p "$LOGS/extra" && mv -f "$f" "$LOGS/extra/" && echo "   moved $name into logs.tar.gz (logs/extra/)"
    fi
  done
  if archive; then rm -rf "$SCRATCH"; else echo "   archiving the logs failed: they stay in $SCRATCH"; fi
  echo "== $OUT: $(ls "$OUT" | wc -l) files: $(ls "$OUT" | tr '\n' ' ')"
  exit "$rc"
}
trap finish EXIT
trap 'echo "== interrupted"; exit 130' INT
trap 'echo "== terminated"; exit 143' TERM

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

# ---- 0. the device's name (on every record), the sanitizer and its kernel filter
DEVICE=$(timeout 60 "$PY" benchmarks/_device_info.py --name 2>/dev/null | tail -n 1)
if [ -z "$DEVICE" ] && [ "$DRY_RUN" = 0 ]; then
  DEVICE=$(timeout 10 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
fi
DEVICE=${DEVICE:-unknown (benchmarks/_device_info.py --name failed)}
SANITIZER=""
SAN_FILTER=()
SAN_FILTER_DESC="none"
if [ "$DRY_RUN" = 0 ]; then
  SANITIZER=$(find_sanitizer)
  for k in $(timeout 30 "$PY" benchmarks/_device_info.py --sanitizer-kernels 2>/dev/null); do
    SAN_FILTER+=(--kernel-name "kns=$k")
  done
  [ ${#SAN_FILTER[@]} -gt 0 ] && SAN_FILTER_DESC="${SAN_FILTER[*]}"
fi
export SANITIZER
echo "== sansa_gpu device check: OUT=$OUT, budget ${BUDGET_S}s, $(date -u +%FT%TZ)$([ "$DRY_RUN" = 1 ] && echo ', DRY RUN')"
echo "   device: $DEVICE; python: $PY; compute-sanitizer: ${SANITIZER:-not found}; filter: $SAN_FILTER_DESC"

# ---- 1. what machine this is; predictions before anything is measured
run_step device_info 20 1 "$PY" benchmarks/_device_info.py "$OUT/device.jsonl"
if [ ! -s "$OUT/device.jsonl" ]; then  # Python failed: keep what bash can see
  smi=$(timeout 10 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)
  printf '{"what": "device_info", "device": "%s", "nvidia_smi": "%s", "date_utc": "%s", "git_commit": "%s", "note": "fallback, benchmarks/_device_info.py failed"}\n' \
    "$(json_str "$DEVICE")" "$(json_str "$smi")" "$(date -u +%FT%TZ)" "$(git rev-parse HEAD 2>/dev/null || echo unknown)" >"$OUT/device.jsonl"
fi
# predictions (CPU only: the executor's counts) in the background, beside the warm-ups and the tests,
# finished before the first benchmark so that they neither see a measurement nor slow one down
ARCHIVE_EACH=0
PREDICT_PID=""
if [ -f benchmarks/predict_device.py ]; then
  export GPU_CHECK_DEVICE_INFO="$OUT/device.jsonl"
  run_step predicted 75 10 "$PY" benchmarks/predict_device.py "${PREDICT_ARGS[@]}" --out "$LOGS/predicted.raw.jsonl" &
  PREDICT_PID=$!
else
  skip predicted "benchmarks/predict_device.py is absent"
fi

# ---- 2. compile caches (numba, NVRTC / the executor's build) in parallel
WARM_PIDS=()
run_step warmup_refine 60 10 "$PY" benchmarks/_warmup.py refine &
WARM_PIDS+=($!)
run_step warmup_fit 60 10 "$PY" benchmarks/_warmup.py fit &
WARM_PIDS+=($!)
run_step warmup_recommend 60 10 "$PY" benchmarks/_warmup.py recommend &
WARM_PIDS+=($!)
run_step warmup_kernels 60 10 "$PY" benchmarks/_warmup.py kernels &
WARM_PIDS+=($!)
wait "${WARM_PIDS[@]}"
archive

# ---- 3. the GPU tests on the device (on the executor in a dry run)
run_step gpu_tests 90 15 env SANSA_GPU_TEST_KINDS=$TEST_KINDS "$PY" -m pytest -q -p no:cacheprovider \
  --junitxml="$LOGS/gpu_tests.xml" "${TEST_ARGS[@]}"
ARCHIVE_EACH=1
if [ -n "$PREDICT_PID" ]; then
  wait "$PREDICT_PID"
  if [ -s "$LOGS/predicted.raw.jsonl" ]; then src="$LOGS/predicted.raw.jsonl"; else src="$LOGS/predicted.log"; fi
  [ -f "$src" ] && timeout 20 "$PY" benchmarks/_check_records.py stamp "$DEVICE" <"$src" >"$OUT/predicted.jsonl"
  [ -s "$OUT/predicted.jsonl" ] || rm -f "$OUT/predicted.jsonl"
fi
archive

# ---- 4. benchmarks (JSON lines appended as each case finishes); they leave the sanitizers' reserve
RESERVE=$SAN_RESERVE_S
if [ "$DRY_RUN" = 1 ]; then
  REFINE_SIZES=(--synthetic 3000 --per-col 8 --cpu-max-n 3000 --repeats 1)
  SCORE_SIZES=(--synthetic-users 3000 --items 3000 --per-user 10 --densities 2e-3 --check-users 500 --time-cap 5)
  E2E_SIZES=(--items 2000 --density 5e-3 --check-users 300)
  SCORE_1M_SIZES=(--synthetic-users 2000 --items 5000 --per-user 10 --densities 1e-3 --check-users 300 --time-cap 5)
else
  REFINE_SIZES=(--synthetic 100000 1000000 --cpu-max-n 1000000 --repeats 3)
  SCORE_SIZES=(--synthetic-users 1000000 --items 40000 --densities 5e-5 5e-4 --check-users 10000 --time-cap 10)
  E2E_SIZES=(--items 200000 --density 5e-5 --check-users 2000)
  SCORE_1M_SIZES=(--synthetic-users 200000 --items 1000000 --densities 2e-5 --check-users 2000 --time-cap 10)
fi
REFINE_INPUTS=()
for f in devdata/*.npz; do [ -f "$f" ] && REFINE_INPUTS+=("$f"); done
if [ ${#REFINE_INPUTS[@]} -gt 0 ]; then
  REFINE_INPUTS=(--factors "${REFINE_INPUTS[@]}")
else
  want refine_bench && echo "   no devdata/*.npz carried: refine_bench runs on synthetic factors only"
fi
run_step refine_bench 150 15 "$PY" benchmarks/refine_bench.py "${REFINE_INPUTS[@]}" "${REFINE_SIZES[@]}" \
  --device gpu --out "$OUT/refine.jsonl"
run_step score_bench 150 25 "$PY" benchmarks/score_bench.py "${SCORE_SIZES[@]}" --k 20 --device gpu --repeats 1 \
  --out "$OUT/score.jsonl"
run_step e2e_fit 120 20 "$PY" benchmarks/e2e_fit.py "${E2E_SIZES[@]}" --devices gpu cpu --out "$OUT/e2e_fit.jsonl"
run_step score_bench_1m_items 150 30 "$PY" benchmarks/score_bench.py "${SCORE_1M_SIZES[@]}" --model synthetic \
  --k 20 --device gpu --repeats 1 --out "$OUT/score.jsonl"
RESERVE=0

# ---- 5. compute-sanitizer on our kernels only, after the benchmarks
canary_caught() {  # did memcheck, with the filter on, report the canary kernel's out-of-bounds write?
  [ -f "$LOGS/sanitizer_filter.log" ] && grep -q "Invalid __global__ write" "$LOGS/sanitizer_filter.log" \
    && grep -q sansa_sanitizer_canary "$LOGS/sanitizer_filter.log"
}
after_sanitizer_filter() {  # extra fields of the step's record (runs in a subshell: reports only)
  if canary_caught; then echo '"expected_rc": 9, "filter_verified": true'; else echo '"expected_rc": 9, "filter_verified": false'; fi
}
can_sanitize() {  # can_sanitize STEP: true when compute-sanitizer can run, else STEP is recorded as skipped
  if [ "$DRY_RUN" = 1 ]; then skip "$1" "no compute-sanitizer in a dry run"; return 1; fi
  if [ -z "$SANITIZER" ]; then skip "$1" "compute-sanitizer not found"; return 1; fi
}

sanitizer_pass() {  # sanitizer_pass TOOL TIMEOUT_S MIN_S: the GPU tests under compute-sanitizer TOOL
  local tool=$1
  can_sanitize "$tool" || return 0
  run_step "$tool" "$2" "$3" env SANSA_GPU_NO_POOL=1 SANSA_GPU_TEST_KINDS=cuda "$SANITIZER" --tool "$tool" \
    "${SAN_FILTER[@]}" --error-exitcode 9 --print-limit 100 "$PY" -m pytest -q -p no:cacheprovider \
    --junitxml="$LOGS/$tool.xml" "${TEST_ARGS[@]}"
}
if can_sanitize sanitizer_filter; then
  run_step sanitizer_filter 45 10 env SANSA_GPU_NO_POOL=1 "$SANITIZER" --tool memcheck "${SAN_FILTER[@]}" \
    --error-exitcode 9 --print-limit 10 "$PY" benchmarks/_warmup.py canary
  if want sanitizer_filter && ! canary_caught; then  # the filter matched nothing: check every kernel instead
    SAN_FILTER=()
    SAN_FILTER_DESC="none (the filter did not catch the canary: the passes check every kernel)"
  fi
  echo "   sanitizer kernel filter: $SAN_FILTER_DESC"
fi
sanitizer_pass memcheck 120 30
sanitizer_pass racecheck 120 30
sanitizer_pass synccheck 90 30
if can_sanitize memcheck_smoke; then
  run_step memcheck_smoke 60 15 env SANSA_GPU_NO_POOL=1 "$SANITIZER" --tool memcheck "${SAN_FILTER[@]}" \
    --error-exitcode 9 --print-limit 100 "$PY" benchmarks/_warmup.py kernels
fi
exit 0
