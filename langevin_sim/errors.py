"""Exception hierarchy: every error says what was wrong, the value, and the fix."""


class LangevinSimError(Exception):
    """Base class of all langevin_sim errors."""


class ConfigError(LangevinSimError, ValueError):
    """Invalid parameter, shape or option given by the user."""


class BackendUnavailableError(LangevinSimError, RuntimeError):
    """The requested backend cannot run here (missing package or device)."""


class RunFileError(LangevinSimError, OSError):
    """A run file is missing, not a run file, or inconsistent."""
