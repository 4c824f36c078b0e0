"""Which basin does SGD occupy when its noise differs between basins?

Minibatch noise is state-dependent: near a minimum b of a finite-sum loss its covariance is
f C_b (f = 1/S for i.i.d. batches of S), so each basin has its own matched temperature
T_b = lr f tr(C_b) / (2 d) (`covariance.linearized_sgd`; on `ShiftedMultiWell`,
C_b = H_b Cov(xi) H_b: sharper basins are hotter).  Predictions for the occupancy of the
`basin` labels (the potential's `basin(x)`, what a run records):

- `label_occupancy`      Gibbs exp(-U/T) at one temperature, by grid quadrature (d <= 2):
                         what Langevin at that T samples (up to O(step));
- `blowtorch_occupancy`  d = 1: the small-lr limit of SGD, the diffusion
                         dx = -U'(x) dt + sqrt(2 D(x)) dW with D(x) = lr f Var_i l_i'(x) / 2
                         (time lr per step), whose stationary density is exact in 1-D:
                         p(x) ∝ exp(-int^x U'/D) / D(x) (Landauer's "blowtorch": the
                         relative weight of two basins depends on D along the path between
                         them, not only on U);
- `sgd_chain_occupancy`  d = 1: the stationary law of the SGD chain itself,
                         x' = x - lr mean_{i in batch} l_i'(x), at finite lr and with the
                         minibatch noise's own (non-Gaussian) law: a transfer operator on a
                         grid, solved for its fixed point.
Units: x length, U and T energy, lr time per step.  Imports neither numba nor cupy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sparse
from scipy.integrate import cumulative_trapezoid
from scipy.sparse.linalg import spsolve

from ..errors import ConfigError, check_int, check_positive
from .basins import Basins
from .covariance import (LinearizedSGD, _independent_noise_factor, gradient_noise_covariance,
                         linearized_sgd)

MIN_LABEL_FLUX = 1e-10     # mass leaving a label per step below which the split is not resolved

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..potentials.base import Potential
    from ..potentials.multiwell import MultiWell, ShiftedMultiWell


def basin_noise(potential: Potential, basins: Basins, lr: float, batch_size: int | None,
                sampling: str = "iid") -> list[LinearizedSGD]:
    """`linearized_sgd` at each minimum of `basins` (Hessian and per-sample gradient
    covariance of `potential` there): one per basin, with its matched temperature."""
    out = []
    for x in basins.points:
        H = np.asarray(potential.hessian(x[None].astype(np.float64)), np.float64)[0]
        C = gradient_noise_covariance(potential, x)
        out.append(linearized_sgd(H, C, lr, batch_size, potential.n_samples, sampling))
    return out


def _grid(potential, bounds, n_grid: int) -> tuple[np.ndarray, float]:
    """(N, d) midpoints of an n_grid^d grid over bounds (d, 2), and the cell volume."""
    d = potential.d
    if d > 2:
        raise ConfigError(f"grid quadrature needs d <= 2, got d = {d}")
    B = np.asarray(bounds, np.float64).reshape(d, 2)
    axes = [np.linspace(a, b, int(n_grid) + 1) for a, b in B]
    mids = [0.5 * (g[1:] + g[:-1]) for g in axes]
    X = np.stack(np.meshgrid(*mids, indexing="ij"), axis=-1).reshape(-1, d)
    return X, float(np.prod([g[1] - g[0] for g in axes]))


def label_occupancy(potential: MultiWell, temperature: float, bounds: ArrayLike, n_grid: int = 2001,
                    n_basins: int | None = None) -> np.ndarray:
    """Gibbs probability of each `basin` label, int 1[basin(x) = b] exp(-U/T) / Z (K,), by
    the midpoint rule on an n_grid^d grid over bounds (d, 2) (d <= 2); ConfigError if
    exp(-U/T) is not negligible (1e-12 of its maximum) on the grid's edge."""
    T = check_positive("temperature", temperature)
    X, _ = _grid(potential, bounds, n_grid)
    u = np.concatenate([potential.energy(c) for c in np.array_split(X, max(1, X.shape[0] // 4096))])
    w = np.exp(-(u - u.min()) / T)
    edge = np.any(np.isclose(X, X.min(axis=0)) | np.isclose(X, X.max(axis=0)), axis=1)
    if w[edge].max() > 1e-12:
        raise ConfigError(f"exp(-U/T) is not negligible on the grid's edge at T = {T:g}; widen bounds")
    lab = np.asarray(potential.basin(X), np.int64)
    K = int(lab.max()) + 1 if n_basins is None else int(n_basins)
    return np.bincount(lab, weights=w, minlength=K)[:K] / w.sum()


def _sample_gradients(potential: ShiftedMultiWell, x: np.ndarray) -> np.ndarray:
    """(n, N) per-sample gradients l_i'(x) of a d = 1 finite-sum potential at the points
    x (N,) (energy / length)."""
    x = np.asarray(x, np.float64)[:, None]
    return np.stack([np.asarray(potential.grad(x, np.full((x.shape[0], 1), i)), np.float64)[:, 0]
                     for i in range(potential.n_samples)])


def blowtorch_occupancy(potential: ShiftedMultiWell, lr: float, batch_size: int | None,
                        bounds: ArrayLike, sampling: str = "iid", n_grid: int = 20001
                        ) -> np.ndarray:
    """Occupancy of each `basin` label (K,) under the small-lr diffusion limit of SGD in
    d = 1: p(x) ∝ exp(-Phi(x)) / D(x), Phi = int U'/D, D(x) = lr f Var_i(l_i'(x)) / 2, on a
    grid of n_grid points over bounds (1, 2).  Exact for that diffusion (zero flux in 1-D);
    SGD's finite steps add O(lr lam) corrections (in a quadratic basin its variance is
    larger by 1 / (1 - lr lam / 2))."""
    if potential.d != 1:
        raise ConfigError(f"the blowtorch density is exact in d = 1 only, got d = {potential.d}")
    n = potential.n_samples
    f = _independent_noise_factor(n, batch_size, sampling, "blowtorch_occupancy")
    if f == 0:
        raise ConfigError("full-batch SGD has no minibatch noise (batch_size none)")
    lo, hi = np.asarray(bounds, np.float64).ravel()
    x = np.linspace(lo, hi, int(n_grid))[:, None]
    g = _sample_gradients(potential, x[:, 0])                          # (n, N)
    D = lr * f * g.var(axis=0) / 2
    if D.min() <= 0:
        raise ConfigError("the minibatch noise vanishes somewhere on the grid (D(x) = 0): "
                          "the blowtorch density needs D > 0")
    phi = cumulative_trapezoid(g.mean(axis=0) / D, x[:, 0], initial=0.0)
    logp = -phi - np.log(D)
    w = np.exp(logp - logp.max())
    if max(w[0], w[-1]) > 1e-12:
        raise ConfigError("the density is not negligible at the grid's ends; widen bounds")
    lab = np.asarray(potential.basin(x), np.int64)
    return np.bincount(lab, weights=w, minlength=potential.n_wells) / w.sum()


def sgd_chain_occupancy(potential: ShiftedMultiWell, lr: float, batch_size: int,
                        bounds: ArrayLike, sampling: str = "iid", n_grid: int = 4001
                        ) -> np.ndarray:
    """Occupancy of each `basin` label (K,) under the stationary law of the SGD chain itself
    in d = 1, x' = x - lr mean_{i in batch} l_i'(x) (lr: time per step, x: length), at
    finite lr and with the minibatch noise's own law (no diffusion limit, no Gaussian).

    The chain's kernel is a finite mixture of deterministic maps, one per batch: with
    batch_size S = 1 the n maps x - lr l_i'(x) (weight 1/n each); S = 2 the n(n + 1)/2
    unordered pairs (i.i.d.: 1/n^2 for i = j, 2/n^2 otherwise; "subset": the n(n - 1)/2
    pairs i < j, 2/(n(n - 1))).  For S >= 3 the step is x plus the sum of S draws of
    -lr l_i'(x)/S, each split onto the grid's lattice: i.i.d. draws' law is the S-fold
    convolution of one draw's, a subset's (S distinct samples, each of the C(n, S) batches
    alike) the elementary symmetric polynomial e_S of the n draws' laws over C(n, S), both
    by FFT (n S products per frequency for a subset).  "epoch" batches are refused (x alone
    is not a Markov chain under reshuffling).
    Transfer operator on n_grid points over bounds (1, 2), spacing h: each point's mass goes
    where each map sends it, split linearly between the two nearest points (each draw's
    split separately in the convolution), so a point's weight is its hat function's mass;
    the fixed point of that column-stochastic sparse matrix is solved directly (sparse LU:
    power iteration would take the inter-basin time, ~1e5 steps and more), and each
    point's weight is split between labels by the fraction of its hat on either side of a
    label boundary.  Discretization error: the split adds at most h^2/4 of variance per
    draw and step (exact mean; tests: one quadratic well), O(h^2) on a smooth law; with
    few maps the law of S = 1 is rough (an iterated function system) and the occupancy
    converges irregularly, at the 1 % level with n = 32 samples: compare two n_grid.  On
    claim 2b's landscape (lr = 0.2, n = 64, bounds of length 23) the sharp label's
    occupancy is 0.017034, 0.017036, 0.017032, 0.017030 at n_grid = 2001 ... 16001 (S = 1),
    0.002070, 0.002067, 0.002065 at 2001 ... 8001 (S = 2), 2.40e-5, 2.28e-5, 2.24e-5
    (S = 4); subset batches 1.12e-4, 1.08e-4, 1.07e-4 (S = 3), 5.7e-6, 5.3e-6, 5.1e-6
    (S = 4).  Time: ~2 s at n_grid = 4001, ~10-15 s at 8001 (S = 2, 4; half of it the
    sparse LU).  ConfigError if the chain sends more than 1e-12 of its stationary mass per
    step beyond bounds (widen them); if it leaves some label with less than MIN_LABEL_FLUX =
    1e-10 of it per step, where the split between the labels is below what the operator
    resolves (the FFT's round-off and the cut tails move more mass than that: on claim 2b's
    landscape i.i.d. S = 8, 3e-12 and 2e-12 per step each way, read 4.3e-9 and 2.8e-9 at
    n_grid 2001 and 4001, subset S = 16 2.6e-7 and 7e-17, subset S = 48 an occupancy of 1
    for the sharp label); for d != 1, a potential without per-sample losses, or a full
    batch (no noise)."""
    if potential.d != 1:
        raise ConfigError(f"the SGD chain's law is computed in d = 1 only, got d = {potential.d}")
    n = getattr(potential, "n_samples", None)
    if n is None or not hasattr(potential, "shifts"):
        raise ConfigError("sgd_chain_occupancy needs a finite-sum ShiftedMultiWell (per-sample "
                          f"gradients), got {type(potential).__name__}")
    lr = check_positive("lr", lr)
    if sampling == "epoch":
        raise ConfigError("sampling='epoch' (reshuffled per epoch) makes the batches of an epoch "
                          "dependent, so x alone is not a Markov chain and has no transfer operator "
                          "here: use sampling='iid' or 'subset' (independent batches), or measure "
                          "the epoch process by simulation")
    f = _independent_noise_factor(n, batch_size, sampling, "sgd_chain_occupancy")
    if f == 0:
        raise ConfigError("full-batch SGD (batch_size none or n) has no minibatch noise: the chain "
                          "is gradient descent, with no stationary spread to compute")
    S = int(batch_size)
    N = check_int("n_grid", n_grid, 3)
    lo, hi = np.asarray(bounds, np.float64).ravel()
    if not hi > lo:
        raise ConfigError(f"bounds must be [[lo, hi]] with hi > lo, got {bounds}")
    x = np.linspace(lo, hi, N)
    g = _sample_gradients(potential, x)                                # (n, N)
    P, lost = (_enumerated_kernel(x, g, lr, S, sampling) if S <= 2 else
               _convolved_kernel(x, g, lr, S, sampling))
    pi = _stationary(P)
    leak = float(pi @ lost)
    if leak > 1e-12:
        raise ConfigError(f"the SGD chain sends {leak:.2g} of its stationary mass per step beyond "
                          f"bounds [{lo:g}, {hi:g}]; widen bounds")
    lab = np.asarray(potential.basin(x[:, None]), np.int64)
    P = P.tocoo()
    across = lab[P.row] != lab[P.col]
    out = np.bincount(lab[P.col[across]], weights=P.data[across] * pi[P.col[across]],
                      minlength=potential.n_wells)             # mass leaving each label per step
    present = np.unique(lab)
    k = present[np.argmin(out[present])]
    if present.size > 1 and out[k] < MIN_LABEL_FLUX:
        raise ConfigError(
            f"the SGD chain leaves label {k} with {out[k]:.2g} of its stationary mass per step "
            f"(< {MIN_LABEL_FLUX:g}): the split between the labels is below what the grid's "
            "transfer operator resolves in double precision (round-off and the cut tails are "
            f"larger moves than that), so no occupancy is returned. At lr {lr:g} and "
            f"batch_size {S} the chain leaves that label about once in "
            f"{1 / max(out[k], 1e-300):.1g} steps: raise lr or lower batch_size, or compare "
            "the basins' escape rates")
    return _hat_label_mass(potential, x, pi, lab)


def _columns(x: np.ndarray, dest: np.ndarray, w: np.ndarray, cols: np.ndarray, N: int):
    """COO pieces (rows, cols, values) and the mass per column beyond the grid (clamped to
    its end points) of moving weight w from grid column `cols` to `dest`, split linearly
    between the two nearest grid points (dest, w, cols broadcast together)."""
    h = x[1] - x[0]
    u = (dest - x[0]) / h
    k = np.floor(u).astype(np.int64)
    t = u - k
    rows = np.concatenate([k.ravel(), (k + 1).ravel()])
    vals = np.concatenate([(w * (1 - t)).ravel(), (w * t).ravel()])
    cc = np.concatenate([np.broadcast_to(cols, dest.shape).ravel()] * 2)
    out = (rows < 0) | (rows >= N)
    lost = np.bincount(cc[out], weights=vals[out], minlength=N)
    return np.clip(rows, 0, N - 1), cc, vals, lost


def _enumerated_kernel(x, g, lr, S, sampling):
    """(N, N) column-stochastic CSC transfer matrix of the batches' maps (S <= 2), and the
    mass per column sent beyond the grid."""
    n, N = g.shape
    if S == 1:
        i, j, w = np.arange(n), np.arange(n), np.full(n, 1.0 / n)
    else:
        i, j = np.triu_indices(n, k=0 if sampling == "iid" else 1)
        w = (np.where(i == j, 1.0, 2.0) / n ** 2 if sampling == "iid" else
             np.full(i.size, 2.0 / (n * (n - 1))))
    chunk = max(1, 2_000_000 // i.size)
    parts, lost = [], np.zeros(N)
    for c0 in range(0, N, chunk):
        cols = np.arange(c0, min(N, c0 + chunk))
        dest = x[cols] - lr * (g[i][:, cols] + g[j][:, cols]) / 2          # (maps, c)
        r, cc, v, lo = _columns(x, dest, w[:, None], cols, N)
        parts.append(sparse.csc_matrix((v, (r, cc - c0)), shape=(N, cols.size)))
        lost += lo
    return sparse.hstack(parts, format="csc"), lost


def _convolved_kernel(x, g, lr, S, sampling="iid"):
    """As `_enumerated_kernel` for batches of any S: the step from x_j is the sum of S draws
    of -lr g_i(x_j)/S, each split onto the grid's lattice (spacing h) as the two-point law
    q_i(z) = z^m_i ((1 - t_i) + t_i z).  Its generating function is (mean_i q_i)^S for
    i.i.d. draws, and e_S(q_1 .. q_n) / C(n, S) for a subset (S distinct samples: the
    elementary symmetric polynomial, by the recursion e_k += q_i e_(k-1) over the samples),
    both evaluated at the FFT's roots of unity and transformed back."""
    from math import comb

    from scipy import fft

    n, N = g.shape
    h = x[1] - x[0]
    u = -lr * g / (S * h)                                                  # (n, N) lattice units
    m = np.floor(u).astype(np.int64)
    t = u - m
    base = m.min(axis=0)
    L1 = int((m.max(axis=0) - base).max()) + 2
    Lf = S * (L1 - 1) + 1
    nfft = fft.next_fast_len(Lf, real=True)
    kk = np.arange(nfft // 2 + 1)
    z = np.exp(-2j * np.pi * kk / nfft)                                    # rfft's roots
    zpow = np.exp(-2j * np.pi * (np.arange(L1)[:, None] * kk % nfft) / nfft)   # z^l, (L1, bins)
    chunk = max(1, 2_000_000 // ((S + 2) * z.size))
    parts, lost = [], np.zeros(N)
    for c0 in range(0, N, chunk):
        cols = np.arange(c0, min(N, c0 + chunk))
        c = cols.size
        e = np.zeros((S + 1, c, z.size), np.complex128)
        e[0] = 1.0
        for i in range(n):
            q = zpow[m[i, cols] - base[cols]]                              # the draw's law
            q *= (1 - t[i, cols, None]) + t[i, cols, None] * z
            if sampling == "iid":
                e[1] += q
            else:
                for k in range(min(i + 1, S), 0, -1):
                    e[k] += q * e[k - 1]
        if sampling == "iid":
            e[1] /= n
        F = e[1] ** S if sampling == "iid" else e[S] / comb(n, S)
        r = fft.irfft(F, nfft, axis=1)[:, :Lf]
        r[r < 1e-14 * r.max(axis=1, keepdims=True)] = 0.0                 # FFT round-off
        r /= r.sum(axis=1, keepdims=True)
        ci, ri = np.nonzero(r)
        rows = cols[ci] + S * base[cols][ci] + ri
        vals = r[ci, ri]
        out = (rows < 0) | (rows >= N)
        lost[c0:c0 + c] = np.bincount(ci[out], weights=vals[out], minlength=c)
        parts.append(sparse.csc_matrix((vals, (np.clip(rows, 0, N - 1), ci)), shape=(N, c)))
    return sparse.hstack(parts, format="csc"), lost


def _stationary(P) -> np.ndarray:
    """(N,) the fixed point p = P p, sum 1, of a column-stochastic sparse P: (P - I) with one
    row (redundant: the columns of P - I sum to 0) replaced by sum(p) = 1, by sparse LU."""
    N = P.shape[0]
    keep = np.ones(N)
    keep[0] = 0.0
    A = sparse.diags(keep) @ (P - sparse.identity(N, format="csc"))
    A = A + sparse.csc_matrix((np.ones(N), (np.zeros(N, np.int64), np.arange(N))), shape=(N, N))
    b = np.zeros(N)
    b[0] = 1.0
    p = np.clip(spsolve(A.tocsc(), b), 0.0, None)
    return p / p.sum()


def _hat_label_mass(potential, x: np.ndarray, w: np.ndarray,
                    lab: np.ndarray | None = None) -> np.ndarray:
    """(K,) label masses of grid weights w (N,), each the mass of the hat function of width
    2h at its point: where the label changes between x_k and x_k+1 the boundary b is found
    by bisection and the hats' parts beyond it, (x_k + h - b)^2 / (2 h^2) of w_k and
    (b - x_k)^2 / (2 h^2) of w_k+1, change label.  lab: the points' labels, if known."""
    if lab is None:
        lab = np.asarray(potential.basin(x[:, None]), np.int64)
    K = potential.n_wells
    out = np.bincount(lab, weights=w, minlength=K).astype(np.float64)
    k = np.nonzero(lab[1:] != lab[:-1])[0]
    if k.size:
        h = x[1] - x[0]
        a, b = x[k].copy(), x[k + 1].copy()
        for _ in range(50):
            mid = 0.5 * (a + b)
            left = np.asarray(potential.basin(mid[:, None]), np.int64) == lab[k]
            a, b = np.where(left, mid, a), np.where(left, b, mid)
        bnd = 0.5 * (a + b)
        f0 = (x[k] + h - bnd) ** 2 / (2 * h * h) * w[k]
        f1 = (bnd - x[k]) ** 2 / (2 * h * h) * w[k + 1]
        np.add.at(out, lab[k], f1 - f0)
        np.add.at(out, lab[k + 1], f0 - f1)
    return out / out.sum()
