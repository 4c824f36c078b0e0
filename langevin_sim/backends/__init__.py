"""Backends: where arrays live and how K steps run in one call.

`numpy` is the reference (every potential x dynamics pair); `numba` runs fused multi-step
CPU kernels where one exists and falls back to the reference otherwise (saying so once);
`cuda` keeps the state on an NVIDIA GPU (CuPy + numba-cuda; under numba's CUDA simulator
with a NumPy stand-in for CuPy, see docs/gpu.md).  The fused kernels live in `langevin_sim.kernels` (one module per
potential family) and are looked up in `registry`.
"""
from __future__ import annotations

from ..errors import BackendUnavailableError, ConfigError
from .numpy_backend import NumpyBackend

NAMES = ("numpy", "numba", "cuda")   # the backend names, here only: the rest derives from it


def get_backend(name: str):
    """The backend object called `name` ("numpy", "numba" or "cuda")."""
    if name == "numpy":
        return NumpyBackend()
    if name == "numba":
        try:
            import numba  # noqa: F401
        except ImportError:  # pragma: no cover - numba is a core dependency
            raise BackendUnavailableError(
                "backend 'numba' needs numba: `pip install numba`, or use backend='numpy'") from None
        from .numba_backend import NumbaBackend

        return NumbaBackend()
    if name == "cuda":
        from .cuda_backend import CudaBackend   # one-line errors from cuda_runtime.require()

        return CudaBackend()
    raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")


def describe(name: str) -> str:
    """One line on how backend `name` runs on this machine (versions, threads, device);
    raises the backend's one-line error (naming the fix) where it cannot run here."""
    backend = get_backend(name)
    if name == "numpy":
        import numpy
        return f"NumPy {numpy.__version__}: the float64 reference, one step at a time"
    if name == "numba":
        import numba
        cache = numba.config.CACHE_DIR or "beside the package's sources"
        return (f"numba {numba.__version__}: fused CPU kernels on {numba.get_num_threads()} "
                f"threads; compiled kernels cached {'in ' if numba.config.CACHE_DIR else ''}"
                f"{cache}")
    from . import cuda_runtime
    return f"{backend.device}; {cuda_runtime.targets()}"
