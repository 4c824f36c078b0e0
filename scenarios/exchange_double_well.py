"""Replica exchange in a tilted double well: equilibrating a low temperature with a ladder.

At the lowest temperature T_1 a single chain of overdamped Langevin crosses the barrier of
U = barrier ((x - c)^2 - a^2)^2 / a^4 + tilt (x - c) about once in exp(barrier / T_1) / rate
steps (~10^5 and more at the defaults), so its well occupancies stay where they started.  A
ladder of K temperatures T_1 < ... < T_K, each a Simulation advanced by the fused kernels,
swaps configurations between neighbouring rungs every `exchange_every` steps
(langevin_sim.exchange, docs/exchange.md); the top rung crosses often and the swaps carry
its crossings down.  The output file is rung 0 (T_1), an ordinary run file; rung k writes
<out stem>.rung<k>.h5 and rung 0 holds the exchange log.  To check it (the script itself
only runs the ladder): `python analysis/stationary.py OUT` compares rung 0's marginal with the
exact exp(-U/T_1) (quadrature; any rung's file at its own T), and `open_exchange(OUT)` gives
the acceptance per rung pair and the round trips (docs/exchange.md).
"""
from dataclasses import dataclass
from typing import Literal

from langevin_sim.dynamics import MALA, OverdampedLangevin, UnderdampedLangevin
from langevin_sim.exchange import ReplicaExchange
from langevin_sim.potentials import DoubleWell
from langevin_sim.scenario import RunParams, main, param, unused

# --quick: the same experiment in seconds, for the tests and notebooks (numpy: no compiling)
QUICK = {"replicas": 16, "steps": 1000, "record_every": 100, "backend": "numpy"}


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = param(64, "number of ladders (independent copies of the whole ladder)")
    steps: int = 40_000
    record_every: int = 100
    barrier: float = param(1.0, "barrier height at the centre (energy)")
    a: float = param(1.0, "distance of each well from the centre (at tilt 0)")
    tilt: float = param(0.1, "linear tilt (energy / length): > 0 lowers the left well")
    temperatures: tuple[float, ...] = param(
        (0.1, 0.178, 0.316, 0.562, 1.0), "the ladder's temperatures T_1 < ... < T_K (rung 0 = T_1)")
    exchange_every: int = param(20, "steps between two exchange attempts (even, odd pairs in turn)")
    dynamics: Literal["overdamped", "underdamped", "mala"] = param(
        "overdamped", "each rung's sampler: Euler-Maruyama, BAOAB (momenta rescaled on a swap) "
                      "or MALA")
    step: float = param(0.01, "time step of the dynamics")
    friction: float = param(1.0, "BAOAB friction (dynamics=underdamped)")


def build(p: Params) -> ReplicaExchange:
    if p.dynamics != "underdamped":
        unused(p, ["friction"], f"with dynamics={p.dynamics}")
    dyn = {"overdamped": OverdampedLangevin(step=p.step),
           "underdamped": UnderdampedLangevin(step=p.step, friction=p.friction),
           "mala": MALA(step=p.step)}[p.dynamics]
    return ReplicaExchange(DoubleWell(d=1, barrier=p.barrier, a=p.a, tilt=p.tilt), dyn,
                           p.temperatures, p.replicas, every=p.exchange_every,
                           backend=p.backend, dtype=p.dtype, seed=p.seed)


if __name__ == "__main__":
    main(__file__)
