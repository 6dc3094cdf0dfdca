"""benchmarks/gpu_check.sh, the one device script, run here as a dry run: every step end to end at
small sizes with the CPU executor of the kernels standing in for the device. What a device run
returns must hold here too: at most 8 files, JSON lines only (and one archive), every record naming
the device, every step's log in the archive."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
DRY_RUN_DEVICE = "CPU executor (dry run)"
KEEP = {"steps.jsonl", "device.jsonl", "predicted.jsonl", "refine.jsonl", "score.jsonl", "e2e_fit.jsonl",
        "tests.jsonl", "logs.tar.gz"}
BENCHMARKS = {"refine_bench": "refine.jsonl", "score_bench": "score.jsonl", "e2e_fit": "e2e_fit.jsonl",
              "score_bench_1m_items": "score.jsonl"}
SANITIZER_STEPS = ("sanitizer_filter", "memcheck", "racecheck", "synccheck", "memcheck_smoke")


def _env(out: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GPU_CHECK_", "SANSA_GPU_")) and k not in ("OUT", "PYTHON")}
    return {**env, "OUT": str(out), "PYTHON": sys.executable, **extra}


def _records(path: Path) -> list[dict]:
    recs = []
    for i, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            rec = json.loads(line)  # every line is JSON
            assert isinstance(rec, dict), f"{path.name}:{i + 1} is not an object"
            recs.append(rec)
    return recs


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check_out")
    env = _env(out,
               # the plumbing is under test here, not the GPU tests (the suite runs them): one of them
               GPU_CHECK_TESTS="-m gpu tests/test_kernels.py -k padding",
               GPU_CHECK_PREDICT_ARGS="--stages score --measure-items 1000 --items 1000 --score-sample-users 16 "
                                      "--score-users 100")
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=900)
    return out, proc


def test_dry_run_exits_0_with_at_most_8_files(dry_run):
    out, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    assert len(names) <= 8 and names <= KEEP, names
    assert all(p.is_file() for p in out.iterdir())
    assert {"steps.jsonl", "device.jsonl", "tests.jsonl", "logs.tar.gz", *BENCHMARKS.values()} <= names


def test_every_record_names_the_device(dry_run):
    out, _ = dry_run
    for path in out.glob("*.jsonl"):
        recs = _records(path)
        assert recs, f"{path.name} is empty"
        for rec in recs:
            assert rec.get("device") == DRY_RUN_DEVICE, (path.name, rec)
    (info,) = _records(out / "device.jsonl")
    assert info["dry_run"] is True and "executor" in info
    speedups = [r for r in _records(out / "refine.jsonl") if "gpu_speedup" in r]
    assert all(r["device"] == DRY_RUN_DEVICE and r["backend"] == "cpu" for r in speedups)


def test_steps_and_tests_records(dry_run):
    out, _ = dry_run
    steps = {r["step"]: r for r in _records(out / "steps.jsonl")}
    expected = {"device_info", "predicted", "warmup_refine", "warmup_fit", "warmup_recommend", "warmup_kernels",
                "gpu_tests", *BENCHMARKS, *SANITIZER_STEPS}
    assert expected <= set(steps), expected - set(steps)
    for name in SANITIZER_STEPS:
        assert steps[name]["rc"] is None and steps[name]["skipped"] == "no compute-sanitizer in a dry run"
    for name in ("device_info", "gpu_tests", *BENCHMARKS):
        assert steps[name]["rc"] is not None, steps[name]  # ran (not skipped for the budget)
        assert steps[name]["rc"] != 2, steps[name]  # 2: a usage error, i.e. the script called it wrongly
    for step, file in BENCHMARKS.items():
        assert _records(out / file), f"{step} wrote no record"
    tests = {r["step"]: r for r in _records(out / "tests.jsonl")}
    assert tests["gpu_tests"]["tests"] >= 1 and tests["gpu_tests"]["failed"] == 0, tests["gpu_tests"]


def test_archive_holds_every_step_log(dry_run):
    out, _ = dry_run
    with tarfile.open(out / "logs.tar.gz") as tar:
        members = set(tar.getnames())
    ran = [r["step"] for r in _records(out / "steps.jsonl") if r["rc"] is not None]
    missing = [s for s in ran if f"logs/{s}.log" not in members]
    assert not missing, (missing, sorted(members))
    assert "logs/gpu_tests.xml" in members


def test_non_empty_out_is_refused(tmp_path):
    (tmp_path / "old.txt").write_text("kept")
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]


def test_stray_files_go_into_the_archive(tmp_path):
    """Whatever a step leaves in $OUT beyond the 8 names is moved into logs.tar.gz (logs/extra/)."""
    out = tmp_path / "out"
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/usr/bin/env bash\n[ "$1" = benchmarks/_device_info.py ] && [ -n "$2" ] && '
                       f'touch "$OUT/stray.txt" && mkdir -p "$OUT/stray_dir"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {**_env(out, GPU_CHECK_STEPS="device_info"), "PYTHON": str(wrapper)}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {"steps.jsonl", "device.jsonl", "logs.tar.gz"}
    with tarfile.open(out / "logs.tar.gz") as tar:
        members = set(tar.getnames())
    assert {"logs/extra/stray.txt", "logs/extra/stray_dir", "logs/device_info.log"} <= members, members
