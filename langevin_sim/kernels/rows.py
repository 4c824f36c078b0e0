"""Fused numba-cuda kernels for the low-dimensional families: one thread per replica runs
many steps of every dynamics, compiled from the family's row function.

A family contributes one step function, ``row(x, g, w, args, idx, nb, lab, energy) -> U``:
plain scalar Python in the family's module (named in its `STEPS`, so every target compiles it)
that writes into g (d,) float64 the gradient at one replica x (d,) (x's dtype) of the loss over
the samples idx[:nb] (idx int64; nb = 0: the full loss, the only one of a family without
samples), each sample b's label shifted by lab[b] (float64; a family with labels only, and only
when nb > 0: SGD's label noise), and returns that loss (float64) when `energy` (else anything:
only MALA asks), with w (scratch, d) float64 scratch and args the tuple
``args_of(potential, xp, dtype)`` of the potential's coefficients (arrays of the array module
xp, scalars).  It registers it with ``row_family(Potential, "row", args_of, scratch, labels)``
at the end of its module (labels: whether its row applies lab, i.e. runs SGD's label noise).
`register_rows()` (called by `kernels/__init__`, after every family) registers `advance` on
"cuda" for every such family and every dynamics of `RULES` without a dedicated kernel.

The kernel (`row_kernel`, compiled per (family, dynamics, sampling, batch, dtype, d) on first
use) keeps the replica's state in per-thread arrays of compile-time size d (registers for
small d: the lane loops unroll), loaded once and stored once per launch of up to
CUDA_CALL_STEPS steps.  Per step: the step size (learning rate) and temperature from the
schedules' codes (`schedule_value`, float64, cast to the state's dtype as the reference casts
its Python scalars); SGD's and AdamW's minibatch (i.i.d.: `bounded_index` of MINIBATCH words
t B + b; epoch: a slice of the epoch's permutation, which the thread sorts itself at the
epoch's first step (keys PERMUTE word << 32 | i, unique, so their order is the stable argsort;
heapsort in local memory, at most MAX_PERM samples), or beyond MAX_PERM computed on the device
once per epoch by the generic path's code, a launch then running at most to the epoch's end;
subset: Floyd's algorithm on SUBSET words t B + k, as `dynamics.sgd.floyd_subset`); SGD's
label shifts (s_l times LABEL_NOISE normals at t B + b, in the state's dtype; a full batch
with label noise is the minibatch of all n samples in order, as in the reference); the row; the
dynamics' own scalar rules of `common.STEPS` lane by lane, with normals drawn in the kernel at
the reference's stream positions (n = t d + i; Leimkuhler-Matthews also (t + 1) d + i; OBABO
2 t d + i and 2 t d + d + i; SGD's GRAD_NOISE at t d + i), four per Philox block, each block
computed once (d = 1, 2, 4 with the kinds that draw NOISE t d + i every step: the block at the
first of its 4 / d steps, shifted by d after each, so that lane i reads its word i: no block
index, no run-time pick); MALA's energy, the
proposal's residuals summed in float64 and its ACCEPT word at n = t; then the divergence test
on every new value: a replica with a bad one keeps its state, gets dstep = t + 1 and stops.
First-passage observers are updated after every step (float64 membership in the reference's
summation order) and once more after a freeze, by a kernel compiled with their number of
regions (`watch`; the observer's code otherwise left out: it set the W1 kernel's register
count, 72 -> 45).  Why one thread per replica and not per
coordinate: four lanes share a Philox block, the freeze of a replica's lanes would need a
cross-thread vote each step, the gradient couples the lanes, and d = 1 (W1) has one lane per
replica anyway.

Not run here (`accepts`; the generic path runs them): d beyond MAX_D (local arrays would
spill; the generic path's array code suits large d), label noise on a full batch of more than
MAX_LABELS samples, constrained potentials.
"""
from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import numpy as np

from ..backends.registry import KERNELS, register
from ..dynamics import (MALA, OBABO, SGD, AdamW, Heun, LeimkuhlerMatthews, OverdampedLangevin,
                        UnderdampedLangevin)
from ..first_passage import STATE_KEYS as FP_KEYS
from .common import compile_steps, schedule_code

OVERDAMPED, BAOAB, HEUN, LM, SGD_, ADAMW, MALA_, OBABO_ = range(8)
# dynamics -> (kernel kind, its (M, d) state arrays after x, its (M,) state arrays)
RULES = {OverdampedLangevin: (OVERDAMPED, (), ()), UnderdampedLangevin: (BAOAB, ("p", "g"), ()),
         Heun: (HEUN, (), ()), LeimkuhlerMatthews: (LM, (), ()), SGD: (SGD_, ("v",), ()),
         AdamW: (ADAMW, ("m", "s"), ()), MALA: (MALA_, ("g",), ("u", "accepted")),
         OBABO: (OBABO_, ("p", "g"), ())}
FULL, IID, EPOCH, SUBSET = 0, 1, 2, 3   # how SGD / AdamW take samples (FULL: other dynamics)
cuda = None          # numba.cuda, set by `row_kernel` (the simulator swaps this global)
CUDA_CALL_STEPS = 4096   # steps per kernel launch (results do not depend on it)
MAX_D = 64               # coordinates per replica run here (local arrays: 8-10 rows of d)
MAX_LABELS = 1024        # label shifts per step held per thread (a full batch with label noise)
MAX_PERM = 1024          # samples whose epoch permutation a thread sorts itself (8 bytes each)
MAX_REGISTERS = 0        # registers per thread a row kernel may use; 0: the compiler's choice
                         # (design_changes 64, 75: gpu_throughput measures W1 capped at 40)


@dataclass(frozen=True)
class RowFamily:
    """A family's row function: `module`'s step function `row` (a name in its STEPS),
    `args_of(potential, xp, dtype) -> tuple`, the rows of float64 scratch it needs, and
    whether it applies label shifts (SGD's label noise)."""

    module: ModuleType
    row: str
    args_of: Callable
    scratch: int = 1
    labels: bool = False


FAMILIES: dict[type, RowFamily] = {}


def row_family(potential_cls: type, row: str, args_of: Callable, scratch: int = 1,
               labels: bool = False) -> None:
    """Give the row kernels `potential_cls`'s row function `row`, a step function of the
    calling family module (see the module docstring)."""
    module = sys.modules[sys._getframe(1).f_globals["__name__"]]
    if row not in module.STEPS:
        raise ValueError(f"{row!r} is not a step function of {module.__name__} (its STEPS)")
    FAMILIES[potential_cls] = RowFamily(module, row, args_of, max(1, int(scratch)), bool(labels))


def sampling(dyn) -> int:
    """FULL, IID, EPOCH or SUBSET: how the dynamics takes its samples."""
    if getattr(dyn, "batch_size", None) is None:
        return FULL
    return {"iid": IID, "epoch": EPOCH, "subset": SUBSET}[
        dyn.sampling]


def label_slots(dyn, pot) -> int:
    """Label shifts per step: 0 without label noise, else the batch size (n: full batch)."""
    if getattr(dyn, "label_noise", 0.0) <= 0:
        return 0
    return int(pot.n_samples) if sampling(dyn) == FULL else int(dyn.batch_size)


def accepts(sim) -> bool:
    """Whether the row kernel runs `sim`: d <= MAX_D, an unconstrained potential, float32 or
    float64, label noise only on a family whose row applies it and with at most MAX_LABELS
    shifts per step."""
    dyn, pot = sim.dynamics, sim.potential
    if pot.constrained or sim.state["x"].shape[1] > MAX_D or sim.dtype not in (np.float32,
                                                                               np.float64):
        return False
    nl = label_slots(dyn, pot)
    return not nl or (FAMILIES[type(pot)].labels and nl <= MAX_LABELS)


def register_rows() -> None:
    """Register `advance` for every row family and dynamics of RULES that has no dedicated
    "cuda" kernel (called once every family module is imported)."""
    for pcls in FAMILIES:
        for dcls in RULES:
            if (pcls, dcls, "cuda") not in KERNELS:
                register(pcls, dcls, "cuda", first_passage=True, accepts=accepts)(advance)


def permutes_in_kernel(sim) -> bool:
    """Whether each thread sorts its replica's epoch permutations itself (epoch sampling of at
    most MAX_PERM samples); else the device's row sort computes them between launches."""
    return sampling(sim.dynamics) == EPOCH and int(sim.potential.n_samples) <= MAX_PERM


def row_kernel(potential_cls: type, kind: int, f32: bool, d: int, samp: int = FULL, batch: int = 1,
               labels: bool = False, permute: int = 0, watch: int = 0,
               fixed: bool = False):
    """The fused kernel of `kind` for the row family `potential_cls`, float32 (f32) or float64
    states of d coordinates, minibatches of `batch` samples taken by `samp` (FULL, IID, EPOCH
    or SUBSET; with `labels`, FULL means all `batch` = n samples in order; EPOCH with
    `permute` = n > 0: each epoch's permutation of the n samples sorted in the kernel), label
    noise when `labels` (SGD), a first-passage observer of `watch` regions compiled in (0:
    none, and no observer code: W1 float32 72 -> 45 registers), for constant schedules of
    step size (learning rate) and temperature only when `fixed` (`constant_schedules`; the
    other schedules' code left out: W1 float32 45 -> 31), compiled on first use (cached)."""
    return _row_kernel(potential_cls, int(kind), bool(f32), int(d), int(samp), int(batch),
                       bool(labels), int(permute), int(watch), bool(fixed),
                       int(MAX_REGISTERS))


@functools.lru_cache(maxsize=None)
def _row_kernel(pcls, KIND, f32, D, SAMP, B, LABELS, NS, WATCH, FIXED, MAXREG):
    global cuda
    from .. import rng
    from ..backends import cuda_kernels as ck
    from ..backends import cuda_runtime as rt

    cuda = rt.cuda()
    fam = FAMILIES[pcls]
    dev = compile_steps(fam.module, cuda.jit(device=True), rt.primitives())
    row = getattr(dev, fam.row)
    bounded, observe = ck.device_rng().bounded_index, ck.observer(WATCH)
    NOISE, GNOISE = np.uint64(rng.NOISE), np.uint64(rng.GRAD_NOISE)
    MINIBATCH, ACCEPT, LABEL, SUBSET_ = (np.uint64(rng.MINIBATCH), np.uint64(rng.ACCEPT),
                                         np.uint64(rng.LABEL_NOISE), np.uint64(rng.SUBSET))
    PERMUTE, LOW32 = np.uint64(rng.PERMUTE), np.uint64(0xFFFFFFFF)
    NK = max(NS, 1)                                      # an epoch's sort keys (NS = 0: none)
    residual2, log_alpha, uniform, accept = (dev.proposal_residual2, dev.mala_log_alpha,
                                             dev.accept_uniform, dev.mala_accept)
    NB_ = B if SAMP != FULL or LABELS else 0            # samples per step (0: all)
    ENERGY = KIND == MALA_
    ftype = np.float32 if f32 else np.float64
    sched, noise_scale, ok_ = dev.schedule_value, dev.noise_scale, dev.within_bound
    od_lane, od_update, heun, lm = (dev.overdamped_lane, dev.overdamped_update, dev.heun_update,
                                    dev.lm_update)
    first, last, coeffs = dev.baoab_first, dev.baoab_last, dev.baoab_coeffs
    ofirst, olast = dev.obabo_first, dev.obabo_last
    sgd_update, adamw_update = dev.sgd_update, dev.adamw_update
    S = fam.scratch
    NA = 0 if KIND in (OVERDAMPED, HEUN, LM) else D      # second state array (p, v, m, g)
    NB = D if KIND in (BAOAB, ADAMW, OBABO_) else 0      # third (g, s)
    NG = D if KIND == HEUN else 0                        # Heun's predictor gradient
    LA, LB, LG = max(NA, 1), max(NB, 1), max(NG, 1)      # local arrays' sizes

    @cuda.jit(device=True)
    def cast(v):
        return ftype(v)

    draw, word = ck.cached_draws(f32)        # normals / words with a cached Philox block
    pick, block_normals = ck.helpers()[0], ck._normals_fn(f32)
    # D = 1, 2, 4 with a kind that draws the NOISE normals t d + i every step: one Philox
    # block holds G = 4 / d whole steps; it is computed at the first of them and shifted down
    # by d after each, so that lane i reads word i (a compile-time pick; no block index kept)
    BLOCKS = KIND in (OVERDAMPED, BAOAB, HEUN, MALA_) and 4 % D == 0
    G = 4 // D if BLOCKS else 1
    state_bound = ck.state_bound(f32)

    @cuda.jit(device=True)
    def noise(i, k0, k1, rep, n, blk, z0, z1, z2, z3):
        """The NOISE normal of lane i at stream position n (= t d + i), as `draw`."""
        if BLOCKS:
            return pick(i, z0, z1, z2, z3), blk, z0, z1, z2, z3
        return draw(k0, k1, NOISE, rep, n, blk, z0, z1, z2, z3)

    @cuda.jit(device=True)
    def shift(z0, z1, z2, z3):
        """The block's words after a step of d lanes (G = 4: one word, G = 2: two)."""
        if G == 4:
            return z1, z2, z3, z3
        if G == 2:
            return z2, z3, z2, z3
        return z0, z1, z2, z3

    @cuda.jit(device=True)
    def sift(keys, root, end):
        """Restore the max-heap below `root` of keys[:end + 1]."""
        while 2 * root + 1 <= end:
            child = 2 * root + 1
            top = root
            if keys[top] < keys[child]:
                top = child
            if child + 1 <= end and keys[top] < keys[child + 1]:
                top = child + 1
            if top == root:
                return
            keys[root], keys[top] = keys[top], keys[root]
            root = top

    @cuda.jit(device=True)
    def permutation(k0, k1, rep, epoch, keys):
        """keys[:NS] <- the replica's keys (PERMUTE word e n + i << 32 | i) of epoch e, sorted
        ascending by heapsort: unique keys, so their order is `rng.epoch_permutation`'s stable
        argsort (the indices in the low 32 bits)."""
        blk = np.int64(-1)
        w0 = w1 = w2 = w3 = np.uint64(0)
        for i in range(NS):
            wd, blk, w0, w1, w2, w3 = word(k0, k1, PERMUTE, rep, epoch * NS + i, blk, w0, w1,
                                           w2, w3)
            keys[i] = (wd << np.uint64(32)) | np.uint64(i)
        for root in range((NS - 2) // 2, -1, -1):
            sift(keys, root, NS - 1)
        for end in range(NS - 1, 0, -1):
            keys[0], keys[end] = keys[end], keys[0]
            sift(keys, 0, end - 1)

    @cuda.jit(**({"max_registers": MAXREG} if MAXREG and not rt.simulated() else {}))
    def kernel(x, a, b, u, acc, dstep, t0, K, k0, k1, rep0, es, ts, q0, q1, q2, q3, bound, args,
               perm, nsamp, kinds, vecs, thr, fe, fx, lc, cr, ins):
        """K steps of replica r from t0; a, b: the second and third (M, d) state arrays, u, acc:
        MALA's (M,) energies and acceptance counts; es, ts: schedule codes (step size or
        learning rate, temperature; AdamW: ts unused); q0..q3 per kind: BAOAB, OBABO friction, mass;
        SGD momentum, weight decay, grad_noise, label_noise; AdamW beta1, beta2, eps, weight
        decay; perm (M, nsamp): the epoch's permutations (EPOCH), nsamp the potential's
        samples."""
        r = cuda.grid(1)
        if r >= x.shape[0]:
            return
        xs = cuda.local.array(D, ftype)
        xn = cuda.local.array(D, ftype)
        As = cuda.local.array(LA, ftype)
        An = cuda.local.array(LA, ftype)
        Bs = cuda.local.array(LB, ftype)
        Bn = cuda.local.array(LB, ftype)
        zs = cuda.local.array(LG, ftype)
        g = cuda.local.array(D, np.float64)
        g0 = cuda.local.array(LG, np.float64)
        w = cuda.local.array((S, D), np.float64)
        idx = cuda.local.array(B, np.int64)
        lab = cuda.local.array(B, np.float64)     # label shifts (zeros without label noise)
        keys = cuda.local.array(NK, np.uint64)
        for j in range(B):
            lab[j] = 0.0
        for i in range(D):
            xs[i] = x[r, i]
            if NA > 0:
                As[i] = a[r, i]
            if NB > 0:
                Bs[i] = b[r, i]
        if dstep[r] >= 0:          # frozen before this call
            if WATCH:
                observe(xs, r, kinds, vecs, thr, fe, fx, lc, cr, ins, t0 + 1)
            return
        zero = cast(0.0)
        rep = rep0 + np.uint64(r)
        blk = blk2 = blkw = blkl = np.int64(-1)      # one cached Philox block per stream
        z0 = z1 = z2 = z3 = u0 = u1 = u2 = u3 = l0 = l1 = l2 = l3 = zero
        w0 = w1 = w2 = w3 = np.uint64(0)
        ur = u[r] if ENERGY else 0.0
        c0, c1_, c2_, c3_ = cast(q0), cast(q1), cast(q2), cast(q3)   # SGD: mu, decay, gsig, lsig
        if LABELS and SAMP == FULL:
            for j in range(B):
                idx[j] = j
        a1, a2 = cast(1.0 - q0), cast(1.0 - q1)    # AdamW: 1 - beta1, 1 - beta2 (`complements`)
        # the step size and temperature, the step size in the state's dtype (and half of it),
        # the noise scale as the kind uses it (LM: sigma / 2) and BAOAB's (c1, c2), from
        # float64 (a sqrt; an exp): once where both schedules are constant (FIXED: kind 0
        # compiled in, so the schedules' other kinds are not), else every step
        bs = state_bound(bound)         # for values of the state's dtype (U, counts: bound)
        sc = bc1 = bc2 = ec = eh = zero
        eta = T = 0.0
        fresh = True
        t, t_end = t0 - 1, t0 + K - 1   # (a `while` loop: see `toynets`' kernel on `range`)
        while t < t_end:
            t += 1
            if BLOCKS and (fresh or (t & (G - 1)) == 0):
                z0, z1, z2, z3 = block_normals(k0, k1, NOISE, rep,
                                               np.uint64(t * D) >> np.uint64(2))
                j = t & (G - 1)         # the launch's first step inside the block
                while j > 0:
                    z0, z1, z2, z3 = shift(z0, z1, z2, z3)
                    j -= 1
            if fresh or not FIXED:     # (the codes' loads too: stores in the loop keep the
                fresh = False          # compiler from hoisting)
                eta = sched(0 if FIXED else int(es[0]), es[1], es[2], es[3], t)
                T = 0.0 if KIND == ADAMW else sched(0 if FIXED else int(ts[0]), ts[1], ts[2],
                                                    ts[3], t)
                ec, eh = cast(eta), cast(0.5 * eta)
                sig = noise_scale(eta, T)
                sc = cast(0.5 * sig) if KIND == LM else cast(sig)
                if KIND == BAOAB or KIND == OBABO_:    # (OBABO: O's half step)
                    c1, c2 = coeffs(eta if KIND == BAOAB else 0.5 * eta, q0, T, q1)
                    bc1, bc2 = cast(c1), cast(c2)
            if SAMP == IID:
                for j in range(B):
                    wd, blkw, w0, w1, w2, w3 = word(k0, k1, MINIBATCH, rep, np.int64(t) * B + j,
                                                    blkw, w0, w1, w2, w3)
                    idx[j] = np.int64(bounded(wd, nsamp))
            elif SAMP == EPOCH and NS:
                j0 = (t % (NS // B)) * B
                if t == t0 or j0 == 0:
                    permutation(k0, k1, rep, np.int64(t // (NS // B)), keys)
                for j in range(B):
                    idx[j] = np.int64(keys[j0 + j] & LOW32)
            elif SAMP == EPOCH:
                j0 = (t % (nsamp // B)) * B
                for j in range(B):
                    idx[j] = perm[r, j0 + j]
            elif SAMP == SUBSET:         # Floyd's algorithm, as dynamics.sgd.floyd_subset
                for j in range(B):
                    wd, blkw, w0, w1, w2, w3 = word(k0, k1, SUBSET_, rep, np.int64(t) * B + j,
                                                    blkw, w0, w1, w2, w3)
                    top = nsamp - B + j
                    c = np.int64(bounded(wd, top + 1))
                    for i in range(j):
                        if idx[i] == c:
                            c = np.int64(top)
                            break
                    idx[j] = c
            if LABELS:
                for j in range(B):
                    z, blkl, l0, l1, l2, l3 = draw(k0, k1, LABEL, rep, np.int64(t) * B + j,
                                                   blkl, l0, l1, l2, l3)
                    lab[j] = np.float64(c3_ * z)
            if KIND != MALA_:
                row(xs, g, w, args, idx, NB_, lab, False)
            good = True
            if KIND == OVERDAMPED or KIND == LM:
                e, s1 = ec, sc
                for i in range(D):
                    n = np.int64(t) * D + i
                    z, blk, z0, z1, z2, z3 = noise(i, k0, k1, rep, n, blk, z0, z1, z2, z3)
                    if KIND == OVERDAMPED:
                        v = od_lane(xs[i], cast(g[i]), z, e, s1, zero)
                    else:
                        z2n, blk2, u0, u1, u2, u3 = draw(k0, k1, NOISE, rep, n + D, blk2, u0, u1,
                                                         u2, u3)
                        v = xs[i] + lm(zero, cast(g[i]), e, s1, z, z2n)
                    xn[i] = v
                    good = good and ok_(v, bs)
            elif KIND == HEUN:
                e, h, s1 = ec, eh, sc
                for i in range(D):
                    n = np.int64(t) * D + i
                    z, blk, z0, z1, z2, z3 = noise(i, k0, k1, rep, n, blk, z0, z1, z2, z3)
                    zs[i] = z
                    g0[i] = g[i]
                    xn[i] = xs[i] + od_update(zero, cast(g[i]), e, s1, z)
                row(xn, g, w, args, idx, NB_, lab, False)
                for i in range(D):
                    v = xs[i] + heun(zero, cast(g0[i]), cast(g[i]), h, s1, zs[i])
                    xn[i] = v
                    good = good and ok_(v, bs)
            elif KIND == BAOAB:
                h, inv_m, s1, s2 = eh, cast(1.0 / q1), bc1, bc2
                for i in range(D):
                    n = np.int64(t) * D + i
                    z, blk, z0, z1, z2, z3 = noise(i, k0, k1, rep, n, blk, z0, z1, z2, z3)
                    xv, pv = first(xs[i], As[i], Bs[i], h, inv_m, s1, s2, z)
                    xn[i] = xv
                    An[i] = pv
                row(xn, g, w, args, idx, NB_, lab, False)
                for i in range(D):
                    gv = cast(g[i])
                    pv = last(An[i], gv, h)
                    An[i] = pv
                    Bn[i] = gv
                    good = good and ok_(xn[i], bs) and ok_(pv, bs) and ok_(gv, bs)
            elif KIND == OBABO_:   # the 2d normals of step t: 2 t d + i (O B A), + d (B O)
                h, inv_m, s1, s2 = eh, cast(1.0 / q1), bc1, bc2
                for i in range(D):
                    n = np.int64(t) * (2 * D) + i
                    z, blk, z0, z1, z2, z3 = draw(k0, k1, NOISE, rep, n, blk, z0, z1, z2, z3)
                    xv, pv = ofirst(xs[i], As[i], Bs[i], h, ec, inv_m, s1, s2, z)
                    xn[i] = xv
                    An[i] = pv
                row(xn, g, w, args, idx, NB_, lab, False)
                for i in range(D):
                    n = np.int64(t) * (2 * D) + D + i
                    z, blk, z0, z1, z2, z3 = draw(k0, k1, NOISE, rep, n, blk, z0, z1, z2, z3)
                    gv = cast(g[i])
                    pv = olast(An[i], gv, h, s1, s2, z)
                    An[i] = pv
                    Bn[i] = gv
                    good = good and ok_(xn[i], bs) and ok_(pv, bs) and ok_(gv, bs)
            elif KIND == SGD_:
                lr, s1 = ec, sc
                for i in range(D):
                    n = np.int64(t) * D + i
                    gi = cast(g[i])
                    if q2 > 0:
                        zg, blk2, u0, u1, u2, u3 = draw(k0, k1, GNOISE, rep, n, blk2, u0, u1, u2,
                                                        u3)
                        gi = gi + c2_ * zg
                    z = zero
                    if T > 0:
                        z, blk, z0, z1, z2, z3 = draw(k0, k1, NOISE, rep, n, blk, z0, z1, z2, z3)
                    xv, vv = sgd_update(xs[i], As[i], gi, lr, c0, c1_, s1, z)
                    xn[i] = xv
                    An[i] = vv
                    good = good and ok_(xv, bs) and ok_(vv, bs)
            elif KIND == MALA_:
                e, s1 = ec, sc
                for i in range(D):
                    n = np.int64(t) * D + i
                    z, blk, z0, z1, z2, z3 = noise(i, k0, k1, rep, n, blk, z0, z1, z2, z3)
                    xn[i] = od_update(xs[i], As[i], e, s1, z)
                uy = row(xn, g, w, args, idx, 0, lab, True)
                fwd = 0.0
                bwd = 0.0
                for i in range(D):
                    An[i] = cast(g[i])
                    fwd += residual2(xn[i], xs[i], As[i], e)
                    bwd += residual2(xs[i], xn[i], An[i], e)
                wd, blkw, w0, w1, w2, w3 = word(k0, k1, ACCEPT, rep, np.int64(t), blkw, w0, w1,
                                                w2, w3)
                take = accept(uniform(wd), log_alpha(uy, ur, bwd, fwd, eta, T))
                if take:
                    for i in range(D):
                        good = good and ok_(xn[i], bs) and ok_(An[i], bs)
                    good = good and ok_(uy, bound)     # (not the count acc)
                else:
                    for i in range(D):
                        good = good and ok_(xs[i], bs) and ok_(As[i], bs)
                        xn[i] = xs[i]
                        An[i] = As[i]
                    good = good and ok_(ur, bound)
                if good and take:
                    ur = uy
                    acc[r] += 1.0
            else:   # ADAMW
                lr = ec
                c1, c2 = cast(1.0 - math.pow(q0, t + 1)), cast(1.0 - math.pow(q1, t + 1))
                for i in range(D):
                    xv, mv, sv = adamw_update(xs[i], As[i], Bs[i], cast(g[i]), lr, c0, c1_,
                                              a1, a2, c2_, c3_, c1, c2)
                    xn[i] = xv
                    An[i] = mv
                    Bn[i] = sv
                    good = good and ok_(xv, bs) and ok_(mv, bs) and ok_(sv, bs)
            if not good:
                dstep[r] = t + 1
                if WATCH:
                    observe(xs, r, kinds, vecs, thr, fe, fx, lc, cr, ins, t + 1)
                break
            for i in range(D):
                xs[i] = xn[i]
                if NA > 0:
                    As[i] = An[i]
                if NB > 0:
                    Bs[i] = Bn[i]
            if BLOCKS:
                z0, z1, z2, z3 = shift(z0, z1, z2, z3)
            if WATCH:
                observe(xs, r, kinds, vecs, thr, fe, fx, lc, cr, ins, t + 1)
        for i in range(D):
            x[r, i] = xs[i]
            if NA > 0:
                a[r, i] = As[i]
            if NB > 0:
                b[r, i] = Bs[i]
        if ENERGY:
            u[r] = ur
    return kernel


def kernel_of(sim):
    """The row kernel `advance` launches for `sim` (which `accepts` takes), one thread per
    replica; its arguments' types are `cuda_signature(sim)`."""
    pot, dyn = sim.potential, sim.dynamics
    samp, nl = sampling(dyn), label_slots(dyn, pot)
    return row_kernel(type(pot), RULES[type(dyn)][0], sim.dtype == np.float32,
                      sim.state["x"].shape[1], samp,
                      nl or (1 if samp == FULL else int(dyn.batch_size)), nl > 0,
                      int(pot.n_samples) if permutes_in_kernel(sim) else 0,
                      len(getattr(sim, "first_passage", None) or ()),
                      constant_schedules(dyn))


def schedule_codes(dyn) -> tuple:
    """The `schedule_code`s (es, ts) of the dynamics' step size (SGD, AdamW: learning rate)
    and temperature (AdamW: es again)."""
    kind = RULES[type(dyn)][0]
    es = schedule_code(dyn.lr if kind in (SGD_, ADAMW) else dyn.step)
    return es, es if kind == ADAMW else schedule_code(dyn.temperature)


def constant_schedules(dyn) -> bool:
    """Whether the step size (learning rate) and temperature are constant (schedule kind 0):
    the row kernel then evaluates them once per launch, compiled without the other kinds."""
    return all(code[0] == 0 for code in schedule_codes(dyn))


def cuda_signature(sim) -> tuple:
    """The numba types of the arguments `advance` launches `kernel_of(sim)` with
    (`launch_types`, the family's `args_of` typed as its NumPy values) -- for compiling it
    ahead of a launch (`numba.cuda.compile_ptx`)."""
    import numba
    args = FAMILIES[type(sim.potential)].args_of(sim.potential, np, sim.dtype)
    return launch_types(sim.dtype == np.float32, numba.typeof(tuple(args)))


def launch_types(f32: bool, args) -> tuple:
    """The numba types of a `row_kernel`'s arguments: x and two more (M, d) state arrays, two
    (M,) float64 ones, dstep, the step range and Philox keys, the schedules' codes, q0..q3 and
    the bound, the family's arguments (numba type `args`), the epoch permutations, n, the
    first-passage regions and state."""
    from numba import float32, float64, int64, uint64
    W, I1, I2, F1 = (float32 if f32 else float64)[:, ::1], int64[::1], int64[:, ::1], \
        float64[::1]
    return (W, W, W, F1, F1, I1, int64, int64, uint64, uint64, uint64, F1, F1) + \
        (float64,) * 5 + (args, I2, int64, I1, float64[:, ::1], F1) + (I2,) * 5


def kernel_arguments(run, sim) -> tuple:
    """(es, ts, q0, q1, q2, q3) of `row_kernel` for the run's dynamics."""
    dyn, xp = sim.dynamics, run.xp
    kind = RULES[type(dyn)][0]
    es, ts = schedule_codes(dyn)
    q = (0.0, 0.0, 0.0, 0.0)
    if kind in (BAOAB, OBABO_):
        q = (float(dyn.friction), float(dyn.mass), 0.0, 0.0)
    elif kind == SGD_:
        q = (float(dyn.momentum), float(dyn.weight_decay), float(dyn.grad_noise),
             float(dyn.label_noise))
    elif kind == ADAMW:
        q = (float(dyn.beta1), float(dyn.beta2), float(dyn.eps), float(dyn.weight_decay))
    return (xp.asarray(es), xp.asarray(ts)) + q


def advance(run, sim, t0: int, K: int) -> None:
    """Steps t0 .. t0+K-1 of `sim` on the device state of `run` by `row_kernel` (one thread
    per replica), in launches of at most CUDA_CALL_STEPS steps (epoch sampling of more than
    MAX_PERM samples: at most to the epoch's end, after its permutations were computed on the
    device)."""
    from ..backends import cuda_runtime as rt

    xp, x, pot, dyn = run.xp, run.state["x"], sim.potential, sim.dynamics
    M, d = x.shape
    fam = FAMILIES[type(pot)]
    _, rows2, rows1 = RULES[type(dyn)]
    samp = sampling(dyn)
    B = label_slots(dyn, pot) or (1 if samp == FULL else int(dyn.batch_size))
    nsamp = int(pot.n_samples or 0)
    inside = permutes_in_kernel(sim)
    kernel = kernel_of(sim)
    extra = [run.state[k] for k in rows2]
    while len(extra) < 2:        # distinct unused arrays (the simulator copies each back)
        extra.append(xp.empty((0, d), x.dtype))
    extra += [run.state[k] for k in rows1] or [xp.empty(0), xp.empty(0)]
    key = ("rows", x.dtype)
    if key not in run.pot.cache:
        run.pot.cache[key] = rt.kernel_arrays(*fam.args_of(pot, xp, x.dtype))
    args = run.pot.cache[key]
    if run.regions is not None:
        regions, fp = run.regions, [run.state[k] for k in FP_KEYS]
    else:
        regions = (xp.zeros(0, np.int64), xp.zeros((0, d)), xp.zeros(0))
        fp = [xp.zeros((0, 0), np.int64) for _ in FP_KEYS]
    coded = kernel_arguments(run, sim)
    t = t0
    while t < t0 + K:
        end = min(t0 + K, t + CUDA_CALL_STEPS)
        if samp == EPOCH and not inside:
            per_epoch = nsamp // B
            epoch = t // per_epoch
            perm = run.permutations(epoch)
            end = min(end, (epoch + 1) * per_epoch)
        else:
            perm = xp.zeros((0, 0), np.int64)
        rt.launch(kernel, M, x, *extra, run.dstep, int(t), int(end - t), run.k0, run.k1,
                  run.rep0, *coded, run.bound, args, perm, nsamp, *regions, *fp)
        t = end
