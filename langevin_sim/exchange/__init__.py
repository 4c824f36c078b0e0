"""Replica exchange (parallel tempering) across temperatures: docs/exchange.md.

ladder: `ReplicaExchange` (K rungs, each a Simulation, swaps between neighbours, the run
loop); log: the exchange log in the lowest rung's run file; resume: `resume` (all rungs
back to the ladder's commit); reader: `open_exchange` / `ExchangeRun` (acceptance, round trips).
"""
from .ladder import ReplicaExchange, rung_path, rung_seed, samplers
from .reader import ExchangeRun, open_exchange
from .resume import resume

__all__ = ["ExchangeRun", "ReplicaExchange", "open_exchange", "resume", "rung_path",
           "rung_seed", "samplers"]
