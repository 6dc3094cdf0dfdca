"""The CPU executor's counts of what a device would pay (sansa_gpu/_testing/counts.py): warp-level
memory instructions, 32-byte sectors, atomics and busy lanes per SANSA_PHASE, checked exactly on
kernels whose counts are known; and the cost model of benchmarks/predict_device.py (predictions)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sansa_gpu._testing.counts import merge_counts
from sansa_gpu._testing.cuda_executor import ExecutorDevice, ExecutorModule, xp

ROOT = Path(__file__).resolve().parents[1]

COUNTED = r"""
#include "sansa_common.cuh"
__global__ void known_counts(const float* a, float* out, int* cnt) {
    __shared__ int s;
    const int t = threadIdx.x;
    SANSA_PHASE("coalesced");
    float v = a[t];                       // 32 lanes, 128 consecutive bytes: 4 sectors
    __syncthreads();
    SANSA_PHASE("strided");
    v += a[t * 32];                       // stride 128 bytes: 32 sectors
    __syncthreads();
    SANSA_PHASE("one_lane");
    if (t == 0) out[0] = v;               // 1 lane of 32
    __syncthreads();
    SANSA_PHASE("atomics");
    if (t == 0) s = 0;
    __syncthreads();
    atomicAdd(cnt, 1);                    // 32 global atomics on one address: 1 instruction, 1 sector
    atomicAdd(&s, 1);                     // 32 shared atomics
    __syncthreads();
    SANSA_PHASE("uneven_loop");
    for (int i = 0; i < (t & 1) + 1; ++i) v += a[i * 32 + t];  // 2nd execution by the 16 odd lanes only
    __syncthreads();
    SANSA_PHASE("write");
    out[t + 1] = v + (float)s;
}
__global__ void reconverge(const float* a, float* out) {
    const int t = threadIdx.x;
    float v = 0.0f;
    for (int i = 0; i < 2; ++i) {
        if ((t & 1) == i) v += a[t];      // even lanes in round 0, odd lanes in round 1
        v += 0.0f * __shfl_xor_sync(0xffffffffu, v, 1);  // the warp reconverges every round
    }
    out[t] = v;
}
__global__ void half_the_block(const double* a, double* out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (threadIdx.x < 32) out[i] = a[i];  // warp 1 does nothing
}
"""
NAMES = ("known_counts", "reconverge", "half_the_block")


@pytest.fixture(scope="module")
def module():
    return ExecutorModule("test_counts.cu", True, source=COUNTED, expressions=NAMES)


def _tally(p, space, kind):
    return p[space][kind]


def test_sectors_atomics_and_busy_lanes_of_known_accesses(module):
    k = module.get_function("known_counts")
    a = xp.arange(32 * 32, dtype=np.float32)
    out, cnt = xp.zeros(33, dtype=np.float32), xp.zeros(1, dtype=np.int32)
    k((1,), (32,), (a, out, cnt), count=True)
    assert cnt[0] == 32
    rec = k.last_counts
    assert rec["kernel"] == "known_counts" and rec["grid"] == [1, 1, 1] and rec["block"] == [32, 1, 1]
    c = rec["counts"]
    assert c["blocks"] == 1 and c["threads_per_block"] == 32 and c["barriers"] == 6
    ph = c["phases"]
    assert list(ph) == ["coalesced", "strided", "one_lane", "atomics", "uneven_loop", "write"]  # no 'all'

    load = _tally(ph["coalesced"], "global", "load")
    assert (load["warp_instructions"], load["lane_ops"], load["bytes"], load["sectors"]) == (1, 32, 128, 4)
    assert ph["coalesced"]["busy_fraction"] == 1.0 and ph["coalesced"]["active_thread_fraction"] == 1.0

    load = _tally(ph["strided"], "global", "load")
    assert (load["warp_instructions"], load["lane_ops"], load["bytes"], load["sectors"]) == (1, 32, 128, 32)

    one = ph["one_lane"]
    assert (one["warp_instructions"], one["lane_instructions"]) == (1, 1)
    assert one["busy_fraction"] == 1 / 32 and one["active_thread_fraction"] == 1 / 32
    assert one["thread_slots"] == 32 and one["threads_active"] == 1
    assert _tally(one, "global", "store")["sectors"] == 1

    at = ph["atomics"]
    g, s = _tally(at, "global", "atomic"), _tally(at, "shared", "atomic")
    assert (g["warp_instructions"], g["lane_ops"], g["bytes"], g["sectors"]) == (1, 32, 128, 1)
    assert (s["warp_instructions"], s["lane_ops"], s["bytes"], s["sectors"]) == (1, 32, 128, 0)  # no sectors
    assert _tally(at, "shared", "store")["lane_ops"] == 1  # s = 0 by thread 0
    assert at["intervals"] == 2  # the phase spans two barrier intervals
    assert c["totals"]["atomics"] == {"global": 32, "shared": 32}

    # occurrence grouping: the first execution by all 32 lanes, the second by the 16 odd lanes
    loop = _tally(ph["uneven_loop"], "global", "load")
    assert (loop["warp_instructions"], loop["lane_ops"], loop["bytes"]) == (2, 48, 192)
    assert loop["sectors"] == 4 + 4  # a[0..31], then a[33], a[35], ..., a[63]
    assert ph["uneven_loop"]["busy_fraction"] == 48 / 64

    st = _tally(ph["write"], "global", "store")
    assert (st["warp_instructions"], st["lane_ops"], st["sectors"]) == (1, 32, 5)  # out[1..32]: bytes 4..131

    tot = c["totals"]
    assert tot["sectors"] == 4 + 32 + 1 + 1 + 8 + 5
    assert tot["global"]["load"]["warp_instructions"] == 4


def test_lanes_are_grouped_anew_after_the_warp_reconverges(module):
    k = module.get_function("reconverge")
    a, out = xp.arange(32, dtype=np.float32), xp.zeros(32, dtype=np.float32)
    k((1,), (32,), (a, out), count=True)
    p = k.last_counts["counts"]["phases"]["all"]  # no SANSA_PHASE: everything is 'all'
    load = p["global"]["load"]
    # same instruction, same first execution, but in different rounds between collectives: two
    # warp-level instructions of 16 lanes (as a GPU issues them), each over 4 sectors
    assert (load["warp_instructions"], load["lane_ops"], load["sectors"]) == (2, 32, 8)
    assert p["collectives"] == 2
    assert p["global"]["store"]["sectors"] == 4


def test_threads_of_an_idle_warp_count_as_launched_but_not_active(module):
    k = module.get_function("half_the_block")
    a, out = xp.ones(3 * 64, dtype=np.float64), xp.zeros(3 * 64, dtype=np.float64)
    k((3,), (64,), (a, out), count=True)
    c = k.last_counts["counts"]
    p = c["phases"]["all"]
    assert c["blocks"] == 3 and p["intervals"] == 3
    assert p["thread_slots"] == 3 * 64 and p["threads_active"] == 3 * 32
    assert p["active_thread_fraction"] == 0.5 and p["busy_fraction"] == 1.0
    assert p["global"]["load"]["sectors"] == 3 * 8  # 32 doubles = 256 aligned bytes = 8 sectors per block

    merged = merge_counts([c, c], scale=0.5)  # merging sums by phase name; fractions are recomputed
    assert merged["phases"]["all"]["thread_slots"] == 3 * 64 and merged["phases"]["all"]["active_thread_fraction"] == 0.5
    assert c["totals"]["sectors"] == 2 * 3 * 8 and merged["totals"]["sectors"] == 2 * 3 * 8  # loads and stores


def test_counting_is_opt_in_and_needs_the_instrumented_build(module):
    plain = ExecutorModule("test_counts.cu", False, source=COUNTED, expressions=NAMES).get_function("half_the_block")
    a, out = xp.ones(64, dtype=np.float64), xp.zeros(64, dtype=np.float64)
    with pytest.raises(ValueError, match="instrumented build"):
        plain((1,), (64,), (a, out), count=True)
    plain((1,), (64,), (a, out))
    assert plain.last_counts is None
    assert ExecutorDevice().launch_counts == [] and not ExecutorDevice().count


@pytest.fixture(scope="module")
def small_model():
    from sansa_gpu import cpu
    from sansa_gpu.cpu.refine import initial_inverse
    from sansa_gpu.factorize import ldlt_icf, nnz_budget
    from sansa_gpu.synthetic import synthetic_interactions

    X = synthetic_interactions(n_users=400, n_items=150, mean_items_per_user=12, n_communities=4, seed=3)
    f = ldlt_icf(X, 20.0, nnz_budget(0.1, 150), 0.0, "popularity")
    Wt, Z = cpu.assemble_weights(initial_inverse(f.L), f.d, f.p)
    return X[:40], Wt, Z


def test_scoring_counts_are_recorded_per_launch_and_phase_with_or_without_race_checks(small_model):
    from sansa_gpu import cpu, gpu

    X, Wt, Z = small_model
    ref = cpu.recommend_sparse(X, Wt, Z, 5, plan="factored")
    runs = []
    for checked in (True, False):
        with ExecutorDevice(checked=checked, count=True) as dev:
            ids, scores = gpu.recommend_sparse(X, Wt, Z, 5)
        np.testing.assert_array_equal(ids, ref[0])
        np.testing.assert_array_equal(scores, ref[1])
        runs.append(dev.launch_counts)
    assert len(runs[0]) == 1 and runs[0][0]["kernel"] == "score_topk_warp<long long>"
    assert runs[0][0]["counts"] == runs[1][0]["counts"]  # the race shadow does not change the counts
    phases = runs[0][0]["counts"]["phases"]
    assert {"gather", "sort_latents", "scatter", "keys", "select", "sort_write"} <= set(phases)
    assert all(0 < p["busy_fraction"] <= 1 for p in phases.values() if p["warp_instructions"])
    assert runs[0][0]["counts"]["totals"]["atomics"] == {"global": 0, "shared": 0}  # the kernel has none


def _predict_module():
    spec = importlib.util.spec_from_file_location("predict_device", ROOT / "benchmarks" / "predict_device.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_prediction_cost_model_arithmetic():
    pd = _predict_module()
    counts = {"totals": {"sectors": 1e9, "atomics": {"global": 3e9, "shared": 0}}}
    h200 = pd.predict_seconds(counts, launches=2, device=pd.DEVICES["h200"])
    memory = 1e9 * 32 / (0.8 * 4.8e12)
    assert h200["memory_seconds"] == pytest.approx(memory)
    assert h200["atomics_seconds"] == pytest.approx(3e9 / 1.5e11)
    assert h200["bound"] == "atomics"  # 20 ms of atomics against 8.3 ms of memory
    assert h200["predicted_seconds"] == pytest.approx(3e9 / 1.5e11 + 2 * 5e-6)
    h100 = pd.predict_seconds({"totals": {"sectors": 1e9, "atomics": {"global": 0, "shared": 0}}}, 1, pd.DEVICES["h100"])
    assert h100["predicted_seconds"] == pytest.approx(1e9 * 32 / (0.8 * 3.35e12) + 5e-6) and h100["bound"] == "memory"


def test_stratified_column_sample_covers_the_range():
    pd = _predict_module()
    rng = np.random.default_rng(0)
    ranges = pd._sample_ranges(0, 100_000, 0.02, 64, 100_000, rng)
    assert len(ranges) == 64
    assert all(0 <= s < e <= 100_000 and e - s == 32 for s, e in ranges)
    edges = np.linspace(0, 100_000, 65)
    assert all(edges[i] - 1 <= s and e <= edges[i + 1] + 1 for i, (s, e) in enumerate(ranges))  # one per stratum
    assert pd._sample_ranges(0, 100, 1.0, 64, 100, rng) == []  # everything: run the launch whole


def test_predict_device_writes_prediction_records(tmp_path):
    import json

    pd = _predict_module()
    out = tmp_path / "predicted.jsonl"
    rc = pd.main(["--stages", "refine", "score", "--measure-items", "1000", "2000", "--items", "2000", "20000",
                  "--sample-columns", "200", "--sample-ranges", "8", "--score-sample-users", "16", "--out", str(out)])
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert rc == 0 and not [r for r in recs if "error" in r]
    assert sorted((r["stage"], r["sizes"]["n_items"]) for r in recs) == [
        ("refine", 2000), ("refine", 20000), ("score", 2000), ("score", 20000)]
    for r in recs:
        assert r["what"] == "predicted_device_seconds" and r["prediction"] is True
        assert r["device"] == "prediction (CPU executor counts), not a device measurement"
        assert set(r["predicted_seconds"]) == {"h100", "h200"} and r["predicted_seconds"]["h200"] > 0
        assert r["predicted_seconds"]["h100"] > r["predicted_seconds"]["h200"]
        assert (r["extrapolated_from"] is None) == (r["sizes"]["n_items"] == 2000)
        assert r["busy_fraction_by_phase"] and r["model"]["achievable_bandwidth_fraction"] == 0.8
    refine = next(r for r in recs if r["stage"] == "refine" and r["sizes"]["n_items"] == 2000)
    assert refine["sample"]["columns_sampled"] < 2000  # a sample of the launch's columns ran
    assert "exponent" in next(r for r in recs if r["extrapolated_from"])["growth_check"]
