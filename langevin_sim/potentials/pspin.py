"""Spherical p-spin glass: a random homogeneous polynomial of degree p on the sphere |s|^2 = N."""
from __future__ import annotations

import itertools
import math
import threading

import numpy as np

from .. import rng
from ..errors import ConfigError, check_int
from .base import Potential, array_module

# E[H(s) H(s')] = VARIANCE[convention] * N * q^p with q = s.s'/N.
VARIANCE = {"crisanti-sommers": 0.5, "abc": 1.0}
MAX_TENSOR_ENTRIES = 1 << 27      # N**p above this (1 GiB in float64) is refused
ROW_CHUNK_ENTRIES = 1 << 22       # NumPy path: replicas per chunk keep (B, N**(p-1)) <= this


# ---------------------------------------------------------------- math (NumPy and Numba)

def tensor_rows(P, x, k):
    """Rows of P (x)^k: P (B, m), x (B, N) -> (B, m * N**k); row b is the C-order
    flattening of P[b] (x) x[b] (x) ... (x) x[b] (k factors of x)."""
    B = x.shape[0]
    for _ in range(k):
        P = (P[:, :, None] * x[:, None, :]).reshape(B, -1)
    return P


def pspin_grad(x, gmat, p):
    """Gradient rows (B, N) of H at x (B, N): x^{(x)(p-1)} @ gmat, with gmat = -p J
    reshaped to (N**(p-1), N) (one GEMM for all rows)."""
    return np.dot(tensor_rows(np.ones_like(x[:, :1]), x, p - 1), gmat)


def sphere_project(x, v):
    """Tangent projection v - (v.x / N) x of rows v (B, N) at rows x on the sphere |x|^2 = N."""
    return v - (np.sum(v * x, axis=1) / x.shape[1])[:, None] * x


def sphere_retract(x):
    """Rows x (B, N) rescaled onto the sphere |x|^2 = N."""
    return x / np.sqrt(np.sum(x * x, axis=1) / x.shape[1])[:, None]


# ---------------------------------------------------------------- instance data

# one thread at a time in the parallel generator: Numba's workqueue threading layer (the one
# left where neither TBB nor OpenMP loads) aborts the process when two threads launch parallel
# regions at once (instances built in threads: points of a scan on a Dask worker with
# --nthreads > 1, a notebook's thread pool)
_GENERATOR_LOCK = threading.Lock()


def coupling_tensor(N: int, p: int, seed: int, scale: float) -> np.ndarray:
    """J = scale * sym(G), G an i.i.d. N(0, 1) tensor (N,)*p from the DATA stream of `seed`
    (stream positions 0 .. N**p - 1, C order); sym averages over the p! index permutations.
    Up to ROW_CHUNK_ENTRIES normals come from the NumPy reference `rng.stream_normals`, more
    from its compiled copy (`kernels.common.stream_normals_into`, parallel; the same bits):
    the reference takes ~20 s and several GB of temporaries at N = 512."""
    G = np.empty(N ** p)
    if G.size <= ROW_CHUNK_ENTRIES:
        G[:] = rng.stream_normals(seed, rng.DATA, [0], 0, G.size)[0]
    else:
        from ..kernels.common import stream_normals_into
        from ..warmup import compile_notice

        k0, k1 = rng.key_of(seed)
        with _GENERATOR_LOCK, compile_notice("the p-spin coupling generator"):
            stream_normals_into(k0, k1, np.uint64(rng.DATA), np.uint64(0), 0, G)
    G = G.reshape((N,) * p)
    S = np.zeros_like(G)
    perms = list(itertools.permutations(range(p)))
    for perm in perms:
        S += G.transpose(perm)
    S *= scale / len(perms)
    return S


def spike_direction(N: int, p: int, seed: int) -> np.ndarray:
    """Planted unit vector u (N,): DATA-stream normals of `seed` at positions N**p .. N**p+N-1,
    normalized (independent of the couplings, which use positions 0 .. N**p - 1)."""
    z = rng.stream_normals(seed, rng.DATA, [0], N ** p, N)[0]
    return z / np.linalg.norm(z)


def _largest_n(p: int) -> int:
    """The largest N with N**p <= MAX_TENSOR_ENTRIES (exactly: 512 for p = 3, where the float
    root read 511)."""
    n = round(MAX_TENSOR_ENTRIES ** (1 / p))
    while n ** p > MAX_TENSOR_ENTRIES:
        n -= 1
    while (n + 1) ** p <= MAX_TENSOR_ENTRIES:
        n += 1
    return n

class SphericalPSpin(Potential):
    """Spherical p-spin glass H(s) = -sum_{i1..ip} J_{i1..ip} s_i1 ... s_ip - N * planted * m^p.

    The sum runs over ALL N**p ordered index tuples; J (N,)*p is symmetric.  s lies on the
    sphere |s|^2 = N (positions x: (M, N)); m = u.s / sqrt(N) in [-1, 1] is the overlap with
    the planted unit vector u (`spike`, (N,)), 0 <= |m| <= 1.  Units: H is an energy; the
    natural intensive quantity is the energy per spin H/N.

    Normalization.  J = c * sym(G) with G i.i.d. N(0, 1) and sym the average over the p!
    index permutations.  Because s^{(x)p} is a symmetric tensor, sum J s^p = c sum G s^p, so
    for the glass part  E[H(s) H(s')] = c^2 sum_{i1..ip} prod_k s_ik s'_ik = c^2 (s.s')^p
    = c^2 N^p q^p  with q = s.s'/N -- exactly, at every N.  Hence
      convention="crisanti-sommers":  c^2 = 1 / (2 N^(p-1)),  E[H H'] = N q^p / 2
        (paramagnetic energy per spin -1/(2T); threshold -sqrt(2(p-1)/p));
      convention="abc" (Auffinger-Ben Arous-Cerny):  c^2 = 1 / N^(p-1),  E[H H'] = N q^p
        (paramagnetic energy per spin -1/T; threshold -2 sqrt((p-1)/p)).
    For p = 2, H = -s^T J s and min H = -N lambda_max(J) exactly.

    The planted term -N * planted * m^p = -planted N^(1-p/2) (u.s)^p is folded into the
    effective tensor J + planted N^(1-p/2) u^{(x)p} used by energy, gradient and Hessian;
    J (glass part) and u are stored separately via `arrays()`, so the instance is rebuilt
    exactly by cls(**params(), **arrays()).

    Gradient (ambient, Euclidean): dH/ds_k = -p sum J_{k i2..ip} s_i2 ... s_ip, computed for all
    replicas at once as x^{(x)(p-1)} (M, N**(p-1)) @ (-p J) (N**(p-1), N): one GEMM of
    2 M N^p flops.  `hessian` and `hvp` are the ambient Euclidean Hessian
    d^2H/ds_k ds_l = -p(p-1) sum J_{kl i3..ip} s_i3 ... s_ip, NOT the Riemannian Hessian on
    the sphere; that one is `riemannian_hvp` / `riemannian_hessian`
    (P (grad^2 H) P - (s.grad H / |s|^2) P, P the tangent projector).  The constraint is
    enforced by `project` (tangent projection of drift and noise) and `retract` (rescaling
    to |x|^2 = N) after each step.
    """

    batched_products = True
    constrained = True

    def __init__(self, N: int, p: int = 3, convention: str = "crisanti-sommers", seed: int = 0,
                 planted: float = 0.0, J=None, spike=None):
        N, p = check_int("N", N, minimum=None), check_int("p", p, minimum=None)
        if p not in (2, 3, 4):
            raise ConfigError(f"SphericalPSpin supports p = 2, 3, 4; got p={p}")
        if N < 2:
            raise ConfigError(f"SphericalPSpin needs N >= 2 spins, got N={N}")
        if N ** p > MAX_TENSOR_ENTRIES:
            raise ConfigError(f"SphericalPSpin(N={N}, p={p}) needs a tensor of N**p = {N ** p} "
                              f"entries ({8 * N ** p / 2 ** 30:.1f} GiB); use N <= "
                              f"{_largest_n(p)} for p={p}")
        if convention not in VARIANCE:
            raise ConfigError(f"unknown convention {convention!r}; use one of {sorted(VARIANCE)}")
        planted = float(planted)
        if not math.isfinite(planted):
            raise ConfigError(f"planted must be a finite signal strength, got {planted}")
        self.N, self.d, self.p = N, N, p
        self.convention, self.seed, self.planted = convention, int(seed), planted
        self._regenerated = tuple(k for k, v in (("J", J), ("spike", spike)) if v is None)
        if J is None:
            J = coupling_tensor(N, p, self.seed, math.sqrt(VARIANCE[convention] / N ** (p - 1)))
        else:
            J = np.asarray(J, dtype=np.float64)
            if J.shape != (N,) * p:
                raise ConfigError(f"J must have shape {(N,) * p} for N={N}, p={p}, got {J.shape}")
            if not np.all(np.isfinite(J)):
                raise ConfigError(f"J holds inf or NaN ({int((~np.isfinite(J)).sum())} entries)")
            scale = np.abs(J).max()
            for a in range(p - 1):  # adjacent transpositions generate all permutations
                perm = list(range(p))
                perm[a], perm[a + 1] = perm[a + 1], perm[a]
                if not np.allclose(J, J.transpose(perm), rtol=0.0, atol=1e-12 * scale):
                    raise ConfigError(f"J is not symmetric under swapping indices {a} and "
                                      f"{a + 1}; pass the average of J over all index permutations")
        self.J = J
        self.spike = spike_direction(N, p, self.seed) if spike is None else \
            np.asarray(spike, dtype=np.float64)
        if self.spike.shape != (N,):
            raise ConfigError(f"spike must have shape ({N},), got {self.spike.shape}")
        norm = float(np.linalg.norm(self.spike))
        if not abs(norm - 1.0) <= 1e-12:     # (NaN too)
            raise ConfigError(f"spike must be a unit vector (|u| = 1: the overlap m = u.s / "
                              f"sqrt(N) is then in [-1, 1]), got |u| = {norm:.6g}; pass "
                              "spike / np.linalg.norm(spike)")
        J_eff = J
        if planted != 0.0:
            u = self.spike
            J_eff = J + planted * N ** (1.0 - p / 2.0) * tensor_rows(u[None, :], u[None, :], p - 1
                                                                      ).reshape((N,) * p)
        self._gmat = {np.dtype(np.float64): (-p * J_eff).reshape(N ** (p - 1), N)}

    # -- instance ---------------------------------------------------------
    def params(self):
        return {"N": self.N, "p": self.p, "convention": self.convention, "seed": self.seed,
                "planted": self.planted}

    def arrays(self):
        return {"J": self.J, "spike": self.spike}

    def regenerated(self):
        """J and the spike where drawn from `seed` (not passed in): a run file stores their
        digests, not the N**p couplings (1.07 GB at N = 512, p = 3)."""
        return self._regenerated

    def gradient_matrix(self, dtype=np.float64) -> np.ndarray:
        """-p J_eff reshaped to (N**(p-1), N) in `dtype` (C-contiguous; cached)."""
        dtype = np.dtype(dtype)
        if dtype not in self._gmat:
            src = self._gmat[np.dtype(np.float64)]
            self._gmat[dtype] = array_module(src).ascontiguousarray(src, dtype=dtype)
        return self._gmat[dtype]

    @property
    def variance(self) -> float:
        """E[H(s)^2] / N of the glass part (1/2 Crisanti-Sommers, 1 ABC)."""
        return VARIANCE[self.convention]

    def paramagnetic_energy(self, temperature: float) -> float:
        """Equilibrium energy per spin -variance / T of the paramagnet (N -> infinity)."""
        return -self.variance / float(temperature)

    def threshold_energy(self) -> float:
        """Threshold energy per spin -sqrt(2 variance (p-1)/p) (N -> infinity, planted = 0):
        -sqrt(2(p-1)/p) Crisanti-Sommers, -2 sqrt((p-1)/p) ABC; the ground state for p = 2."""
        return -math.sqrt(4.0 * self.variance * (self.p - 1) / self.p)

    def dynamical_temperature(self) -> float:
        """T_d = sqrt(2 variance p (p-2)^(p-2) / (2 (p-1)^(p-1))): below it the paramagnet
        splits into metastable states and dynamics from random starts stalls (T_c for p=2)."""
        p = self.p
        return math.sqrt(2.0 * self.variance * p * (p - 2) ** (p - 2) / (2.0 * (p - 1) ** (p - 1)))

    # -- math ---------------------------------------------------------------
    def _rows(self, fn, *arrays):
        """Apply fn to row chunks so the (B, N**(p-1)) products stay <= ROW_CHUNK_ENTRIES."""
        M = arrays[0].shape[0]
        B = max(1, ROW_CHUNK_ENTRIES // self.N ** (self.p - 1))
        if M <= B:
            return fn(*arrays)
        return np.concatenate([fn(*(a[i:i + B] for a in arrays)) for i in range(0, M, B)])

    def grad(self, x, batch=None):
        gmat = self.gradient_matrix(x.dtype)
        return self._rows(lambda xb: pspin_grad(xb, gmat, self.p), x)

    def energy(self, x):
        """H (M,) in float64 via Euler's identity s.grad H = p H (H is homogeneous of degree p)."""
        return np.einsum("md,md->m", x, self.grad(x), dtype=np.float64) / self.p

    def hvp(self, x, v):
        """Ambient Hessian-vector products (M, N): (p-1) (v (x) x^{(x)(p-2)}) @ (-p J)."""
        gmat = self.gradient_matrix(x.dtype)
        p = self.p
        return self._rows(lambda xb, vb: (p - 1) * np.dot(tensor_rows(vb, xb, p - 2), gmat),
                          x, v.astype(x.dtype))

    def hessian(self, x):
        """Ambient Euclidean Hessians (M, N, N) = -p(p-1) sum J_{kl i3..ip} x_i3 ... x_ip."""
        N, p = self.N, self.p
        hmat = self.gradient_matrix(x.dtype).reshape(N ** (p - 2), N * N)
        ones = np.ones((x.shape[0], 1), x.dtype)
        return ((p - 1) * np.dot(tensor_rows(ones, x, p - 2), hmat)).reshape(-1, N, N)

    def riemannian_hvp(self, x, v):
        """Riemannian Hessian on the sphere applied to v: P (grad^2 H) P v - (x.grad H/|x|^2) P v,
        P = I - x x^T / |x|^2 (M, N); its spectrum on the tangent space (dimension N - 1)."""
        x = x.astype(np.float64)
        pv = v - (np.sum(v * x, axis=1) / np.sum(x * x, axis=1))[:, None] * x
        w = self.hvp(x, pv)
        w = w - (np.sum(w * x, axis=1) / np.sum(x * x, axis=1))[:, None] * x
        lam = np.sum(x * self.grad(x), axis=1) / np.sum(x * x, axis=1)
        return w - lam[:, None] * pv

    def riemannian_hessian(self, x):
        """Dense Riemannian Hessians (M, N, N) = P (grad^2 H) P - (x.grad H / |x|^2) P."""
        x = x.astype(np.float64)
        n2 = np.sum(x * x, axis=1)
        P = np.eye(self.N) - x[:, :, None] * x[:, None, :] / n2[:, None, None]
        lam = np.sum(x * self.grad(x), axis=1) / n2
        return P @ self.hessian(x) @ P - lam[:, None, None] * P

    # -- constraint ---------------------------------------------------------
    def project(self, x, v):
        """Tangent projection v - (v.x/N) x at x on the sphere (M, N)."""
        return sphere_project(x, v)

    def retract(self, x):
        """Rescale each row onto |x|^2 = N."""
        return sphere_retract(x)

    def default_init(self, z):
        """Uniform random points on the sphere: z sqrt(N) / |z|."""
        return sphere_retract(np.asarray(z, dtype=np.float64))

    def overlap(self, x):
        """m = u.x / sqrt(N) (M,) float64, the overlap with the planted direction (x's array
        module)."""
        return array_module(x).asarray(x, np.float64) @ self.spike / math.sqrt(self.N)

    def observables(self, x, energy=None):
        out = {"energy_per_spin": (self.energy(x) if energy is None else energy) / self.N}
        if self.planted != 0.0:
            out["overlap"] = self.overlap(x)
        return out
