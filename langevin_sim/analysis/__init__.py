"""Importable analysis functions (used by analysis/ scripts and notebooks).

Imports neither numba nor cupy: run files are plain NumPy for readers.
"""
from .scan import energy_summary, gather, reduce_repeats
from .stationary import MarginalFit, fit_marginal, run_marginal_fit

__all__ = ["MarginalFit", "fit_marginal", "run_marginal_fit", "energy_summary", "gather",
           "reduce_repeats"]
