"""Double well: does overdamped Langevin sample the Boltzmann distribution exp(-U/T)?

Replicas of a separable double well U = sum_i barrier ((x_i - c)^2 - a^2)^2 / a^4 evolve by
overdamped Langevin at temperature T.  After equilibration the marginal of each coordinate
should be exp(-U_1(x)/T) / Z up to the O(eta) bias of Euler-Maruyama;
`analysis/stationary.py` compares it with the exact density by quadrature.
"""
from dataclasses import dataclass

from langevin_sim import Simulation
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.potentials import DoubleWell
from langevin_sim.scenario import RunParams, main


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 4096
    steps: int = 20_000
    record_every: int = 500
    d: int = 1
    barrier: float = 1.0
    a: float = 1.0
    tilt: float = 0.0
    temperature: float = 0.5
    step: float = 2e-3


def build(p: Params) -> Simulation:
    return Simulation(DoubleWell(d=p.d, barrier=p.barrier, a=p.a, tilt=p.tilt),
                      OverdampedLangevin(step=p.step, temperature=p.temperature),
                      replicas=p.replicas, backend=p.backend, dtype=p.dtype, seed=p.seed)


if __name__ == "__main__":
    main(__file__)
