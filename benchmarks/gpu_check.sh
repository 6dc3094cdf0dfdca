#!/usr/bin/env bash
# The one device script: GPU tests (plain, then under compute-sanitizer memcheck and racecheck)
# and the GPU benchmarks, writing logs and JSON lines to $OUT. Meant for the lent GPU machine:
#   device run: bash benchmarks/gpu_check.sh      (carry devdata/ with factors from save_factors.py)
set -uo pipefail
OUT="${OUT:-/tmp/sansa_gpu_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps -e . >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/device.txt" 2>&1
python3 -m pytest -q -m gpu tests 2>&1 | tee "$OUT/gpu_tests.log"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$SAN" ]; then
  for tool in memcheck racecheck; do
    "$SAN" --tool "$tool" --error-exitcode 9 python3 -m pytest -q -x -m gpu tests/test_gpu_twins.py tests/test_kernels.py \
      >"$OUT/sanitizer_$tool.log" 2>&1; echo "compute-sanitizer $tool exit $?" | tee -a "$OUT/gpu_tests.log"
  done
else
  echo "compute-sanitizer not found" | tee -a "$OUT/gpu_tests.log"
fi
FACTORS=$(ls devdata/*.npz 2>/dev/null)
python3 benchmarks/refine_bench.py --factors $FACTORS --synthetic 100000 1000000 --out "$OUT/refine_bench.jsonl" 2>&1 | tail -20
# batch scoring on the GPU (kernels/score_topk.cu): 1M users at three densities, then 10M at 5e-4
python3 benchmarks/score_bench.py --synthetic-users 1000000 --densities 5e-5 5e-4 2e-3 --device gpu --repeats 3 \
  --out "$OUT/score_gpu.jsonl" 2>&1 | tail -5
timeout 300 python3 benchmarks/score_bench.py --synthetic-users 10000000 --densities 5e-4 --device gpu --repeats 1 \
  --check-users 5000 --out "$OUT/score_gpu.jsonl" 2>&1 | tail -3
