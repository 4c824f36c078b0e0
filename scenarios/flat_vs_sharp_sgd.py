"""Flat versus sharp under minibatch SGD: which minimum does SGD occupy when its noise is
larger in the sharp one?

The finite-sum version of `flat_vs_sharp.py` (`ShiftedMultiWell`): n samples, sample i sees
two isotropic quadratic wells (sharp, curvature k_sharp, at -separation/2 e_1; flat, k_flat,
at +separation/2 e_1; smooth minimum of softness tau) shifted by xi_i ~ shift_scale N(0, I)
(centred, seed `data_seed`).  The full loss is that landscape smoothed by the shifts; the
wells' depths are set so that its two minima differ by `depth_gap` exactly (flat minus
sharp; 0: equal depth), found by quenching.  Near a minimum the per-sample gradients are
H (x - c - xi_i), so minibatch noise has covariance H Cov(xi) H / S: Hessian-aligned, and
the matched temperature lr f tr(C) / (2 d) of the sharp well is (k_sharp / k_flat)^2 times
the flat one's (`analysis.sgd_basins`).

dynamics: "sgd" (plain SGD, batches of batch_size drawn as `sampling` says: "iid" with
repeats, "subset" S distinct samples each step, "epoch" reshuffled epochs), or "langevin"
(Euler-Maruyama with step lr on the full loss at `temperature`, for comparison).  All
replicas start at the sharp minimum.  Records `basin` (0 sharp, 1 flat).
"""
from dataclasses import dataclass
from typing import Literal

import numpy as np

from langevin_sim import Simulation
from langevin_sim.analysis.basins import quench
from langevin_sim.dynamics import SGD, OverdampedLangevin
from langevin_sim.potentials.multiwell import ShiftedMultiWell, random_shifts
from langevin_sim.scenario import RunParams, main, param, unused

# --quick: the same experiment in seconds, for the tests and notebooks (numpy: no compiling)
QUICK = {"replicas": 256, "steps": 2000, "record_every": 50, "backend": "numpy"}


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 2048
    steps: int = 20_000
    record_every: int = 20
    record_positions: bool = False
    d: int = param(1, "dimension")
    k_sharp: float = param(4.0, "curvature of the sharp well, in every direction")
    k_flat: float = param(1.0, "curvature of the flat well, in every direction")
    separation: float = param(3.0, "distance between the two well centres, along x_1")
    depth_gap: float = param(0.0, "full loss at the flat minimum minus at the sharp one")
    softness: float = param(0.02, "softness tau of the smooth minimum joining the wells (energy)")
    n: int = param(64, "number of samples (shifted copies of the landscape)")
    shift_scale: float = param(0.8, "standard deviation of each coordinate of the shifts")
    data_seed: int = param(1, "seed of the shifts")
    dynamics: Literal["sgd", "langevin"] = param(
        "sgd", "sgd: minibatch SGD; langevin: Euler-Maruyama on the full loss at `temperature`")
    lr: float = param(0.125, "SGD learning rate (langevin: the time step)")
    batch_size: int = param(1, "minibatch size")
    sampling: Literal["iid", "subset", "epoch"] = param(
        "iid", "how SGD draws its batches: i.i.d. with repeats, a random subset each step, "
               "or reshuffled epochs")
    temperature: float = param(0.1, "Langevin temperature (dynamics=langevin only)")


def landscape(p: Params) -> ShiftedMultiWell:
    """The full loss of `p`: depths set so that its minima differ by depth_gap (3 rounds of
    quenching from the well centres and shifting the flat well's depth)."""
    c = np.zeros((2, p.d))
    c[:, 0] = [-p.separation / 2, p.separation / 2]
    xi = random_shifts(p.n, p.d, p.shift_scale, p.data_seed)
    depths = np.zeros(2)
    for _ in range(3):
        pot = ShiftedMultiWell(c, xi, spectra=[[p.k_sharp] * p.d, [p.k_flat] * p.d],
                               depths=depths, softness=p.softness)
        e = quench(pot, c).energy
        depths[1] += p.depth_gap - (e[1] - e[0])
    return ShiftedMultiWell(c, xi, spectra=[[p.k_sharp] * p.d, [p.k_flat] * p.d],
                            depths=depths, softness=p.softness)


def build(p: Params) -> Simulation:
    pot = landscape(p)
    unused(p, ["temperature"] if p.dynamics == "sgd" else ["batch_size", "sampling"],
           f"with dynamics={p.dynamics}")
    dyn = (SGD(lr=p.lr, batch_size=p.batch_size, sampling=p.sampling) if p.dynamics == "sgd" else
           OverdampedLangevin(step=p.lr, temperature=p.temperature))
    return Simulation(pot, dyn, replicas=p.replicas, backend=p.backend, dtype=p.dtype, seed=p.seed,
                      init=quench(pot, pot.centers[:1]).x[0])


if __name__ == "__main__":
    main(__file__)
