"""SGD on least squares: what law does minibatch SGD sample at stationarity?

Replicas of minibatch SGD (optionally with momentum, weight decay and Langevin noise) on the
finite-sum loss L(w) = 1/(2n) sum_i (a_i . w - y_i)^2 of a synthetic regression data set.
The iterates settle into a stationary law around the least-squares solution whose second
moment is known exactly (`analysis/covariance.py`: the exact discrete law for i.i.d. batches,
independent subsets or, for small n, the engine's epoch reshuffling, next to the continuous
Lyapunov approximation of Mandt et al.), and with batch_size=1 its tails are power laws of
Kesten's index (`analysis/tails.py`).  Defaults: replacement (i.i.d. batches), d = 4.
"""
from dataclasses import dataclass

from langevin_sim import Simulation
from langevin_sim.dynamics import SGD
from langevin_sim.potentials import LinearRegression
from langevin_sim.scenario import RunParams, main, param


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 4096
    steps: int = 4000
    record_every: int = 50
    n: int = param(64, "number of training samples")
    d: int = param(4, "number of weights")
    noise: float = param(0.5, "standard deviation of the label noise")
    data_seed: int = param(1, "seed of the data set and the teacher")
    lr: float = param(0.1, "SGD learning rate")
    batch_size: int | None = param(4, "minibatch size (none: full batch)")
    momentum: float = param(0.0, "heavy-ball momentum")
    weight_decay: float = param(0.0, "L2 weight decay")
    temperature: float = param(0.0, "Langevin noise temperature (> 0: SGLD)")
    replacement: bool = param(True, "minibatches drawn i.i.d. with replacement (false: "
                                    "per-epoch permutations)")


def build(p: Params) -> Simulation:
    pot = LinearRegression(n=p.n, d=p.d, noise=p.noise, seed=p.data_seed)
    dyn = SGD(lr=p.lr, batch_size=p.batch_size, momentum=p.momentum, weight_decay=p.weight_decay,
              temperature=p.temperature, replacement=p.replacement)
    return Simulation(pot, dyn, replicas=p.replicas, backend=p.backend, dtype=p.dtype, seed=p.seed,
                      init=pot.w_star)


if __name__ == "__main__":
    main(__file__)
