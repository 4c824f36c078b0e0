"""Backends: where arrays live and how K steps run in one call.

`numpy` is the reference (every potential x dynamics pair); `numba` runs fused multi-step
CPU kernels where one exists and falls back to the reference otherwise (saying so once);
`cuda` needs CuPy and a GPU.
"""
from __future__ import annotations

from ..errors import BackendUnavailableError, ConfigError
from .numpy_backend import NumpyBackend

NAMES = ("numpy", "numba", "cuda")


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
        try:
            import cupy  # noqa: F401
        except ImportError:
            raise BackendUnavailableError(
                "backend 'cuda' needs CuPy: `pip install 'langevin_sim[gpu]'` on a machine with "
                "an NVIDIA GPU, or use backend='numba'") from None
        raise BackendUnavailableError(
            "backend 'cuda' is not built yet in this version; use backend='numba'")
    raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")
