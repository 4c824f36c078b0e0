"""Reading a replica-exchange run: its rung Runs, the committed exchange log, and summaries
(acceptance per rung pair, round trips)."""
from __future__ import annotations

import numpy as np

from ..io import Run
from ..io import format as F
from . import log
from .resume import ladder_files


class ExchangeRun:
    """The rung Runs of one ladder run (index k: temperature T_k, rung 0 the lowest) and
    the exchange log rows committed by rung 0's marker: `step` (n,), `walker` (n, M, K),
    `accepted` (n, M, K-1) (1 / 0 / -1 not attempted), `energy` (n, M, K) before each
    exchange, and `walker_start` (M, K), the walker on each rung at the file's first step."""

    def __init__(self, runs: list[Run]):
        self.runs = runs
        f = runs[0].f
        g = f[log.GROUP]
        n = log.committed(f, int(runs[0].commit[F.STEPS_DONE]))
        self.temperatures = g["temperature"][()]
        self.every = int(g.attrs["every"])
        self.ladder = g["ladder"][()]
        self.step = g["step"][:n]
        self.walker, self.accepted, self.energy = (g[k][:n] for k in ("walker", "accepted", "energy"))
        self.walker_start = log.walker_start(f)

    def close(self) -> None:
        for r in self.runs:
            r.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def acceptance(self) -> tuple[np.ndarray, np.ndarray]:
        """(rate, se), each (K-1,): the fraction of attempted swaps of pair (k, k+1) that
        were accepted, and its standard error from the spread of the per-ladder rates over the
        ladders that attempted the pair (NaN: no attempt, or the se of fewer than two such
        ladders; a ladder whose walker diverged before any attempt is not a rate of 0)."""
        tried = (self.accepted >= 0).sum(axis=0)                 # (M, K-1)
        took = (self.accepted == 1).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = took.sum(axis=0) / tried.sum(axis=0)
            per = np.where(tried > 0, took / np.maximum(tried, 1), np.nan)
        n = (tried > 0).sum(axis=0)
        se = np.full(rate.shape, np.nan)
        for k in np.flatnonzero(n > 1):
            se[k] = np.nanstd(per[:, k], ddof=1) / np.sqrt(n[k])
        return rate, se

    def expected_acceptance(self) -> np.ndarray:
        """(K-1,) mean Metropolis probability min(1, exp((1/T_k - 1/T_{k+1})(U_k - U_{k+1})))
        over the attempted swaps' logged energies (a lower-variance estimate of the rate)."""
        b = 1.0 / self.temperatures
        with np.errstate(over="ignore", invalid="ignore"):   # diverged walkers: U = inf
            p = np.minimum(1.0, np.exp((b[:-1] - b[1:]) * (self.energy[..., :-1] - self.energy[..., 1:])))
        tried = self.accepted >= 0
        with np.errstate(invalid="ignore", divide="ignore"):   # NaN: no attempt
            return np.where(tried, p, 0.0).sum(axis=(0, 1)) / tried.sum(axis=(0, 1))

    def round_trips(self) -> np.ndarray:
        """(M,) completed round trips per ladder: a walker that has visited the lowest rung,
        then the highest, arriving at the lowest again (summed over the ladder's walkers),
        counted from the file's first step (the walker then on the lowest rung has visited it)."""
        n, M, K = self.walker.shape
        rung = np.argsort(self.walker, axis=2, kind="stable")   # (n, M, walker) -> its rung
        seen = np.arange(K) == self.walker_start[:, :1]          # (M, walker) visited the bottom
        up = np.zeros((M, K), bool)                              # bottom ... top since then
        trips = np.zeros(M, np.int64)
        for i in range(n):
            r = rung[i]
            up |= seen & (r == K - 1)
            home = r == 0
            trips += (up & home).sum(axis=1)
            up &= ~home
            seen |= home
        return trips


def open_exchange(path) -> ExchangeRun:
    """Open the replica-exchange run that run file `path` (any rung's) belongs to."""
    return ExchangeRun([Run(p) for p in ladder_files(path)])
