"""Flat versus sharp: which of two minima does Langevin dynamics occupy at equilibrium?

Two quadratic wells in d dimensions joined by a smooth minimum (`MultiWell`, softness tau):
a sharp well at -separation/2 e_1 with all curvatures k_sharp and depth 0, and a flat well
at +separation/2 e_1 with curvatures k_flat and depth `depth_gap` (> 0: the sharp well is
deeper).  All replicas start at the sharp centre.  When the barrier is several T high the
Laplace weights give the equilibrium occupation ratio

    P_flat / P_sharp = (k_sharp / k_flat)^(d/2) exp(-depth_gap / T),

so at equal depth the flat well wins by a factor exponential in d (its basin holds more
volume at energy ~T), and the sharp well wins only below T* = depth_gap / ((d/2)
ln(k_sharp / k_flat)).  Records: `basin` (0 sharp, 1 flat) of every replica; the fraction
in basin 1 relaxes from 0 to the Laplace value (`MultiWell.log_laplace_weights`).
"""
from dataclasses import dataclass

import numpy as np

from langevin_sim import Simulation
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.potentials import MultiWell
from langevin_sim.scenario import RunParams, main, param


# --quick: the same experiment in seconds, for the tests and notebooks (numpy: no compiling)
QUICK = {"replicas": 512, "steps": 4000, "record_every": 200, "backend": "numpy"}


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 4096
    steps: int = 10_000
    record_every: int = 100
    record_positions: bool = False
    d: int = param(4, "dimension")
    k_sharp: float = param(8.0, "curvature of the sharp well, in every direction")
    k_flat: float = param(1.0, "curvature of the flat well, in every direction")
    separation: float = param(3.0, "distance between the two well centres, along x_1")
    depth_gap: float = param(0.0, "energy of the flat well's bottom above the sharp one's "
                                  "(> 0: the sharp well is deeper)")
    softness: float = param(0.1, "softness tau of the smooth minimum joining the wells (energy)")
    temperature: float = param(1.0, "temperature T of the Langevin noise")
    step: float = param(5e-3, "Euler-Maruyama time step")


def build(p: Params) -> Simulation:
    centers = np.zeros((2, p.d))
    centers[:, 0] = [-p.separation / 2, p.separation / 2]
    pot = MultiWell(centers, spectra=[[p.k_sharp] * p.d, [p.k_flat] * p.d],
                    depths=[0.0, p.depth_gap], softness=p.softness, seed=p.seed)
    return Simulation(pot, OverdampedLangevin(step=p.step, temperature=p.temperature),
                      replicas=p.replicas, backend=p.backend, dtype=p.dtype, seed=p.seed,
                      init=centers[0])


if __name__ == "__main__":
    main(__file__)
