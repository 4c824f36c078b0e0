"""Langevin dynamics in a dense quadratic well: the exact stationary law of the integrator.

U(x) = x^T H x / 2 with H = Q diag(spectrum) Q^T for a random rotation Q.  Overdamped Langevin
(Euler-Maruyama) samples a Gaussian of covariance T / (lambda (1 - eta lambda / 2)) per
eigen-direction, not the Gibbs T H^-1; BAOAB's positions sample exactly T H^-1 at any stable
step, OBABO's exactly T / (lambda (1 - eta^2 lambda / 4)) (its momenta exactly T).
`analysis/covariance.py` compares the sampled covariance with the exact law and Gibbs, with
error bars.
"""
from dataclasses import dataclass
from typing import Literal

from langevin_sim import Simulation
from langevin_sim.dynamics import OBABO, OverdampedLangevin, UnderdampedLangevin
from langevin_sim.potentials import Quadratic
from langevin_sim.scenario import RunParams, main, param, unused


# --quick: the same experiment in seconds, for the tests and notebooks (numpy: no compiling)
QUICK = {"replicas": 256, "steps": 1000, "record_every": 20, "backend": "numpy"}


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 2048
    steps: int = 4000
    record_every: int = 40
    spectrum: tuple[float, ...] = param((0.5, 1.0, 2.0, 4.0),
                                        "eigenvalues of H (curvatures), e.g. --set spectrum=1,3")
    rotation_seed: int = param(1, "seed of the random rotation Q")
    dynamics: Literal["overdamped", "baoab", "obabo"] = param(
        "overdamped", "overdamped: Euler-Maruyama; baoab, obabo: underdamped Langevin (BAOAB, "
                      "OBABO splittings)")
    step: float = param(0.2, "time step eta (stable when eta lambda_max < 2; underdamped: "
                             "eta^2 lambda_max < 4)")
    temperature: float = param(1.0, "temperature T")
    friction: float = param(1.0, "friction gamma (baoab and obabo only)")


def build(p: Params) -> Simulation:
    pot = Quadratic(spectrum=p.spectrum, seed=p.rotation_seed)
    if p.dynamics == "overdamped":
        unused(p, ["friction"], "with dynamics=overdamped")
        dyn = OverdampedLangevin(step=p.step, temperature=p.temperature)
    else:
        dyn = {"baoab": UnderdampedLangevin, "obabo": OBABO}[p.dynamics](
            step=p.step, friction=p.friction, temperature=p.temperature)
    return Simulation(pot, dyn, replicas=p.replicas, backend=p.backend, dtype=p.dtype, seed=p.seed)


if __name__ == "__main__":
    main(__file__)
