"""Generic fused drivers: one parallel CPU kernel per dynamics, compiled once per family.

A potential family contributes only `Hooks`, compiled block functions of its potential:
``grad_block(xb, args) -> (B, d)`` in xb's dtype, ``energy_block(xb, args) -> (B,)`` float64,
``args_of(potential, dtype) -> tuple`` (the coefficients after xb), and where they apply the
sphere's ``project_block(xb, vb)`` / ``retract_block(xb)`` and a finite sum's per-replica
minibatch gradient ``batch_grad(x (d,), idx (B,), shift (B,), args, g (d,))``; it registers
them with `family` (at the end of its module).  The drivers below are plain Python, written
once per dynamics; `compiled(cls)` compiles them per family (`compile_functions`, the hooks
resolved as globals at compile time, so Numba inlines and specializes them; each family's
copy has its own qualified name and so its own on-disk cache entry: a Numba function taking
dispatchers as arguments is never loaded from the cache).

Every driver is serial and GIL-free on one block of replicas (lo..hi-1, `BLOCK` rows),
and `run_blocks` spreads the blocks over a thread pool (as `kernels.pspin`: a prange
wrapper would add a parfor compilation per family, dynamics and dtype).  Per step and
block: the block's normals from the in-kernel Philox at the reference's stream positions
(NOISE at n = t*d + i; Leimkuhler-Matthews also those of step t + 1, OBABO its 2d at
n = 2 t d + i, SGD's GRAD_NOISE, MALA's uniform ACCEPT word n = t), the gradient of the
block, the update by the step rules of `common.STEPS` (the same scalar functions as each
`reference_step`), and divergence freezing (a replica with a non-finite or out-of-bound new
value keeps its state, dstep = t + 1).  Scalars are cast to the state's dtype (`like`), as
NumPy does with Python scalars.  `register_generic` (called
by `kernels/__init__`) registers the drivers for every pair of a family with hooks and a
dynamics below that has no dedicated kernel.  `energy_kernel(potential)` gives recording a
compiled float64 energy.
"""
from __future__ import annotations

import math
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import numba
import numpy as np

from .. import rng
from ..backends import registry
from ..backends.jit import compile_functions, jit, one_blas_thread
from ..backends.numpy_backend import reference_advance
from ..dynamics import (MALA, OBABO, SGD, AdamW, Heun, LeimkuhlerMatthews, OverdampedLangevin,
                        UnderdampedLangevin)
from .common import (compile_steps, label_shifts, like, minibatch_rows, noise_buffer, noise_chunk,
                     noise_level, sampling_args, sched, schedule_code, sgd_scratch, sgd_step,
                     stream_word, temperature_code)

STEPS = ()
cpu = compile_steps(sys.modules[__name__])
BLOCK = 256  # replicas per block (one task of the thread pool)
ENERGY_BLOCK_BYTES = 1 << 20  # float64 rows per block of the recording energies


@dataclass(frozen=True)
class Hooks:
    """A family's compiled block functions (see the module docstring); without `energy_block`
    MALA and recording energies are not compiled for it; `blas`: they call BLAS (run
    single-threaded inside the drivers' parallel region); `observables(potential)`: None, or
    a function (x (M, d), energy (M,) float64) -> the potential's `observables(x, energy)`
    computed by compiled code (float64 accumulation), for records; `energy(potential)`: None
    (records take `energy_driver` over `energy_block`), or the records' energy function
    (x, out) as `energy_kernel` returns it, where the family computes it with code its
    observables compile anyway."""

    grad_block: Callable
    energy_block: Callable | None
    args_of: Callable
    project_block: Callable | None = None
    retract_block: Callable | None = None
    batch_grad: Callable | None = None
    blas: bool = False
    observables: Callable | None = None
    energy: Callable | None = None


FAMILIES: dict[type, Hooks] = {}
_COMPILED: dict[type, object] = {}
_POOLS: dict[int, ThreadPoolExecutor] = {}   # worker count -> pool
_warned: set = set()
_PRIMED: set = set()   # (potential class, dtype, dynamics class) whose blocks `_prime` compiled


def family(potential_cls: type, hooks: Hooks) -> None:
    """Give the generic drivers the hooks of `potential_cls`; called after the package's own
    families were registered (a user's module, a notebook), it registers the drivers for the
    class's pairs at once (`register_generic` ran already)."""
    FAMILIES[potential_cls] = hooks
    if _generic_registered:
        _register_family(potential_cls, hooks)


# ---------------------------------------------------------------- pieces (hook-free)

@jit
def tangent_identity(xb, vb):
    """The projection of an unconstrained potential: vb itself."""
    return vb


@jit
def retract_identity(xb):
    """The retraction of an unconstrained potential: xb itself."""
    return xb


@jit
def block_noise(xi, dstep, lo, t, steps, purpose, k0, k1, rep0, buf):
    """xi[r] (steps * d,) <- the `purpose` normals at n = t*d .. (t + steps)*d - 1 of each
    live row lo + r (d = xi.shape[1] // steps; buf: `noise_buffer(xi.shape[1], x)`)."""
    n = xi.shape[1]
    for r in range(xi.shape[0]):
        if dstep[lo + r] < 0:
            rep = np.uint64(rep0 + lo + r)
            z, off = noise_chunk(k0, k1, purpose, rep, t * (n // steps), n, buf)
            zs, dst = z[off:off + n], xi[r]
            for i in range(n):
                dst[i] = zs[i]


@jit
def row_ok(a, r, bound):
    """Whether row r of the 2-D array a is finite and within bound."""
    good = True
    for i in range(a.shape[1]):
        good = good & cpu.within_bound(a[r, i], bound)
    return good


@jit
def copy_row(dst, m, src, r):
    """dst[m, :] <- src[r, :] (a loop: an array assignment compiles Numba's shape-error
    formatting, ~2 s per kernel using it)."""
    for i in range(src.shape[1]):
        dst[m, i] = src[r, i]


@jit
def row_sums(a):
    """Row sums (B,) float64 of a (B, n), each summed in float64 in order as Numba's
    ``a.astype(np.float64).sum(axis=1)`` (whose axis check compiles error formatting, ~1.5 s)."""
    out = np.zeros(a.shape[0])
    for r in range(a.shape[0]):
        acc = 0.0
        for i in range(a.shape[1]):
            acc += np.float64(a[r, i])
        out[r] = acc
    return out


@jit
def commit(x, new, dstep, lo, t, bound):
    """x[lo + r] <- new[r] for the live rows whose new values pass the divergence test; the
    others are frozen with dstep = t + 1."""
    for r in range(new.shape[0]):
        m = lo + r
        if dstep[m] < 0:
            if row_ok(new, r, bound):
                copy_row(x, m, new, r)
            else:
                dstep[m] = t + 1


@jit
def commit2(x, v, nx, nv, dstep, lo, t, bound):
    """`commit` of two state arrays together."""
    for r in range(nx.shape[0]):
        m = lo + r
        if dstep[m] < 0:
            if row_ok(nx, r, bound) and row_ok(nv, r, bound):
                copy_row(x, m, nx, r)
                copy_row(v, m, nv, r)
            else:
                dstep[m] = t + 1


@jit
def commit3(x, v, w, nx, nv, nw, dstep, lo, t, bound):
    """`commit` of three state arrays together."""
    for r in range(nx.shape[0]):
        m = lo + r
        if dstep[m] < 0:
            if row_ok(nx, r, bound) and row_ok(nv, r, bound) and row_ok(nw, r, bound):
                copy_row(x, m, nx, r)
                copy_row(v, m, nv, r)
                copy_row(w, m, nw, r)
            else:
                dstep[m] = t + 1


@jit
def accept_word(k0, k1, rep, t):
    """The ACCEPT word at stream position n = t of replica rep (`stream_word`: the Philox copy
    the minibatch samplings compile too)."""
    return stream_word(k0, k1, rng.ACCEPT, rep, np.uint64(t))


# ---------------------------------------------------------------- drivers (compiled per family)

def overdamped_driver(x, dstep, t0, K, k0, k1, rep0, es, ts, args, bound, lo, hi):
    """Overdamped Langevin (Euler-Maruyama): x <- retract(x + P(-eta grad U + sigma xi))."""
    d = x.shape[1]
    xi = np.zeros((hi - lo, d), x.dtype)
    buf = noise_buffer(d, x)
    zero = like(0.0, x)
    for t in range(t0, t0 + K):
        eta = sched(es, t)
        sigma = cpu.noise_scale(eta, sched(ts, t))
        block_noise(xi, dstep, lo, t, 1, rng.NOISE, k0, k1, rep0, buf)
        xb = x[lo:hi]
        dx = cpu.overdamped_update(zero, grad_block(xb, args), like(eta, x), like(sigma, x), xi)
        commit(x, retract_block(xb + project_block(xb, dx)), dstep, lo, t, bound)


def lm_driver(x, dstep, t0, K, k0, k1, rep0, es, ts, args, bound, lo, hi):
    """Leimkuhler-Matthews: the normals of steps t and t + 1 averaged (`lm_update`)."""
    d = x.shape[1]
    xi = np.zeros((hi - lo, 2 * d), x.dtype)
    buf = noise_buffer(2 * d, x)
    zero = like(0.0, x)
    for t in range(t0, t0 + K):
        eta = sched(es, t)
        half = 0.5 * cpu.noise_scale(eta, sched(ts, t))
        block_noise(xi, dstep, lo, t, 2, rng.NOISE, k0, k1, rep0, buf)
        xb = x[lo:hi]
        dx = cpu.lm_update(zero, grad_block(xb, args), like(eta, x), like(half, x),
                           xi[:, :d], xi[:, d:])
        commit(x, retract_block(xb + project_block(xb, dx)), dstep, lo, t, bound)


def heun_driver(x, dstep, t0, K, k0, k1, rep0, es, ts, args, bound, lo, hi):
    """Stochastic Heun: Euler predictor, then the corrector `heun_update` with one normal."""
    d = x.shape[1]
    xi = np.zeros((hi - lo, d), x.dtype)
    buf = noise_buffer(d, x)
    zero = like(0.0, x)
    for t in range(t0, t0 + K):
        eta = sched(es, t)
        sigma = like(cpu.noise_scale(eta, sched(ts, t)), x)
        block_noise(xi, dstep, lo, t, 1, rng.NOISE, k0, k1, rep0, buf)
        xb = x[lo:hi]
        g = grad_block(xb, args)
        dx = cpu.overdamped_update(zero, g, like(eta, x), sigma, xi)
        xt = retract_block(xb + project_block(xb, dx))
        dx = cpu.heun_update(zero, g, grad_block(xt, args), like(0.5 * eta, x), sigma, xi)
        commit(x, retract_block(xb + project_block(xb, dx)), dstep, lo, t, bound)


def baoab_driver(x, p, g, dstep, t0, K, k0, k1, rep0, es, ts, friction, mass, args, bound,
                 lo, hi):
    """BAOAB: state x, p and the gradient g at x (`baoab_first`, then `baoab_last`)."""
    d = x.shape[1]
    xi = np.zeros((hi - lo, d), x.dtype)
    buf = noise_buffer(d, x)
    for t in range(t0, t0 + K):
        eta = sched(es, t)
        c1, c2 = cpu.baoab_coeffs(eta, friction, sched(ts, t), mass)
        h = like(0.5 * eta, x)
        block_noise(xi, dstep, lo, t, 1, rng.NOISE, k0, k1, rep0, buf)
        nx, np_ = cpu.baoab_first(x[lo:hi], p[lo:hi], g[lo:hi], h, like(1.0 / mass, x),
                                  like(c1, x), like(c2, x), xi)
        ng = grad_block(nx, args)
        commit3(x, p, g, nx, cpu.baoab_last(np_, ng, h), ng, dstep, lo, t, bound)


def obabo_driver(x, p, g, dstep, t0, K, k0, k1, rep0, es, ts, friction, mass, args, bound,
                 lo, hi):
    """OBABO: state x, p and the gradient g at x; the 2d normals of step t (`obabo_first` on
    the first d, the gradient, `obabo_last` on the last d)."""
    d = x.shape[1]
    xi = np.zeros((hi - lo, 2 * d), x.dtype)
    buf = noise_buffer(2 * d, x)
    for t in range(t0, t0 + K):
        eta = sched(es, t)
        c1, c2 = cpu.baoab_coeffs(0.5 * eta, friction, sched(ts, t), mass)
        h, a1, a2 = like(0.5 * eta, x), like(c1, x), like(c2, x)
        block_noise(xi, dstep, lo, t, 1, rng.NOISE, k0, k1, rep0, buf)
        nx, np_ = cpu.obabo_first(x[lo:hi], p[lo:hi], g[lo:hi], h, like(eta, x),
                                  like(1.0 / mass, x), a1, a2, xi[:, :d])
        ng = grad_block(nx, args)
        commit3(x, p, g, nx, cpu.obabo_last(np_, ng, h, a1, a2, xi[:, d:]), ng, dstep, lo, t,
                bound)


def mala_driver(x, u, g, acc, dstep, t0, K, k0, k1, rep0, es, ts, args, bound, lo, hi):
    """MALA: state x, u = U(x) (M,), g = grad U(x), acc (M,) accepted proposals."""
    d = x.shape[1]
    xi = np.zeros((hi - lo, d), x.dtype)
    buf = noise_buffer(d, x)
    for t in range(t0, t0 + K):
        eta, T = sched(es, t), sched(ts, t)
        e = like(eta, x)
        block_noise(xi, dstep, lo, t, 1, rng.NOISE, k0, k1, rep0, buf)
        xb, gb = x[lo:hi], g[lo:hi]
        y = cpu.overdamped_update(xb, gb, e, like(cpu.noise_scale(eta, T), x), xi)
        uy = energy_block(y, args)
        gy = grad_block(y, args)
        for r in range(hi - lo):
            m = lo + r
            if dstep[m] >= 0:
                continue
            fwd = 0.0
            bwd = 0.0
            for i in range(d):
                fwd += cpu.proposal_residual2(y[r, i], xb[r, i], gb[r, i], e)
                bwd += cpu.proposal_residual2(xb[r, i], y[r, i], gy[r, i], e)
            log_alpha = cpu.mala_log_alpha(uy[r], u[m], bwd, fwd, eta, T)
            uni = cpu.accept_uniform(accept_word(k0, k1, np.uint64(rep0 + m), t))
            take = cpu.mala_accept(uni, log_alpha)
            if take:   # the divergence test sees the whole new state, as the reference's
                good = (row_ok(y, r, bound) and row_ok(gy, r, bound)
                        and cpu.within_bound(uy[r], bound))    # (not the count `acc`)
            else:
                good = (row_ok(xb, r, bound) and row_ok(gb, r, bound)
                        and cpu.within_bound(u[m], bound))
            if not good:
                dstep[m] = t + 1
            elif take:
                copy_row(x, m, y, r)
                copy_row(g, m, gy, r)
                u[m] = uy[r]
                acc[m] += 1.0


def sgd_driver(x, v, dstep, t0, K, k0, k1, rep0, ls, ts, momentum, wd, gsig, constrained, args,
               bound, lo, hi):
    """Full-batch SGD (heavy ball, `sgd_update`; SGLD noise when T > 0, grad_noise gsig);
    constrained: Riemannian heavy ball as `SGD.reference_step`."""
    d = x.shape[1]
    xi = np.zeros((hi - lo, d), x.dtype)
    xg = np.zeros((hi - lo, d), x.dtype)
    buf = noise_buffer(d, x)
    zero = like(0.0, x)
    mu, decay = like(momentum, x), like(wd, x)
    for t in range(t0, t0 + K):
        lr, T = sched(ls, t), sched(ts, t)
        sigma = like(cpu.noise_scale(lr, T), x)
        xb, vb = x[lo:hi], v[lo:hi]
        G = grad_block(xb, args)
        if gsig > 0:
            block_noise(xg, dstep, lo, t, 1, rng.GRAD_NOISE, k0, k1, rep0, buf)
            G = G + like(gsig, x) * xg
        if T > 0:
            block_noise(xi, dstep, lo, t, 1, rng.NOISE, k0, k1, rep0, buf)
        else:
            xi[:] = 0.0
        if constrained:
            dx, nv = cpu.sgd_update(zero, vb, project_block(xb, G), like(lr, x), mu, zero,
                                    sigma, xi)
            nx = retract_block(xb + project_block(xb, dx))
            commit2(x, v, nx, project_block(nx, nv), dstep, lo, t, bound)
        else:
            nx, nv = cpu.sgd_update(xb, vb, G, like(lr, x), mu, decay, sigma, xi)
            commit2(x, v, nx, nv, dstep, lo, t, bound)


def sgd_batch_driver(x, v, dstep, t0, K, k0, k1, rep0, ls, ts, momentum, wd, n, batch, iid,
                     subset, shuffled, lsig, gsig, args, bound, lo, hi):
    """Minibatch SGD on a finite sum, replica by replica: the reference's minibatch of each
    step (`minibatch_rows`, iid / subset / shuffled: `sampling_args`; batch 0: full batch),
    label shifts lsig eps_b
    (`label_shifts`), `batch_grad`, then `sgd_step` (momentum, weight decay, grad_noise gsig,
    temperature ts).  lsig, gsig: `noise_level`, ts: `temperature_code` (None: compiled
    without that noise)."""
    B = batch if batch > 0 else n
    for q in range(lo, hi):
        if dstep[q] >= 0:
            continue
        rep = np.uint64(rep0 + q)
        idx, keys, perm, epoch, g, nx, nv, buf, shift, lbuf = sgd_scratch(x, n, B)
        for t in range(t0, t0 + K):
            perm, epoch = minibatch_rows(idx, keys, perm, epoch, t, k0, k1, rep, n, B, batch == 0,
                                         iid, subset, shuffled)
            if lsig is not None:
                label_shifts(shift, t, k0, k1, rep, lsig, lbuf)
            batch_grad(x[q], idx, shift, args, g)
            if not sgd_step(x[q], v[q], g, t, k0, k1, rep, sched(ls, t), ts, momentum, wd, bound,
                            buf, nx, nv, gsig):
                dstep[q] = t + 1
                break


def adamw_driver(x, m, s, dstep, t0, K, rep0, ls, beta1, beta2, eps, wd, constrained, args,
                 bound, lo, hi):
    """Full-batch AdamW (`adamw_update`); constrained: tangent step, retraction, m projected."""
    d = x.shape[1]
    nx = np.empty((hi - lo, d), x.dtype)
    nm = np.empty((hi - lo, d), x.dtype)
    ns = np.empty((hi - lo, d), x.dtype)
    zero = like(0.0, x)
    b1, b2, ep, decay = like(beta1, x), like(beta2, x), like(eps, x), like(wd, x)
    a1, a2 = like(1.0 - beta1, x), like(1.0 - beta2, x)
    for t in range(t0, t0 + K):
        lr = like(sched(ls, t), x)
        c1 = like(1.0 - math.pow(beta1, t + 1), x)
        c2 = like(1.0 - math.pow(beta2, t + 1), x)
        xb = x[lo:hi]
        G = grad_block(xb, args)
        if constrained:
            G = project_block(xb, G)
        for r in range(hi - lo):
            for i in range(d):
                x0 = zero if constrained else xb[r, i]
                nx[r, i], nm[r, i], ns[r, i] = cpu.adamw_update(
                    x0, m[lo + r, i], s[lo + r, i], G[r, i], lr, b1, b2, a1, a2, ep, decay, c1,
                    c2)
        if constrained:
            new = retract_block(xb + project_block(xb, nx))
            commit3(x, m, s, new, project_block(new, nm), ns, dstep, lo, t, bound)
        else:
            commit3(x, m, s, nx, nm, ns, dstep, lo, t, bound)


def adamw_batch_driver(x, m, s, dstep, t0, K, k0, k1, rep0, ls, beta1, beta2, eps, wd, n, batch,
                       iid, subset, shuffled, args, bound, lo, hi):
    """Minibatch AdamW on a finite sum, replica by replica (`batch_grad` on the reference's
    minibatch of each step, `sampling_args`; batch 0: full batch)."""
    d = x.shape[1]
    B = batch if batch > 0 else n
    b1, b2, ep, decay = like(beta1, x), like(beta2, x), like(eps, x), like(wd, x)
    a1, a2 = like(1.0 - beta1, x), like(1.0 - beta2, x)
    ns = np.empty(d, x.dtype)
    for q in range(lo, hi):
        if dstep[q] >= 0:
            continue
        rep = np.uint64(rep0 + q)
        idx, keys, perm, epoch, g, nx, nm, _, shift, _ = sgd_scratch(x, n, B)
        for t in range(t0, t0 + K):
            perm, epoch = minibatch_rows(idx, keys, perm, epoch, t, k0, k1, rep, n, B, batch == 0,
                                         iid, subset, shuffled)
            batch_grad(x[q], idx, shift, args, g)
            lr = like(sched(ls, t), x)
            c1 = like(1.0 - math.pow(beta1, t + 1), x)
            c2 = like(1.0 - math.pow(beta2, t + 1), x)
            good = True
            for i in range(d):
                nx[i], nm[i], ns[i] = cpu.adamw_update(x[q, i], m[q, i], s[q, i], g[i], lr, b1, b2,
                                                       a1, a2, ep, decay, c1, c2)
                good = (good & cpu.within_bound(nx[i], bound) & cpu.within_bound(nm[i], bound)
                        & cpu.within_bound(ns[i], bound))
            if not good:
                dstep[q] = t + 1
                break
            for i in range(d):
                x[q, i] = nx[i]
                m[q, i] = nm[i]
                s[q, i] = ns[i]


def energy_driver(x, out, args, lo, hi):
    """out[lo:hi] <- U (float64) of rows lo..hi-1 of x, converted to float64 first, in
    sub-blocks of ~32 KiB of rows (the block functions' temporaries stay in L1/L2: one call on
    2^17 double-well rows was memory-bound, ~30 ns a row)."""
    sub = max(1, 4096 // x.shape[1])
    for a in range(lo, hi, sub):
        b = min(hi, a + sub)
        u = energy_block(x[a:b].astype(np.float64), args)
        for r in range(b - a):
            out[a + r] = u[r]


DRIVERS = ("overdamped_driver", "lm_driver", "heun_driver", "baoab_driver", "obabo_driver",
           "mala_driver", "sgd_driver", "sgd_batch_driver", "adamw_driver", "adamw_batch_driver",
           "energy_driver")


def compiled(potential_cls: type):
    """The drivers compiled for one family (a module object; each compiles per dtype on first
    call and is cached on disk under its own name)."""
    if potential_cls not in _COMPILED:
        h = FAMILIES[potential_cls]
        hooks = dict(grad_block=h.grad_block, energy_block=h.energy_block or no_energy_block,
                     project_block=h.project_block or tangent_identity,
                     retract_block=h.retract_block or retract_identity,
                     batch_grad=h.batch_grad or no_batch_grad)
        ns = SimpleNamespace(__name__=__name__, **{k: globals()[k] for k in DRIVERS}, **hooks)

        def compiler(fn):   # own name: own on-disk cache entry
            fn.__qualname__ = f"{fn.__qualname__}__{potential_cls.__name__}"
            return jit(fn)
        _COMPILED[potential_cls] = compile_functions(ns, DRIVERS + tuple(hooks), compiler)
    return _COMPILED[potential_cls]


@jit
def no_energy_block(xb, args):
    """The `energy_block` of a family without one (never called: nothing is registered)."""
    return np.full(xb.shape[0], np.nan)


@jit
def no_batch_grad(x, idx, shift, args, g):
    """The `batch_grad` of a family without minibatches (never called: the adapter refuses)."""
    g[:] = np.nan


# ---------------------------------------------------------------- adapters (backend "numba")

def thread_pool() -> ThreadPoolExecutor:
    """The kernels' shared pool of numba.get_num_threads() workers, made once per count (a
    pool made per call cost ~8 ms of thread starts)."""
    n = numba.get_num_threads()
    if n not in _POOLS:
        _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="langevin-sim kernels")
    return _POOLS[n]


def run_blocks(fn, M: int, hooks: Hooks, *args, rows: int = BLOCK) -> None:
    """fn(*args, lo, hi) over blocks of `rows` replicas on the thread pool (the drivers release
    the GIL); BLAS single-threaded meanwhile where the hooks call it.  Results do not depend
    on the split (every update is row by row)."""
    def block(lo):
        fn(*args, lo, min(M, lo + rows))
    with one_blas_thread() if hooks.blas else nullcontext():
        if M <= rows:
            block(0)
        else:
            list(thread_pool().map(block, range(0, M, rows)))


def _common(sim, prime: bool = True):
    """(drivers, hooks, args in the state dtype) of sim's potential family; with `prime`, the
    family's blocks the driver calls are compiled first (`_prime`)."""
    cls = type(sim.potential)
    hooks, args = FAMILIES[cls], FAMILIES[cls].args_of(sim.potential, sim.dtype)
    if prime:
        _prime(sim, hooks, args, isinstance(sim.dynamics, MALA))
    return compiled(cls), hooks, args


def _prime(sim, hooks: Hooks, args: tuple, energy: bool) -> None:
    """Call the family's gradient (and energy) block on one row of the state, once per family,
    dtype and dynamics per process: a cold run compiles them before its driver, while a helper
    process compiles the driver's `shared_callees` (`warmup.compile_aside`), which the
    driver's typing then loads from the cache (~2 s of a cold pair on two cores)."""
    key = (type(sim.potential), sim.dtype, type(sim.dynamics))
    if key in _PRIMED:
        return
    _PRIMED.add(key)
    xb = np.ascontiguousarray(sim.state["x"][:1])   # the driver's rows x[lo:hi]: C-contiguous
    with one_blas_thread() if hooks.blas else nullcontext():
        hooks.grad_block(xb, args)
        if energy:
            hooks.energy_block(xb, args)


def shared_callees(sim, fn) -> tuple:
    """What the kernel run by the adapter `fn` on `sim` calls that a helper process can
    compile meanwhile on a cold run (`compile_shared`): for a generic driver what it calls
    besides the family's blocks and compiles after them, the same for every family:
    `block_noise` with one ("noise1") or two ("noise2") steps' normals per call, MALA's
    `accept_word` ("accept"); none for the drivers of minibatches and AdamW (no such callee,
    or not primed) and for the families' own kernels."""
    if fn not in ADAPTERS.values() or isinstance(sim.dynamics, AdamW):
        return ()
    if isinstance(sim.dynamics, SGD):
        return () if sim.potential.n_samples is not None else ("noise1",)
    if isinstance(sim.dynamics, LeimkuhlerMatthews):
        return ("noise2",)
    return ("noise1", "accept") if isinstance(sim.dynamics, MALA) else ("noise1",)


def shared_signatures(dtype, jobs: tuple) -> list:
    """(dispatcher, signature) of the `shared_callees` `jobs` for states of `dtype`, with the
    argument types the kernels call them with (a literal step count or first row: Numba types
    the constant argument so)."""
    ft, i64, u64 = numba.from_dtype(np.dtype(dtype)), numba.types.int64, numba.types.uint64
    out = []
    for job in jobs:
        if job.startswith("noise"):
            out.append((block_noise, (numba.types.Array(ft, 2, "C"), numba.types.Array(i64, 1, "C"),
                                      i64, i64, numba.types.literal(int(job[5:])), i64, u64, u64,
                                      i64, numba.types.Array(ft, 1, "C"))))
        elif job == "accept":
            out.append((accept_word, (u64, u64, u64, i64)))
    return out


def compile_shared(dtype, jobs: tuple) -> None:
    """Compile (or load) `shared_signatures` (in the helper of `warmup.compile_aside`)."""
    for fn, sig in shared_signatures(dtype, jobs):
        fn.compile(sig)


def _langevin(name):
    """The adapter of an x-only Langevin driver (overdamped, Heun, Leimkuhler-Matthews)."""
    def fn(sim, t0, K, k0, k1):
        drv, hooks, args = _common(sim)
        dyn, x = sim.dynamics, sim.state["x"]
        run_blocks(getattr(drv, name), x.shape[0], hooks, x, sim.diverged_step, t0, K, k0, k1,
                   sim.first_replica, schedule_code(dyn.step), schedule_code(dyn.temperature),
                   args, sim.divergence_bound)
    fn.__name__ = fn.__qualname__ = f"generic_{name}"
    return fn


def _underdamped(name):
    """The adapter of an (x, p, g) underdamped driver (BAOAB, OBABO)."""
    def fn(sim, t0, K, k0, k1):
        drv, hooks, args = _common(sim)
        dyn, s = sim.dynamics, sim.state
        run_blocks(getattr(drv, name), s["x"].shape[0], hooks, s["x"], s["p"], s["g"],
                   sim.diverged_step, t0, K, k0, k1, sim.first_replica, schedule_code(dyn.step),
                   schedule_code(dyn.temperature), float(dyn.friction), float(dyn.mass), args,
                   sim.divergence_bound)
    fn.__name__ = fn.__qualname__ = f"generic_{name}"
    return fn


def generic_mala(sim, t0, K, k0, k1):
    drv, hooks, args = _common(sim)
    dyn, s = sim.dynamics, sim.state
    run_blocks(drv.mala_driver, s["x"].shape[0], hooks, s["x"], s["u"], s["g"], s["accepted"],
               sim.diverged_step, t0, K, k0, k1, sim.first_replica, schedule_code(dyn.step),
               schedule_code(dyn.temperature), args, sim.divergence_bound)


def generic_sgd(sim, t0, K, k0, k1):
    drv, hooks, args = _common(sim, prime=sim.potential.n_samples is None)
    dyn, s = sim.dynamics, sim.state
    ls, ts, M = schedule_code(dyn.lr), schedule_code(dyn.temperature), s["x"].shape[0]
    if sim.potential.n_samples is not None:   # a finite sum: minibatches (or all samples)
        if hooks.batch_grad is None:
            return _fallback(sim, t0, K, "minibatches")
        run_blocks(drv.sgd_batch_driver, M, hooks, s["x"], s["v"], sim.diverged_step, t0, K, k0,
                   k1, sim.first_replica, ls, temperature_code(dyn.temperature),
                   float(dyn.momentum), float(dyn.weight_decay), sim.potential.n_samples,
                   int(dyn.batch_size or 0), *sampling_args(dyn.sampling),
                   noise_level(dyn.label_noise), noise_level(dyn.grad_noise), args,
                   sim.divergence_bound)
    else:
        run_blocks(drv.sgd_driver, M, hooks, s["x"], s["v"], sim.diverged_step, t0, K, k0, k1,
                   sim.first_replica, ls, ts, float(dyn.momentum), float(dyn.weight_decay),
                   float(dyn.grad_noise), sim.potential.constrained, args, sim.divergence_bound)


def generic_adamw(sim, t0, K, k0, k1):
    drv, hooks, args = _common(sim, prime=False)
    dyn, s = sim.dynamics, sim.state
    coeffs = (schedule_code(dyn.lr), float(dyn.beta1), float(dyn.beta2), float(dyn.eps),
              float(dyn.weight_decay))
    n, M = sim.potential.n_samples, s["x"].shape[0]
    if n is not None:
        if hooks.batch_grad is None:
            return _fallback(sim, t0, K, "minibatches")
        run_blocks(drv.adamw_batch_driver, M, hooks, s["x"], s["m"], s["s"], sim.diverged_step, t0,
                   K, k0, k1, sim.first_replica, *coeffs, n, int(dyn.batch_size or 0),
                   *sampling_args(dyn.sampling), args, sim.divergence_bound)
    else:
        run_blocks(drv.adamw_driver, M, hooks, s["x"], s["m"], s["s"], sim.diverged_step, t0, K,
                   sim.first_replica, *coeffs, sim.potential.constrained, args,
                   sim.divergence_bound)


def _fallback(sim, t0, K, what: str) -> None:
    """The reference, with a warning once per pair, for options the drivers do not cover."""
    key = (type(sim.potential), type(sim.dynamics), what)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"numba backend's generic {type(sim.dynamics).__name__} driver does not "
                      f"cover {what} on {type(sim.potential).__name__}; running the NumPy "
                      "reference (correct, slower)", stacklevel=5)
    reference_advance(sim, t0, K)


ADAPTERS = {OverdampedLangevin: _langevin("overdamped_driver"), Heun: _langevin("heun_driver"),
            LeimkuhlerMatthews: _langevin("lm_driver"),
            UnderdampedLangevin: _underdamped("baoab_driver"), OBABO: _underdamped("obabo_driver"),
            MALA: generic_mala, SGD: generic_sgd, AdamW: generic_adamw}


_generic_registered = False     # set by `register_generic`: later `family` calls register too


def register_generic() -> None:
    """Register the generic drivers for every (family with hooks, dynamics) pair that has no
    numba kernel yet (dedicated kernels are faster and stay)."""
    global _generic_registered
    for pcls, hooks in FAMILIES.items():
        _register_family(pcls, hooks)
    _generic_registered = True


def _register_family(pcls: type, hooks: Hooks) -> None:
    for dcls, fn in ADAPTERS.items():
        if dcls is MALA and hooks.energy_block is None:
            continue
        if (pcls, dcls, "numba") not in registry.KERNELS:
            registry.register(pcls, dcls, "numba")(fn)


# ---------------------------------------------------------------- energies for recording

def energy_kernel(potential) -> Callable | None:
    """(x (M, d), out (M,) float64 or None) -> U(x) (M,) float64 (in `out` when given) by the
    family's compiled `energy_block` (rows converted to float64 per block, parallel over
    blocks), or None for a potential without hooks."""
    cls = type(potential)
    if cls not in FAMILIES or FAMILIES[cls].energy_block is None:
        return None
    if FAMILIES[cls].energy is not None:
        return FAMILIES[cls].energy(potential)
    drv, hooks = compiled(cls), FAMILIES[cls]
    args = hooks.args_of(potential, np.dtype(np.float64))

    def energy(x, out=None):
        x = np.ascontiguousarray(x)
        out = np.empty(x.shape[0]) if out is None else out
        # blocks of ~1 MiB of float64 rows (a row's energy is cheap), at least one a thread
        M = x.shape[0]
        rows = max(1, min(ENERGY_BLOCK_BYTES // (8 * x.shape[1]), -(-M // numba.get_num_threads())))
        run_blocks(drv.energy_driver, M, hooks, x, out, args, rows=rows)
        return out
    return energy


def has_record_kernels(potential) -> bool:
    """Whether records of `potential` use compiled code (`energy_kernel`, `observables_kernel`)."""
    hooks = FAMILIES.get(type(potential))
    return hooks is not None and (hooks.energy_block is not None or hooks.observables is not None)


def observables_kernel(potential) -> Callable | None:
    """The family's compiled record-time observables of `potential` (`Hooks.observables`),
    or None where it has none."""
    hooks = FAMILIES.get(type(potential))
    return None if hooks is None or hooks.observables is None else hooks.observables(potential)
