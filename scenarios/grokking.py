"""Grokking: modular addition is memorized long before it is learned.

An MLP with quadratic activation (Gromov 2023) reads one-hot operands (a, b) and predicts
(a + b) mod p with cross-entropy, trained full-batch by AdamW with decoupled weight decay on
60% of the p^2 = 529 pairs (p = 23).  Training accuracy reaches 100% within a few hundred
steps while the test accuracy stays near or below chance (1/p); only after ~1500 more steps
does the test accuracy climb past 0.9 -- while the weight norm *grows* (from ~26 at the fit
to ~38.5), it does not shrink.  Records: train/test loss and accuracy and the weight norm
every `record_every` steps; with sharpness_every > 0 the top Hessian eigenvalue of the
training loss (`sharpness`, Lanczos on hvp; NaN at the other records).

Cost: the fused Numba kernel (backend numba, the default) takes ~0.16 ms per replica and
step with records every 50 steps (32 replicas x 2000 steps in 10.5 s on 2 shared cores, load
~3), so the defaults (32 replicas, 4000 steps) take ~20 s; the NumPy reference is ~5x slower
(0.9 ms).  A cold Numba cache adds ~20 s of compiling to the first run, so the quick preset
stays on numpy (2 s; numba: 2 s warm, 22 s cold).  A sharpness measurement costs ~0.1 s
of CPU per replica (32 hvp).
Measured (claim 5(c), docs/results.md, 32 replicas per point): median fit at step 75-425,
median delay to test accuracy >= 0.9 of 1050-6625 steps for lr in {0.001, 0.002, 0.006}
and weight decay in {0.5, 1}; at weight decay 2 the test accuracy plateaus near 0.85.

Plain SGD does not show it at this cost.  Heavy-ball SGD (momentum 0.9, full batch, same
net, 2 replicas each) fits the training set by step 1000 and then stalls for 20000 steps:
quadratic activation, (lr, weight decay) = (0.1, 1e-3), (0.3, 3e-3), (1.0, 1e-3) end at
test accuracy 0.33-0.37, 0.30-0.34, 0.43-0.58; relu (0.3, 3e-3) at 0.06-0.08; a stronger
decay (0.3, 1e-2) collapses the weights and fits nothing (train accuracy 0.06).
"""
from dataclasses import dataclass
from typing import Literal

from threadpoolctl import threadpool_limits

from langevin_sim import Simulation
from langevin_sim.dynamics import AdamW
from langevin_sim.potentials import ModularArithmeticMLP
from langevin_sim.potentials.sharpness import SharpnessObserver
from langevin_sim.scenario import Backend, RunParams, main, param


# --quick: the same experiment in seconds, for the tests and notebooks (numpy: no compiling)
QUICK = {"replicas": 2, "steps": 300, "record_every": 50, "backend": "numpy"}


@dataclass(frozen=True)
class Params(RunParams):
    replicas: int = 32
    steps: int = 4000
    record_every: int = 50
    backend: Backend = "numba"
    record_positions: bool = False
    p: int = param(23, "modulus: the task is (a + b) mod p")
    hidden: int = param(64, "width of the hidden layer")
    train_fraction: float = param(0.6, "fraction of the p^2 pairs trained on (the rest: test)")
    activation: Literal["tanh", "relu", "quadratic"] = param("quadratic",
                                                             "activation of the hidden layer")
    embed: int | None = param(None, "width of a learned operand embedding (none: one-hot inputs)")
    init_scale: float = param(1.0, "scale of the initial weights (times 1 / sqrt(fan-in))")
    data_seed: int = param(0, "seed of the train/test split")
    lr: float = param(3e-3, "AdamW learning rate")
    weight_decay: float = param(1.0, "AdamW decoupled weight decay, per unit lr")
    beta1: float = param(0.9, "AdamW first-moment decay")
    beta2: float = param(0.98, "AdamW second-moment decay")
    batch_size: int | None = param(None, "minibatch size (none: full batch)")
    sharpness_every: int = param(0, "record the top Hessian eigenvalue of the training loss "
                                    "(SharpnessObserver, Lanczos on hvp) every this many steps, a "
                                    "multiple of record_every (0: never)")


def build(p: Params) -> Simulation:
    # The (M, n, hidden) products are small: several BLAS threads only add overhead (PERF_NOTES).
    threadpool_limits(1, user_api="blas")
    pot = ModularArithmeticMLP(p=p.p, hidden=p.hidden, train_fraction=p.train_fraction,
                               embed=p.embed, activation=p.activation, seed=p.data_seed,
                               init_scale=p.init_scale)
    dyn = AdamW(lr=p.lr, batch_size=p.batch_size, beta1=p.beta1, beta2=p.beta2,
                weight_decay=p.weight_decay)
    # sharpness only: 2 Hutchinson probes (the observer's minimum) keep the trace's cost small
    obs = (SharpnessObserver(every=p.sharpness_every, probes=2),) if p.sharpness_every > 0 else ()
    return Simulation(pot, dyn, replicas=p.replicas, backend=p.backend, dtype=p.dtype, seed=p.seed,
                      observers=obs)


if __name__ == "__main__":
    main(__file__)
