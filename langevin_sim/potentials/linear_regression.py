"""Least-squares linear regression: the first finite-sum loss."""
from __future__ import annotations

import numpy as np

from .. import rng
from ..errors import ConfigError, check_int
from .base import Potential


class LinearRegression(Potential):
    """L(w) = 1/(2n) sum_i (a_i . w - y_i)^2 on a synthetic dataset.

    Inputs a_i ~ N(0, I_d) (n, d), teacher w* ~ N(0, I_d), labels y_i = a_i . w* + noise *
    eps_i, all from the DATA stream of `seed`.  The minibatch loss of a batch B (size b) is
    1/(2b) sum_{i in B} (...)^2, an unbiased estimate of L.  Hessian A^T A / n.
    """

    batched_products = True

    def __init__(self, n: int = 256, d: int = 8, noise: float = 0.1, seed: int = 0,
                 A=None, y=None, w_star=None):
        n, d = check_int("n", n, minimum=None), check_int("d", d, minimum=None)
        if n < 1 or d < 1:
            raise ConfigError(f"LinearRegression needs n >= 1 and d >= 1, got n={n}, d={d}")
        if noise < 0:
            raise ConfigError(f"label noise must be >= 0, got {noise}")
        self.n_samples, self.d, self.noise, self.seed = int(n), int(d), float(noise), int(seed)
        self._given = A is not None       # the data set is the caller's, not drawn from seed
        if A is None:
            z = rng.standard_normal(seed, rng.DATA, (n * d + d + n,))
            A = z[: n * d].reshape(n, d)
            w_star = z[n * d: n * d + d]
            y = A @ w_star + noise * z[n * d + d:]
        elif y is None or w_star is None:
            raise ConfigError("LinearRegression with your own A needs y (n,) and w_star (d,) "
                              "too (w_star: the weights the error is measured against, e.g. "
                              "the teacher's, or np.linalg.lstsq(A, y)[0])")
        # C order, as the run file stores them: a Fortran-ordered A's products round
        # differently in BLAS, and its resume was not bit for bit
        self.A, self.y, self.w_star = (np.ascontiguousarray(v, np.float64) for v in (A, y, w_star))
        for name, want in (("A", (n, d)), ("y", (n,)), ("w_star", (d,))):
            got = getattr(self, name).shape
            if got != want:
                fix = (f"pass n={got[0]}, d={got[1]} to match A" if name == "A" and len(got) == 2
                       else f"pass an array of shape {want}")
                raise ConfigError(f"LinearRegression: {name} has shape {got} but n={n}, d={d} "
                                  f"need {want}; {fix}")

    def params(self):
        return {"n": self.n_samples, "d": self.d, "noise": self.noise, "seed": self.seed}

    def arrays(self):
        return {"A": self.A, "y": self.y, "w_star": self.w_star}

    def repr_args(self):
        return {**self.params(), **(self.arrays() if self._given else {})}

    def energy(self, x):
        r = x @ self.A.T.astype(x.dtype) - self.y.astype(x.dtype)
        return 0.5 * np.mean(r.astype(np.float64) ** 2, axis=1)

    def grad(self, x, batch=None):
        if batch is None:
            r = x @ self.A.T.astype(x.dtype) - self.y.astype(x.dtype)
            return r @ self.A.astype(x.dtype) / self.n_samples
        Ab = self.A.astype(x.dtype)[batch]              # (M, B, d)
        r = np.einsum("mbd,md->mb", Ab, x) - self.y.astype(x.dtype)[batch]
        return np.einsum("mb,mbd->md", r, Ab) / batch.shape[1]

    def grad_noisy_labels(self, x, batch, shift):
        """Gradient (M, d) of the batch loss with labels y_i + shift: batch (M, B) indices,
        shift (M, B) one label shift per batch slot (SGD label_noise)."""
        Ab = self.A.astype(x.dtype)[batch]              # (M, B, d)
        r = np.einsum("mbd,md->mb", Ab, x) - self.y.astype(x.dtype)[batch] - shift
        return np.einsum("mb,mbd->md", r, Ab) / batch.shape[1]

    @property
    def hessian_matrix(self) -> np.ndarray:
        return self.A.T @ self.A / self.n_samples

    def hessian(self, x):
        return np.broadcast_to(self.hessian_matrix, (x.shape[0], self.d, self.d)).copy()

    def hvp(self, x, v):
        return v @ self.hessian_matrix

    def minimizer(self) -> np.ndarray:
        return np.linalg.lstsq(self.A, self.y, rcond=None)[0]

    def observables(self, x, energy=None):
        return {"weight_error": np.sum((x - self.w_star) ** 2, axis=1)}
