"""HDF5 run files: writer, reader, format constants."""
from .reader import Run, Series, check_run, open_run
from .writer import RunWriter

__all__ = ["Run", "Series", "open_run", "RunWriter"]
