"""Valley drift: Langevin replicas slide from the sharp end of a valley of exact minima to
its flat end, pushed by entropy alone.

The valley U = k(s)/2 |y|^2 runs along the x_1 axis (arclength s = x_1, transverse y in
d - 1 dimensions) with k(s) = k_sharp exp(alpha s), alpha = ln(k_flat / k_sharp) / length,
and walls at s = 0 and s = length.  Every point of the axis is an exact minimum (U = 0), so
gradient descent does not move along it.  At temperature T the transverse coordinates hold
equipartition energy (d-1) T/2, and dU/ds = (k'/k) U gives the mean drift speed
v = -alpha (d-1) T / 2 toward the flat end; the stationary density per unit arclength is the
Laplace law k(s)^(-(d-1)/2) (exact here), e^((d-1)|alpha| s / 2) from sharp to flat.
All replicas start on the axis at the sharp end s = 0.  Records: s, curvature k(s) and
distance to the axis (`run["s"]` etc.).  Before the far wall the slope of mean s(t) is v
(at early times the wall at s = 0 reflects the diffusing replicas and adds about
sqrt(4 T t / pi) on top of v t); at the end compare the histogram of s with
`Valley.log_density`.  With the defaults v = 0.5 and the far wall is reached at t ~ 12.
"""
import math
from dataclasses import dataclass

import numpy as np

from langevin_sim import Simulation
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.potentials import Valley
from langevin_sim.scenario import RunParams, main, param


# --quick: the same experiment in seconds, for the tests and notebooks (numpy: no compiling)
QUICK = {"replicas": 256, "steps": 2000, "record_every": 200, "backend": "numpy"}


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 2048
    steps: int = 20_000
    record_every: int = 200
    record_positions: bool = False
    d: int = param(5, "dimension: the valley's axis and d - 1 transverse directions")
    k_sharp: float = param(20.0, "transverse curvature at the sharp end s = 0")
    k_flat: float = param(1.0, "transverse curvature at the flat end s = length")
    length: float = param(6.0, "length of the valley between its end walls")
    wall: float = param(100.0, "curvature of the end walls (energy / length^2)")
    temperature: float = param(0.5, "temperature T of the Langevin noise")
    step: float = param(1e-3, "Euler-Maruyama time step")


def build(p: Params) -> Simulation:
    alpha = math.log(p.k_flat / p.k_sharp) / p.length
    pot = Valley(d=p.d, profile="exp", k0=p.k_sharp, alpha=alpha, bounds=(0.0, p.length), wall=p.wall)
    return Simulation(pot, OverdampedLangevin(step=p.step, temperature=p.temperature),
                      replicas=p.replicas, backend=p.backend, dtype=p.dtype, seed=p.seed,
                      init=pot.point(np.zeros(1))[0])


if __name__ == "__main__":
    main(__file__)
