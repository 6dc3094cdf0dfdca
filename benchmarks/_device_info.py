"""Describe the machine of a device run as one JSON line (benchmarks/gpu_check.sh writes it to
$OUT/device.jsonl): ``device`` (the GPU's name, as every other record of the run), GPU name / memory /
driver (nvidia-smi), CuPy version, CUDA runtime, driver and NVRTC versions, compute capability and SM
count, date (UTC), git commit and uncommitted files, Python / NumPy / SciPy / numba versions, CPU
count, compute-sanitizer path and version.

Every field is collected on its own: one that cannot be read holds the error text instead.

Also the device helpers shared by the benchmark scripts of the device run:

- :func:`use_executor_from_env`: with ``SANSA_GPU_EXECUTOR`` set (gpu_check.sh --dry-run), install
  the CPU executor of the CUDA kernels (``sansa_gpu._testing.cuda_executor.ExecutorDevice``) as the
  device of ``sansa_gpu.gpu`` for the rest of the process: ``1`` / ``checked`` the bounds- and
  race-checked build (as the test suite), ``plain`` the unchecked one.
- :func:`device_name`: the name every benchmark record carries in ``device`` ("NVIDIA H200" from
  CuPy's device properties; :data:`DRY_RUN_DEVICE` on the executor).
- :func:`kernel_names`: the ``__global__`` functions of ``kernels/*.cu`` (from
  ``sansa_gpu.gpu._kernels.KERNELS``, the one list), which the compute-sanitizer passes check.

    python benchmarks/_device_info.py [OUTPUT.jsonl]     # the record (stdout; appended to OUTPUT)
    python benchmarks/_device_info.py --name             # the device's name only
    python benchmarks/_device_info.py --kernel-names     # our kernels' names, one a line
    python benchmarks/_device_info.py --sanitizer-kernels  # the same and CANARY_KERNEL: the sanitizer filter
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import shutil
import subprocess
import sys

#: ``device`` of every record when the CPU executor stands in for the GPU (gpu_check.sh --dry-run).
DRY_RUN_DEVICE = "CPU executor (dry run)"
#: Environment variable that makes :func:`use_executor_from_env` install the executor.
EXECUTOR_ENV = "SANSA_GPU_EXECUTOR"
#: A kernel of no use but to prove that compute-sanitizer's name filter reaches NVRTC-compiled
#: kernels (benchmarks/_warmup.py canary); its name is in the filter with :func:`kernel_names`'.
CANARY_KERNEL = "sansa_sanitizer_canary"


def use_executor_from_env():
    """Install the CPU executor as the device of ``sansa_gpu.gpu`` for the rest of the process when
    ``SANSA_GPU_EXECUTOR`` asks for it ('1' or 'checked': checked build; 'plain': unchecked);
    returns the installed device, or None (the real GPU, through CuPy)."""
    mode = os.environ.get(EXECUTOR_ENV, "").strip().lower()
    if mode in ("", "0", "no", "false"):
        return None
    if mode not in ("1", "checked", "plain", "yes", "true"):
        raise ValueError(f"{EXECUTOR_ENV}={mode!r}: use 1, checked or plain")
    from sansa_gpu.gpu import _device
    from sansa_gpu._testing.cuda_executor import ExecutorDevice

    if _device.installed() is not None:
        return _device.installed()
    dev = ExecutorDevice(checked=mode != "plain")
    dev.__enter__()  # left installed until the process ends
    return dev


@functools.lru_cache(maxsize=1)
def _cuda_name() -> str:
    try:
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception as exc:  # noqa: BLE001 - no GPU: the record says so instead of a name
        return f"no GPU ({type(exc).__name__}: {str(exc).strip()[:120]})"


def device_name() -> str:
    """The name of the device sansa_gpu.gpu runs on: CUDA device 0's name ("NVIDIA H200"),
    :data:`DRY_RUN_DEVICE` while the executor is installed, "no GPU (...)" when neither answers."""
    from sansa_gpu.gpu import _device

    if _device.installed() is not None:
        return DRY_RUN_DEVICE
    return _cuda_name()


def record_device(gpu_used: bool) -> str:
    """``device`` of a benchmark record: the GPU's name in a run that uses the GPU (its CPU-twin and
    speedup records included), "cpu" in a CPU-only run."""
    return device_name() if gpu_used else "cpu"


def kernel_names() -> list[str]:
    """The kernel functions of kernels/*.cu without template arguments ("score_topk_warp", ...),
    from ``sansa_gpu.gpu._kernels.KERNELS``; what the compute-sanitizer passes are limited to."""
    from sansa_gpu.gpu._kernels import KERNELS

    names = (expr.split("<", 1)[0].strip() for exprs in KERNELS.values() for expr in exprs)
    return list(dict.fromkeys(n for n in names if n))


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


def _executor() -> dict:
    from sansa_gpu.gpu import _device

    dev = _device.installed()
    from sansa_gpu._testing.cuda_executor import compiler

    return {"checked": bool(getattr(dev, "checked", False)), "compiler": compiler(),
            "multiprocessor_count": dev.multiprocessor_count(), "free_bytes": dev.free_bytes()}


def collect() -> dict:
    dev = use_executor_from_env()
    info: dict = {"what": "device_info", "device": device_name(), "dry_run": dev is not None,
                  "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "hostname": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform()}
    if dev is not None:
        _field(info, "executor", _executor)
    else:
        _field(info, "nvidia_smi", _nvidia_smi)
        _field(info, "cuda", _cuda)
        _field(info, "compute_sanitizer", _sanitizer)
    _field(info, "kernels", kernel_names)
    _field(info, "git", _git)
    _field(info, "versions", _versions)
    return info


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--name"]:
        use_executor_from_env()
        print(device_name())
        return 0
    if argv == ["--kernel-names"]:
        print("\n".join(kernel_names()))
        return 0
    if argv == ["--sanitizer-kernels"]:  # what the compute-sanitizer passes check: ours and the canary
        print("\n".join(kernel_names() + [CANARY_KERNEL]))
        return 0
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(__doc__, file=sys.stderr)
        return 2
    line = json.dumps(collect())
    if argv:
        with open(argv[0], "a") as f:
            f.write(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
