"""Scan test scenario: overdamped Langevin in an isotropic quadratic well (not a test module).

U(x) = curvature/2 |x|^2 in d dimensions.  Euler-Maruyama with step eta samples exactly the
Gaussian of variance T / (k (1 - eta k / 2)) per coordinate, so the stationary mean energy is
<U> = d T / (2 (1 - eta k / 2)).  `build` raises for curvature <= 0 (the failing-point test).
"""
from dataclasses import dataclass

from langevin_sim import Simulation
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.potentials import Quadratic
from langevin_sim.scenario import RunParams, main, param


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 64
    steps: int = 1000
    record_every: int = 10
    d: int = param(2, "number of coordinates")
    curvature: float = param(1.0, "curvature k of the isotropic well")
    temperature: float = param(1.0, "temperature T of the Langevin noise")
    step: float = param(0.05, "Euler-Maruyama time step")


def build(p: Params) -> Simulation:
    if p.curvature <= 0:
        raise ValueError(f"curvature must be > 0, got {p.curvature}")
    return Simulation(Quadratic(spectrum=[p.curvature] * p.d),
                      OverdampedLangevin(step=p.step, temperature=p.temperature),
                      replicas=p.replicas, backend=p.backend, dtype=p.dtype, seed=p.seed)


if __name__ == "__main__":
    main(__file__)
