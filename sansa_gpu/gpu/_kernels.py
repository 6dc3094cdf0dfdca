"""CUDA sources in ``kernels/``: location, per-process compiled-module cache, and a device-free
NVRTC compile check (used by CI for every supported architecture)."""

from __future__ import annotations

import functools
from pathlib import Path

#: kernel file -> template instantiations to compile (``name_expressions``).
KERNELS: dict[str, tuple[str, ...]] = {
    "score_topk.cu": ("score_topk_warp<long long>", "score_topk_warp<int>"),
    "refine.cu": ("refine_columns<long long>",),
    "gram.cu": ("gram_columns<long long>",),
}
#: Architectures every kernel must compile for (A100 = sm_80, H100/H200 = sm_90).
SUPPORTED_ARCHS: tuple[str, ...] = ("sm_80", "sm_90")
#: -lineinfo: source lines in the cubin (compute-sanitizer and profiler reports name the .cu line; no codegen change).
NVRTC_OPTIONS: tuple[str, ...] = ("-std=c++17", "-lineinfo")


def kernel_dir() -> Path:
    """The folder holding the .cu sources: sansa_gpu/kernels in a wheel, kernels/ in a checkout."""
    try:
        from importlib.resources import files

        d = Path(str(files("sansa_gpu.kernels")))
        if (d / "score_topk.cu").is_file():
            return d
    except (ModuleNotFoundError, TypeError):
        pass
    d = Path(__file__).resolve().parents[2] / "kernels"
    if (d / "score_topk.cu").is_file():
        return d
    raise FileNotFoundError("CUDA kernel sources not found (expected sansa_gpu/kernels or kernels/ in the checkout)")


def kernel_source(name: str) -> str:
    return (kernel_dir() / name).read_text()


@functools.lru_cache(maxsize=None)
def get_module(name: str):
    """Compiled ``cupy.RawModule`` for kernel file ``name`` (compiled once per process)."""
    import cupy

    return cupy.RawModule(
        code=kernel_source(name),
        options=NVRTC_OPTIONS + (f"-I{kernel_dir()}",),
        name_expressions=list(KERNELS[name]),
    )


def get_kernel(name: str, expression: str):
    return get_module(name).get_function(expression)


def compile_check(name: str, arch: str) -> bytes:
    """Compile ``name`` with NVRTC for ``arch`` (e.g. 'sm_90') without a GPU; returns the cubin.
    Raises RuntimeError carrying the compiler log on any error."""
    from cupy_backends.cuda.libs import nvrtc

    prog = nvrtc.createProgram(kernel_source(name), name, [], [])
    try:
        for expr in KERNELS[name]:
            nvrtc.addNameExpression(prog, expr)
        try:
            nvrtc.compileProgram(prog, [f"--gpu-architecture={arch}", f"-I{kernel_dir()}", *NVRTC_OPTIONS])
        except nvrtc.NVRTCError as exc:
            raise RuntimeError(f"{name} failed to compile for {arch}:\n{nvrtc.getProgramLog(prog)}") from exc
        for expr in KERNELS[name]:
            nvrtc.getLoweredName(prog, expr)  # raises if an instantiation is missing
        return nvrtc.getCUBIN(prog)
    finally:
        nvrtc.destroyProgram(prog)
