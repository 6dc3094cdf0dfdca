"""Internal test infrastructure, not part of the public API (no stability promise; the leading underscore
says so): :mod:`sansa_gpu._testing.cuda_executor` runs the CUDA kernels of ``kernels/`` and the GPU glue
of ``sansa_gpu/gpu`` on the CPU, :mod:`sansa_gpu._testing.counts` counts their memory traffic, and
:mod:`sansa_gpu._testing.dask_faults` injects worker failures. It ships in the package because the test
suite, the benchmarks and Dask worker processes (which import it by name) need it."""
