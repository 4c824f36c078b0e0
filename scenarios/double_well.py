"""Double well: does overdamped Langevin sample the Boltzmann distribution exp(-U/T)?

Replicas of a separable double well U = sum_i barrier ((x_i - c)^2 - a^2)^2 / a^4 evolve by
overdamped Langevin at temperature T.  After equilibration the marginal of each coordinate
should be exp(-U_1(x)/T) / Z up to the O(eta) bias of Euler-Maruyama;
`analysis/stationary.py` compares it with the exact density by quadrature.  With
`start=left` and `first_passage=true` every replica starts in the left well and the run
records, every step, when each one first crosses into the right well:
`analysis/escape.py` compares the escape times with the exact mean first-passage time.
"""
from dataclasses import dataclass
from typing import Literal

from langevin_sim import Simulation
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.first_passage import FirstPassage, HalfSpace
from langevin_sim.potentials import DoubleWell
from langevin_sim.scenario import RunParams, main, param


# --quick: the same experiment in seconds, for the tests and notebooks (numpy: no compiling)
QUICK = {"replicas": 512, "steps": 2000, "record_every": 250, "backend": "numpy"}


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 4096
    steps: int = 20_000
    record_every: int = 500
    d: int = param(1, "number of coordinates (independent double wells)")
    barrier: float = param(1.0, "barrier height at the centre (energy)")
    a: float = param(1.0, "distance of each well from the centre (at tilt 0)")
    tilt: float = param(0.0, "linear tilt (energy / length): > 0 lowers the left well")
    temperature: float = param(0.5, "temperature T of the Langevin noise")
    step: float = param(2e-3, "Euler-Maruyama time step")
    start: Literal["both", "left"] = param(
        "both", "initial wells: both (a random well per coordinate) or left (all in the left "
        "well, for escape times)")
    first_passage: bool = param(
        False, "track every step when each replica first enters the right well (x_1 > 0) and "
        "how often it crosses (for analysis/escape.py)")


def build(p: Params) -> Simulation:
    right = FirstPassage(HalfSpace([1.0] + [0.0] * (p.d - 1), 0.0, "right"))
    return Simulation(DoubleWell(d=p.d, barrier=p.barrier, a=p.a, tilt=p.tilt),
                      OverdampedLangevin(step=p.step, temperature=p.temperature),
                      replicas=p.replicas, backend=p.backend, dtype=p.dtype, seed=p.seed,
                      init=[-p.a] * p.d if p.start == "left" else "default",
                      first_passage=right if p.first_passage else None)


if __name__ == "__main__":
    main(__file__)
