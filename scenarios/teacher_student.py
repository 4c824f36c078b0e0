"""Teacher-student regression: minibatch SGD (or SGLD) fits a random teacher network.

A one-hidden-layer student of width `hidden` learns labels y = f*(a) + noise from a teacher
of width `teacher_hidden` (same activation) on n Gaussian inputs, by minibatch SGD with
momentum, weight decay and optional Langevin noise (temperature > 0: SGLD).  With
hidden >= teacher_hidden the task is realizable: at the defaults, after 2000 steps the test
loss of the 64 replicas is 0.17% (median) and at most 0.5% of its initial value, on its way
to the noise floor noise^2 / 2.  Records the train loss (energy, also `train_loss`), test
loss (and with n_val > 0 a validation loss) and weight norm of every replica, and with
sharpness_every > 0 the top Hessian eigenvalue (`sharpness`, Lanczos on hvp) every
sharpness_every steps (NaN at the other records).  The fused Numba kernel runs it: ~2.5 ms
per step for the 64 replicas on 2 busy cores.

start=minimum starts every replica at one minimum of the training loss (L-BFGS, `minimum`),
for the stationary law of SGD around it (claim 1 of docs/results.md).
"""
from dataclasses import dataclass
from typing import Literal

import numpy as np

from langevin_sim import Simulation
from langevin_sim.analysis.basins import quench
from langevin_sim.dynamics import SGD
from langevin_sim.potentials import TeacherStudentMLP
from langevin_sim.potentials.sharpness import SharpnessObserver
from langevin_sim.scenario import RunParams, main, param


# --quick: the same experiment in seconds, for the tests and notebooks (numpy: no compiling)
QUICK = {"replicas": 16, "steps": 500, "record_every": 50, "backend": "numpy"}


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 64
    steps: int = 5000
    record_every: int = 100
    record_positions: bool = False
    n: int = param(512, "number of training samples")
    n_test: int = param(1024, "number of test samples")
    n_val: int = param(0, "number of validation samples (recorded as val_loss; 0: none), for an "
                          "early stop that leaves the test set untouched")
    d_in: int = param(8, "input dimension")
    hidden: int = param(16, "width of the student's hidden layer")
    teacher_hidden: int = param(4, "width of the teacher's hidden layer")
    activation: Literal["tanh", "relu", "quadratic"] = param("tanh",
                                                             "student's and teacher's activation")
    noise: float = param(0.01, "standard deviation of the label noise")
    data_seed: int = param(1, "seed of the data and the teacher")
    init_scale: float = param(1.0, "scale of the student's initial weights (x 1 / sqrt(fan-in))")
    lr: float = param(0.05, "SGD learning rate")
    batch_size: int | None = param(32, "minibatch size (none: full batch)")
    momentum: float = param(0.9, "heavy-ball momentum")
    weight_decay: float = param(0.0, "L2 weight decay")
    temperature: float = param(0.0, "Langevin noise temperature (> 0: SGLD)")
    replacement: bool = param(False, "minibatches drawn with replacement (false: per-epoch "
                                     "permutations)")
    sharpness_every: int = param(0, "record the top Hessian eigenvalue (SharpnessObserver) every "
                                    "this many steps, a multiple of record_every (0: never)")
    start: Literal["init", "minimum"] = param(
        "init", "init: random initial weights per replica; minimum: every replica at the "
                "minimum that L-BFGS reaches from one initialization (`minimum`)")


def potential(p: Params) -> TeacherStudentMLP:
    """The data set and student of `p`."""
    return TeacherStudentMLP(n=p.n, d_in=p.d_in, hidden=p.hidden, teacher_hidden=p.teacher_hidden,
                             activation=p.activation, noise=p.noise, seed=p.data_seed,
                             n_test=p.n_test, n_val=p.n_val, init_scale=p.init_scale)


def minimum(p: Params) -> np.ndarray:
    """(d,) a minimum of the training loss: L-BFGS (|grad| <= 1e-10) from the initialization
    of standard normals drawn by numpy's Generator(data_seed)."""
    pot = potential(p)
    z = np.random.default_rng(p.data_seed).standard_normal((1, pot.d))
    return quench(pot, pot.default_init(z), gtol=1e-10, max_iter=20000).x[0]


def build(p: Params) -> Simulation:
    pot = potential(p)
    dyn = SGD(lr=p.lr, batch_size=p.batch_size, momentum=p.momentum, weight_decay=p.weight_decay,
              temperature=p.temperature, sampling="iid" if p.replacement else "epoch")
    obs = (SharpnessObserver(every=p.sharpness_every),) if p.sharpness_every > 0 else ()
    return Simulation(pot, dyn, replicas=p.replicas, backend=p.backend, dtype=p.dtype, seed=p.seed,
                      observers=obs, init=minimum(p) if p.start == "minimum" else "default")


if __name__ == "__main__":
    main(__file__)
