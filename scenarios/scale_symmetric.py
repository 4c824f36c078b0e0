"""Scale-symmetric net (a_1 a_2 x): does the noise pick a balanced point on the manifold of
minima a_1 a_2 = p*?

`ScaleSymmetric` (depth 2): L(a) = 1/(2n) sum_i (a_1 a_2 x_i - y_i)^2 with x_i = 1 and labels
y_i = teacher + noise eps_i (label noise), so every sample is fitted by a_1 a_2 = y_i and the
minimizer set is the hyperbola a_1 a_2 = p* = mean y.  Along it the imbalance
D = a_1^2 - a_2^2 (the `imbalance` record) and the log-ratio l = ln|a_1 / a_2| (`log_ratio`)
move; gradient flow conserves D.

`dynamics=langevin`: isotropic overdamped Langevin (Euler-Maruyama, step lr) at
`temperature` on L + weight_decay |a|^2 / 2.  With weight_decay = 0 the Ito terms cancel: D
has no drift, and the Gibbs density exp(-L/T) is uniform in l along the manifold (improper:
a finite run spreads diffusively: D is a martingale, d<D^2>/dt = 8 T <|a|^2>).
`dynamics=sgd`: minibatch SGD (batch_size, i.i.d. batches, `temperature` > 0 adds SGLD
noise) with weight decay.  Per step, exactly (ScaleSymmetric's docstring),

    E[D' | a] = ((1 - lr wd)^2 - lr^2 E_B[r_B^2]) D,   r_B = mean_{i in B} (a_1 a_2 x_i - y_i) x_i,

and on the manifold E_B[r_B^2] = Var(y) / batch_size (`batch_residual_second_moment`): the
minibatch noise of the labels (it points along the manifold's normal only) and weight
decay shrink |D| to the balanced point; without label noise (noise = 0) and weight decay D
is conserved.

Replicas start on the manifold, a_1 = sqrt|p*| e^(l/2), a_2 = sign(p*) sqrt|p*| e^(-l/2),
at l evenly spread over [init_log_ratio - init_spread, init_log_ratio + init_spread] (one
point when init_spread = 0; the spread start tests the uniform law in l).
"""
from dataclasses import dataclass
from typing import Literal

import numpy as np

from langevin_sim import Simulation
from langevin_sim.dynamics import SGD, OverdampedLangevin
from langevin_sim.potentials import ScaleSymmetric
from langevin_sim.scenario import RunParams, main, param, unused


# --quick: the same experiment in seconds, for the tests and notebooks (numpy: no compiling)
QUICK = {"replicas": 256, "steps": 400, "record_every": 20, "backend": "numpy"}


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 4096
    steps: int = 2000
    record_every: int = 20
    record_positions: bool = True
    n: int = param(64, "number of training samples (inputs x_i = 1)")
    teacher: float = param(1.0, "teacher product: labels y_i = teacher + noise eps_i")
    noise: float = param(1.0, "standard deviation of the label noise (0: every sample fitted "
                              "on the manifold, no minibatch noise there)")
    data_seed: int = param(1, "seed of the labels' noise")
    dynamics: Literal["langevin", "sgd"] = param(
        "sgd", "langevin: isotropic overdamped Langevin (Euler-Maruyama, step lr) at "
               "temperature; sgd: minibatch SGD with weight decay")
    lr: float = param(0.05, "SGD learning rate, or the Langevin time step")
    temperature: float = param(0.0, "Langevin temperature (sgd: > 0 adds SGLD noise)")
    batch_size: int = param(1, "SGD minibatch size (i.i.d. batches, with replacement)")
    weight_decay: float = param(0.0, "L2 weight decay lambda (Langevin: the term "
                                     "lambda |a|^2 / 2 in the potential)")
    init_log_ratio: float = param(1.3862943611198906, "initial imbalance l0 = ln|a_1 / a_2| "
                                  "(default ln 4: D0 = 3.75 |p*|)")
    init_spread: float = param(0.0, "initial l evenly spread over l0 +- init_spread (0: all "
                                    "replicas at l0)")


def potential(p: Params) -> ScaleSymmetric:
    l2 = p.weight_decay if p.dynamics == "langevin" else 0.0
    return ScaleSymmetric(depth=2, n=p.n, teacher=p.teacher, noise=p.noise, seed=p.data_seed, l2=l2)


def initial_positions(p: Params, pot: ScaleSymmetric) -> np.ndarray:
    """(replicas, 2): on the manifold a_1 a_2 = p*, log-ratios evenly spread (see docstring)."""
    u = (np.arange(p.replicas) + 0.5) / p.replicas * 2 - 1
    ell = p.init_log_ratio + p.init_spread * u
    r = np.sqrt(abs(pot.p_star))
    return np.stack([r * np.exp(ell / 2), np.sign(pot.p_star) * r * np.exp(-ell / 2)], axis=1)


def build(p: Params) -> Simulation:
    pot = potential(p)
    if p.dynamics == "langevin":
        unused(p, ["batch_size"], "with dynamics=langevin")
        dyn = OverdampedLangevin(step=p.lr, temperature=p.temperature)
    else:
        dyn = SGD(lr=p.lr, batch_size=p.batch_size, weight_decay=p.weight_decay,
                  temperature=p.temperature, sampling="iid")
    return Simulation(pot, dyn, replicas=p.replicas, backend=p.backend, dtype=p.dtype,
                      seed=p.seed, init=initial_positions(p, pot))


if __name__ == "__main__":
    main(__file__)
