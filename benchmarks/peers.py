"""Peers of the throughput workloads: the same runs written without the engine.

Two ways a user would write a workload of `throughput.py` (same sizes, dtype, initial
state, update rule and gradient as the engine's `Simulation`):

- `NumpyLoop`: a Python loop over steps, vectorized over replicas, noise from
  ``np.random.default_rng`` normals of the state's dtype drawn into one buffer (``out=``: a
  fresh (M, d) array a step cost W1 float64 ~960 page faults a step and ~1.1x its rate on a
  2-core VM), minibatches from per-epoch
  permutations (``Generator.permuted``), batched forward/backward passes by ``matmul``;
- `JaxScan`: ``jax.jit`` of ``lax.scan`` over steps (SGD: over epochs, then over the
  epoch's batches), ``jax.random`` (its default PRNG) normals of the state's dtype and
  permutations.  `jax_module` switches 64-bit JAX on, so float32 and float64 runs share a
  process; every array keeps its own dtype (Python scalars are weakly typed; AdamW's bias
  corrections, float64 of the traced step count, are cast to the state's dtype).

Full-batch AdamW (`MLPAdamW`) draws nothing: its step takes the step count.  The problems
(`Langevin`, `MLPSGD`, `MLPAdamW`) hold one step each, written once on the array module
``xp`` (``numpy`` or ``jax.numpy``), and the data in NumPy arrays of the run's dtype.
tests/test_benchmark_peers.py checks each step against the engine's reference step.
"""
from __future__ import annotations

import math
import os

import numpy as np

from langevin_sim.dynamics import SGD, AdamW, OverdampedLangevin
from langevin_sim.potentials import (ClassifierMLP, DoubleWell, ModularArithmeticMLP, Quadratic,
                                     SphericalPSpin, TeacherStudentMLP)


def jax_module():
    """`jax` with 64-bit types enabled, or None where JAX is not installed.  Beside CuPy on a
    GPU, JAX allocates as it goes (XLA_PYTHON_CLIENT_PREALLOCATE=false unless set), not 75 %
    of the device at its first array."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    return jax


# ------------------------------------------------------------------ gradients (xp: numpy or jax.numpy)

def double_well_grad(xp, x, center, a2, k, tilt):
    """DoubleWell gradient k (x - c)((x - c)^2 - a^2) + tilt, x (M, d)."""
    y = x - center
    return k * y * (y * y - a2) + tilt


def quadratic_grad(xp, x, H, center):
    """Quadratic gradient (x - c) @ H, x (M, d), H (d, d)."""
    return (x - center) @ H


def pspin_grad(xp, x, gmat):
    """p-spin gradient x^{(x)(p-1)} @ gmat, gmat = -p J reshaped to (N**(p-1), N), x (M, N).

    The full contraction, as a user writes it: for p = 3 one (M, N^2) @ (N^2, N) product,
    2 N^3 multiply-adds per replica, twice the engine's (its kernel multiplies the N(N+1)/2
    distinct products x_j x_k by the symmetric J folded onto them, kernels/pspin.py).
    Packing the pairs here would halve the product, but that is the engine's optimization,
    not the way the workload is naturally written: the peer keeps the full one."""
    M, N = x.shape
    rows = x
    while rows.shape[1] < gmat.shape[0]:
        rows = (rows[:, :, None] * x[:, None, :]).reshape(M, -1)
    return rows @ gmat


def sphere_step(xp, x, dx):
    """x + P_x dx rescaled onto |x|^2 = N (P_x the tangent projection), rows of (M, N)."""
    N = x.shape[1]
    y = x + dx - (xp.sum(dx * x, axis=1) / N)[:, None] * x
    return y / xp.sqrt(xp.sum(y * y, axis=1) / N)[:, None]


def mlp_grad(xp, params, A, target, softmax, activation="tanh"):
    """Gradient of the batch loss of an MLP out = W2 phi(W1 a + b1) + b2 per replica, phi tanh
    or quadratic (z^2): params (W1 (M, h, i), b1 (M, h), W2 (M, K, h), b2 (M, K)), inputs A
    (M, B, i) or, shared by the replicas, (B, i), targets (M, B, K) or (B, K); the loss the
    squared error 1/(2B) sum_b |out_b - y_b|^2, or with softmax the mean cross-entropy of the
    logits out against one-hot targets; returns the gradients in params' shapes."""
    W1, b1, W2, b2 = params
    Z = A @ xp.swapaxes(W1, 1, 2) + b1[:, None, :]                      # (M, B, h)
    H = xp.tanh(Z) if activation == "tanh" else Z * Z
    out = H @ xp.swapaxes(W2, 1, 2) + b2[:, None, :]                    # (M, B, K)
    if softmax:
        e = xp.exp(out - out.max(axis=-1, keepdims=True))
        out = e / e.sum(axis=-1, keepdims=True)
    dout = (out - target) / A.shape[-2]
    dZ = (dout @ W2) * ((1 - H * H) if activation == "tanh" else 2 * Z)
    return (xp.swapaxes(dZ, 1, 2) @ A, dZ.sum(axis=1), xp.swapaxes(dout, 1, 2) @ H,
            dout.sum(axis=1))


# ------------------------------------------------------------------ problems

class Langevin:
    """Overdamped Langevin x <- x - eta grad U(x) + sigma z, sigma = sqrt(2 eta T) (on the
    sphere: tangent step, then retraction) for DoubleWell, Quadratic and SphericalPSpin."""

    def __init__(self, potential, dynamics, dtype):
        if not isinstance(dynamics, OverdampedLangevin) or dynamics.step.kind != "constant" \
                or dynamics.temperature.kind != "constant":
            raise ValueError("Langevin peers run OverdampedLangevin at a constant step and temperature")
        dt = np.dtype(dtype)
        self.eta = float(dynamics.step.start)
        self.sigma = math.sqrt(2.0 * self.eta * float(dynamics.temperature.start))
        self.sphere = bool(potential.constrained)
        if isinstance(potential, DoubleWell):
            self.grad, args = double_well_grad, potential.grad_coeffs
        elif isinstance(potential, Quadratic):
            self.grad, args = quadratic_grad, (potential.H, potential.center)
        elif isinstance(potential, SphericalPSpin) and potential.planted == 0:
            p, N = potential.p, potential.N
            self.grad, args = pspin_grad, ((-p * potential.J).reshape(N ** (p - 1), N),)
        else:
            raise ValueError(f"no Langevin peer for {potential!r}")
        self.data = tuple(np.asarray(a, dt) for a in args)

    def init(self, x):
        return np.array(x)

    def positions(self, state):
        return state

    def step(self, xp, x, z, data):
        """One step from x (M, d) with normals z (M, d); data: `self.data` in xp's arrays."""
        dx = -self.eta * self.grad(xp, x, *data) + self.sigma * z
        return sphere_step(xp, x, dx) if self.sphere else x + dx


class MLPSGD:
    """Heavy-ball minibatch SGD (v <- mu v + g; x <- x - lr v) with per-epoch reshuffled
    batches on a tanh TeacherStudentMLP (squared error) or ClassifierMLP (cross-entropy),
    parameters kept as per-block arrays (M, ...)."""

    def __init__(self, potential, dynamics, dtype):
        if not isinstance(potential, (TeacherStudentMLP, ClassifierMLP)) \
                or potential.activation != "tanh":
            raise ValueError(f"no SGD peer for {potential!r}")
        d = dynamics
        plain = isinstance(d, SGD) and d.sampling == "epoch" and d.batch_size is not None and not (
            d.weight_decay or d.label_noise or d.grad_noise or d.temperature.start)
        if not plain or d.lr.kind != "constant" or d.temperature.kind != "constant":
            raise ValueError("SGD peers run constant-lr heavy ball on per-epoch batches, "
                             "no noise or decay")
        dt = np.dtype(dtype)
        self.lr, self.momentum, self.batch = float(d.lr.start), d.momentum, d.batch_size
        self.n, self.layout = potential.n_samples, potential.layout
        self.per_epoch = self.n // self.batch
        self.softmax = isinstance(potential, ClassifierMLP)
        targets = potential.train_Y if self.softmax else potential.labels[:, None]
        self.data = (potential.inputs.astype(dt), targets.astype(dt))

    def init(self, x):
        """(params, velocities) from flat positions x (M, d)."""
        params = tuple(np.ascontiguousarray(v) for v in self.layout.unpack(np.asarray(x)).values())
        return params, tuple(np.zeros_like(p) for p in params)

    def positions(self, state):
        return np.concatenate([np.asarray(p).reshape(p.shape[0], -1) for p in state[0]], axis=1)

    def step(self, xp, state, idx, data):
        """One step from state (params, velocities) on the batches idx (M, B) int."""
        inputs, targets = data
        params, vel = state
        g = mlp_grad(xp, params, inputs[idx], targets[idx], self.softmax)
        vel = tuple(self.momentum * v + gi for v, gi in zip(vel, g))
        return tuple(p - self.lr * v for p, v in zip(params, vel)), vel


class MLPAdamW:
    """Full-batch AdamW (decoupled weight decay; PyTorch's update, as the engine's
    `adamw_update`) on a ModularArithmeticMLP with one-hot inputs, tanh or quadratic units
    and cross-entropy: per step t (from 0)

        m <- b1 m + (1 - b1) g;  s <- b2 s + (1 - b2) g^2;
        x <- x - lr (wd x + (m / c1) / (sqrt(s / c2) + eps)),  c_i = 1 - b_i^(t+1),

    g the gradient of the mean loss over all n training pairs (inputs (n, 2p) one-hot rows,
    the same for every replica); parameters and moments kept as per-block arrays (M, ...)."""

    def __init__(self, potential, dynamics, dtype):
        if not isinstance(potential, ModularArithmeticMLP) or potential.embed is not None \
                or potential.activation not in ("tanh", "quadratic"):
            raise ValueError(f"no AdamW peer for {potential!r}")
        d = dynamics
        if not isinstance(d, AdamW) or d.batch_size is not None or d.lr.kind != "constant":
            raise ValueError("AdamW peers run full batch at a constant lr")
        dt = np.dtype(dtype)
        self.lr, self.beta1, self.beta2 = float(d.lr.start), d.beta1, d.beta2
        self.eps, self.weight_decay = d.eps, d.weight_decay
        self.layout, self.activation = potential.layout, potential.activation
        self.data = (potential.train_onehot.astype(dt), potential.train_Y.astype(dt))

    def init(self, x):
        """(params, m, s) from flat positions x (M, d), the moments zero."""
        params = tuple(np.ascontiguousarray(v) for v in self.layout.unpack(np.asarray(x)).values())
        return params, tuple(np.zeros_like(p) for p in params), tuple(np.zeros_like(p) for p in params)

    def positions(self, state):
        return np.concatenate([np.asarray(p).reshape(p.shape[0], -1) for p in state[0]], axis=1)

    def step(self, xp, state, t, data):
        """Step t (0-based int, traced under JAX) from state (params, m, s)."""
        params, m, s = state
        g = mlp_grad(xp, params, *data, True, self.activation)
        dt = params[0].dtype       # (a float64 correction would widen float32 JAX states)
        c1 = xp.asarray(1 - self.beta1 ** (t + 1), dt)
        c2 = xp.asarray(1 - self.beta2 ** (t + 1), dt)
        m = tuple(self.beta1 * mi + (1 - self.beta1) * gi for mi, gi in zip(m, g))
        s = tuple(self.beta2 * si + (1 - self.beta2) * gi * gi for si, gi in zip(s, g))
        u = tuple((mi / c1) / (xp.sqrt(si / c2) + self.eps) for mi, si in zip(m, s))
        params = tuple(p - self.lr * (self.weight_decay * p + ui) for p, ui in zip(params, u))
        return params, m, s


def problem_of(sim):
    """The peer problem of a Simulation's (potential, dynamics) pair in its dtype."""
    d = sim.dynamics
    cls = MLPSGD if isinstance(d, SGD) else MLPAdamW if isinstance(d, AdamW) else Langevin
    return cls(sim.potential, sim.dynamics, sim.dtype)


# ------------------------------------------------------------------ runners

class NumpyLoop:
    """A plain NumPy loop over steps from the Simulation's initial state; `advance(steps)`."""

    def __init__(self, sim, seed: int = 0):
        self.problem = problem_of(sim)
        self.state = self.problem.init(sim.state["x"])
        self.rng = np.random.default_rng(seed)
        self.t = 0
        self._perm = None
        self._z = np.empty_like(self.state) if isinstance(self.problem, Langevin) else None

    def advance(self, steps: int) -> None:
        pr, state = self.problem, self.state
        for t in range(self.t, self.t + steps):
            if isinstance(pr, Langevin):
                z = self.rng.standard_normal(out=self._z, dtype=self._z.dtype)
                state = pr.step(np, state, z, pr.data)
                continue
            if isinstance(pr, MLPAdamW):
                state = pr.step(np, state, t, pr.data)
                continue
            epoch, j = divmod(t, pr.per_epoch)
            if j == 0 or self._perm is None:
                M = state[0][0].shape[0]
                self._perm = self.rng.permuted(np.tile(np.arange(pr.n), (M, 1)), axis=1)
            state = pr.step(np, state, self._perm[:, j * pr.batch:(j + 1) * pr.batch], pr.data)
        self.state, self.t = state, self.t + steps

    @property
    def positions(self) -> np.ndarray:
        return self.problem.positions(self.state)


class JaxScan:
    """``jax.jit`` + ``lax.scan`` over steps from the Simulation's initial state (one
    compilation per distinct step count); `advance(steps)` blocks until done.  SGD runs
    whole epochs: steps must be a multiple of `multiple`, the batches per epoch (else 1).

    precision: the `jax.default_matmul_precision` the steps are traced and run at (None:
    JAX's default, which on NVIDIA GPUs since Ampere rounds float32 matmul operands to TF32;
    "highest": true float32)."""

    def __init__(self, sim, seed: int = 0, precision: str | None = None):
        self.jax = jax_module()
        if self.jax is None:
            raise ImportError("JaxScan needs jax (pip install -e '.[bench]')")
        jnp = self.jax.numpy
        self.problem = problem_of(sim)
        self.multiple = getattr(self.problem, "per_epoch", 1)
        self.precision = precision
        self.data = tuple(jnp.asarray(a) for a in self.problem.data)
        self.state = self.jax.tree_util.tree_map(jnp.asarray, self.problem.init(sim.state["x"]))
        self.key = self.jax.random.key(seed)
        self.t = 0
        self._compiled = {}

    def normals(self, key, t, x):
        """The normals of step t, x's shape (M, d) and dtype: ``jax.random`` of key folded
        with t."""
        random = self.jax.random
        return random.normal(random.fold_in(key, t), x.shape, x.dtype)

    def batches(self, key, epoch, M: int):
        """The batches of an epoch, (batches per epoch, M, B) int: a ``jax.random``
        permutation of the n samples per replica (key folded with the epoch, split over the
        replicas), cut into batches of B (a remainder of n left out, as the engine's SGD)."""
        jax, pr = self.jax, self.problem
        keys = jax.random.split(jax.random.fold_in(key, epoch), M)
        perm = jax.vmap(lambda k: jax.random.permutation(k, pr.n))(keys)
        idx = perm[:, :pr.per_epoch * pr.batch].reshape(M, pr.per_epoch, pr.batch)
        return jax.numpy.swapaxes(idx, 0, 1)

    def _scan(self, steps: int):
        jax, pr = self.jax, self.problem
        jnp, lax = jax.numpy, jax.lax

        if not isinstance(pr, MLPSGD):     # one step per t: Langevin's on its normals
            def run(x, key, t0, data):
                def body(x, t):
                    r = self.normals(key, t, x) if isinstance(pr, Langevin) else t
                    return pr.step(jnp, x, r, data), None
                return lax.scan(body, x, t0 + jnp.arange(steps))[0]
            return jax.jit(run)
        if steps % pr.per_epoch:
            raise ValueError(f"JAX SGD peer runs whole epochs: steps {steps} is not a multiple "
                             f"of {pr.per_epoch}")

        def run(state, key, t0, data):
            def epoch(state, e):
                body = lambda s, i: (pr.step(jnp, s, i, data), None)  # noqa: E731
                return lax.scan(body, state, self.batches(key, e, state[0][0].shape[0]))[0], None
            return lax.scan(epoch, state, t0 // pr.per_epoch + jnp.arange(steps // pr.per_epoch))[0]
        return jax.jit(run)

    def advance(self, steps: int) -> None:
        if steps not in self._compiled:
            self._compiled[steps] = self._scan(steps)
        with self.jax.default_matmul_precision(self.precision):   # traced and run at it
            self.state = self._compiled[steps](self.state, self.key, self.t, self.data)
        self.jax.block_until_ready(self.state)
        self.t += steps

    @property
    def positions(self) -> np.ndarray:
        return self.problem.positions(self.jax.tree_util.tree_map(np.asarray, self.state))
