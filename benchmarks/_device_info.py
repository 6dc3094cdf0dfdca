"""Describe the machine of a device run as one JSON object (benchmarks/gpu_check.sh writes it to
$OUT/device.json): GPU name / memory / driver (nvidia-smi), CuPy version, CUDA runtime, driver and
NVRTC versions, compute capability and SM count, date (UTC), git commit and uncommitted files,
Python / NumPy / SciPy / numba versions, CPU count, compute-sanitizer path and version.

Every field is collected on its own: one that cannot be read holds the error text instead.

    python benchmarks/_device_info.py [OUTPUT.json]
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys


def _run(cmd: list[str], timeout: float = 20.0) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    return out.stdout.rstrip("\n")


def _field(info: dict, key: str, fn) -> None:
    try:
        info[key] = fn()
    except Exception as exc:  # noqa: BLE001 - any failure is reported in the field
        info[key] = f"unavailable ({type(exc).__name__}: {str(exc).strip()[:300]})"


def _nvidia_smi() -> list[dict]:
    rows = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"])
    gpus = []
    for line in rows.splitlines():
        name, mem, driver = (s.strip() for s in line.split(","))
        gpus.append({"name": name, "memory_total_mib": int(float(mem)), "driver_version": driver})
    return gpus


def _cuda() -> dict:
    import cupy

    rt = cupy.cuda.runtime
    props = rt.getDeviceProperties(0)
    name = props["name"]
    v = rt.runtimeGetVersion()
    d = rt.driverGetVersion()
    info = {"device_count": rt.getDeviceCount(),
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "compute_capability": f"{props['major']}.{props['minor']}",
            "multiprocessors": int(props["multiProcessorCount"]),
            "total_memory_bytes": int(props["totalGlobalMem"]),
            "cuda_runtime_version": f"{v // 1000}.{(v % 1000) // 10}",
            "cuda_driver_api_version": f"{d // 1000}.{(d % 1000) // 10}"}
    try:
        major, minor = cupy.cuda.nvrtc.getVersion()
        info["nvrtc_version"] = f"{major}.{minor}"
    except Exception as exc:  # noqa: BLE001
        info["nvrtc_version"] = f"unavailable ({exc})"
    return info


def _git() -> dict:
    commit = _run(["git", "rev-parse", "HEAD"]).strip()
    changed = _run(["git", "status", "--porcelain", "--untracked-files=normal"]).splitlines()
    return {"commit": commit, "uncommitted": len(changed), "uncommitted_files": changed[:60]}


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "scipy", "numba", "cupy", "pytest"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001
            out[mod] = f"unavailable ({type(exc).__name__})"
    try:
        import sksparse  # noqa: F401

        out["scikit_sparse"] = "present"
    except Exception:  # noqa: BLE001
        out["scikit_sparse"] = "absent (factorizer='cholmod' cannot run)"
    return out


def _sanitizer() -> dict:
    path = os.environ.get("SANITIZER") or shutil.which("compute-sanitizer")
    if not path:
        return {"path": None}
    return {"path": path, "version": _run([path, "--version"]).splitlines()[-1]}


def collect() -> dict:
    info: dict = {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "hostname": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform()}
    _field(info, "nvidia_smi", _nvidia_smi)
    _field(info, "cuda", _cuda)
    _field(info, "git", _git)
    _field(info, "versions", _versions)
    _field(info, "compute_sanitizer", _sanitizer)
    return info


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = json.dumps(collect(), indent=1)
    if argv:
        with open(argv[0], "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
