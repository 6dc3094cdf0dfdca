"""Test infrastructure (not a user-facing API): :mod:`sansa_gpu.testing.cuda_executor` runs the
CUDA kernels of ``kernels/`` and the GPU glue of ``sansa_gpu/gpu`` on the CPU."""
