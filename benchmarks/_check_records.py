"""Records that benchmarks/gpu_check.sh derives from its steps' scratch files (stdlib only).

    python benchmarks/_check_records.py tests SCRATCH DEVICE    # tests.jsonl lines, one per pytest step
    python benchmarks/_check_records.py stamp DEVICE < IN > OUT  # JSON lines of IN, ``device`` = DEVICE

``tests``: for every ``SCRATCH/<step>.xml`` (pytest's --junitxml), one JSON line: the step, the
device, counts (tests, passed, failed, errors, skipped), seconds, the names of the failing tests
(up to 50) and, for a compute-sanitizer step, the sanitizer's own error count from the
``ERROR SUMMARY`` line of ``SCRATCH/<step>.log`` (None when the line is absent: the run was cut).
A step whose log exists but whose XML does not (cut before pytest wrote it) gets a line with
``junit: "missing"``.

``stamp``: copies the lines of stdin that parse as JSON objects with ``device`` set to DEVICE, the
run's device (for records of scripts outside the benchmarks: predict_device.py); a ``device`` the
record had with another value is kept as ``device_note`` (predict_device.py says there that its
records are predictions). Other lines are dropped.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

#: Steps that run pytest (their junit XML is summarised); the sanitizer passes among them.
PYTEST_STEPS = ("gpu_tests", "memcheck", "racecheck", "synccheck")
SANITIZER_STEPS = ("memcheck", "racecheck", "synccheck")
_ERROR_SUMMARY = re.compile(r"ERROR SUMMARY:\s*(\d+)\s+error")


def junit_counts(path: Path) -> dict:
    """Counts and failing test names of one pytest junit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests = failed = errors = skipped = 0
    seconds = 0.0
    failing: list[str] = []
    for suite in suites:
        for case in suite.iter("testcase"):
            tests += 1
            name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
            if case.find("failure") is not None:
                failed += 1
                failing.append(name)
            elif case.find("error") is not None:
                errors += 1
                failing.append(name)
            elif case.find("skipped") is not None:
                skipped += 1
        seconds += float(suite.get("time", 0) or 0)
    # errors outside any test case (collection errors) are counted on the suite only
    suite_errors = sum(int(s.get("errors", 0) or 0) for s in suites)
    errors = max(errors, suite_errors)
    return {"tests": tests, "passed": tests - failed - errors - skipped if tests >= failed + errors + skipped else 0,
            "failed": failed, "errors": errors, "skipped": skipped, "seconds": round(seconds, 2),
            "failing": failing[:50]}


def sanitizer_errors(log: Path) -> int | None:
    """The error count of compute-sanitizer's last ``ERROR SUMMARY`` line in ``log`` (None if absent)."""
    if not log.is_file():
        return None
    found = _ERROR_SUMMARY.findall(log.read_text(errors="replace"))
    return int(found[-1]) if found else None


def tests_records(scratch: Path, device: str) -> list[dict]:
    out = []
    for step in PYTEST_STEPS:
        xml, log = scratch / f"{step}.xml", scratch / f"{step}.log"
        if not xml.is_file() and not log.is_file():
            continue  # not run (skipped or not selected): steps.jsonl says why
        rec: dict = {"what": "tests", "step": step, "device": device}
        if xml.is_file():
            try:
                rec.update(junit_counts(xml))
            except Exception as exc:  # noqa: BLE001 - a truncated file: say so, keep going
                rec["junit"] = f"unreadable ({type(exc).__name__}: {exc})"
        else:
            rec["junit"] = "missing"
        if step in SANITIZER_STEPS:
            rec["sanitizer_errors"] = sanitizer_errors(log)
        out.append(rec)
    return out


def stamp(lines, device: str):
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            own = rec.get("device")
            rec["device"] = device
            if own is not None and own != device:
                rec["device_note"] = own
            yield json.dumps(rec)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "tests":
        for rec in tests_records(Path(argv[1]), argv[2]):
            print(json.dumps(rec))
        return 0
    if len(argv) == 2 and argv[0] == "stamp":
        for line in stamp(sys.stdin, argv[1]):
            print(line)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
