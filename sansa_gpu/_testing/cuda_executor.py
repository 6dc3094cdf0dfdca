"""A CPU executor for the package's CUDA kernels (test infrastructure, not a user-facing device).

Each ``kernels/*.cu`` file is compiled *unchanged* as host C++ (``g++``) with a small emulation
header force-included (``cuda_emu/cuda_emu.h``) and the template instantiations listed in
``sansa_gpu.gpu._kernels.KERNELS``; a kernel is then launched on NumPy arrays with CUDA semantics:

* every CUDA thread of a block is a fiber of its own (``cuda_emu/runtime.cpp``); the fibers of a
  block run cooperatively on one OS thread, so ``__syncthreads()`` is a true block barrier and
  ``__shfl_*_sync`` / ``__ballot_sync`` / ``__syncwarp`` exchange values between the 32 lanes of a
  warp exactly as on the device;
* **the blocks of a grid run one after another** (never concurrently), so ``__shared__`` variables
  are per block; shared memory is poisoned with 0xff bytes at the start of each block, as a GPU
  leaves it uninitialised;
* misuse raises :class:`KernelFault`, never hangs: a barrier or a full-mask warp collective that
  not every thread reaches (an exited thread, a divergent branch), lanes meeting at different
  collectives, a partial mask (unsupported);
* a launch whose argument count or types do not match the kernel's C signature raises
  ``TypeError`` before anything runs. Arguments are converted by CuPy's rules for
  ``RawKernel`` (a Python int is passed as int64, a float as float64, a NumPy scalar with its own
  dtype, a size-1 NumPy array by value, a device array as its pointer), and the converted type must
  equal the parameter's type exactly: what would be silently reinterpreted on a GPU fails here;
* ``checked=True`` builds the kernel with GCC's ThreadSanitizer instrumentation but links our own
  hooks instead of the TSan runtime: every load and store is checked against the argument arrays
  (each copied into its own buffer with guard gaps, so an access one element outside it is
  reported with the argument's name and the source line) and against a shadow of the last
  accesses per element, which reports two accesses of different threads, at least one a write and
  not both atomic, with no ``__syncthreads()`` (or, within a warp, ``__syncwarp()``) between them.
  Blocks never synchronise with each other. Warp shuffles and ballots do not order memory (CUDA's
  memory model), only ``__syncwarp``/``__syncthreads`` do.
* counting (``ExecutorDevice(count=True)``, or ``kernel(..., count=True)`` on a kernel of the
  instrumented build; opt-in, off by default) records per launch what a device would pay: the
  accesses of a warp's lanes grouped into warp-level instructions (same instruction, same k-th
  execution since the warp last reconverged), the global-memory 32-byte sectors each touches, bytes
  requested, atomics, and per phase (``SANSA_PHASE`` in ``kernels/sansa_common.cuh``; 'all'
  without) the busy lanes and threads. The counts feed *predictions* of device time
  (``benchmarks/predict_device.py``), never measurements; see ``docs/executor_counts.md`` and
  :mod:`sansa_gpu._testing.counts`.

Floating point: the kernels' explicitly rounded intrinsics (``__fadd_rn`` ...) are single IEEE
operations and the build uses ``-ffp-contract=off``; plain ``a * b + c`` is not contracted to an
FMA here, while nvcc contracts it by default, so only the ``_rn`` paths are bit-comparable.

:class:`ExecutorDevice` plugs the executor into the seam of ``sansa_gpu.gpu._device``: the real
glue in ``sansa_gpu/gpu`` then runs with NumPy arrays (:class:`DeviceArray`) for CuPy arrays, and
tests can make the n-th device allocation or launch fail with an out-of-memory error.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import mmap
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..gpu._kernels import KERNELS, kernel_dir
from .counts import derive_counts

EMU_DIR = Path(__file__).resolve().parent / "cuda_emu"
CXX_FLAGS = ("-std=c++17", "-fPIC", "-fvisibility=hidden", "-ffp-contract=off", "-fno-fast-math", "-g")
KERNEL_OPT = "-O1"
CHECKED_FLAGS = ("-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0")
#: Checked build: each argument array is copied into its own anonymous mapping with this much
#: unused address space on both sides, so an access even far outside it lands in no other
#: argument (the pages are never touched, so they cost no memory).
GUARD_BYTES = 16 << 20
SCHEDULES = {"forward": 0, "reverse": 1, "random": 2}


class KernelFault(RuntimeError):
    """A kernel did something that is an error on a GPU (detected by the executor)."""


class ExecutorUnavailable(RuntimeError):
    """No C++ compiler to build the executor."""


# ------------------------------------------------------------------------------------ build
def compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise ExecutorUnavailable(f"the CUDA executor needs a C++ compiler ({cxx!r} not found; set CXX)")
    return cxx


def cache_dir() -> Path:
    d = os.environ.get("SANSA_EXECUTOR_CACHE")
    path = Path(d) if d else Path(tempfile.gettempdir()) / f"sansa_gpu_executor_{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"executor build failed: {' '.join(cmd)}\n{proc.stderr}")


def _source_digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in sorted(EMU_DIR.iterdir()):
        if p.suffix in (".h", ".cpp"):
            h.update(p.name.encode() + p.read_bytes())
    for p in sorted(kernel_dir().iterdir()):
        if p.suffix in (".cu", ".cuh"):
            h.update(p.name.encode() + p.read_bytes())
    for part in parts:
        h.update(part.encode())
    return h.hexdigest()[:20]


def _runtime_object(cxx: str) -> Path:
    """``cuda_emu/runtime.cpp`` compiled once (never instrumented), shared by every kernel library."""
    flags = list(CXX_FLAGS) + ["-O2"]
    out = cache_dir() / f"runtime_{_source_digest(repr(flags), cxx)}.o"
    if not out.is_file():
        fd, tmp = tempfile.mkstemp(suffix=".o", dir=cache_dir())
        os.close(fd)
        try:
            _run([cxx, *flags, "-I", str(EMU_DIR), "-c", str(EMU_DIR / "runtime.cpp"), "-o", tmp])
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out


def build_library(file: str, expressions: tuple[str, ...], checked: bool, source: str | None = None) -> Path:
    """Compile kernel file ``file`` (or the given ``source`` text standing for it) with the
    emulation header and link it with the runtime into a shared library; cached by content.
    Returns its path."""
    cxx = compiler()
    flags = list(CXX_FLAGS) + [KERNEL_OPT] + (list(CHECKED_FLAGS) if checked else [])
    key = _source_digest(file, repr(expressions), repr(flags), cxx, source or "")
    out = cache_dir() / f"{Path(file).stem}_{'checked' if checked else 'plain'}_{key}.so"
    if out.is_file():
        return out
    runtime = _runtime_object(cxx)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        tmp = Path(tmp)
        kernel_path = kernel_dir() / file
        if source is not None:
            kernel_path = tmp / file
            kernel_path.write_text(source)
        wrapper = tmp / "wrapper.cpp"
        lines = [f'#include "{kernel_path}"', '#include "launch.h"']
        lines += [f"CUDA_EMU_EXPORT({i}, {expr})" for i, expr in enumerate(expressions)]
        wrapper.write_text("\n".join(lines) + "\n")
        includes = ["-I", str(kernel_dir()), "-I", str(EMU_DIR), "-include", str(EMU_DIR / "cuda_emu.h")]
        _run([cxx, *flags, *includes, "-c", str(wrapper), "-o", str(tmp / "kernel.o")])
        lib = tmp / "lib.so"
        _run([cxx, "-shared", "-Wl,--no-undefined", "-o", str(lib), str(tmp / "kernel.o"), str(runtime)])
        os.replace(lib, out)
    return out


# ----------------------------------------------------------------------- signatures & args
_CODE_DTYPES = {
    "b8": np.dtype(np.bool_), "i8": np.dtype(np.int8), "u8": np.dtype(np.uint8), "i16": np.dtype(np.int16),
    "u16": np.dtype(np.uint16), "i32": np.dtype(np.int32), "u32": np.dtype(np.uint32), "i64": np.dtype(np.int64),
    "u64": np.dtype(np.uint64), "f32": np.dtype(np.float32), "f64": np.dtype(np.float64),
}
_CODE_CTYPES = {
    "b8": ctypes.c_bool, "i8": ctypes.c_int8, "u8": ctypes.c_uint8, "i16": ctypes.c_int16, "u16": ctypes.c_uint16,
    "i32": ctypes.c_int32, "u32": ctypes.c_uint32, "i64": ctypes.c_int64, "u64": ctypes.c_uint64,
    "f32": ctypes.c_float, "f64": ctypes.c_double,
}
_C_NAMES = {"b8": "bool", "i8": "signed char", "u8": "unsigned char", "i16": "short", "u16": "unsigned short",
            "i32": "int", "u32": "unsigned int", "i64": "long long", "u64": "unsigned long long", "f32": "float",
            "f64": "double"}
#: NumPy scalar types CuPy passes as they are ('?bhilqBHILQefdFD').
_CUPY_NUMPY_SCALARS = {np.dtype(c).type for c in "?bhilqBHILQefdFD"}


class Param:
    """One kernel parameter: ``code`` as emitted by launch.h ("i32", "*const f64", ...)."""

    def __init__(self, code: str, name: str):
        self.pointer = code.startswith("*")
        self.const = code.startswith("*const ")
        self.base = code.split(" ")[-1].lstrip("*")
        self.dtype = _CODE_DTYPES[self.base]
        self.name = name

    @property
    def c_type(self) -> str:
        t = _C_NAMES[self.base]
        return f"{'const ' if self.const else ''}{t}*" if self.pointer else t


def _param_names(source: str, function: str) -> list[str]:
    """Parameter names of ``__global__ void function(...)`` in ``source`` (for messages)."""
    m = re.search(r"__global__\s+void\s+" + re.escape(function) + r"\s*\(", source)
    if not m:
        return []
    depth, i = 1, m.end()
    while depth and i < len(source):
        depth += {"(": 1, ")": -1}.get(source[i], 0)
        i += 1
    text = re.sub(r"//[^\n]*|/\*.*?\*/", "", source[m.end():i - 1], flags=re.S)
    return [re.findall(r"[A-Za-z_]\w*", p)[-1] for p in text.split(",") if p.strip()]


def cupy_passed_dtype(x) -> np.dtype | None:
    """The dtype CuPy's RawKernel launch passes for a non-array argument ``x`` (None for a device
    pointer). Raises TypeError for what CuPy refuses."""
    if isinstance(x, DeviceArray) or x is None:
        return None
    if type(x) in _CUPY_NUMPY_SCALARS:
        return np.dtype(type(x))
    if isinstance(x, np.ndarray):
        if x.size == 1:
            return x.dtype  # passed by value
        raise TypeError(f"a host NumPy array of {x.size} elements: CuPy refuses it (upload it to the device first)")
    if isinstance(x, int):  # bool included: CuPy checks int first
        return np.dtype(np.int64)
    if isinstance(x, float):
        return np.dtype(np.float64)
    if isinstance(x, complex):
        return np.dtype(np.complex128)
    raise TypeError(f"unsupported kernel argument type {type(x).__name__}")


class _RangeDesc(ctypes.Structure):
    _fields_ = [("lo", ctypes.c_uint64), ("nbytes", ctypes.c_uint64), ("elem", ctypes.c_uint64),
                ("arg", ctypes.c_int32), ("writable", ctypes.c_int32), ("shared", ctypes.c_int32),
                ("name", ctypes.c_char_p)]


def _shared_variables(lib_path: Path, lib) -> list[tuple[int, int, str, bool]]:
    """(address, bytes, name, writable) of the kernel's function-local statics in the loaded
    library (``_ZZ...`` symbols, found with nm): writable ones are its ``__shared__`` variables
    (kernel code has no other kind), read-only ones constant tables."""
    if shutil.which("nm") is None:
        raise ExecutorUnavailable("the CUDA executor needs binutils' nm")
    out = subprocess.run(["nm", "-S", "--defined-only", str(lib_path)], capture_output=True, text=True, check=True).stdout
    offsets, found = {}, []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            addr, size, kind, name = parts
            offsets[name] = int(addr, 16)
            if name.startswith("_ZZ") and kind in "bBdDrR" and "cuda_emu_sig" not in name:
                found.append((int(addr, 16), int(size, 16), name, kind in "bBdD"))
        elif len(parts) == 3:
            offsets[parts[2]] = int(parts[0], 16)
    base = ctypes.cast(lib.cuda_emu_launch, ctypes.c_void_p).value - offsets["cuda_emu_launch"]
    names = subprocess.run(["c++filt"], input="\n".join(f[2] for f in found), capture_output=True, text=True).stdout.split("\n")
    return [(base + a, size, names[i].split("::")[-1], writable) for i, (a, size, n, writable) in enumerate(found)
            if i < len(names) and names[i] and "cuda_emu::" not in names[i]]


_PC = re.compile(r"pc=(\S+?)\+0x([0-9a-f]+)")


def _symbolize(message: str) -> str:
    """Replace ``pc=lib.so+0x...`` by the kernel source line (addr2line, when available)."""
    if shutil.which("addr2line") is None:
        return message

    def line(m):
        proc = subprocess.run(["addr2line", "-e", m.group(1), "-i", hex(int(m.group(2), 16) - 1)],
                              capture_output=True, text=True)
        where = [ln for ln in proc.stdout.split("\n") if ln and not ln.startswith("??")]
        return " <- ".join(os.path.basename(w) for w in where) if where else m.group(0)

    return _PC.sub(line, message)


class ExecutorKernel:
    """One compiled kernel instantiation; called like ``cupy.RawKernel``: ``k(grid, block, args)``."""

    def __init__(self, module: "ExecutorModule", index: int, expression: str):
        self.module, self.index, self.expression = module, index, expression
        lib = module.lib
        sig = getattr(lib, f"cuda_emu_sig_{index}")
        sig.restype = ctypes.c_char_p
        codes = sig().decode().split(",") if sig() else []
        names = _param_names(module.source, expression.split("<")[0].strip())
        if len(names) != len(codes):
            names = [f"arg{i}" for i in range(len(codes))]
        self.params = [Param(c, n) for c, n in zip(codes, names)]
        self._body = ctypes.cast(getattr(lib, f"cuda_emu_body_{index}"), ctypes.c_void_p)
        self._launch = lib.cuda_emu_launch
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint),
                                 ctypes.POINTER(ctypes.c_uint), ctypes.c_int, ctypes.POINTER(_RangeDesc), ctypes.c_int,
                                 ctypes.c_int, ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_int,
                                 ctypes.POINTER(ctypes.c_void_p)]
        self._free_counts = lib.cuda_emu_free_counts
        self._free_counts.argtypes = [ctypes.c_void_p]
        self._free_counts.restype = None
        #: counts of the last launch made with counting on (see :mod:`sansa_gpu._testing.counts`)
        self.last_counts: dict | None = None

    def __repr__(self) -> str:
        return f"<ExecutorKernel {self.expression} ({'checked' if self.module.checked else 'plain'})>"

    @staticmethod
    def _dims(d, what: str, limits: tuple[int, int, int]) -> tuple[int, int, int]:
        if isinstance(d, (int, np.integer)):
            d = (d,)
        if not isinstance(d, (tuple, list)) or not 1 <= len(d) <= 3:
            raise TypeError(f"{what} must be a tuple of 1 to 3 ints, got {d!r}")
        dims = tuple(int(v) for v in d) + (1,) * (3 - len(d))
        if any(v < 1 or v > lim for v, lim in zip(dims, limits)):
            raise ValueError(f"invalid {what} {d!r} (each dimension must be in 1..{limits}): a GPU refuses this launch")
        return dims

    def __call__(self, grid, block, args, *, shared_mem: int = 0, stream=None, device=None, count: bool | None = None):
        """Launch. ``count`` (default: the device's ``count``, else False) records the launch's
        counts in ``last_counts`` (and in ``device.launch_counts``); it needs the instrumented
        (checked) build. Race checks run whenever the module is checked, except for a counting device
        without ``checked`` (counting only)."""
        count = bool(device is not None and getattr(device, "count", False)) if count is None else bool(count)
        if count and not self.module.checked:
            raise ValueError(f"{self.expression}: counting needs the instrumented build (ExecutorModule(..., checked=True))")
        check = self.module.checked and not (device is not None and getattr(device, "count", False)
                                             and not getattr(device, "checked", True))
        grid3 = self._dims(grid, "grid", (2**31 - 1, 65535, 65535))
        block3 = self._dims(block, "block", (1024, 1024, 64))
        if block3[0] * block3[1] * block3[2] > 1024:
            raise ValueError(f"block {block!r} has more than 1024 threads: a GPU refuses this launch")
        if shared_mem:
            raise NotImplementedError("dynamic shared memory is not emulated")
        args = tuple(args)
        if len(args) != len(self.params):
            raise TypeError(f"{self.expression} takes {len(self.params)} arguments, {len(args)} given")
        if device is not None:
            device._on_launch(self.expression)
        keep, slots, ranges, copies, aliases = [], (ctypes.c_void_p * max(1, len(args)))(), [], [], {}
        for i, (p, a) in enumerate(zip(self.params, args)):
            where = f"{self.expression} argument #{i} '{p.name}' ({p.c_type})"
            if p.pointer:
                if a is None:
                    value = ctypes.c_void_p(0)
                else:
                    if not isinstance(a, DeviceArray):
                        raise TypeError(f"{where}: got {type(a).__name__}, needs a device array "
                                        "(a host array is refused or passed by value by CuPy)")
                    if a.dtype != p.dtype:
                        raise TypeError(f"{where}: got a {a.dtype} array; the kernel would reinterpret its bytes as {p.c_type}")
                    if not a.flags.c_contiguous:
                        raise TypeError(f"{where}: the array is not C-contiguous (the kernel indexes it densely)")
                    buf = a
                    if self.module.checked:
                        shared_with = next((j for j, (other, _, _) in aliases.items() if np.shares_memory(a, other)), None)
                        if shared_with is not None:
                            other, buf, r = aliases[shared_with]
                            if not (a.ctypes.data == other.ctypes.data and a.nbytes == other.nbytes):
                                raise NotImplementedError(f"{where}: partly overlaps argument #{shared_with}")
                            # the same array passed twice: one buffer and one range, as on the device
                            if not p.const and not ranges[r].writable:
                                ranges[r].writable = 1
                                copies.append((a, buf))
                        else:
                            raw = np.frombuffer(mmap.mmap(-1, a.nbytes + 2 * GUARD_BYTES), dtype=np.uint8)
                            buf = raw[GUARD_BYTES:GUARD_BYTES + a.nbytes].view(a.dtype)
                            buf[...] = a.reshape(-1)
                            keep.append(raw)
                            aliases[i] = (a, buf, len(ranges))
                            if not p.const:
                                copies.append((a, buf))
                            ranges.append(_RangeDesc(buf.ctypes.data, a.nbytes, a.itemsize, i, 0 if p.const else 1, 0,
                                                     p.name.encode()))
                    value = ctypes.c_void_p(buf.ctypes.data)
            else:
                dt = cupy_passed_dtype(a)
                if dt is None:
                    raise TypeError(f"{where}: got a device array (CuPy passes its pointer); the kernel takes a value")
                if dt != p.dtype:
                    raise TypeError(f"{where}: CuPy passes {a!r} as {dt} ({dt.itemsize} bytes), the kernel reads "
                                    f"{p.dtype} ({p.dtype.itemsize} bytes): pass np.{p.dtype.name}(...)")
                value = _CODE_CTYPES[p.base](np.asarray(a).reshape(()).item())
            keep.append(value)
            slots[i] = ctypes.cast(ctypes.pointer(value), ctypes.c_void_p)
        ranges += [_RangeDesc(addr, size, 1, -1, int(w), int(w), name.encode()) for addr, size, name, w in self.module.shared]
        err = ctypes.create_string_buffer(4096)
        sched = device.schedule if device is not None else "forward"
        seed = device.seed if device is not None else 0
        counts_out = ctypes.c_void_p()
        rc = self._launch(self._body, ctypes.cast(slots, ctypes.c_void_p), self.expression.encode(),
                          (ctypes.c_uint * 3)(*grid3), (ctypes.c_uint * 3)(*block3), int(check),
                          (_RangeDesc * max(1, len(ranges)))(*ranges), len(ranges), SCHEDULES[sched], seed,
                          err, len(err), int(count), ctypes.byref(counts_out))
        raw = None
        if counts_out.value:
            raw = json.loads(ctypes.string_at(counts_out.value).decode())
            self._free_counts(counts_out)
        for dst, src in copies:
            dst.reshape(-1)[...] = src
        if rc != 0:
            raise KernelFault(_symbolize(err.value.decode(errors="replace")))
        if count:
            self.last_counts = {"kernel": self.expression, "file": self.module.file, "grid": list(grid3),
                                "block": list(block3), "counts": derive_counts(raw)}
            if device is not None and hasattr(device, "launch_counts"):
                device.launch_counts.append(self.last_counts)


class ExecutorModule:
    """Compiled ``kernels/<file>`` (all its registered instantiations); like ``cupy.RawModule``."""

    def __init__(self, file: str, checked: bool = False, source: str | None = None,
                 expressions: tuple[str, ...] | None = None):
        self.file, self.checked = file, checked
        self.expressions = tuple(expressions if expressions is not None else KERNELS[file])
        self.source = source if source is not None else (kernel_dir() / file).read_text()
        self.path = build_library(file, self.expressions, checked, source)
        self.lib = ctypes.CDLL(str(self.path))
        self.shared = _shared_variables(self.path, self.lib)
        self._kernels: dict[str, ExecutorKernel] = {}

    def get_function(self, expression: str) -> ExecutorKernel:
        if expression not in self.expressions:
            raise KeyError(f"{expression!r} is not an instantiation compiled for {self.file} (see KERNELS)")
        if expression not in self._kernels:
            self._kernels[expression] = ExecutorKernel(self, self.expressions.index(expression), expression)
        return self._kernels[expression]


# ------------------------------------------------------------------- arrays standing in for CuPy
class DeviceArray(np.ndarray):
    """A NumPy array standing for a ``cupy.ndarray`` in executor runs. Like CuPy it refuses to mix
    with host NumPy arrays in arithmetic, and ``.get()`` copies it to a host array."""

    def get(self, stream=None, order="C", out=None, blocking=True):
        if out is not None:
            if out.shape != self.shape:
                raise ValueError(f"shape mismatch in get(out=...): {out.shape} vs {self.shape}")
            np.copyto(out, self.view(np.ndarray))
            return out
        return np.array(self.view(np.ndarray), order=order, copy=True)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        for x in inputs + tuple(kwargs.get("out", ())):
            if isinstance(x, np.ndarray) and not isinstance(x, DeviceArray) and x.ndim > 0:
                raise TypeError(f"{ufunc.__name__}: a device array mixed with a host NumPy array (CuPy refuses this)")
        xp.note_allocation(f"ufunc {ufunc.__name__}")
        inputs = tuple(x.view(np.ndarray) if isinstance(x, DeviceArray) else x for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, DeviceArray) else o for o in kwargs["out"])
        result = getattr(ufunc, method)(*inputs, **kwargs)
        return _to_device(result)

    def astype(self, dtype, *args, **kwargs):
        xp.note_allocation("astype")
        return super().astype(dtype, *args, **kwargs)

    def copy(self, *args, **kwargs):
        xp.note_allocation("copy")
        return super().copy(*args, **kwargs)

    def __getitem__(self, key):
        if isinstance(key, (np.ndarray, list)) or (isinstance(key, tuple) and any(isinstance(k, (np.ndarray, list)) for k in key)):
            xp.note_allocation("fancy indexing")
        return super().__getitem__(key)


def _to_device(result):
    if isinstance(result, np.ndarray) and not isinstance(result, DeviceArray):
        return result.view(DeviceArray)
    if isinstance(result, tuple):
        return tuple(_to_device(r) for r in result)
    return result


_ALLOCATING = {"zeros", "ones", "empty", "full", "arange", "zeros_like", "ones_like", "empty_like", "full_like",
               "asarray", "array", "ascontiguousarray", "concatenate", "stack", "cumsum", "bincount", "searchsorted",
               "lexsort", "argsort", "sort", "partition", "argpartition", "flatnonzero", "nonzero", "where", "diff",
               "repeat", "unique", "abs", "sqrt", "count_nonzero"}
_FROM_HOST = {"asarray", "array", "ascontiguousarray", "asnumpy"}


class _ArrayModule:
    """``xp`` of the executor: NumPy's functions, returning :class:`DeviceArray` and counting
    allocations (so a test can make the n-th one fail as CuPy's pool would)."""

    def __init__(self):
        self.device = None  # the ExecutorDevice in use (set by ExecutorDevice.__enter__)

    def note_allocation(self, site: str) -> None:
        if self.device is not None:
            self.device._on_allocation(site)

    def asnumpy(self, a, stream=None, order="C", out=None):
        if isinstance(a, DeviceArray):
            return a.get(order=order, out=out)
        return np.asarray(a, order=order)

    def __getattr__(self, name):
        attr = getattr(np, name)
        if isinstance(attr, type) or not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            if name not in _FROM_HOST:
                for a in args:
                    if isinstance(a, np.ndarray) and not isinstance(a, DeviceArray) and a.ndim > 0:
                        raise TypeError(f"xp.{name}: a host NumPy array where CuPy needs a device array")
            if name in _ALLOCATING or isinstance(attr, np.ufunc):
                self.note_allocation(f"xp.{name}")
            if name == "empty" or name == "empty_like":
                out = attr(*args, **kwargs)
                out.view(np.uint8)[...] = 0xCD  # device memory from the pool is not zeroed
                return _to_device(out)
            args = tuple(a.view(np.ndarray) if isinstance(a, DeviceArray) else a for a in args)
            if "out" in kwargs and isinstance(kwargs["out"], DeviceArray):
                kwargs["out"] = kwargs["out"].view(np.ndarray)
            return _to_device(attr(*args, **kwargs))

        return call


xp = _ArrayModule()
DeviceArray._sansa_array_module = xp


# ------------------------------------------------------------------------------------ device
class CUDADriverError(RuntimeError):
    """Stand-in for cupy_backends' CUDADriverError (which needs libcuda to be constructed)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class OutOfMemoryError(MemoryError):
    """Stand-in for cupy.cuda.memory.OutOfMemoryError."""


FAILURES = {
    "pool": lambda site: OutOfMemoryError(f"Out of memory allocating (injected at {site})"),
    "thrust": lambda site: MemoryError(f"std::bad_alloc: cudaErrorMemoryAllocation: out of memory (injected at {site})"),
    "driver": lambda site: CUDADriverError(2, f"CUDA_ERROR_OUT_OF_MEMORY: out of memory (injected at {site})"),
}


class ExecutorDevice:
    """The executor as the device of ``sansa_gpu.gpu._device``: use as a context manager.

    free_bytes / multiprocessor_count are what the glue's scratch sizing sees (small values force
    few blocks and warps). ``checked`` runs every kernel in the bounds- and race-checked build.
    ``schedule``: order in which the threads of a block run between barriers ('forward',
    'reverse', 'random'); a correct kernel gives the same result under each.
    ``count``: record the counts of every launch in ``launch_counts`` (one dict per launch:
    kernel, file, grid, block, counts; see :mod:`sansa_gpu._testing.counts`). It runs the
    instrumented build; without ``checked`` it keeps the bounds checks but skips the race shadow
    (faster, less memory), and the counts are the same either way.
    """

    name = "executor"

    def __init__(self, free_bytes: int = 2 << 30, multiprocessor_count: int = 2, checked: bool = False,
                 schedule: str = "forward", seed: int = 0, count: bool = False):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {tuple(SCHEDULES)}")
        self.xp = xp
        self._free_bytes = int(free_bytes)
        self._sms = int(multiprocessor_count)
        self.checked, self.schedule, self.seed = checked, schedule, seed
        self.count = bool(count)
        self.launch_counts: list[dict] = []
        self.allocations = 0
        self.launches: list[str] = []
        self.pool_releases = 0
        self._fail_allocation: tuple | None = None
        self._fail_launch: tuple | None = None
        self._ctx = None

    # seam API --------------------------------------------------------------------------
    def free_bytes(self) -> int:
        return self._free_bytes

    def multiprocessor_count(self) -> int:
        return self._sms

    def get_kernel(self, file: str, expression: str) -> ExecutorKernel:
        return _DeviceKernel(get_module(file, self.checked or self.count).get_function(expression), self)

    def release_pool(self) -> None:
        self.pool_releases += 1

    # fault injection -------------------------------------------------------------------
    def fail_allocation(self, at: int, kind: str = "pool", forever: bool = False) -> None:
        """Make allocation number ``at`` (0-based, counted from now; -1: none, just count) raise
        ``kind``: 'pool' (CuPy's OutOfMemoryError), 'thrust' (a plain MemoryError) or 'driver'
        (CUDA_ERROR_OUT_OF_MEMORY); with ``forever`` every later allocation fails too."""
        self.allocations = 0
        self._fail_allocation = (at, kind, forever)

    def fail_launch(self, at: int, kind: str = "driver", forever: bool = False) -> None:
        """Make kernel launch number ``at`` (0-based, counted from now; -1: none) fail with ``kind``."""
        self.launches = []
        self._fail_launch = (at, kind, forever)

    @staticmethod
    def _maybe_fail(rule, n: int, what: str):
        if rule is not None and rule[0] >= 0 and (n == rule[0] or (rule[2] and n > rule[0])):
            raise FAILURES[rule[1]](what)

    def _on_allocation(self, site: str) -> None:
        n = self.allocations
        self.allocations += 1
        self._maybe_fail(self._fail_allocation, n, f"allocation #{n}, {site}")

    def _on_launch(self, expression: str) -> None:
        n = len(self.launches)
        self.launches.append(expression)
        self._maybe_fail(self._fail_launch, n, f"launch #{n}, {expression}")

    # installation ----------------------------------------------------------------------
    def __enter__(self):
        from ..gpu import _device

        self._ctx = _device.use(self)
        self._ctx.__enter__()
        self._previous_device, xp.device = xp.device, self
        return self

    def __exit__(self, *exc):
        xp.device = self._previous_device
        self._ctx.__exit__(*exc)
        self._ctx = None
        return False


class _DeviceKernel:
    """A kernel launched on behalf of an :class:`ExecutorDevice` (its schedule and fault injection)."""

    def __init__(self, kernel: ExecutorKernel, device: ExecutorDevice):
        self.kernel, self.device = kernel, device

    def __call__(self, grid, block, args, **kwargs):
        return self.kernel(grid, block, args, device=self.device, **kwargs)

    def __repr__(self) -> str:
        return repr(self.kernel)


_lock = threading.Lock()
_modules: dict = {}


def get_module(file: str, checked: bool = False) -> ExecutorModule:
    """The compiled executor module of ``kernels/<file>`` (built once per process)."""
    with _lock:
        key = (file, checked)
        if key not in _modules:
            _modules[key] = ExecutorModule(file, checked)
        return _modules[key]
