"""langevin_sim: simulate SGD and Langevin dynamics on loss surfaces, reproducibly."""
__version__ = "0.1.0"

from .numba_cache import key_cache_to_sources  # noqa: E402

key_cache_to_sources()    # before any cached kernel is made: Numba's cache follows the sources

from . import dynamics, potentials  # noqa: E402
from .errors import (BackendUnavailableError, ConfigError, DivergenceWarning,  # noqa: E402
                     LangevinSimError, MissingExtraError, RunFileError, RunStopped,
                     RunTerminated)
from .io import Run, open_run  # noqa: E402
from .observers import Observer  # noqa: E402
from .simulation import Simulation, resume  # noqa: E402

__all__ = ["Simulation", "resume", "open_run", "Run", "Observer", "potentials", "dynamics",
           "LangevinSimError", "ConfigError", "BackendUnavailableError", "RunFileError",
           "MissingExtraError", "DivergenceWarning", "RunStopped", "RunTerminated", "__version__"]
