"""A real data set: minibatch SGD trains a one-hidden-layer classifier (ClassifierMLP).

The data set (`dataset`: scikit-learn's digits, iris, wine or breast_cancer; the ``datasets``
extra) is split by `data_seed` into n training and n_test test samples (defaults: half and
the rest) and, with n_val > 0, a validation set; features standardized by the training set;
with label_corruption q, a fraction q of the training labels is replaced by wrong classes
(memorization, Zhang et al. 2017).  A net of width `hidden` is fitted by cross-entropy with
minibatch SGD (momentum, weight decay, temperature > 0: SGLD).  Records the training loss
(energy, also `train_loss`), test loss, train and test accuracy (with n_val > 0 the
validation set's loss and accuracy) and weight norm of every replica, and with
sharpness_every > 0 the top Hessian eigenvalue (`sharpness`) every sharpness_every steps
(NaN at the other records).  At the defaults (digits, 898 training images, width 32, lr
0.1, batch 32) every replica fits the training set and reaches ~97 % test accuracy; the
fused Numba kernel runs it.
"""
from dataclasses import dataclass
from typing import Literal

from langevin_sim import Simulation
from langevin_sim.dynamics import SGD
from langevin_sim.potentials import ClassifierMLP
from langevin_sim.potentials.sharpness import SharpnessObserver
from langevin_sim.scenario import RunParams, main, param

# --quick: the same experiment in seconds, for the tests and notebooks (numpy: no compiling)
QUICK = {"replicas": 8, "steps": 200, "record_every": 50, "hidden": 8, "sharpness_every": 100,
         "backend": "numpy"}


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 16
    steps: int = 3000
    record_every: int = 100
    record_positions: bool = False
    dataset: Literal["digits", "iris", "wine", "breast_cancer"] = param(
        "digits", "the data set (langevin_sim.datasets.CLASSIFICATION)")
    n: int | None = param(None, "number of training samples (none: half the data set)")
    n_test: int | None = param(None, "number of test samples (none: all the others but the "
                                     "validation set)")
    n_val: int = param(0, "number of validation samples (recorded as val_loss, val_accuracy; "
                          "0: none), for an early stop that leaves the test set untouched")
    hidden: int = param(32, "width of the hidden layer")
    activation: Literal["tanh", "relu", "quadratic"] = param("tanh", "hidden activation")
    label_corruption: float = param(0.0, "fraction of training labels made wrong")
    data_seed: int = param(0, "seed of the split and of the label corruption")
    init_scale: float = param(1.0, "scale of the initial weights (x 1 / sqrt(fan-in))")
    lr: float = param(0.1, "SGD learning rate")
    batch_size: int | None = param(32, "minibatch size (none: full batch)")
    momentum: float = param(0.0, "heavy-ball momentum")
    weight_decay: float = param(0.0, "L2 weight decay")
    temperature: float = param(0.0, "Langevin noise temperature (> 0: SGLD)")
    sharpness_every: int = param(0, "record the top Hessian eigenvalue (SharpnessObserver) every "
                                    "this many steps, a multiple of record_every (0: never)")


def potential(p: Params) -> ClassifierMLP:
    """The split data set and the net of `p`."""
    return ClassifierMLP(p.dataset, n=p.n, n_test=p.n_test, hidden=p.hidden,
                         activation=p.activation, seed=p.data_seed, init_scale=p.init_scale,
                         label_corruption=p.label_corruption, n_val=p.n_val)


def build(p: Params) -> Simulation:
    dyn = SGD(lr=p.lr, batch_size=p.batch_size, momentum=p.momentum, weight_decay=p.weight_decay,
              temperature=p.temperature)
    obs = (SharpnessObserver(every=p.sharpness_every),) if p.sharpness_every > 0 else ()
    return Simulation(potential(p), dyn, replicas=p.replicas, backend=p.backend, dtype=p.dtype,
                      seed=p.seed, observers=obs)


if __name__ == "__main__":
    main(__file__)
