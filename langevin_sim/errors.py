"""Exception hierarchy: every error says what was wrong, the value, and the fix."""
import contextlib
import os
import sys
import warnings

BROKEN_PIPE = 128 + 13     # exit status of a command whose reader closed stdout (SIGPIPE's)


class LangevinSimError(Exception):
    """Base class of all langevin_sim errors."""


class ConfigError(LangevinSimError, ValueError):
    """Invalid parameter, shape or option given by the user."""


class BackendUnavailableError(LangevinSimError, RuntimeError):
    """The requested backend cannot run here (missing package or device)."""


class MissingExtraError(LangevinSimError, ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def check_int(name: str, value, minimum: int | None = 1) -> int:
    """`value` as an int, or ConfigError when it is not integral (1.5, True, "3") or below
    `minimum` (None: no bound)."""
    ok = not isinstance(value, (bool, str, bytes))
    try:
        ok = ok and int(value) == value
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or (minimum is not None and int(value) < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ConfigError(f"{name} must be an integer{bound}, got {value!r}")
    return int(value)


def check_positive(name: str, value) -> float:
    """`value` as a float, or ConfigError unless it is > 0 (e.g. a temperature: exp(-U/T) and
    1/T need T > 0)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if not x > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    return x


def require(module: str, extra: str, needed_for: str):
    """`importlib.import_module(module)`, or MissingExtraError naming the extra
    (pip install -e ".[extra]") that installs it and what needs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(f"{needed_for} needs {e.name or module}, which is not installed: "
                                f"pip install -e \".[{extra}]\" (or pip install "
                                f"\"langevin_sim[{extra}]\")") from None


class RunFileError(LangevinSimError, OSError):
    """A run file is missing, not a run file, or inconsistent."""


class LangevinSimWarning(UserWarning):
    """Base class of the package's warnings (the CLI shows each as one `warning:` line)."""


class DivergenceWarning(LangevinSimWarning):
    """Some replicas of a run diverged (non-finite or beyond `divergence_bound`)."""


class UnrecordedStepsWarning(LangevinSimWarning):
    """A run ends between records: its last steps are in the checkpoint, not the records."""


class MachineChangeWarning(LangevinSimWarning):
    """A run resumed on a machine whose arithmetic may round differently from the one that
    wrote its earlier steps (another instruction set, BLAS kernels or library version:
    `io.machine`)."""


class UnusedParameterWarning(LangevinSimWarning):
    """A scenario parameter set away from its default where it has no effect (e.g. friction
    with overdamped dynamics)."""


class UnfinishedStartWarning(LangevinSimWarning):
    """Files left by a start killed before it published all of them were removed (a replica
    exchange's upper rungs without their rung 0)."""


class IncompleteRunWarning(LangevinSimWarning):
    """A run analysed before it reached its target step (killed, stopped, or still being
    written): the analysis sees the records so far."""


class RunStopped(KeyboardInterrupt):
    """A run stopped by Ctrl-C (SIGINT) after committing its records and checkpoint.

    `str(e)` is one line: the step reached, the checkpoint, the command that resumes it;
    `exit_code` is 128 + SIGINT.  A KeyboardInterrupt, so `except Exception` lets it pass."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = int(exit_code)


class RunTerminated(SystemExit):
    """A run stopped by SIGTERM after committing its records and checkpoint.

    Uncaught, the process exits with status 128 + SIGTERM, as a terminated process should;
    `str(e)` is the same one line as for RunStopped."""

    def __init__(self, message: str, exit_code: int = 143):
        super().__init__(int(exit_code))
        self.message, self.exit_code = message, int(exit_code)

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def quiet_closed_stdout():
    """The body of a command-line entry point: stdout flushed at its end (a pipe's buffer is
    written there, not at exit), and where stdout's reader closed it (`... | head`) the
    process exits with status BROKEN_PIPE, as a shell tool stopped by SIGPIPE, instead of a
    BrokenPipeError traceback (stdout pointed at /dev/null first, so that the interpreter's
    last flush stays quiet).  Other exceptions, SystemExit included, pass through."""
    try:
        try:
            yield
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        sys.exit(BROKEN_PIPE)


@contextlib.contextmanager
def one_line_warnings(prog: str):
    """The package's warnings (LangevinSimWarning: divergences, unrecorded steps, incomplete
    runs analysed) shown as one `PROG: warning: ...` line each on stderr, divergences every
    time; other warnings as Python shows them.  Shown as they come (under the filters in
    force), not recorded: a run's warnings could number millions."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", DivergenceWarning)
        show = warnings.showwarning

        def one_line(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, LangevinSimWarning):
                print(f"{prog}: warning: {message}", file=sys.stderr)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = one_line
        yield
