"""Spherical p-spin quench: gradient descent stalls near the threshold energy, not the ground state.

Replicas start at uniform random points of the sphere |s|^2 = N (infinite temperature) of one
Crisanti-Sommers p = 3 instance and descend by overdamped Langevin at `temperature` (0: plain
projected gradient descent).  Mean-field theory (Cugliandolo-Kurchan 1993) predicts that for
N -> infinity the energy per spin decays as a power law towards the threshold energy
e_th = -sqrt(2(p-1)/p) = -1.1547, where the typical stationary points turn from saddles into
marginal minima, and never reaches the ground state e_0 ~ -1.172 (1RSB).  At finite N descent
stops earlier, in local minima above e_th, and the stopping energy falls towards e_th as N
grows.  Measured with this script's defaults (step 0.05, T = 0, coupling seed 0, energies
frozen after ~4000 steps): mean final energy per spin -1.042 +- 0.007 (N = 32, 64 replicas),
-1.064 +- 0.004 (N = 64, 64 replicas; lowest -1.132), -1.101 +- 0.003 (N = 128, 32 replicas);
no replica went below e_th.  Records: `energy_per_spin` (and `overlap` when `planted` > 0).

Cost: 2 N^3 flops per replica-step (one GEMM per block of replicas): 2-6 ms per step for 64
replicas at N = 64 on the shared two-core machine.  Compare the recorded energies with
`SphericalPSpin.threshold_energy()`; with record_positions=true,
`langevin_sim.potentials.sharpness.sharpness(run.potential, positions)` gives the top
eigenvalue and the trace of the Riemannian Hessian at the recorded points.
"""
from dataclasses import dataclass
from typing import Literal

from langevin_sim import Simulation
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.potentials import SphericalPSpin
from langevin_sim.scenario import RunParams, main, param


# --quick: the same experiment in seconds, for the tests and notebooks (numpy: no compiling)
QUICK = {"N": 32, "replicas": 16, "steps": 1000, "record_every": 10, "backend": "numpy"}


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 64
    steps: int = 20_000
    record_every: int = 100
    record_positions: bool = False
    N: int = param(64, "number of spins (the sphere is |s|^2 = N)")
    p: Literal[2, 3, 4] = param(3, "order p of the interaction (p spins per coupling)")
    convention: Literal["crisanti-sommers", "abc"] = param(
        "crisanti-sommers", "normalization of the coupling variance")
    coupling_seed: int = param(0, "seed of the coupling tensor (the instance)")
    planted: float = param(0.0, "strength of a planted direction, energy -N planted m^p with m the "
                                  "overlap (0: pure p-spin glass)")
    temperature: float = param(0.0, "temperature T of the Langevin noise (0: gradient descent)")
    step: float = param(0.05, "Euler-Maruyama time step (at T > 0 its energy bias is first "
                              "order: ~+0.013 per spin at 0.05, T = 1.5; use <= 0.005 to check "
                              "equilibrium)")


def build(p: Params) -> Simulation:
    pot = SphericalPSpin(p.N, p.p, convention=p.convention, seed=p.coupling_seed, planted=p.planted)
    return Simulation(pot, OverdampedLangevin(step=p.step, temperature=p.temperature),
                      replicas=p.replicas, backend=p.backend, dtype=p.dtype, seed=p.seed)


if __name__ == "__main__":
    main(__file__)
