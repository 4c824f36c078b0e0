"""Quadratic (dense H): its CPU kernels for overdamped Langevin and BAOAB.

The gradient x H - c H of a block of replicas is one GEMM per step (BLAS single-threaded, one
block of `common.gemm_block` replicas per thread); the rest of a step is the step rules
applied lane by lane with in-kernel noise (`common.overdamped_rows`, and the BAOAB lane loops
below).  The other dynamics run the generic drivers (`kernels.drivers`) on the hooks at the
end (Heun and Leimkuhler-Matthews had dedicated kernels here, the same algorithm as the
drivers'; they went to save their compilation).  Its step function `offset_row_step` (one
replica's overdamped step from a GEMM gradient with a constant offset) is the row rule of
the fused numba-cuda kernel (the section "CUDA kernels" at the end), where BAOAB has a fused
kernel of its own on the shared BAOAB rules (`baoab_kernel`).  Its other step function,
`quadratic_row`, is one replica's gradient for `kernels.rows`: Heun, Leimkuhler-Matthews,
MALA, SGD and AdamW run the row kernels on "cuda" at d <= 64 (d^2 per step per replica, no
GEMM); beyond it Leimkuhler-Matthews, Heun, MALA and full-batch SGD and AdamW run the GEMM
path (`form_or_rows`), SGD and AdamW with the step functions `offset_sgd_step` and
`offset_adamw_step`, MALA with `gemm_step`'s Metropolis test.
"""
from __future__ import annotations

import functools
import sys

import numpy as np

from .. import rng
from ..backends.jit import jit
from ..backends.numpy_backend import within_bound
from ..backends.registry import register
from ..dynamics import (MALA, SGD, AdamW, Heun, LeimkuhlerMatthews, OverdampedLangevin,
                        UnderdampedLangevin)
from ..dynamics.adamw import adamw_update
from ..dynamics.sgd import sgd_update
from ..potentials.quadratic import Quadratic
from .common import (BAOAB, TILE_CALL_STEPS, compile_steps, finite_row, gemm_block,
                     langevin_step_table, like, noise_buffer, noise_chunk, overdamped_lane,
                     overdamped_rows, sched, schedule_code)
from .drivers import FAMILIES, Hooks, family, row_sums, run_blocks
from . import rows
from .rows import row_family


# ---------------------------------------------------------------- step functions, every target

def offset_lane(x, g, z, eta, sigma, zero, off, i):
    """Coordinate i of `offset_row_step` (x, g, z its scalars): `overdamped_lane` with the
    gradient g - off[i] (`cuda_kernels.gemm_step`'s lane stage)."""
    return overdamped_lane(x, g - off[i], z, eta, sigma, zero)


def offset_row_step(x, g, off, z, eta, sigma, zero, bound, new):
    """One overdamped step of one replica whose gradient is g - off (x, g, z, new: (d,) rows
    or strided columns of x's dtype; off (d,) a constant offset, c H for the dense kernels'
    x H - c H): new = `overdamped_lane` of each coordinate.  Returns whether every new value
    is finite and within bound.  (Unsigned indices in a `while` loop: on numba-cuda, `range`
    and signed indices cost ~30 SASS instructions a coordinate; see `toynets`.)"""
    good = True
    i, n, one = np.uint64(0), np.uint64(x.shape[0]), np.uint64(1)
    while i < n:
        v = offset_lane(x[i], g[i], z[i], eta, sigma, zero, off, i)
        new[i] = v
        good = good & within_bound(v, bound)
        i += one
    return good


def offset_sgd_step(x, g, off, v, z, lr, momentum, wd, sigma, zero, bound, new, vnew):
    """One heavy-ball step (`sgd_update`: v' = momentum v + (g - off) + wd x, x' = x - lr v'
    + sigma z) of one replica whose gradient is g - off (x, g, v, z, new, vnew: (d,) rows or
    strided columns of x's dtype, the scalars in x's dtype; `zero` unused, as the sphere's
    rows take it).  Writes x' and v' into new and vnew; returns whether every new value is
    finite and within bound."""
    good = True
    for i in range(x.shape[0]):
        xn, vn = sgd_update(x[i], v[i], g[i] - off[i], lr, momentum, wd, sigma, z[i])
        new[i] = xn
        vnew[i] = vn
        good = good & within_bound(xn, bound) & within_bound(vn, bound)
    return good


def offset_adamw_step(x, g, off, m, s, lr, beta1, beta2, a1, a2, eps, wd, c1, c2, bound, new,
                      mnew, snew):
    """One AdamW step (`adamw_update`) of one replica whose gradient is g - off (x, g, m, s,
    new, mnew, snew: (d,) of x's dtype; a1, a2 = 1 - beta1, 1 - beta2; c1, c2 the step's bias
    corrections).  Writes the new x, m, s into new, mnew, snew; returns whether every new
    value is finite and within bound."""
    good = True
    for i in range(x.shape[0]):
        xn, mn, sn = adamw_update(x[i], m[i], s[i], g[i] - off[i], lr, beta1, beta2, a1, a2,
                                  eps, wd, c1, c2)
        new[i] = xn
        mnew[i] = mn
        snew[i] = sn
        good = good & within_bound(xn, bound) & within_bound(mn, bound) & \
            within_bound(sn, bound)
    return good


def quadratic_row(x, g, w, args, idx, nb, lab, energy):
    """U = (x - c) H (x - c) / 2 (float64, when `energy`) of one replica x (d,) and its gradient (x - c) H
    into g (d,) float64 (`kernels.rows`; idx, nb, lab unused: no samples); w[0]: x - c; args:
    (H (d, d), c (d,)) in float64."""
    H, c = args
    d = x.shape[0]
    for j in range(d):
        w[0, j] = np.float64(x[j]) - c[j]
    u = 0.0
    for i in range(d):
        acc = 0.0
        for j in range(d):
            acc += w[0, j] * H[j, i]
        g[i] = acc
        if energy:
            u += w[0, i] * acc
    return 0.5 * u


STEPS = ("offset_lane", "offset_row_step", "offset_sgd_step", "offset_adamw_step",
         "quadratic_row")

# ---------------------------------------------------------------- CPU kernels (backend "numba")

cpu = compile_steps(sys.modules[__name__])


@jit
def overdamped_quadratic(x, dstep, t0, K, k0, k1, rep0, es, ts, H, cH, bound, block, b0, b1):
    """Overdamped Langevin on a dense Quadratic for blocks b0..b1-1 of `block` replicas:
    gradient x H - c H by one GEMM per block and step, then a fused noise + update pass;
    arithmetic in x's dtype.  Serial and GIL-free: the adapter spreads the blocks over the
    thread pool with BLAS single-threaded (`drivers.run_blocks`; a prange kernel compiled
    ~5 s longer)."""
    M, d = x.shape
    for b in range(b0, b1):
        lo = b * block
        hi = min(M, lo + block)
        new = np.empty(d, dtype=x.dtype)
        G = np.empty((hi - lo, d), dtype=x.dtype)
        buf = noise_buffer(d, x)
        for t in range(t0, t0 + K):
            e = sched(es, t)
            eta = like(e, x)
            sigma = like(cpu.noise_scale(e, sched(ts, t)), x)
            np.dot(x[lo:hi], H, G)
            overdamped_rows(x, G, cH, lo, dstep, t, k0, k1, rep0, eta, sigma, bound, new, buf)


@jit
def baoab_first_lanes(x, p, g, z, h, inv_m, c1, c2, nx, npm):
    """B, A, O, A of one BAOAB step for one replica's d lanes (1-D rows) into nx, npm."""
    for i in range(x.shape[0]):
        nx[i], npm[i] = cpu.baoab_first(x[i], p[i], g[i], h, inv_m, c1, c2, z[i])


@jit
def baoab_last_lanes(G, off, h, bound, npm):
    """The closing B of a BAOAB step for one replica: gradient G - off (written into G) and
    momentum npm - h (G - off) (into npm).  Returns whether both are finite and within bound."""
    good = True
    for i in range(G.shape[0]):
        gv = G[i] - off[i]
        pv = cpu.baoab_last(npm[i], gv, h)
        G[i] = gv
        npm[i] = pv
        good = good & cpu.within_bound(gv, bound) & cpu.within_bound(pv, bound)
    return good


@jit
def baoab_quadratic(x, p, g, dstep, t0, k0, k1, rep0, table, inv_m, H, cH, bound, block, b0, b1):
    """BAOAB on a dense Quadratic (p, g momenta and gradient at x, (M, d)) for blocks b0..b1-1
    of `block` replicas and steps t0 .. t0 + K - 1 (table: `langevin_step_table`, (3, K);
    inv_m = 1 / mass in x's dtype): per block and step, B A O A row by row with in-kernel
    noise, one GEMM for the new gradients x H - c H, then the closing B; coefficients in x's
    dtype.  A replica whose new x, p or g is non-finite or beyond bound keeps its state and
    gets dstep = t + 1.  Serial and GIL-free, as `overdamped_quadratic`."""
    M, d = x.shape
    K = table.shape[1]
    for b in range(b0, b1):
        lo = b * block
        hi = min(M, lo + block)
        nx = x[lo:hi].copy()
        npm = p[lo:hi].copy()
        G = np.empty((hi - lo, d), dtype=x.dtype)
        buf = noise_buffer(d, x)
        for t in range(t0, t0 + K):
            h, c1, c2 = table[0, t - t0], table[1, t - t0], table[2, t - t0]
            for r in range(hi - lo):
                m = lo + r
                if dstep[m] < 0:
                    z, o = noise_chunk(k0, k1, rng.NOISE, np.uint64(rep0 + m), t * d, d, buf)
                    baoab_first_lanes(x[m], p[m], g[m], z[o:o + d], h, inv_m, c1, c2, nx[r],
                                      npm[r])
            np.dot(nx, H, G)
            for r in range(hi - lo):
                m = lo + r
                if dstep[m] >= 0:
                    continue
                if baoab_last_lanes(G[r], cH, h, bound, npm[r]) and finite_row(nx[r], bound):
                    for i in range(d):   # loops: an array assignment compiles error formatting
                        x[m, i] = nx[r, i]
                        p[m, i] = npm[r, i]
                        g[m, i] = G[r, i]
                else:
                    dstep[m] = t + 1
                    for i in range(d):
                        nx[r, i] = x[m, i]


@register(Quadratic, OverdampedLangevin, "numba")
def _overdamped_quadratic(sim, t0, K, k0, k1):
    dyn, pot = sim.dynamics, sim.potential
    x = sim.state["x"]
    block = gemm_block(*x.shape, x.itemsize)
    run_blocks(overdamped_quadratic, -(-x.shape[0] // block), FAMILIES[Quadratic], x,
               sim.diverged_step, t0, K, k0, k1, sim.first_replica, schedule_code(dyn.step),
               schedule_code(dyn.temperature), pot.H.astype(x.dtype),
               (pot.center @ pot.H).astype(x.dtype), sim.divergence_bound, block, rows=1)


@register(Quadratic, UnderdampedLangevin, "numba")
def _baoab_quadratic(sim, t0, K, k0, k1):
    dyn, pot, s = sim.dynamics, sim.potential, sim.state
    x = s["x"]
    es, ts = schedule_code(dyn.step), schedule_code(dyn.temperature)
    H, cH = pot.H.astype(x.dtype), (pot.center @ pot.H).astype(x.dtype)
    block = gemm_block(*x.shape, x.itemsize)
    for t in range(t0, t0 + K, TILE_CALL_STEPS):
        table = langevin_step_table(BAOAB, es, ts, t, min(TILE_CALL_STEPS, t0 + K - t),
                                    float(dyn.friction), float(dyn.mass), x)
        run_blocks(baoab_quadratic, -(-x.shape[0] // block), FAMILIES[Quadratic], x, s["p"],
                   s["g"], sim.diverged_step, t, k0, k1, sim.first_replica, table,
                   x.dtype.type(1.0 / float(dyn.mass)), H, cH, sim.divergence_bound, block,
                   rows=1)


# ---------------------------------------------------------------- CUDA kernels (backend "cuda")
# Quadratic x OverdampedLangevin on the device, by the dense families' fused path
# (`cuda_backend.gemm_steps`, as SphericalPSpin's): per step ONE GEMM for all replicas on the
# transposed state, GT (d, MP) = H^T @ XT (cuBLAS by `cuda_runtime.gemm`; x H - c H as on the CPU,
# with c H computed once), then ONE launch of the shared fused kernel `cuda_kernels.gemm_step`
# with `offset_row_step` as its row rule (NOISE normals, the overdamped update, divergence,
# freeze).  No operand to refresh: the GEMM reads the state itself.
#
# Quadratic x UnderdampedLangevin (BAOAB) likewise, ONE GEMM and ONE launch of `baoab_kernel`
# per step (`baoab_form_steps`): a BAOAB step straddles its GEMM (B A O A before it, the
# closing B after it), so launch t closes step t - 1 with the GEMM's gradient and opens step t,
# whose candidate position is the next GEMM's operand; one more launch opens the first step of
# a call and one closes its last.

cuda = None   # numba.cuda, set by `_cuda_rules`, `baoab_kernel` (the simulator swaps this global)


@functools.lru_cache(maxsize=None)
def _cuda_steps():
    """This module's step functions compiled as numba-cuda device functions."""
    global cuda
    from ..backends import cuda_runtime as rt

    cuda = rt.cuda()
    return compile_steps(sys.modules[__name__], cuda.jit(device=True), rt.primitives())


@functools.lru_cache(maxsize=None)
def _cuda_rules():
    """(row, refresh) device functions of `gemm_step` for the dense Quadratic (elementwise:
    the same row serves a replica's slices when it has several threads)."""
    step = _cuda_steps().offset_row_step

    @cuda.jit(device=True)
    def row(x, g, z, eta, sigma, zero, bound, new, off):
        return step(x, g, off, z, eta, sigma, zero, bound, new)

    @cuda.jit(device=True)
    def refresh(XT, r, lane, lanes, a0, a1, a2, a3):
        return
    return row, refresh


@functools.lru_cache(maxsize=None)
def _cuda_stages():
    """`gemm_step`'s stages of `offset_row_step` for its streamed kernel: the lane
    `offset_lane`, no finish (every value tested as it is written)."""
    return _cuda_steps().offset_lane, None


@functools.lru_cache(maxsize=None)
def _cuda_optimizer_row(adam: bool):
    """The row rule of `gemm_step` for full-batch SGD (GEMM_SGD: `offset_sgd_step`) or, with
    `adam`, AdamW (GEMM_ADAMW: `offset_adamw_step`), the gradient GT - off."""
    steps = _cuda_steps()
    if adam:
        adamw = steps.offset_adamw_step

        @cuda.jit(device=True)
        def row(x, g, m, s, lr, beta1, beta2, a1, a2, eps, wd, c1, c2, zero, bound, new, mnew,
                snew, off):
            return adamw(x, g, off, m, s, lr, beta1, beta2, a1, a2, eps, wd, c1, c2, bound, new,
                         mnew, snew)
        return row
    sgd = steps.offset_sgd_step

    @cuda.jit(device=True)
    def row(x, g, v, z, lr, momentum, wd, sigma, zero, bound, new, vnew, off):
        return sgd(x, g, off, v, z, lr, momentum, wd, sigma, zero, bound, new, vnew)
    return row


@functools.lru_cache(maxsize=None)
def baoab_kernel(f32: bool):
    """The fused BAOAB launch of the dense quadratic forms (gradient G - off from a GEMM G),
    one thread per replica r on transposed (N, MP) arrays, replica r in column r: the state
    XT, PT, GT (x, p, g), the step's candidate YT, QT (x and p after B A O A; YT is the
    GEMM's operand) and the GEMM's output FT = H^T YT; off (N,).  For a live replica:

    - close (step t - 1): g = FT - off, p = `baoab_last`(QT, g, h) with h = eta(t - 1) / 2;
      when YT, p and g are finite and within bound they become the state (the rule evaluated
      for the test and again for the commit), else the replica freezes (dstep = t, state
      kept, YT reset to x: the GEMMs read finite columns);
    - open (step t): the normals of step t at n = t N + i (purpose NOISE), eta and T of step
      t from the schedule codes es, ts, (c1, c2) = `baoab_coeffs`(eta, friction, T, mass),
      then (YT, QT) = `baoab_first`(x, p, g, h, 1 / mass, c1, c2, z).

    Coefficients are computed in float64 and cast to the state's dtype, as the reference's
    Python scalars are; compiled per dtype."""
    global cuda
    from ..backends import cuda_kernels as ck
    from ..backends import cuda_runtime as rt

    cuda = rt.cuda()
    st = ck.steps()
    sched, coeffs, first, last, ok_ = (st.schedule_value, st.baoab_coeffs, st.baoab_first,
                                       st.baoab_last, st.within_bound)
    bn, pick = ck._normals_fn(f32), ck.helpers()[0]
    span, slot, one = ck.stream_window()
    NOISE = np.uint64(rng.NOISE)
    ftype = np.float32 if f32 else np.float64

    @cuda.jit(device=True)
    def cast(v):
        return ftype(v)

    @cuda.jit
    def kernel(XT, PT, GT, YT, QT, FT, off, dstep, tv, k, close, open_, k0, k1, rep0, es, ts,
               friction, mass, bound):
        r = cuda.grid(1)
        if r >= dstep.shape[0] or dstep[r] >= 0:
            return
        N = XT.shape[0]
        t = tv[0] + k
        if close:
            h = cast(0.5 * sched(int(es[0]), es[1], es[2], es[3], t - 1))
            good = True
            for i in range(N):
                g = FT[i, r] - off[i]
                good = (good and ok_(YT[i, r], bound) and ok_(last(QT[i, r], g, h), bound)
                        and ok_(g, bound))
            if not good:
                dstep[r] = t          # step t - 1 diverged
                for i in range(N):
                    YT[i, r] = XT[i, r]
                return
            for i in range(N):    # the rule again: no scratch writes
                g = FT[i, r] - off[i]
                XT[i, r] = YT[i, r]
                PT[i, r] = last(QT[i, r], g, h)
                GT[i, r] = g
        if open_:
            e = sched(int(es[0]), es[1], es[2], es[3], t)
            c1, c2 = coeffs(e, friction, sched(int(ts[0]), ts[1], ts[2], ts[3], t), mass)
            h, inv_m, c1, c2 = cast(0.5 * e), cast(1.0 / mass), cast(c1), cast(c2)
            ur, un = np.uint64(r), np.uint64(N)
            rep = rep0 + ur
            n0 = np.int64(t) * N
            b, end, lo, hi = span(n0, un)
            while b < end:
                z0, z1, z2, z3 = bn(k0, k1, NOISE, rep, b)
                for w in range(4):
                    pos = slot(b, w)
                    if pos >= lo and pos < hi:
                        j = pos - lo
                        xv, pv = first(XT[j, ur], PT[j, ur], GT[j, ur], h, inv_m, c1, c2,
                                       pick(w, z0, z1, z2, z3))
                        YT[j, ur] = xv
                        QT[j, ur] = pv
                b += one
    return kernel


def baoab_form_steps(run, sim, t0: int, K: int, gemm, off) -> None:
    """Steps t0 .. t0+K-1 of BAOAB for a gradient G - off with G = gemm(YT, FT) (H^T YT):
    the state x, p, g (M, N) transposed once per call into XT, PT, GT (N, MP) (MP =
    `cuda_backend.padded_columns`(M), padding 0: a replica's bits do not depend on its
    column), then one launch of `baoab_kernel` opening step t0 and per step ONE GEMM and ONE
    launch (closing the step, opening the next; the last closes only), the steps between
    queued by `DeviceRun.queue_steps` (replays of CUDA graphs: the kernel reads its step
    from the run's device counter), with no host synchronization; the state is transposed
    back at the end.  The arrays live in a run `Workspace`; `gemm` and `off` must persist.
    A first-passage observer is updated after each closing launch (`DeviceRun.observer_launch`
    on XT, which then holds the state after the closed step)."""
    from ..backends import cuda_runtime as rt
    from ..backends.cuda_backend import padded_columns

    xp, dyn, state = run.xp, sim.dynamics, run.state
    M, N = state["x"].shape
    ecode, tcode = schedule_code(dyn.step), schedule_code(dyn.temperature)

    def build() -> dict:
        cols = {k: xp.zeros((N, padded_columns(M)), dtype=state[k].dtype) for k in "xpg"}
        return dict(cols, YT=xp.zeros_like(cols["x"]), QT=xp.zeros_like(cols["x"]),
                    FT=xp.empty_like(cols["x"]), es=xp.asarray(ecode), ts=xp.asarray(tcode),
                    off=off)

    key = ("baoab", state["x"].dtype, id(off), tuple(ecode), tuple(tcode),
           float(dyn.friction), float(dyn.mass), run.regions is not None)
    ws = run.workspace(key, build)
    w = ws.arrays
    cols = [w[k] for k in "xpg"]
    for k, a in zip("xpg", cols):
        a[:, :M] = state[k].T
    YT, FT = w["YT"], w["FT"]
    YT[...] = cols[0]
    kernel = baoab_kernel(run.f32)
    arrays = rt.kernel_arrays(*cols, YT, w["QT"], FT, off, run.dstep, run.tv)
    rest = (run.k0, run.k1, run.rep0, *rt.kernel_arrays(w["es"], w["ts"]),
            float(dyn.friction), float(dyn.mass), run.bound)
    observe = run.observer_launch(cols[0])      # after step t - 1 closed: count t = tv[0] + k
    run.tv.fill(t0)
    rt.launch(kernel, M, *arrays, 0, False, True, *rest)

    def step(k: int, phase: int) -> None:   # closes step t - 1, opens t = tv[0] + k
        gemm(YT, FT)
        rt.launch(kernel, M, *arrays, k, True, True, *rest)
        observe(k - 1)

    run.queue_steps(ws, t0 + 1, K - 1, step)
    gemm(YT, FT)                          # tv = t0 + K: closes the last step only
    rt.launch(kernel, M, *arrays, 0, True, False, *rest)
    observe(-1)
    for k, a in zip("xpg", cols):
        state[k][...] = a[:, :M].T


def quadratic_form_steps(run, sim, t0: int, K: int, name: str, form) -> None:
    """The fused path of a gradient x H - o (the dense Quadratic's; LinearRegression's full
    batch too): OverdampedLangevin, Leimkuhler-Matthews and Heun by `cuda_backend.gemm_steps`
    (GT = H^T XT, then `offset_row_step` with o), full-batch SGD and AdamW by the same with
    `offset_sgd_step`, `offset_adamw_step`, MALA by the same (its Metropolis test with the
    energy x.(x H / 2 - o) + c0), UnderdampedLangevin by `baoab_form_steps`.  form() -> (H
    (d, d), o (d,), c0) in float64, H and o cast to the state's dtype once and cached per
    dtype on the run's device potential under `name`."""
    from ..backends import cuda_runtime as rt
    from ..backends.cuda_backend import gemm_block, gemm_steps

    xp, x = run.xp, run.state["x"]
    key = (name, x.dtype)
    if key not in run.pot.cache:
        H, o, c0 = form()
        run.pot.cache[key] = (xp.asarray(np.ascontiguousarray(H.T, dtype=x.dtype)),
                              xp.asarray(o.astype(x.dtype)), xp.asarray((2 * o).astype(x.dtype)),
                              float(c0))
    HT, o, o2, c0 = run.pot.cache[key]

    def gemm(XT, GT):
        rt.gemm(HT, XT, GT)

    dyn = sim.dynamics
    row, refresh = _cuda_rules()
    if isinstance(dyn, (SGD, AdamW)):
        row = _cuda_optimizer_row(isinstance(dyn, AdamW))
    if isinstance(dyn, UnderdampedLangevin):
        baoab_form_steps(run, sim, t0, K, gemm, o)
    else:
        gemm_steps(run, sim, t0, K, gemm, row, refresh, (o, o2),    # o2: Heun's corrector
                   energy_constant=c0, block=gemm_block(dyn, x.shape[1]),
                   stages=_cuda_stages())


FORM_OR_ROWS = (LeimkuhlerMatthews, Heun, MALA, SGD, AdamW)   # dynamics of `form_or_rows`
# d up to which a quadratic form's pairs take the row kernel where its GEMM path could run
# them too (design_changes 62: on an H200 at d = 64 the GEMM path ran full-batch SGD 1.7x
# and MALA 1.1x faster, float64, 2^14 replicas; 32 is below that crossover, not measured yet)
FORM_ROWS_MAX_D = 32


def _gemm_fits(sim) -> bool:
    """The form's GEMM path runs `sim`: float32 / float64, the full batch, no label noise."""
    dyn = sim.dynamics
    return (sim.dtype in (np.float32, np.float64) and getattr(dyn, "batch_size", None) is None
            and getattr(dyn, "label_noise", 0.0) <= 0)


def by_rows(sim) -> bool:
    """`form_or_rows` takes the row kernel: it runs `sim` (`rows.accepts`: d <= rows.MAX_D)
    and either d <= FORM_ROWS_MAX_D or the GEMM path cannot (minibatches, label noise)."""
    return rows.accepts(sim) and (sim.state["x"].shape[1] <= FORM_ROWS_MAX_D
                                  or not _gemm_fits(sim))


def form_accepts(sim) -> bool:
    """Whether `form_or_rows` runs `sim`: by the row kernel or by the form's GEMM path (both
    update first-passage observers)."""
    return rows.accepts(sim) or _gemm_fits(sim)


def form_or_rows(run, sim, t0: int, K: int, name: str, form) -> None:
    """Leimkuhler-Matthews, Heun, MALA, SGD and AdamW of a quadratic form: the row kernels
    (`kernels.rows`, one thread per replica, the d^2 gradient in registers) where `by_rows`,
    else `quadratic_form_steps` (one GEMM for all replicas per gradient: a thread's work is
    then d a step, not d^2, and its arrays stay small)."""
    if by_rows(sim):
        rows.advance(run, sim, t0, K)
    else:
        quadratic_form_steps(run, sim, t0, K, name, form)


def _quadratic_form(pot):
    """(H, c H, c H c / 2): the dense Quadratic's gradient x H - c H and energy
    x.(x H / 2 - c H) + c H c / 2."""
    return lambda: (pot.H, pot.center @ pot.H, 0.5 * pot.center @ pot.H @ pot.center)


@register(Quadratic, OverdampedLangevin, "cuda", first_passage=True)
@register(Quadratic, UnderdampedLangevin, "cuda", first_passage=True)
def _quadratic_cuda(run, sim, t0, K):
    """`quadratic_form_steps` with H and c H."""
    quadratic_form_steps(run, sim, t0, K, "quadratic", _quadratic_form(sim.potential))


def _quadratic_dense_cuda(run, sim, t0, K):
    """`form_or_rows` with H and c H."""
    form_or_rows(run, sim, t0, K, "quadratic", _quadratic_form(sim.potential))


for _dyn in FORM_OR_ROWS:
    register(Quadratic, _dyn, "cuda", first_passage=True, accepts=form_accepts)(
        _quadratic_dense_cuda)


# ---------------------------------------------------------------- generic drivers' hooks (CPU)
# Heun, Leimkuhler-Matthews, MALA and full-batch SGD / AdamW run `kernels.drivers` on these
# (the reference's formulas).

@jit
def quadratic_grad_block(xb, args):
    """grad U = (x - c) H (B, d) in xb's dtype; args: (H, c) in xb's dtype."""
    return (xb - args[1]) @ args[0]


@jit
def quadratic_energy_block(xb, args):
    """U = (x - c) H (x - c) / 2 (B,), the products summed in float64."""
    y = xb - args[1]
    return 0.5 * row_sums(y.astype(np.float64) * (y @ args[0]).astype(np.float64))


family(Quadratic, Hooks(quadratic_grad_block, quadratic_energy_block,
                        lambda pot, dtype: (pot.H.astype(dtype), pot.center.astype(dtype)),
                        blas=True))


row_family(Quadratic, "quadratic_row",
           lambda pot, xp, dtype: (xp.asarray(pot.H, dtype=np.float64),
                                   xp.asarray(pot.center, dtype=np.float64)))
