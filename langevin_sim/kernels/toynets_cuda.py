"""TeacherStudentMLP x SGD on the cuda backend: the fused numba-cuda kernel (the "CUDA kernels
(backend "cuda")" section of `kernels/toynets.py`, in a module of its own until merged there).

One block of 32 threads (one warp) per replica runs many SGD steps per launch; the replica's
parameters stay on chip for the whole launch.  Lane l owns hidden units j = l, l + 32, ...:
their W1 row, b1_j and W2_j, and the velocities of these, in per-thread arrays (registers);
every lane keeps b2 and its velocity (the same values, computed redundantly).  Per step, with
a block barrier between phases (`syncthreads`: a one-warp block, and what the simulator has):

1. the B sample indices of step t into shared memory, lanes over batch slots: i.i.d. draws
   `bounded_index` of MINIBATCH word t B + b ("iid"), slot (t mod n/B) B + b of the epoch's
   permutation ("epoch": `DeviceRun.permutations`, the generic path's stable sort of PERMUTE
   words, computed on the device once per epoch; a launch runs to the epoch's end), or b
   (full batch);
2. the batch's input rows gathered into shared A (B, d_in) (consecutive lanes read
   consecutive entries of a row: coalesced; the dataset is shared by every replica and stays
   in L1/L2);
3. forward, lanes over hidden units: z_bj = (sum_i A_bi W1_ji) + b1_j, kept in shared S
   (B, h + 1) (tanh: h = tanh z, since phi' = 1 - h^2 needs only h; relu, quadratic: z);
4. read-out, lanes over batch slots: out_b = (sum_j phi_bj W2_j) + b2 (W2 mirrored in shared
   memory), dout_b = (out_b - y_b) / B into shared;
5. backward, lanes over hidden units, samples summed in order b = 0 .. B - 1 in scalar
   accumulators: dz_bj = (dout_b W2_j) phi'_bj (written over column j of S), db1_j, dW2_j =
   sum_b dout_b h_bj, then dW1_ji = sum_b dz_bj A_bi; db2 = sum_b dout_b on every lane;
6. the owned parameters' normals at the reference's stream positions t d + p (purpose NOISE,
   only when the temperature of step t is > 0; each Philox block once), the update
   `sgd_update` (dynamics/sgd.py, compiled for numba-cuda by `compile_steps`), the divergence
   test `within_bound` of the new x and v, and a block vote (`syncthreads_and`): a good step
   is committed, a bad one freezes the replica (dstep = t + 1, its state untouched) and ends
   its launch.

The per-thread arrays are indexed only in loops of compile-time length, so that NVVM unrolls
them and keeps parameters, velocities and gradients in registers (W4: only the 18 normals go
to local memory; a default test compiles the kernel to PTX and checks this).

Learning rate and temperature come from the schedules' codes per step (`schedule_value`,
float64, cast to the state's dtype as the reference casts its Python scalars).  Shared memory
per replica: (B d_in + B (h + 1) + h + B) items + 8 B bytes, at most 48 KiB (W4 in float64:
13 KiB).  Options the kernel does not run take the generic path (`accepts`): sampling="subset",
label_noise, grad_noise, dtypes other than float32 and float64, batches whose shared memory
exceeds the limit, first-passage observers.  Results equal the reference to rounding (the
sums are the reference's, in another order): float64 to ~1e-12 relative, float32 to its
rounding; the same divergence flags; a replica's bits do not depend on the others.
"""
from __future__ import annotations

import functools
import math
import sys

import numpy as np

from ..backends.registry import register
from ..dynamics import SGD
from ..dynamics.sgd import SAMPLING_CODES
from ..potentials.toynets import ACTIVATIONS, TeacherStudentMLP
from .common import compile_steps, schedule_code

STEPS = ()           # the shared rules suffice: `sgd_update`, `within_bound`, schedules
cuda = None          # numba.cuda, set by `cuda_kernel` (the simulator swaps this global)
WARP = 32            # threads per block: one warp per replica
CALL_STEPS = 4096    # steps per launch with i.i.d. or full batches (results do not depend on it)
SHARED_BYTES = 48 * 1024   # static shared memory of a block
EPOCH, IID, FULL = SAMPLING_CODES["epoch"], SAMPLING_CODES["iid"], -1
TANH, RELU = ACTIVATIONS["tanh"], ACTIVATIONS["relu"]


def shared_bytes(d_in: int, hidden: int, B: int, itemsize: int) -> int:
    """Shared memory of one replica's block (bytes): inputs A (B, d_in), activations
    (B, hidden + 1), W2 (hidden,), dout (B,) in the state's dtype, indices (B,) int64."""
    return itemsize * (B * d_in + B * (hidden + 1) + hidden + B) + 8 * B


def batch_of(sim) -> int:
    """Samples per step: the batch size, or n for full batches."""
    B = sim.dynamics.batch_size
    return sim.potential.n_samples if B is None else int(B)


def accepts(sim) -> bool:
    """Whether the fused kernel runs `sim` (else the generic path does): sampling "iid" or
    "epoch" (or full batch), no label or gradient noise, float32 / float64, and one replica's
    shared memory (`shared_bytes`) within `SHARED_BYTES`."""
    dyn, pot = sim.dynamics, sim.potential
    if dyn.label_noise > 0 or dyn.grad_noise > 0 or pot.constrained:
        return False
    if dyn.batch_size is not None and dyn.sampling not in ("iid", "epoch"):
        return False
    if sim.dtype not in (np.float32, np.float64):
        return False
    return shared_bytes(pot.d_in, pot.hidden, batch_of(sim), sim.dtype.itemsize) <= SHARED_BYTES


def cuda_kernel(f32: bool, d_in: int, hidden: int, B: int):
    """The fused kernel for float32 (f32) or float64 states of a net (d_in, hidden) and B
    samples per step, compiled on first use (cached)."""
    return _cuda_kernel(bool(f32), int(d_in), int(hidden), int(B))


@functools.lru_cache(maxsize=None)
def _cuda_kernel(f32, DIN, H, B):
    global cuda
    from .. import rng
    from ..backends import cuda_kernels as ck
    from ..backends import cuda_runtime as rt

    cuda = rt.cuda()
    dev = compile_steps(sys.modules[__name__], cuda.jit(device=True), rt.primitives())
    bits = ck.device_rng()
    bn, bw, bi = ck._normals_fn(f32), bits.block_words, bits.bounded_index
    pick = ck.helpers()[0]
    sched, noise_scale, upd, ok_ = dev.schedule_value, dev.noise_scale, dev.sgd_update, \
        dev.within_bound
    NOISE, MINIBATCH = np.uint64(rng.NOISE), np.uint64(rng.MINIBATCH)
    ftype = np.float32 if f32 else np.float64
    zero, one, two, fB = ftype(0), ftype(1), ftype(2), ftype(B)
    E = DIN + 2                          # parameters per hidden unit: W1 row, b1_j, W2_j
    HPL = -(-H // WARP)                  # hidden units per lane
    SPL = -(-B // WARP)                  # batch slots per lane
    NPL = HPL * E
    HP = H + 1                           # activation rows padded: step 4 reads them row-wise
    D = H * DIN + 2 * H + 1

    @cuda.jit(device=True)
    def cast(v):
        return ftype(v)

    @cuda.jit(device=True)
    def slot(j, k):
        """Flat parameter index of entry k of hidden unit j ([W1 row, b1_j, W2_j])."""
        if k < DIN:
            return j * DIN + k
        if k == DIN:
            return H * DIN + j
        return H * DIN + H + j

    @cuda.jit(device=True)
    def stored(z, kind):
        """What S keeps of a pre-activation z: tanh z (tanh), z (relu, quadratic)."""
        if kind == TANH:
            return cast(math.tanh(z))
        return z

    @cuda.jit(device=True)
    def unit(s, kind):
        """(phi(z), phi'(z)) from the stored value s, as `potentials.toynets.act`, `act_d1`."""
        if kind == TANH:
            return s, one - s * s
        if kind == RELU:
            if s > zero:
                return s * one, one
            return s * zero, zero
        return s * s, two * s

    @cuda.jit
    def kernel(x, v, dstep, t0, K, k0, k1, rep0, es, ts, mom, wd, bound, inputs, labels, perm,
               per_epoch, mode, kind):
        r = cuda.blockIdx.x
        lane = cuda.threadIdx.x
        if dstep[r] >= 0:                 # frozen before this launch (uniform in the block)
            return
        A = cuda.shared.array((B, DIN), ftype)
        S = cuda.shared.array((B, HP), ftype)
        W2 = cuda.shared.array(H, ftype)
        dout = cuda.shared.array(B, ftype)
        idx = cuda.shared.array(B, np.int64)
        P = cuda.local.array(NPL, ftype)    # owned parameters, velocities, gradient / new x,
        V = cuda.local.array(NPL, ftype)    # new v, normals
        G = cuda.local.array(NPL, ftype)
        VN = cuda.local.array(NPL, ftype)
        XI = cuda.local.array(NPL, ftype)
        for q in range(HPL):
            j = lane + WARP * q
            if j < H:
                for k in range(E):
                    P[q * E + k] = x[r, slot(j, k)]
                    V[q * E + k] = v[r, slot(j, k)]
                W2[j] = P[q * E + DIN + 1]
        b2, vb2 = x[r, D - 1], v[r, D - 1]
        rep = rep0 + np.uint64(r)
        cuda.syncthreads()
        for t in range(t0, t0 + K):
            for s in range(SPL):          # 1. sample indices
                b = lane + WARP * s
                if b < B:
                    if mode == IID:
                        n = np.int64(t) * B + b
                        blk = n // 4
                        w0, w1, w2, w3 = bw(k0, k1, MINIBATCH, rep, np.uint64(blk))
                        idx[b] = bi(pick(n - 4 * blk, w0, w1, w2, w3), inputs.shape[0])
                    elif mode == EPOCH:
                        idx[b] = perm[r, (t % per_epoch) * B + b]
                    else:
                        idx[b] = b
            cuda.syncthreads()
            for e in range(lane, B * DIN, WARP):    # 2. gather the batch's inputs
                b = e // DIN
                A[b, e - b * DIN] = inputs[idx[b], e - b * DIN]
            cuda.syncthreads()
            for q in range(HPL):          # 3. forward, lanes over hidden units
                j = lane + WARP * q
                if j < H:
                    for b in range(B):
                        z = zero
                        for i in range(DIN):
                            z += A[b, i] * P[q * E + i]
                        S[b, j] = stored(z + P[q * E + DIN], kind)
            cuda.syncthreads()
            for s in range(SPL):          # 4. read-out and loss head, lanes over samples
                b = lane + WARP * s
                if b < B:
                    o = zero
                    for j in range(H):
                        o += unit(S[b, j], kind)[0] * W2[j]
                    dout[b] = (o + b2 - labels[idx[b]]) / fB
            cuda.syncthreads()
            gb2 = zero                    # 5. backward, lanes over hidden units
            for b in range(B):
                gb2 += dout[b]
            for q in range(HPL):
                j = lane + WARP * q
                if j < H:
                    w2, gb1, gw2 = P[q * E + DIN + 1], zero, zero
                    for b in range(B):
                        g = dout[b]
                        h, d1 = unit(S[b, j], kind)
                        dz = (g * w2) * d1
                        gb1 += dz
                        gw2 += g * h
                        S[b, j] = dz          # column j is this lane's: dZ replaces phi
                    for i in range(DIN):
                        acc = zero
                        for b in range(B):
                            acc += S[b, j] * A[b, i]
                        G[q * E + i] = acc
                    G[q * E + DIN] = gb1
                    G[q * E + DIN + 1] = gw2
            eta = sched(int(es[0]), es[1], es[2], es[3], t)   # 6. update, test, vote
            T = sched(int(ts[0]), ts[1], ts[2], ts[3], t)
            lr, sigma, noisy = cast(eta), cast(noise_scale(eta, T)), T > 0
            xb2 = zero
            if noisy:                     # normals at t d + p, each Philox block once
                cached = np.int64(-1)
                z0 = z1 = z2 = z3 = zero
                for q in range(HPL):
                    j = lane + WARP * q
                    if j < H:
                        for k in range(E):
                            n = np.int64(t) * D + slot(j, k)
                            blk = n // 4
                            if blk != cached:
                                z0, z1, z2, z3 = bn(k0, k1, NOISE, rep, np.uint64(blk))
                                cached = blk
                            XI[q * E + k] = pick(n - 4 * blk, z0, z1, z2, z3)
                n = np.int64(t) * D + D - 1
                blk = n // 4
                z0, z1, z2, z3 = bn(k0, k1, NOISE, rep, np.uint64(blk))
                xb2 = pick(n - 4 * blk, z0, z1, z2, z3)
            ok = True
            for q in range(HPL):
                j = lane + WARP * q
                if j < H:
                    for k in range(E):
                        xn, vn = upd(P[q * E + k], V[q * E + k], G[q * E + k], lr, mom, wd, sigma,
                                     XI[q * E + k] if noisy else zero)
                        G[q * E + k] = xn
                        VN[q * E + k] = vn
                        ok = ok and ok_(xn, bound) and ok_(vn, bound)
            b2n, vb2n = upd(b2, vb2, gb2, lr, mom, wd, sigma, xb2)
            ok = ok and ok_(b2n, bound) and ok_(vb2n, bound)
            if cuda.syncthreads_and(1 if ok else 0) == 0:
                if lane == 0:
                    dstep[r] = t + 1
                break
            for q in range(HPL):
                j = lane + WARP * q
                if j < H:
                    for k in range(E):
                        P[q * E + k] = G[q * E + k]
                        V[q * E + k] = VN[q * E + k]
                    W2[j] = P[q * E + DIN + 1]
            b2, vb2 = b2n, vb2n
        for q in range(HPL):
            j = lane + WARP * q
            if j < H:
                for k in range(E):
                    x[r, slot(j, k)] = P[q * E + k]
                    v[r, slot(j, k)] = V[q * E + k]
        if lane == 0:
            x[r, D - 1] = b2
            v[r, D - 1] = vb2
    return kernel


def _data(run, pot: TeacherStudentMLP):
    """The training inputs (n, d_in) and labels (n,) in the state's dtype, on the device (as
    the reference casts them, `_cast`), kept on the run's device potential."""
    key = ("toynets_cuda", run.dtype.str)
    if key not in run.pot.cache:
        run.pot.cache[key] = tuple(run.xp.asarray(pot._cast(name, run.dtype))
                                   for name in ("inputs", "labels"))
    return run.pot.cache[key]


@register(TeacherStudentMLP, SGD, "cuda", accepts=accepts)
def _sgd_teacher_student_cuda(run, sim, t0: int, K: int) -> None:
    """Steps t0 .. t0+K-1 of SGD on TeacherStudentMLP on the device state of `run`: one block
    of 32 threads per replica, launches of up to `CALL_STEPS` steps (epoch sampling: up to the
    epoch's end, after its permutations were computed on the device)."""
    from ..backends import cuda_runtime as rt

    pot, dyn, xp = sim.potential, sim.dynamics, run.xp
    x, v = run.state["x"], run.state["v"]
    M, B = x.shape[0], batch_of(sim)
    mode = FULL if dyn.batch_size is None else SAMPLING_CODES[dyn.sampling]
    per_epoch = pot.n_samples // B
    kernel = cuda_kernel(run.f32, pot.d_in, pot.hidden, B)
    inputs, labels = _data(run, pot)
    es = xp.asarray(schedule_code(dyn.lr))
    ts = xp.asarray(schedule_code(dyn.temperature))
    head = rt.kernel_arrays(x, v, run.dstep)
    tail = rt.kernel_arrays(es, ts, inputs, labels, xp.zeros((0, 0), np.int64))
    scalars = (run.cast(dyn.momentum), run.cast(dyn.weight_decay), run.bound)
    t = t0
    while t < t0 + K:
        if mode == EPOCH:
            epoch = t // per_epoch
            perm = rt.kernel_arrays(run.permutations(epoch))[0]
            end = min(t0 + K, (epoch + 1) * per_epoch)
        else:
            perm, end = tail[4], min(t0 + K, t + CALL_STEPS)
        kernel[M, WARP](*head, int(t), int(end - t), run.k0, run.k1, run.rep0, tail[0], tail[1],
                        *scalars, tail[2], tail[3], perm, int(per_epoch), int(mode),
                        int(pot.kind))
        t = end
