"""Replica exchange (parallel tempering) across temperatures: docs/exchange.md.

ladder: `ReplicaExchange` (K rungs, each a Simulation, swaps between neighbours, the run
loop); log: the exchange log in the lowest rung's run file; resume: `resume` (all rungs
back to the ladder's commit); reader: `open_exchange` / `ExchangeRun` (acceptance, round trips).
"""
from .ladder import SAMPLERS, ReplicaExchange, rung_path, rung_seed
from .reader import ExchangeRun, open_exchange
from .resume import resume

__all__ = ["SAMPLERS", "ExchangeRun", "ReplicaExchange", "open_exchange", "resume", "rung_path",
           "rung_seed"]
