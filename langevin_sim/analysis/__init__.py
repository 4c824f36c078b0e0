"""Importable analysis functions (used by the analysis/ scripts and by notebooks).

One module per kind of analysis; each works on arrays and on `Run` objects and returns small
frozen dataclasses with `.table()` and `.plot(ax)` (docs/analysis.md):

    diagnostics  ESS, autocorrelation time, MCSE, R-hat, burn-in (arviz-stats)
    stationary   1-D marginals against exact Boltzmann densities (quadrature)
    covariance   d-dimensional stationary laws: Gibbs, exact EM / BAOAB / SGD, Lyapunov
    basins       quench, Hessian spectra, Laplace volumes, occupancy vs quadrature
    sgd_basins   per-basin SGD temperatures, Gibbs and blowtorch occupancy of basin labels
    critical     critical points from minimizing |grad U|^2, their Hessian indices;
                 the p-spin's Kac-Rice counts and its minima counted per instance;
                 where descent ends (bottom, bad minimum, saddle, escaped)
    flatness     sharpness against test loss across replicas (rank correlations)
    escape       first-passage times, Kaplan-Meier, rates, Arrhenius, Kramers, exact MFPT
    drift        drift and diffusion along a manifold of minima, time to target
    grokking     delay from fitting to generalizing per replica (censored), 1/(lr wd) fit
    tails        Hill tail index against Kesten's prediction for SGD
    spinglass    p-spin relaxation, 1RSB landmarks, aging, overlaps, Hessian index
    scan         per-point summaries of a parameter scan

Imports neither numba nor cupy: run files are plain NumPy for readers.
"""
from . import (basins, covariance, critical, diagnostics, drift, escape, flatness, grokking,
               scan, sgd_basins, spinglass, stationary, tails)
from .basins import find_basins, quench, run_occupancy
from .covariance import compare_covariance, predicted_laws, sample_moments
from .critical import critical_points, descent_census, kac_rice, pspin_minima_census
from .diagnostics import burn_in, diagnose, ess
from .drift import compare_runs, fit_drift, run_drift
from .escape import analyze_run, escape_rate, escape_summary, kaplan_meier, mfpt_1d
from .flatness import flatness_vs_generalization, run_flatness
from .scan import energy_summary, gather, reduce_repeats
from .spinglass import landmarks, run_aging, run_hessian_index, run_relaxation
from .stationary import MarginalFit, fit_marginal, run_marginal_fit
from .tails import hill, kesten_alpha, run_tail_index

__all__ = ["basins", "covariance", "critical", "diagnostics", "drift", "escape", "flatness",
           "grokking", "scan",
           "sgd_basins", "spinglass",
           "stationary", "tails",
           "find_basins", "quench", "run_occupancy",
           "compare_covariance", "predicted_laws", "sample_moments", "critical_points",
           "descent_census", "kac_rice", "pspin_minima_census",
           "burn_in", "diagnose", "ess",
           "compare_runs", "fit_drift", "run_drift",
           "analyze_run", "escape_rate", "escape_summary", "kaplan_meier", "mfpt_1d",
           "flatness_vs_generalization", "run_flatness",
           "energy_summary", "gather", "reduce_repeats",
           "landmarks", "run_aging", "run_hessian_index", "run_relaxation",
           "MarginalFit", "fit_marginal", "run_marginal_fit",
           "hill", "kesten_alpha", "run_tail_index"]
