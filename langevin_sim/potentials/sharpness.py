"""Sharpness observables: top Hessian eigenvalue and Hessian trace per replica, from hvp only.

`top_eigenvalue` runs a batched Lanczos iteration (a Krylov refinement of power iteration on
`hvp`: the same Hessian-vector products, but it returns the largest *algebraic* eigenvalue,
which plain power iteration misses whenever the most negative eigenvalue is larger in
magnitude -- the rule at p-spin saddles -- and it converges in O(sqrt(1/gap)) instead of
O(1/gap) products).  `hessian_trace` is Hutchinson's estimator with Rademacher probes,
`exact_hessian_trace` the trace from d unit-vector products.

For constrained potentials (`potential.constrained`, e.g. the spherical p-spin) the default
operator is the Riemannian Hessian on the tangent space (`potential.riemannian_hvp`); pass
`riemannian=False` for the ambient Euclidean Hessian `potential.hvp`.

Random vectors are Philox streams (purpose rng.PROBE, key `seed`, counter replica = global
replica id), so results do not depend on how replicas are split.  Measurement `step` of
replica r uses the stream positions n = step * 2**32 + offset, with offset
  j d + lane,            0 <= j < iters   Lanczos start (j = 0) and restart vectors (normals),
  2**31 + j d + lane,    0 <= j < probes  Hutchinson probe j (word parity -> +-1),
so iters * d and probes * d must stay below 2**31.

To record sharpness during a run use `SharpnessObserver(every=...)`, called with the
Simulation at record time (see its docstring).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .. import rng
from ..errors import ConfigError, check_int
from ..observers import Observer

STEP_STRIDE = 1 << 32   # stream positions per measurement step
PROBE_OFFSET = 1 << 31  # first stream position of the Hutchinson probes within a step
NAMES = ("sharpness", "hessian_trace", "hessian_trace_se")  # what `sharpness` returns


def _rowdot(a, b):
    return np.einsum("md,md->m", a, b)


def hessian_operator(potential, x: np.ndarray, riemannian: bool | None = None):
    """v (M, d) -> H v (M, d) at x (M, d) in float64: the ambient `hvp` (through the
    potential's `hvp_at(x)` operator when it has one: the same numbers), or for constrained
    potentials (default when `riemannian` is None) `riemannian_hvp` restricted to the tangent
    space.  Returns (operator, project, dim): project maps vectors into the operator's domain,
    of dimension dim (d ambient; d - 1 on a codimension-1 constraint such as the sphere)."""
    x = np.asarray(x, dtype=np.float64)
    if riemannian is None:
        riemannian = bool(potential.constrained)
    if not riemannian:
        at = getattr(potential, "hvp_at", None)     # products at one x sharing its passes
        hv = at(x) if at is not None else (lambda v: potential.hvp(x, v))
        return (lambda v: np.asarray(hv(v), np.float64)), (lambda v: v), x.shape[1]
    if not hasattr(potential, "riemannian_hvp"):
        raise ConfigError(f"{type(potential).__name__} has no riemannian_hvp; pass "
                          "riemannian=False for the ambient Hessian")
    return (lambda v: potential.riemannian_hvp(x, v)), (lambda v: potential.project(x, v)), \
        x.shape[1] - 1


def _stream(seed, replicas, step, offset, d, kind):
    """(M, d) normals or words at stream positions step * STEP_STRIDE + offset + lane."""
    if offset % PROBE_OFFSET + d > PROBE_OFFSET:
        raise ConfigError(f"iters * d and probes * d must stay below 2**31 (d={d}); use fewer "
                          "iterations or probes")
    f = rng.stream_normals if kind == "normal" else rng.stream_words
    return f(seed, rng.PROBE, replicas, int(step) * STEP_STRIDE + offset, d)


def _replica_ids(replicas, M):
    reps = np.arange(M) if replicas is None else np.asarray(replicas, dtype=np.int64).ravel()
    if reps.shape != (M,):
        raise ConfigError(f"replicas must list one global id per row of x ({M}), "
                          f"got {reps.shape[0]}")
    return reps


def _in_chunks(measure):
    """`measure(potential, x, ..., replicas=...)` over chunks of `potential.hvp_rows()`
    replicas when the potential has it (each chunk's products then share one pass,
    `hvp_at`), the rows' results concatenated: every row's numbers depend on that row
    and its global replica id only."""
    def run(potential, x, *args, replicas=None, **kw):
        M = np.shape(x)[0]
        n = potential.hvp_rows() if hasattr(potential, "hvp_rows") else M
        if n >= M:
            return measure(potential, x, *args, replicas=replicas, **kw)
        reps = _replica_ids(replicas, M)
        parts = [measure(potential, x[lo:lo + n], *args, replicas=reps[lo:lo + n], **kw)
                 for lo in range(0, M, n)]
        if isinstance(parts[0], tuple):
            return tuple(np.concatenate(p) for p in zip(*parts))
        return np.concatenate(parts)
    return functools.wraps(measure)(run)


def _orthonormalize(w, Q, j):
    """w minus its components along Q[0..j] (twice, classical Gram-Schmidt), and its norm."""
    for _ in range(2):
        c = np.einsum("jmd,md->jm", Q[:j + 1], w)
        w = w - np.einsum("jm,jmd->md", c, Q[:j + 1])
    return w, np.sqrt(_rowdot(w, w))


@_in_chunks
def top_eigenvalue(potential, x: np.ndarray, iters: int = 30, seed: int = 0, step: int = 0,
                   replicas=None, riemannian: bool | None = None) -> np.ndarray:
    """Largest Hessian eigenvalue (M,) per replica by `iters` Lanczos steps (hvp calls).

    Full reorthogonalization; Ritz values approach the top eigenvalue from below and are
    exact once `iters` reaches the operator's dimension (d, or d - 1 on the sphere's tangent
    space; larger values are clipped to it).  `replicas` are the global replica ids
    (default 0 .. M-1) selecting the random start vectors; see the module docstring.
    """
    op, proj, dim = hessian_operator(potential, x, riemannian)
    M, d = np.shape(x)
    k = min(int(iters), dim)
    if k < 1:
        raise ConfigError(f"iters must be >= 1, got {iters}")
    reps = _replica_ids(replicas, M)
    q = proj(_stream(seed, reps, step, 0, d, "normal"))
    q = q / np.sqrt(_rowdot(q, q))[:, None]
    Q = np.empty((k, M, d))
    alpha, beta = np.zeros((M, k)), np.zeros((M, k))
    anorm = np.zeros(M)
    for j in range(k):
        Q[j] = q
        w = op(q)
        alpha[:, j] = _rowdot(w, q)
        anorm = np.maximum(anorm, np.sqrt(_rowdot(w, w)))
        if j == k - 1:
            break
        w, b = _orthonormalize(w, Q, j)
        beta[:, j] = b
        dead = b <= 1e-10 * anorm       # invariant subspace found: restart orthogonally
        if dead.any():
            r, rn = _orthonormalize(proj(_stream(seed, reps, step, (j + 1) * d, d, "normal")), Q, j)
            w = np.where(dead[:, None], r, w)
            b = np.where(dead, rn, b)
            beta[dead, j] = 0.0
        q = w / b[:, None]
    T = np.zeros((M, k, k))
    idx = np.arange(k)
    T[:, idx, idx] = alpha
    T[:, idx[:-1], idx[1:]] = beta[:, :k - 1]
    T[:, idx[1:], idx[:-1]] = beta[:, :k - 1]
    return np.linalg.eigvalsh(T)[:, -1]


@_in_chunks
def hessian_trace(potential, x: np.ndarray, probes: int = 16, seed: int = 0, step: int = 0,
                  replicas=None, riemannian: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hutchinson estimate of tr H (M,) and its standard error (M,) from `probes` Rademacher
    probes z: tr H = E[z^T H z] (z projected onto the tangent space in the Riemannian case,
    giving the trace over that space).  Single-probe variance 2 sum_{i != j} H_ij^2."""
    if int(probes) < 2:
        raise ConfigError(f"probes must be >= 2 (the standard error needs two), got {probes}")
    op, proj, _ = hessian_operator(potential, x, riemannian)
    M, d = np.shape(x)
    reps = _replica_ids(replicas, M)
    est = np.empty((int(probes), M))
    for j in range(int(probes)):
        w = _stream(seed, reps, step, PROBE_OFFSET + j * d, d, "words")
        z = proj(1.0 - 2.0 * (w & np.uint64(1)).astype(np.float64))
        est[j] = _rowdot(z, op(z))
    return est.mean(axis=0), est.std(axis=0, ddof=1) / np.sqrt(probes)


@_in_chunks
def exact_hessian_trace(potential, x: np.ndarray, riemannian: bool | None = None,
                        replicas=None) -> np.ndarray:
    """tr H (M,) at x (M, d) from d products with the unit vectors (the Riemannian case: the
    unit vectors projected onto the tangent space, tr(P H P)); float64, no randomness
    (`replicas` unused).  Hutchinson's error is set by the off-diagonal mass (single-probe
    variance 2 sum_{i != j} H_ij^2), often large next to how much the trace varies between
    replicas: at a toy net's end points (d = 321) the 16-probe estimate's noise was 2-3 times
    the replicas' spread in the exact trace, so correlations of the estimate are attenuated
    toward 0 (`analysis.flatness` warns); there d products beat the ~1000 probes it would
    take."""
    op, proj, _ = hessian_operator(potential, x, riemannian)
    M, d = np.shape(x)
    tr = np.zeros(M)
    for i in range(d):
        e = np.zeros((M, d))
        e[:, i] = 1.0
        z = proj(e)
        tr += _rowdot(z, op(z))
    return tr


def sharpness(potential, x: np.ndarray, iters: int = 30, probes: int | str = 16, seed: int = 0,
              step: int = 0, replicas=None, riemannian: bool | None = None
              ) -> dict[str, np.ndarray]:
    """{"sharpness": top Hessian eigenvalue (M,), "hessian_trace": Hutchinson trace (M,),
    "hessian_trace_se": its standard error (M,)} at positions x (M, d); float64.  probes
    "exact": the trace from d products (`exact_hessian_trace`), its standard error 0."""
    kw = dict(seed=seed, step=step, replicas=replicas, riemannian=riemannian)
    if probes == "exact":
        tr = exact_hessian_trace(potential, x, riemannian=riemannian, replicas=replicas)
        se = np.zeros_like(tr)
    else:
        tr, se = hessian_trace(potential, x, probes=probes, **kw)
    return {"sharpness": top_eigenvalue(potential, x, iters=iters, **kw), "hessian_trace": tr,
            "hessian_trace_se": se}


class SharpnessObserver(Observer):
    """Record-time hook: `observer(sim)` -> {name: (M,)} at the Simulation's current state.

    Computes `sharpness` (float64, stream step = sim.step, the Simulation's seed and global
    replica ids) when sim.step is a multiple of `every` and returns NaN otherwise, so every
    record has the same fields.  Use every = k * record_every to measure every k records.
    probes: Hutchinson probes of the trace, or "exact" (d products a replica: where the
    trace varies between replicas by less than the probes' noise, as at small toy nets).
    """

    def __init__(self, every: int, iters: int = 30, probes: int | str = 16,
                 riemannian: bool | None = None):
        every = check_int("every", every)
        self.every, self.iters = every, check_int("iters", iters)
        self.probes = probes if probes == "exact" else check_int("probes", probes)
        self.riemannian = riemannian

    def check_record_every(self, record_every: int) -> None:
        """ConfigError unless `every` is a multiple of the run's record spacing (otherwise it
        would measure only every lcm(every, record_every) steps)."""
        if self.every % record_every:
            raise ConfigError(f"the sharpness is measured every {self.every} steps, at records: "
                              f"with records every {record_every} steps that is every "
                              f"{math.lcm(self.every, record_every)}; make sharpness_every "
                              f"(SharpnessObserver's every) a multiple of {record_every}")

    def check_end(self, end: int) -> None:
        """ConfigError for a run ending past the observer's stream: its probes of step s sit
        at positions s * 2**32 + offset, whose Philox blocks (4 positions each) pass 2**64
        from step 2**34 on (an OverflowError at the first record there)."""
        last = (2**64 * 4) // STEP_STRIDE - 1
        if end > last:
            raise ConfigError(f"a run with a sharpness observer ends by step {last} (its probes "
                              f"of step s are drawn at stream positions s * 2**32), got {end}")

    def to_dict(self) -> dict:
        """JSON form stored in the run config, so `resume` rebuilds the observer."""
        return {"class": type(self).__name__, "every": self.every, "iters": self.iters,
                "probes": self.probes, "riemannian": self.riemannian}

    def __call__(self, sim) -> dict[str, np.ndarray]:
        M = sim.n_replicas
        if sim.step % self.every:
            return {k: np.full(M, np.nan) for k in NAMES}
        return sharpness(sim.potential, sim.state["x"].astype(np.float64), iters=self.iters,
                         probes=self.probes, seed=sim.seed, step=sim.step,
                         replicas=sim.replica_ids, riemannian=self.riemannian)
