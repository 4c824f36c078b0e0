"""Toy neural networks as finite-sum losses: teacher-student regression, modular addition and
classifiers of real data sets.

All are one-hidden-layer perceptrons whose parameters, for all M replicas, are ONE (M, d)
array.  Per replica the flat vector is the concatenation, in this order, of

    [E      (p, e)     only ModularArithmeticMLP with embed=e]
    W1     (h, d_in)  first-layer weights, row-major (PyTorch's (out, in) convention)
    b1     (h,)       first-layer bias
    W2     (k, h)     read-out weights, row-major
    b2     (k,)       read-out bias

so W1[j, i] sits at x[:, off_W1 + j * d_in + i].  `ParamLayout` holds the offsets
(`potential.layout`).  The network maps an input row a (d_in,) to

    z = W1 a + b1,   h = phi(z),   out = W2 h + b2   (k,)

with phi one of ``tanh``, ``relu`` (max(z, 0)) or ``quadratic`` (z^2).

The math below is written once as plain-Python functions on arrays whose last two axes are
(samples, features): with NumPy they run batched over replicas ((M, B, .) @ (M, ., .)), and
on CuPy arrays for the cuda backend's generic path; `langevin_sim.kernels.toynets` runs the
same steps per replica with its own products and loops (tested against these functions).
Constants in these functions are integers, so float32 inputs stay float32.
Gradients are hand-written backprop; Hessian-vector products are analytic (Pearlmutter's
R-operator applied to the forward and backward passes), and `hessian(x)` (small d) stacks
d of them (`Potential.hessian`).  Losses are dimensionless; energy = full training loss.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .. import datasets, rng
from ..errors import ConfigError, check_int
from .base import Potential, array_module

ACTIVATIONS = {"tanh": 0, "relu": 1, "quadratic": 2}
CHUNK_ELEMENTS = 1 << 22  # full-data passes handle replicas in chunks of <= this many activations


# ------------------------------------------------------------------ array math (shared)

def mm_nt(a, b):
    """a @ b^T over the last two axes (batched by broadcasting)."""
    return a @ np.swapaxes(b, -1, -2)


def mm_tn(a, b):
    """a^T @ b over the last two axes (batched by broadcasting)."""
    return np.swapaxes(a, -1, -2) @ b


def act(z, kind):
    """phi(z): kind 0 tanh, 1 relu, 2 quadratic (elementwise, dtype of z)."""
    if kind == 0:
        return np.tanh(z)
    if kind == 1:
        return z * (z > 0)
    return z * z


def act_d1(z, h, kind):
    """phi'(z) given h = phi(z) (tanh: 1 - h^2, no second tanh; relu: 1 for z > 0, else 0)."""
    if kind == 0:
        return 1 - h * h
    if kind == 1:
        return (z > 0).astype(z.dtype)
    return 2 * z


def act_d2(z, h, kind):
    """phi''(z) given h = phi(z) (tanh: -2 h (1 - h^2); relu: 0 almost everywhere)."""
    if kind == 0:
        return -2 * h * (1 - h * h)
    if kind == 1:
        return 0 * z
    return 0 * z + 2


def mlp_forward(A, W1, b1, W2, b2, kind):
    """Forward pass on inputs A (.., B, d_in): returns Z (.., B, h), H = phi(Z), out (.., B, k).

    W1 (.., h, d_in), W2 (.., k, h); b1, b2 broadcast against (.., B, h) and (.., B, k).
    """
    Z = mm_nt(A, W1) + b1
    H = act(Z, kind)
    return Z, H, mm_nt(H, W2) + b2


def mlp_backward(A, H, dout, dZ):
    """Backprop of dout = dL/dout (.., B, k), given dZ = dL/dZ = (dout W2) * phi'(Z) (.., B, h):
    returns (dW1, db1, dW2, db2) = (dZ^T A, sum_B dZ, dout^T H, sum_B dout)."""
    return mm_tn(dZ, A), dZ.sum(axis=-2), mm_tn(dout, H), dout.sum(axis=-2)


def squared_error_dout(out, y, B):
    """dL/dout of L = 1/(2B) sum_b |out_b - y_b|^2."""
    return (out - y) / B


def mlp_rforward(A, RA, W1, W2, H, VW1, Vb1, VW2, Vb2, d1):
    """R-operator (directional derivative along V) of the forward pass: (RZ, RH, Rout).

    RA is the derivative of the inputs, None when they do not depend on the parameters;
    d1 = phi'(Z).
    """
    RZ = mm_nt(A, VW1) + Vb1
    if RA is not None:
        RZ = RZ + mm_nt(RA, W1)
    RH = d1 * RZ
    return RZ, RH, mm_nt(RH, W2) + mm_nt(H, VW2) + Vb2


def mlp_rbackward(A, RA, H, RZ, RH, W2, VW2, dout, Rdout, d1, dH, dZ, d2):
    """R-operator of the backward pass, given d1 = phi'(Z), dH = dout W2, dZ = dH d1 and
    d2 = phi''(Z): (RdW1, RdB1, RdW2, RdB2, RdZ)."""
    RdZ = (Rdout @ W2 + dout @ VW2) * d1 + dH * d2 * RZ
    RdW1 = mm_tn(RdZ, A)
    if RA is not None:
        RdW1 = RdW1 + mm_tn(dZ, RA)
    return (RdW1, RdZ.sum(axis=-2), mm_tn(Rdout, H) + mm_tn(dout, RH), Rdout.sum(axis=-2),
            RdZ)


class _Pass:
    """One forward pass of a net's loss at x (M, d) over `rows` (None: all training samples)
    and the pieces its gradient and Hessian-vector products share, each computed on first use
    and kept: phi'(Z) `d1`, dH = dout W2, dZ = dH d1, phi''(Z) `d2`.  `loss` (M,) float64."""

    def __init__(self, net, x, rows, label_shift=None):
        self.net, self.rows, self.dtype = net, rows, x.dtype
        self.P = P = net.layout.unpack(x)
        self.A = net._inputs(P, rows, x.dtype)
        self.Z, self.H, self.out = mlp_forward(self.A, P["W1"], P["b1"][:, None, :], P["W2"],
                                               P["b2"][:, None, :], net.kind)
        self.loss, self.dout, _ = (net._head(self.out, rows, None) if label_shift is None else
                                   net._head(self.out, rows, None, label_shift))

    @functools.cached_property
    def d1(self):
        return act_d1(self.Z, self.H, self.net.kind)

    @functools.cached_property
    def dH(self):
        return self.dout @ self.P["W2"]

    @functools.cached_property
    def dZ(self):
        return self.dH * self.d1

    @functools.cached_property
    def d2(self):
        return act_d2(self.Z, self.H, self.net.kind)

    def grad(self):
        """Gradient (M, d) of the loss."""
        g = dict(zip(("W1", "b1", "W2", "b2"), mlp_backward(self.A, self.H, self.dout, self.dZ)))
        g.update(self.net._embed_grads(self.P, self.rows, self.dZ))
        return self.net.layout.pack(g)

    def hvp(self, V):
        """Hessian-vector product (M, d) of the loss along V (M, d)."""
        P, PV = self.P, self.net.layout.unpack(V)
        RA = self.net._input_tangent(self.rows, self.dtype, PV)
        RZ, RH, Rout = mlp_rforward(self.A, RA, P["W1"], P["W2"], self.H, PV["W1"],
                                    PV["b1"][:, None, :], PV["W2"], PV["b2"][:, None, :], self.d1)
        Rdout = self.net._head(self.out, self.rows, Rout)[2]
        RdW1, Rdb1, RdW2, Rdb2, RdZ = mlp_rbackward(self.A, RA, self.H, RZ, RH, P["W2"],
                                                    PV["W2"], self.dout, Rdout, self.d1, self.dH,
                                                    self.dZ, self.d2)
        hv = {"W1": RdW1, "b1": Rdb1, "W2": RdW2, "b2": Rdb2}
        hv.update(self.net._embed_hvp(P, PV, self.rows, self.dZ, RdZ))
        return self.net.layout.pack(hv)


# ------------------------------------------------------------------ parameter layout

class ParamLayout:
    """Named blocks of the flat parameter vector: `blocks` is [(name, shape), ...] in order."""

    def __init__(self, blocks: list[tuple[str, tuple[int, ...]]]):
        self.blocks = [(name, tuple(int(s) for s in shape)) for name, shape in blocks]
        self.offsets: dict[str, tuple[int, int]] = {}
        o = 0
        for name, shape in self.blocks:
            size = int(np.prod(shape))
            self.offsets[name] = (o, o + size)
            o += size
        self.d = o

    def unpack(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Views (M, *shape) of each block of x (M, d)."""
        return {name: x[:, slice(*self.offsets[name])].reshape((x.shape[0],) + shape)
                for name, shape in self.blocks}

    def pack(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """(M, d) array from blocks (M, *shape), the inverse of `unpack`."""
        return np.concatenate([parts[name].reshape(parts[name].shape[0], -1)
                               for name, _ in self.blocks], axis=1)


def _activation_code(activation: str) -> int:
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation {activation!r} is not supported; use one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[activation]


class _MLPLoss:
    """Shared machinery (not a Potential itself, so it is not registered).

    Subclasses set `layout`, `kind`, `n_samples`, `d`, `init_scale`, `width` (the widest
    per-sample activation, to size replica chunks) and define `_inputs(P, rows, dtype)` -> A,
    `_input_tangent(rows, dtype, V)` -> RA and `_head(out, rows, Rout)`.  `rows` is None
    (all training samples) or an (M, B) index array (one minibatch per replica).
    """

    layout: ParamLayout
    kind: int
    init_scale: float

    # -- per-subclass hooks -------------------------------------------------------------
    def _inputs(self, P, rows, dtype):
        """A: the network inputs of `rows`."""
        raise NotImplementedError

    def _input_tangent(self, rows, dtype, V):
        """RA: the inputs' derivative along V (unpacked blocks); None when they are fixed."""
        return None

    def _head(self, out, rows, Rout):
        """(loss (M,), dout, Rdout) of the mean loss over `rows` given logits `out`."""
        raise NotImplementedError

    def _embed_grads(self, P, rows, dZ):
        """Gradient blocks of input layers (embeddings) from dL/dZ; {} when inputs are fixed."""
        return {}

    def _embed_hvp(self, P, PV, rows, dZ, RdZ):
        """Hessian-vector blocks of input layers from dL/dZ and its R-derivative RdZ; {} when
        inputs are fixed."""
        return {}

    # -- engine ---------------------------------------------------------------------------
    def _evaluate(self, x, rows, V=None, grad=True, label_shift=None):
        """Mean loss over `rows` (M,) float64, its gradient (M, d) (None without `grad`) and
        Hessian-vector product along V (M, d) (None without V) (label_shift (M, B): labels
        y + label_shift, regression heads only)."""
        p = _Pass(self, x, rows, label_shift)
        return p.loss, p.grad() if grad else None, None if V is None else p.hvp(V)

    def _chunks(self, M: int, n: int):
        step = self._chunk_rows(n)
        return [slice(lo, min(M, lo + step)) for lo in range(0, M, step)]

    def _chunk_rows(self, n: int) -> int:
        """Replicas per chunk of a pass over n samples: <= CHUNK_ELEMENTS activations."""
        return max(1, CHUNK_ELEMENTS // max(1, n * self.width))

    def hvp_rows(self) -> int:
        """Replicas whose full-data pass fits one chunk of CHUNK_ELEMENTS activations: callers
        making many products (`sharpness`) take replicas this many at a time, so that
        `hvp_at` keeps each chunk's pass."""
        return self._chunk_rows(self.n_samples)

    def _full(self, x, V=None, grad=True):
        """`_evaluate` on all training samples, in replica chunks to bound memory."""
        parts = [self._evaluate(x[s], None, None if V is None else V[s], grad)
                 for s in self._chunks(x.shape[0], self.n_samples)]
        loss = np.concatenate([p[0] for p in parts])
        g = np.concatenate([p[1] for p in parts]) if grad else None
        hv = np.concatenate([p[2] for p in parts]) if V is not None else None
        return loss, g, hv

    # -- Potential contract -----------------------------------------------------------
    def energy(self, x):
        """Full training loss (M,), float64 (x checked by the base class's wrapper)."""
        return self._full(x, grad=False)[0]

    def batch_loss(self, x, batch):
        """Minibatch loss (M,): the mean loss over samples batch[m] (batch (M, B) int)."""
        x = self.check_x(x)
        return self._evaluate(x, self._check_batch(batch, x.shape[0]), grad=False)[0]

    def grad(self, x, batch=None):
        """Gradient (M, d) of the full training loss, or of the minibatch loss of batch (M, B)
        (x checked by the base class's wrapper)."""
        if batch is None:
            return self._full(x)[1]
        return self._evaluate(x, self._check_batch(batch, x.shape[0]))[1]

    def hvp(self, x, v, batch=None):
        """Exact Hessian-vector products (M, d) of the full (or minibatch) training loss."""
        x = self.check_x(x)
        xp = array_module(x)
        v = xp.broadcast_to(xp.asarray(v, dtype=x.dtype), x.shape)
        if batch is None:
            return self._full(x, v, grad=False)[2]
        return self._evaluate(x, self._check_batch(batch, x.shape[0]), v, grad=False)[2]

    def hvp_at(self, x):
        """Operator v (M, d) -> hvp(x, v) (full training loss), the same numbers, for many
        products at one x (Lanczos, Hutchinson): x's forward pass and what the products share
        are computed once and kept when all replicas fit in one chunk of CHUNK_ELEMENTS
        activations (otherwise each product redoes them, as `hvp`; `hvp_rows` says how many
        replicas fit)."""
        x = self.check_x(x)
        if len(self._chunks(x.shape[0], self.n_samples)) > 1:
            return lambda v: self.hvp(x, v)
        xp = array_module(x)
        p = _Pass(self, x, None)
        return lambda v: p.hvp(xp.broadcast_to(xp.asarray(v, dtype=x.dtype), x.shape))

    def _check_batch(self, batch, M: int) -> np.ndarray:
        batch = array_module(batch).asarray(batch)
        if batch.ndim != 2 or batch.shape[0] != M or batch.dtype.kind not in "iu":
            raise ConfigError(f"batch must be an integer array of shape ({M}, B), got "
                              f"{batch.dtype} {batch.shape}")
        return batch

    def default_init(self, z):
        """Weights init_scale * z / sqrt(fan_in) (embedding: init_scale * z), biases 0."""
        x = np.zeros_like(z)
        for name, shape in self.layout.blocks:
            lo, hi = self.layout.offsets[name]
            if name.startswith("b"):
                continue
            fan_in = shape[-1] if name != "E" else 1
            x[:, lo:hi] = self.init_scale * z[:, lo:hi] / math.sqrt(fan_in)
        return x

    def rescaled(self, x, c) -> np.ndarray:
        """The same networks with each hidden unit rescaled: W1[j], b1[j] times c_j and W2[:, j]
        divided by c_j^k, where phi(c z) = c^k phi(z) for c > 0 (relu: k = 1, quadratic:
        k = 2; tanh has no such symmetry).  Every output, loss and accuracy is unchanged (to
        rounding) while the Hessian is not: sharpness is not a property of the function
        (Dinh et al. 2017).  x (M, d); c > 0 scalar, (hidden,) or (M, hidden).  Returns a new
        (M, d) array of x's dtype."""
        k = {"relu": 1, "quadratic": 2}.get(self.activation)     # phi's degree of homogeneity
        if k is None:
            raise ConfigError(f"a {self.activation} network has no rescaling symmetry; relu "
                              "(degree 1) and quadratic (degree 2) units have one")
        x = self.check_x(x)
        c = np.broadcast_to(np.asarray(c, np.float64), (x.shape[0], self.hidden))
        if not np.all(c > 0):
            raise ConfigError("rescaling factors must be > 0")
        P = {name: np.array(v, dtype=np.float64) for name, v in self.layout.unpack(x).items()}
        P["W1"] *= c[:, :, None]
        P["b1"] *= c
        P["W2"] /= c[:, None, :] ** k
        return self.layout.pack(P).astype(x.dtype)

    def weight_norm(self, x) -> np.ndarray:
        """Euclidean norm of all parameters, sqrt(sum_i x_i^2) (M,) float64 (x's array module)."""
        xp = array_module(x)
        return xp.sqrt(xp.sum(xp.asarray(x, np.float64) ** 2, axis=1))

    def _cast(self, name: str, dtype) -> np.ndarray:
        key = (name, np.dtype(dtype).str)
        if key not in self._cache:
            self._cache[key] = getattr(self, name).astype(dtype)
        return self._cache[key]


class _SoftmaxHead:
    """The classifiers' head (mixed into ModularArithmeticMLP and ClassifierMLP): K logits,
    loss per sample l = logsumexp(out) - out_c (natural log, nats), the mean over samples.
    Subclasses set `train_labels` (n,) int64 (the classes the loss fits), `train_Y` (n, K) its
    one-hot rows, `test_labels`, and `_inputs(P, rows, dtype, test=False)`; with a
    validation set (`n_val` > 0) `val_labels` too, and `_inputs` takes test="val".  `test`
    below: False (the training set), True (the test set) or "val"."""

    def _head(self, out, rows, Rout):
        c = _gather(self.train_labels, rows)
        B = c.shape[-1]
        s = out - out.max(axis=-1, keepdims=True)
        e = np.exp(s)
        norm = e.sum(axis=-1, keepdims=True)
        s_c = np.take_along_axis(s, np.broadcast_to(c, out.shape[:-1])[..., None], -1)
        loss = np.mean((np.log(norm) - s_c)[..., 0].astype(np.float64), axis=-1)
        q = e / norm
        Rdout = None if Rout is None else q * (Rout - (q * Rout).sum(axis=-1, keepdims=True)) / B
        return loss, (q - _gather(self._cast("train_Y", out.dtype), rows)) / B, Rdout

    def _logits(self, x, test: bool) -> np.ndarray:
        P = self.layout.unpack(x)
        A = self._inputs(P, None, x.dtype, test=test)
        return mlp_forward(A, P["W1"], P["b1"][:, None, :], P["W2"], P["b2"][:, None, :], self.kind)[2]

    def _labels(self, test) -> np.ndarray:
        return self.val_labels if test == "val" else self.test_labels if test else self.train_labels

    def predictions(self, x, test: bool | str = False) -> np.ndarray:
        """The predicted classes (M, n) int64 (first arg-max logit, as the accuracies count)
        of each replica on the training samples (or the test samples, or "val")."""
        x = self.check_x(x)
        n = self._labels(test).size
        return np.concatenate([self._logits(x[s], test).argmax(axis=-1)
                               for s in self._chunks(x.shape[0], n)])

    def metrics(self, x, test: bool | str) -> tuple[np.ndarray, np.ndarray]:
        """(mean cross-entropy, accuracy) on the test, training or ("val") validation samples,
        each (M,) float64."""
        x = self.check_x(x)
        labels = self._labels(test)
        losses, accs = [], []
        for s in self._chunks(x.shape[0], labels.size):
            out = self._logits(x[s], test).astype(np.float64)
            m = out.max(axis=-1, keepdims=True)
            lse = (m + np.log(np.exp(out - m).sum(axis=-1, keepdims=True)))[..., 0]
            picked = np.take_along_axis(out, np.broadcast_to(labels, out.shape[:-1])[..., None], -1)[..., 0]
            losses.append(np.mean(lse - picked, axis=-1))
            accs.append(np.mean(out.argmax(axis=-1) == labels, axis=-1))
        return np.concatenate(losses), np.concatenate(accs)

    def observables(self, x, energy=None):
        train_loss, train_acc = self.metrics(x, test=False)
        test_loss, test_acc = self.metrics(x, test=True)
        val = {}
        if getattr(self, "n_val", 0):
            val_loss, val_acc = self.metrics(x, test="val")
            val = {"val_loss": val_loss, "val_accuracy": val_acc}
        return {"train_loss": train_loss, "test_loss": test_loss, "train_accuracy": train_acc,
                "test_accuracy": test_acc, **val, "weight_norm": self.weight_norm(x)}


def _gather(data: np.ndarray, rows):
    """Rows of a dataset: all of it (rows None) or one minibatch per replica (rows (M, B))."""
    return data if rows is None else data[rows]


class TeacherStudentMLP(_MLPLoss, Potential):
    """Student f(a) = W2 phi(W1 a + b1) + b2 (scalar output, k = 1) fitted by squared loss.

    L(x) = 1/(2n) sum_i (f(a_i) - y_i)^2 over n training samples; the minibatch loss of a
    batch b (size B) is 1/(2B) sum_{i in b} (...)^2, an unbiased estimate of L.
    Data (DATA stream of `seed`, in this order): inputs a_i ~ N(0, I_{d_in}) for n training
    and n_test test samples; a teacher of width `teacher_hidden` with the same activation,
    f*(a) = sum_j w2*_j phi(w1*_j . a), w1* ~ N(0, I/d_in) (teacher_hidden, d_in),
    w2* ~ N(0, 1/teacher_hidden) (teacher_hidden,), no biases; labels y = f*(a) + noise *
    eps, eps ~ N(0, 1) (test labels are noisy too, so the test loss is >= noise^2/2 on
    average).  With n_val > 0, a validation set of n_val more samples from the same teacher
    and noise (replica 1 of the DATA stream: n_val * d_in inputs, then n_val noises; the
    training and test sets do not change with n_val): the set an early stop may choose by,
    leaving the test set untouched.  A student with hidden >= teacher_hidden can fit the
    teacher exactly.  d = hidden * d_in + 2 * hidden + 1 (layout in the module docstring).
    Observables: train_loss (= energy), test_loss (same normalization on the test set),
    val_loss (on the validation set; only with n_val > 0), weight_norm.  No accuracy is
    reported: the task is regression.
    """

    def __init__(self, n: int = 256, d_in: int = 8, hidden: int = 16, teacher_hidden: int = 4,
                 activation: str = "tanh", noise: float = 0.1, seed: int = 0, n_test: int = 1024,
                 init_scale: float = 1.0, n_val: int = 0, inputs=None, labels=None,
                 test_inputs=None, test_labels=None, teacher_W1=None, teacher_W2=None,
                 val_inputs=None, val_labels=None):
        n, d_in = check_int("n", n), check_int("d_in", d_in)
        hidden = check_int("hidden", hidden)
        teacher_hidden = check_int("teacher_hidden", teacher_hidden)
        n_test = check_int("n_test", n_test)
        n_val = check_int("n_val", n_val, minimum=0)
        if not noise >= 0:
            raise ConfigError(f"label noise must be >= 0, got {noise}")
        if not init_scale > 0:
            raise ConfigError(f"init_scale must be > 0, got {init_scale}")
        self.kind = _activation_code(activation)
        self.activation, self.noise, self.seed = activation, float(noise), int(seed)
        self.n_samples, self.d_in, self.hidden, self.teacher_hidden = n, d_in, hidden, teacher_hidden
        self.n_test, self.n_val, self.width = n_test, n_val, hidden
        self.init_scale = float(init_scale)
        self.layout = ParamLayout([("W1", (hidden, d_in)), ("b1", (hidden,)), ("W2", (1, hidden)),
                                   ("b2", (1,))])
        self.d = self.layout.d
        if inputs is None:
            nt, th = n + n_test, teacher_hidden
            z = rng.standard_normal(seed, rng.DATA, (nt * d_in + th * d_in + th + nt,))
            a = z[: nt * d_in].reshape(nt, d_in)
            o = nt * d_in
            teacher_W1 = z[o: o + th * d_in].reshape(th, d_in) / math.sqrt(d_in)
            teacher_W2 = z[o + th * d_in: o + th * d_in + th] / math.sqrt(th)
            y = self.teacher(a, teacher_W1, teacher_W2) + noise * z[o + th * d_in + th:]
            inputs, test_inputs, labels, test_labels = a[:n], a[n:], y[:n], y[n:]
        elif teacher_W1 is None or teacher_W2 is None:
            raise ConfigError(f"TeacherStudentMLP with your own inputs= needs the teacher that "
                              f"labels them too: teacher_W1 ({teacher_hidden}, {d_in}) and "
                              f"teacher_W2 ({teacher_hidden},) (its validation set and "
                              "observables use it)")
        if val_inputs is None:
            z = (rng.stream_normals(seed, rng.DATA, [1], 0, n_val * (d_in + 1))[0] if n_val
                 else np.zeros(0))
            val_inputs = z[: n_val * d_in].reshape(n_val, d_in)
            val_labels = (self.teacher(val_inputs, np.asarray(teacher_W1, np.float64),
                                       np.asarray(teacher_W2, np.float64))
                          + noise * z[n_val * d_in:])
        (self.inputs, self.labels, self.test_inputs, self.test_labels, self.teacher_W1,
         self.teacher_W2, self.val_inputs, self.val_labels) = (
            np.asarray(v, np.float64) for v in (inputs, labels, test_inputs, test_labels,
                                                teacher_W1, teacher_W2, val_inputs, val_labels))
        expect = {"inputs": (n, d_in), "labels": (n,), "test_inputs": (n_test, d_in),
                  "test_labels": (n_test,), "teacher_W1": (teacher_hidden, d_in),
                  "teacher_W2": (teacher_hidden,), "val_inputs": (n_val, d_in),
                  "val_labels": (n_val,)}
        for k, shape in expect.items():
            if getattr(self, k).shape != shape:
                raise ConfigError(f"{k} must have shape {shape}, got {getattr(self, k).shape}")
        self._cache: dict = {}

    def teacher(self, a, W1=None, W2=None) -> np.ndarray:
        """Noise-free teacher outputs f*(a) (N,) for inputs a (N, d_in)."""
        W1 = self.teacher_W1 if W1 is None else W1
        W2 = self.teacher_W2 if W2 is None else W2
        return act(a @ W1.T, self.kind) @ W2

    def params(self):
        return {"n": self.n_samples, "d_in": self.d_in, "hidden": self.hidden,
                "teacher_hidden": self.teacher_hidden, "activation": self.activation,
                "noise": self.noise, "seed": self.seed, "n_test": self.n_test,
                "init_scale": self.init_scale, **({"n_val": self.n_val} if self.n_val else {})}

    def arrays(self):
        val = {"val_inputs": self.val_inputs, "val_labels": self.val_labels} if self.n_val else {}
        return {"inputs": self.inputs, "labels": self.labels, "test_inputs": self.test_inputs,
                "test_labels": self.test_labels, "teacher_W1": self.teacher_W1,
                "teacher_W2": self.teacher_W2, **val}

    def _inputs(self, P, rows, dtype):
        return _gather(self._cast("inputs", dtype), rows)

    def grad_noisy_labels(self, x, batch, shift):
        """Gradient (M, d) of the minibatch loss with labels y_i + shift (batch, shift (M, B)):
        SGD label_noise."""
        x = self.check_x(x)
        return self._evaluate(x, self._check_batch(batch, x.shape[0]),
                              label_shift=shift)[1]

    def _head(self, out, rows, Rout, label_shift=None):
        y = _gather(self._cast("labels", out.dtype), rows)[..., None]
        if label_shift is not None:
            y = y + label_shift[..., None]
        B = y.shape[-2]
        r = (out - y)[..., 0]
        loss = 0.5 * np.mean(r.astype(np.float64) ** 2, axis=-1)
        dout = squared_error_dout(out, y, B)
        return loss, dout, None if Rout is None else Rout / B

    def test_loss(self, x) -> np.ndarray:
        """1/(2 n_test) sum over the test set of (f(a) - y)^2, (M,) float64."""
        return self._set_loss(x, "test")

    def val_loss(self, x) -> np.ndarray:
        """1/(2 n_val) sum over the validation set of (f(a) - y)^2, (M,) float64 (n_val > 0)."""
        if not self.n_val:
            raise ConfigError("this TeacherStudentMLP has no validation set; give n_val > 0")
        return self._set_loss(x, "val")

    def _set_loss(self, x, name: str) -> np.ndarray:
        """Half the mean squared error of each row of x on the `name` set ("test", "val")."""
        x = self.check_x(x)
        A, y = getattr(self, f"{name}_inputs"), getattr(self, f"{name}_labels")
        out = []
        for s in self._chunks(x.shape[0], y.shape[0]):
            P = self.layout.unpack(x[s])
            _, _, o = mlp_forward(A.astype(x.dtype), P["W1"], P["b1"][:, None, :],
                                  P["W2"], P["b2"][:, None, :], self.kind)
            r = o[..., 0].astype(np.float64) - y
            out.append(0.5 * np.mean(r ** 2, axis=1))
        return np.concatenate(out)

    def observables(self, x, energy=None):
        val = {"val_loss": self.val_loss(x)} if self.n_val else {}
        return {"train_loss": self.energy(x) if energy is None else energy,
                "test_loss": self.test_loss(x), **val,
                "weight_norm": self.weight_norm(x)}


class ModularArithmeticMLP(_SoftmaxHead, _MLPLoss, Potential):
    """Modular addition c = (a + b) mod p learned by an MLP with cross-entropy: grokking.

    All p^2 pairs (a, b) are split into n = round(train_fraction p^2) training pairs and the
    rest for testing, by a stable argsort of the DATA-stream words of `seed` (pair index
    a p + b; `train_pairs`/`test_pairs` (., 2) are stored).  Input encoding: one-hot
    (embed=None), a = [e_a; e_b] in R^{2p} (so the columns of W1 act as per-operand
    embeddings of width `hidden`, summed), or a learned embedding E (p, e) shared by both
    operands, a = [E_a; E_b] in R^{2e} (embed=e).  Output: p logits; loss per pair
    l = logsumexp(out) - out_c (natural log, nats); L = mean over training pairs (the energy),
    a minibatch loss is the mean over its pairs.
    d = [p e] + hidden * d_in + hidden + p * hidden + p, d_in = 2p or 2e.  Observables:
    train_loss (= energy), test_loss, train_accuracy, test_accuracy (fraction of pairs whose
    arg-max logit is c), weight_norm.
    """

    def __init__(self, p: int = 7, hidden: int = 16, train_fraction: float = 0.5,
                 embed: int | None = None, activation: str = "relu", seed: int = 0,
                 init_scale: float = 1.0, train_pairs=None, test_pairs=None):
        p, hidden = check_int("p", p, 2), check_int("hidden", hidden)
        if embed is not None:
            embed = check_int("embed", embed)
        if not 0 < train_fraction < 1:
            raise ConfigError(f"train_fraction must be in (0, 1), got {train_fraction}")
        n_train = int(round(train_fraction * p * p))
        if not 1 <= n_train < p * p:
            raise ConfigError(f"train_fraction={train_fraction} leaves {n_train} of {p * p} pairs "
                              "for training; choose a fraction giving at least one train and one test pair")
        if not init_scale > 0:
            raise ConfigError(f"init_scale must be > 0, got {init_scale}")
        self.kind = _activation_code(activation)
        self.p, self.hidden, self.train_fraction, self.embed = p, hidden, float(train_fraction), embed
        self.activation, self.seed, self.init_scale = activation, int(seed), float(init_scale)
        self.width = max(hidden, p)
        if train_pairs is None:
            words = rng.stream_words(seed, rng.DATA, [0], 0, p * p)[0]
            order = np.argsort(words, kind="mergesort")
            idx_train, idx_test = np.sort(order[:n_train]), np.sort(order[n_train:])
            train_pairs = np.stack(divmod(idx_train, p), axis=1)
            test_pairs = np.stack(divmod(idx_test, p), axis=1)
        self.train_pairs = np.asarray(train_pairs, np.int64)
        self.test_pairs = np.asarray(test_pairs, np.int64)
        if self.train_pairs.shape != (n_train, 2) or self.test_pairs.shape != (p * p - n_train, 2):
            raise ConfigError(f"train_pairs/test_pairs must have shapes ({n_train}, 2) and "
                              f"({p * p - n_train}, 2), got {self.train_pairs.shape}, "
                              f"{self.test_pairs.shape}")
        self.n_samples = n_train
        d_in = 2 * p if embed is None else 2 * embed
        blocks = [] if embed is None else [("E", (p, embed))]
        self.layout = ParamLayout(blocks + [("W1", (hidden, d_in)), ("b1", (hidden,)),
                                            ("W2", (p, hidden)), ("b2", (p,))])
        self.d = self.layout.d
        eye = np.eye(p)
        self.train_onehot = np.concatenate([eye[self.train_pairs[:, 0]], eye[self.train_pairs[:, 1]]], axis=1)
        self.test_onehot = np.concatenate([eye[self.test_pairs[:, 0]], eye[self.test_pairs[:, 1]]], axis=1)
        self.train_labels = self.train_pairs.sum(axis=1) % p
        self.train_Y = eye[self.train_labels]
        self.test_labels = self.test_pairs.sum(axis=1) % p
        self._cache: dict = {}

    def params(self):
        return {"p": self.p, "hidden": self.hidden, "train_fraction": self.train_fraction,
                "embed": self.embed, "activation": self.activation, "seed": self.seed,
                "init_scale": self.init_scale}

    def arrays(self):
        return {"train_pairs": self.train_pairs, "test_pairs": self.test_pairs}

    def _onehots(self, rows, dtype, test=False):
        """One-hot operand matrices Xa, Xb (.., B, p) of the rows."""
        X = _gather(self._cast("test_onehot" if test else "train_onehot", dtype), rows)
        return X[..., : self.p], X[..., self.p:]

    def _inputs(self, P, rows, dtype, test=False):
        if self.embed is None:
            return _gather(self._cast("test_onehot" if test else "train_onehot", dtype), rows)
        Xa, Xb = self._onehots(rows, dtype, test)
        return np.concatenate([Xa @ P["E"], Xb @ P["E"]], axis=-1)

    def _input_tangent(self, rows, dtype, V):
        if self.embed is None:
            return None
        Xa, Xb = self._onehots(rows, dtype)
        return np.concatenate([Xa @ V["E"], Xb @ V["E"]], axis=-1)

    def _embed_back(self, rows, dA):
        """Xa^T dA_a + Xb^T dA_b: a derivative with respect to the inputs A = [Xa E, Xb E]
        carried back to E."""
        Xa, Xb = self._onehots(rows, dA.dtype)
        e = self.embed
        return mm_tn(Xa, dA[..., :e]) + mm_tn(Xb, dA[..., e:])

    def _embed_grads(self, P, rows, dZ):
        """dL/dE = Xa^T dA_a + Xb^T dA_b with dA = dZ W1."""
        return {} if self.embed is None else {"E": self._embed_back(rows, dZ @ P["W1"])}

    def _embed_hvp(self, P, PV, rows, dZ, RdZ):
        """The R-derivative of dL/dE: dA's is RdZ W1 + dZ VW1."""
        if self.embed is None:
            return {}
        return {"E": self._embed_back(rows, RdZ @ P["W1"] + dZ @ PV["W1"])}


class ClassifierMLP(_SoftmaxHead, _MLPLoss, Potential):
    """A one-hidden-layer MLP classifier of a real data set, fitted by cross-entropy.

    Data: `dataset` one of `datasets.CLASSIFICATION` ("digits": 1797 8x8 images, 64
    features, 10 classes; "iris", "wine", "breast_cancer"), loaded by scikit-learn (the
    ``datasets`` extra) and split by `datasets.split`: samples ordered by the DATA stream of
    `seed`, n for training (None: half of them), the next n_test for testing (None: all the
    rest but the validation set), with n_val > 0 the last n_val for validation (an early
    stop that leaves the test set untouched), features standardized by the training set's
    mean and std.  Or your own arrays: inputs (n, d_in), labels (n,) int in 0 .. K-1,
    test_inputs, test_labels (and val_inputs, val_labels), used as given (`dataset` then
    only names them; a run file stores the arrays, so analysis never needs scikit-learn).  With label_corruption q > 0, round(q n) training labels are wrong
    (`datasets.corrupt`: a uniform other class; `train_labels` are the labels the loss
    fits, `labels` the true ones; the test labels are never corrupted).
    Network and loss as ModularArithmeticMLP's: z = W1 a + b1, h = phi(z), K logits
    out = W2 h + b2; l = logsumexp(out) - out_c (nats); L = mean over the training set (the
    energy), a minibatch loss the mean over its samples.  d = hidden (d_in + 1) + K (hidden
    + 1).  Observables: train_loss (= energy), test_loss, train_accuracy (against the
    labels fitted), test_accuracy, val_loss and val_accuracy (n_val > 0), weight_norm.
    """

    def __init__(self, dataset: str = "digits", n: int | None = None, n_test: int | None = None,
                 hidden: int = 32, activation: str = "tanh", seed: int = 0,
                 init_scale: float = 1.0, label_corruption: float = 0.0, n_val: int = 0,
                 inputs=None, labels=None, test_inputs=None, test_labels=None, val_inputs=None,
                 val_labels=None):
        hidden = check_int("hidden", hidden)
        if not init_scale > 0:
            raise ConfigError(f"init_scale must be > 0, got {init_scale}")
        if not 0 <= label_corruption <= 1:
            raise ConfigError(f"label_corruption must be in [0, 1], got {label_corruption}")
        self.kind = _activation_code(activation)
        self.dataset, self.hidden, self.activation = str(dataset), hidden, activation
        self.seed, self.init_scale = int(seed), float(init_scale)
        self.label_corruption = float(label_corruption)
        n_val = check_int("n_val", n_val, minimum=0)
        if inputs is None:
            X, y = datasets.load(self.dataset)
            n = X.shape[0] // 2 if n is None else check_int("n", n)
            if n_test is None and X.shape[0] - n - n_val < 1:
                raise ConfigError(f"n={n} and n_val={n_val} leave no test samples: the "
                                  f"{self.dataset!r} data set has {X.shape[0]}; choose n + n_val "
                                  f"< {X.shape[0]}")
            n_test = (X.shape[0] - n - n_val if n_test is None
                      else check_int("n_test", n_test))
            (inputs, labels, test_inputs, test_labels, val_inputs,
             val_labels) = datasets.split(X, y, n, n_test, seed, n_val)
        if val_inputs is None:
            val_inputs, val_labels = np.zeros((0, np.shape(inputs)[1])), np.zeros(0, np.int64)
        self.inputs, self.test_inputs, self.val_inputs = (
            np.ascontiguousarray(v, np.float64) for v in (inputs, test_inputs, val_inputs))
        for name, y in (("labels", labels), ("test_labels", test_labels),
                        ("val_labels", val_labels)):
            y = np.asarray(y)
            if y.size and (y.dtype.kind not in "iuf" or not np.all(np.round(y) == y)):
                raise ConfigError(f"{name} must be integer classes 0 .. K-1, got {y.dtype} "
                                  f"values such as {y.ravel()[:3].tolist()}")
        self.labels, self.test_labels, self.val_labels = (
            np.asarray(v).astype(np.int64) for v in (labels, test_labels, val_labels))
        if self.inputs.ndim != 2 or self.test_inputs.ndim != 2 or self.val_inputs.ndim != 2 or \
                not self.test_inputs.shape[1] == self.val_inputs.shape[1] == self.inputs.shape[1]:
            raise ConfigError(f"inputs, test_inputs and val_inputs must be 2-d with the same "
                              f"number of features, got {self.inputs.shape}, "
                              f"{self.test_inputs.shape} and {self.val_inputs.shape}")
        for name, a, y in (("", self.inputs, self.labels),
                           ("test_", self.test_inputs, self.test_labels),
                           ("val_", self.val_inputs, self.val_labels)):
            if y.shape != (a.shape[0],):
                raise ConfigError(f"{name}labels must have shape ({a.shape[0]},), one class per "
                                  f"{name}inputs row, got {y.shape}")
            if y.size and y.min() < 0:
                raise ConfigError(f"{name}labels must be classes >= 0, got {y.min()}")
        for key, want, have in (("n", n, self.inputs.shape[0]),
                                ("n_test", n_test, self.test_inputs.shape[0]),
                                ("n_val", n_val or None, self.val_inputs.shape[0])):
            if want is not None and want != have:     # (n_val 0: as many as given)
                raise ConfigError(f"{key}={want} but the arrays hold {have} samples")
        self.n_samples, self.n_test = self.inputs.shape[0], self.test_inputs.shape[0]
        self.n_val = self.val_inputs.shape[0]
        if self.n_samples < 1 or self.n_test < 1:
            raise ConfigError("ClassifierMLP needs at least one training and one test sample")
        self.d_in = self.inputs.shape[1]
        self.classes = int(max(self.labels.max(), self.test_labels.max(),
                               self.val_labels.max(initial=0))) + 1
        if self.classes < 2:
            raise ConfigError("the labels hold one class; a classifier needs two or more")
        self.train_labels = datasets.corrupt(self.labels, self.classes, self.label_corruption,
                                             self.seed)
        self.train_Y = np.eye(self.classes)[self.train_labels]
        self.width = max(hidden, self.classes)
        self.layout = ParamLayout([("W1", (hidden, self.d_in)), ("b1", (hidden,)),
                                   ("W2", (self.classes, hidden)), ("b2", (self.classes,))])
        self.d = self.layout.d
        self._cache: dict = {}

    def params(self):
        return {"dataset": self.dataset, "n": self.n_samples, "n_test": self.n_test,
                "hidden": self.hidden, "activation": self.activation, "seed": self.seed,
                "init_scale": self.init_scale, "label_corruption": self.label_corruption,
                **({"n_val": self.n_val} if self.n_val else {})}

    def arrays(self):
        val = {"val_inputs": self.val_inputs, "val_labels": self.val_labels} if self.n_val else {}
        return {"inputs": self.inputs, "labels": self.labels, "test_inputs": self.test_inputs,
                "test_labels": self.test_labels, **val}

    def corrupted(self) -> np.ndarray:
        """Boolean (n,): the training samples whose fitted label is wrong."""
        return self.train_labels != self.labels

    def _inputs(self, P, rows, dtype, test=False):
        name = "val_inputs" if test == "val" else "test_inputs" if test else "inputs"
        return _gather(self._cast(name, dtype), rows)
