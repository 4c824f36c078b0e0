"""The cuda backend: device-resident runs of every (potential, dynamics) pair.

Residency.  For each Simulation the backend keeps a `DeviceRun`: the state arrays, the
divergence flags (`diverged_step`), the first-passage arrays and the potential's instance
arrays live on the device (CuPy; the NumPy stand-in in simulator mode) from the first
`advance` on.  The host arrays `sim.state` / `sim.diverged_step` become a mirror that
`to_host(sim)` refreshes (only when the device moved on since the last copy).  The host is
read as the truth again when its arrays are *replaced* (``sim.state = ...``, as `resume`
does, or any ``sim.state[k] = new_array``); after editing a host array in place, call
`upload(sim)`.  A Simulation that defines `sync()` (calling `to_host`) syncs at records and
checkpoints only; with one that does not, `advance` copies back after every call (correct,
one copy per call).

Paths, per step t (scalars of schedules are evaluated on the host, as by the reference):

- a fused kernel registered for the pair on "cuda" (`backends.registry`, by
  ``@register(Potential, Dynamics, "cuda")`` in the family's module of `langevin_sim.kernels`)
  runs K steps at once: ``fn(run, sim, t0, K)`` on the device arrays `run.state` and
  `run.dstep` in place (`run.k0`, `run.k1`, `run.rep0`, `run.bound`, the device copy of the
  potential `run.pot.dev` at hand); with a first-passage observer attached only if it was
  registered with ``first_passage=True``.  The dense pairs' overdamped kernels run
  `gemm_steps`: per step one GEMM for all replicas and one fused kernel
  (`cuda_kernels.gemm_step`); their BAOAB, `quadratic.baoab_form_steps` (one GEMM and one
  launch per step, too); both queue their steps as replays of CUDA graphs of several steps
  (`DeviceRun.queue_steps`: the kernels read the step from a device counter); the
  low-dimensional families, `kernels.rows`;
- otherwise the generic path: the gradient from the potential's own array code on the
  device arrays (cuBLAS behind CuPy's matmul for dense potentials), then ONE elementwise
  kernel (`cuda_kernels.elementwise`) per step applying the dynamics' own scalar update rule
  with in-kernel Philox noise and the divergence test, and `cuda_kernels.freeze`.  Rules:
  OverdampedLangevin, SGD (minibatch indices drawn on the device: i.i.d. words, per-epoch
  permutations by a stable sort of PERMUTE-stream words, or Floyd's subsets of SUBSET
  words; label noise by the potential's `grad_noisy_labels` and gradient noise added in
  array code, with LABEL_NOISE / GRAD_NOISE normals from the Philox kernels), AdamW,
  UnderdampedLangevin (BAOAB: a kernel before and one after the gradient at the new
  position), OBABO (the same two kernels' shape; its normals of step t at 2 t d + i),
  Heun (the predictor's kernel, its gradient, the corrector's kernel on the same
  normals), Leimkuhler-Matthews.  Constrained
  potentials: the kernel writes the tangent-step candidate, the potential's own `project` /
  `retract` run on the device arrays, and `DeviceRun.commit` tests and freezes;
- a dynamics without a rule here (MALA; any new Dynamics; see `device_rule`) runs its own
  `reference_step` on
  the device arrays with a device noise source (normals and words from Philox kernels), and
  the freeze in array code.

The potential's methods run on a device copy of the instance (`device_copy`: its NumPy
arrays moved to the device).  A method that is not written with the array module of x
(it converts to NumPy or mixes host arrays) is detected by a probe when the run starts and
then runs on the host for every call, with a warning naming it: nothing falls back to the
host silently.  `xp_clean_report()` lists which methods of which potentials are device-clean.
A first-passage observer is updated after every step by `cuda_kernels.first_passage`.
Records' energies and the potential's observables are computed on the device, in float64;
in a run, a record's arrays are copied to page-locked host arrays on a copy stream of their
own while the next block of steps computes (`CudaBackend.begin_record`, `rt.CopyStream`).
The host mirror is refreshed at checkpoints through page-locked buffers allocated once per
run (`DeviceRun.copy_to_host`).

Results equal the NumPy reference to rounding (float64), with the same divergence flags;
the random numbers are bit-identical (same Philox, same stream positions).
"""
from __future__ import annotations

import copy
import functools
import math
import warnings
import weakref
from collections.abc import Callable

import numpy as np

from .. import rng
from ..dynamics import (MALA, OBABO, SGD, AdamW, Heun, LeimkuhlerMatthews, OverdampedLangevin,
                        UnderdampedLangevin)
from ..dynamics.adamw import complements
from ..dynamics.langevin import baoab_coeffs, noise_scale
from ..dynamics.sgd import floyd_subset, sampling_of
from ..first_passage import STATE_KEYS as FP_KEYS
from ..potentials.base import Potential
from . import cuda_kernels as ck
from . import cuda_runtime as rt
from .numpy_backend import finite_and_bounded
from .registry import kernel_for

NAME = "cuda"
_warned: set = set()


def fused_entry(sim):
    """The `registry.Kernel` of the fused "cuda" kernel that runs `sim`, or None: the generic
    path (also when a first-passage observer is attached and the kernel does not update it,
    or when its `accepts(sim)` declines the run's options or sizes)."""
    import langevin_sim.kernels  # noqa: F401  (importing the families registers their kernels)

    k = kernel_for(sim.potential, sim.dynamics, NAME)
    if k is None or (getattr(sim, "first_passage", None) is not None and not k.first_passage):
        return None
    if k.accepts is not None and not k.accepts(sim):
        return None
    return k


def fused_kernel(sim):
    """The fused "cuda" kernel function that runs `sim` (`fused_entry`), or None."""
    k = fused_entry(sim)
    return None if k is None else k.fn


def _one_line_out_of_memory(method):
    """`method(self, sim, ...)` with CuPy's or numba-cuda's out-of-memory error turned into
    the one-line `cuda_runtime.out_of_memory_error` (the records' and checkpoints' device
    arrays are allocated outside `advance`)."""
    @functools.wraps(method)
    def wrapped(self, sim, *args, **kwargs):
        try:
            return method(self, sim, *args, **kwargs)
        except Exception as e:
            if rt.is_out_of_memory(e):
                raise rt.out_of_memory_error(sim) from None
            raise
    return wrapped


def _writeable(sim, on: bool) -> None:
    """Make the host mirror of `sim` (its state arrays and divergence flags) writeable or
    read-only: while the device holds the truth, an in-place edit of the mirror would be
    dropped at the next step, so it raises instead; assign a new array to take effect."""
    for a in (*sim.state.values(), sim.diverged_step):
        a.flags.writeable = on


class CudaBackend:
    """Device-resident stepping on CuPy + numba-cuda (or the simulator); see the module
    docstring.  `device` describes where it runs; `provenance` adds the CuPy and numba CUDA
    target versions (a run file's `machines` entry records it)."""

    name = NAME
    empty_host = staticmethod(rt.empty_pinned)   # host arrays for records and checkpoints

    def __init__(self):
        self.device = rt.require()
        self.provenance = f"{self.device}; {rt.targets()}"
        self._runs: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    # -- the backend interface -------------------------------------------------------
    def advance(self, sim, t0: int, K: int) -> None:
        """Run steps t0 .. t0+K-1 of `sim` on the device; freeze and flag diverging replicas."""
        run = self.attach(sim)
        if K > 0:
            try:
                with np.errstate(all="ignore"):
                    kernel = fused_kernel(sim)
                    if kernel is not None:
                        kernel(run, sim, t0, K)
                    else:
                        for t in range(t0, t0 + K):
                            run.step(t)
            except Exception as e:
                if rt.is_out_of_memory(e):
                    raise rt.out_of_memory_error(sim) from None
                raise
            run.host_stale = True
        if not callable(getattr(sim, "sync", None)):
            self.to_host(sim)

    @_one_line_out_of_memory
    def to_host(self, sim) -> None:
        """Copy the device state, divergence flags and first-passage arrays into the host
        arrays of `sim` (in place, through the run's page-locked buffers), if the device
        moved on since the last copy."""
        run = self._runs.get(sim)
        if run is None or not run.host_stale or not run.owns(sim):
            return
        _writeable(sim, True)
        for k, v in run.state.items():
            run.copy_to_host(k, v, sim.state[k])
        run.copy_to_host("diverged_step", run.dstep, sim.diverged_step)
        _writeable(sim, False)
        run.host_stale = False

    def upload(self, sim) -> None:
        """Take the host arrays of `sim` as the truth again (after making them writeable and
        editing them in place)."""
        self._runs.pop(sim, None)
        self.attach(sim)

    def attach(self, sim) -> "DeviceRun":
        """The DeviceRun of `sim`, created (host -> device copy) on first use or when the host
        arrays were replaced since."""
        run = self._runs.get(sim)
        if run is not None and run.owns(sim):
            return run
        pot = None
        if run is not None and run.sim_potential is sim.potential:
            pot = run.pot                      # keep the device copy of the instance
        else:
            rt.check_memory(sim)
        try:
            run = DeviceRun(sim, pot)
        except Exception as e:
            if rt.is_out_of_memory(e):
                raise rt.out_of_memory_error(sim) from None
            raise
        self._runs[sim] = run
        _writeable(sim, False)
        return run

    def device_run(self, sim) -> "DeviceRun | None":
        return self._runs.get(sim)

    def live_state(self, sim) -> tuple:
        """(xp, state, diverged_step, energy) of `sim` between advances, for callers that edit
        the state where it lives (replica exchange): the device arrays `state` (name -> (M,
        ...), edited in place; the host mirror is refreshed from them at the next sync), and
        host copies of the divergence flags (M,) int64 and of the energies U (M,) float64
        (`record_energy`): only 16 bytes per replica travel."""
        run = self.attach(sim)
        flags = run.copy_to_host("diverged_step", run.dstep, np.empty(run.M, np.int64))
        energy = self.record_energy(sim)
        run.host_stale = True
        return run.xp, run.state, flags, energy

    @_one_line_out_of_memory
    def record_energy(self, sim, out: np.ndarray | None = None) -> np.ndarray:
        """U (M,) float64 of `sim`'s positions for a record (into `out` when given), computed
        on the device: the potential's own `energy` on a float64 copy of the device state (as
        the reference computes it on a float64 copy of the host's); only the (M,) energies
        come back."""
        run = self.attach(sim)
        e = run.energy64(run.positions64())
        return run.copy_to_host("energy", e, np.empty(e.shape, e.dtype) if out is None else out)

    @_one_line_out_of_memory
    def record_observables(self, sim, energy: np.ndarray) -> dict | None:
        """The potential's observables {name: (M, ...)} of `sim`'s positions for a record, as
        new host arrays: its own `observables` run on the device copy of the potential, on a
        float64 copy of the device state (as the reference widens the host's) and the record's
        energies `energy` (M,) float64.  None when its observables are not device-clean (the
        run's probe warned once): the caller evaluates them on the host mirror."""
        run = self.attach(sim)
        obs = run.observables64(run.positions64(), run.xp.asarray(energy, dtype=np.float64))
        return None if obs is None else {k: rt.asnumpy(v) for k, v in obs.items()}

    @_one_line_out_of_memory
    def begin_record(self, sim, record_positions: bool,
                     empty=np.empty) -> Callable[[], dict] | None:
        """Start one record of `sim`'s device state and return the function that completes it,
        or None where a record needs the host mirror (observables not device-clean, or
        dynamics observables that are not device arrays).  The record's arrays are computed
        (energy and observables in float64, as `record_energy` and `record_observables`) or
        copied (positions, dynamics observables, divergence flags) on the device now, and
        copied into host arrays from `empty(shape, dtype)` on the run's copy stream while the
        steps queued next compute.  The function returns {name: host array} (the potential's
        observables after energy and positions, then the dynamics', then "diverged_step", the
        flags at the record's step), waiting for the copy if it is not done."""
        run = self.attach(sim)
        try:
            dyn = sim.dynamics.observables(run.state)
        except TypeError:        # written for NumPy arrays: the host mirror's record
            return None
        if not all(isinstance(v, run.xp.ndarray) for v in dyn.values()):
            return None
        x64 = run.positions64()
        energy = run.energy64(x64)
        obs = run.observables64(x64, energy)
        if obs is None:
            return None
        dev = {"energy": energy}
        if record_positions:
            dev["positions"] = run.state["x"].copy()
        dev.update(obs)
        dev.update((k, run.xp.array(v, copy=True)) for k, v in dyn.items())
        dev["diverged_step"] = run.dstep.copy()
        dev = {k: run.xp.ascontiguousarray(v) for k, v in dev.items()}
        host = {k: empty(v.shape, v.dtype) for k, v in dev.items()}
        run.copies.start([(dev[k], host[k]) for k in dev])

        def complete() -> dict:
            run.copies.wait()
            return host
        return complete


# ---------------------------------------------------------------- device state

class DeviceRun:
    """One Simulation's device arrays: `state` (name -> array), `dstep` (M,) int64, `bad`
    (M,) int32 (the generic kernels' divergence flags, zero between steps), the potential
    (`DevicePotential`), scratch buffers, and the cache of minibatch permutations."""

    def __init__(self, sim, pot=None):
        xp = rt.xp()
        self.xp, self.sim_ref = xp, weakref.ref(sim)
        self.sim_potential = sim.potential
        self.host = (sim.state, tuple(sim.state.items()), sim.diverged_step)
        self.state = {k: xp.ascontiguousarray(xp.asarray(v)) for k, v in sim.state.items()}
        self.dstep = xp.asarray(sim.diverged_step, dtype=xp.int64)
        self.bad = xp.zeros(sim.n_replicas, dtype=xp.int32)   # the generic kernels' divergence
        #                                                       flags (`freeze` clears them)
        self.dtype = sim.dtype
        self.M = sim.n_replicas
        self.k0, self.k1 = rng.key_of(sim.seed)
        self.rep0 = np.uint64(sim.first_replica)
        self.bound = float(sim.divergence_bound)
        self.host_stale = False
        self.scratch: dict = {}
        self.pinned: dict[str, np.ndarray] = {}    # page-locked host buffers (`copy_to_host`)
        self.copies = rt.CopyStream()               # records' copies (`CudaBackend.begin_record`)
        self.perm_epoch, self.perms = None, None
        self.tv = xp.zeros(1, dtype=xp.int64)      # the dense paths' step counter (`queue_steps`)
        self.workspaces: dict = {}
        fp = getattr(sim, "first_passage", None)
        self.regions = None
        if fp is not None:
            kinds, vecs, thr = fp.arrays(sim.potential.d)
            self.regions = (xp.asarray(kinds), xp.asarray(vecs), xp.asarray(thr))
        self.rule = device_rule(sim.dynamics)
        self.pot = pot if pot is not None else DevicePotential(
            sim.potential, xp, self.state["x"][: min(self.M, 2)], sim.dynamics)
        self.f32 = self.dtype == np.float32

    def owns(self, sim) -> bool:
        """Whether the host arrays of `sim` are the ones this run was made from."""
        st, items, ds = self.host
        return sim.state is st and sim.diverged_step is ds and len(st) == len(items) and \
            all(st.get(k) is v for k, v in items)

    @property
    def sim(self):
        return self.sim_ref()

    # -- helpers -----------------------------------------------------------------------
    def cast(self, v):
        """A Python scalar in the state's dtype (the reference's NumPy arithmetic with Python
        scalars runs in the array's dtype)."""
        return self.dtype.type(v)

    def buffer(self, name: str, like):
        """A scratch array shaped like `like` (reused across steps)."""
        b = self.scratch.get(name)
        if b is None or b.shape != like.shape or b.dtype != like.dtype:
            b = self.scratch[name] = self.xp.empty_like(like)
        return b

    def workspace(self, key, build: Callable[[], dict]) -> "Workspace":
        """The `Workspace` of a fused path under `key` (hashable: everything its kernels take
        by value besides the workspace's arrays), made from ``build()`` -> {name: device
        array} on first use and kept for the run: graphs captured on its arrays hold their
        addresses."""
        ws = self.workspaces.get(key)
        if ws is None:
            ws = self.workspaces[key] = Workspace(build())
        return ws

    def queue_steps(self, ws: "Workspace", t0: int, n: int, body: Callable[[int, int], None],
                    period: int = 1) -> None:
        """Queue steps t0 .. t0+n-1 on the device: ``body(k, phase)`` queues one step's GEMMs
        and launches, whose kernels take the step t = tv[0] + k from the device counter `tv`
        (set to t0 here; a `cuda_kernels.step_counter` launch after every m steps adds m);
        phase = (t - t0) % period (`gemm_steps`' buffers alternate with period 2).  The
        first step of a workspace runs as queued (kernels compile, libraries initialize);
        then the steps go in chunks of `rt.graph_steps()` (and one shorter chunk), each the
        replay of a CUDA graph captured once per chunk length and starting phase on `ws`
        (`rt.capture`; up to four kept), so the host queues one graph launch per chunk
        instead of one launch per kernel and GEMM.  With graphs off (`rt.graphs_enabled`)
        every step is queued as is; the numbers are the same."""
        self.tv.fill(t0)
        tv, counter = rt.kernel_arrays(self.tv)[0], ck.step_counter()

        def chunk(m: int, start: int) -> None:
            for k in range(m):
                body(k, (start + k) % period)
            rt.launch(counter, 1, tv, m)

        done, S = 0, rt.graph_steps() if rt.graphs_enabled() else 0
        if n > 0 and (S == 0 or not ws.warm):
            done = n if S == 0 else 1
            chunk(done, 0)
            ws.warm = True
        while done < n:
            m, key = min(S, n - done), (min(S, n - done), done % period)
            graph = ws.graphs.get(key)
            if graph is None:
                graph = rt.capture(lambda: chunk(m, key[1]))
                if graph is None:          # capture failed (warned): queue the rest as is
                    chunk(n - done, done % period)
                    return
                if len(ws.graphs) >= 4:
                    ws.graphs.pop(next(iter(ws.graphs)))
                ws.graphs[key] = graph
            graph.launch()
            done += m

    def observer_launch(self, XT) -> Callable[[int], None]:
        """observe(k): the launch that updates the first-passage arrays from the transposed
        state XT (N, MP) after step tv[0] + k (`cuda_kernels.first_passage_columns`; the
        dense paths), or nothing without an observer."""
        if self.regions is None:
            return lambda k: None
        args = rt.kernel_arrays(XT, *(self.state[k] for k in FP_KEYS), *self.regions, self.tv)
        kernel = ck.first_passage_columns()
        return lambda k: rt.launch(kernel, self.M, args[0], self.M, *args[1:], k)

    def swap(self, name: str, new) -> None:
        """Make `new` the state array `name`; the old one becomes the scratch buffer."""
        old = self.state[name]
        self.state[name] = new
        self.scratch[name] = old

    def positions64(self):
        """The positions x (M, d) as a float64 device array (a widened copy of a float32
        state; the state itself in float64): what records evaluate the potential on."""
        return self.xp.asarray(self.state["x"], dtype=np.float64)

    def energy64(self, x64):
        """U (M,) float64 of the float64 positions `x64` (M, d): the potential's own `energy`,
        on blocks of `rt.record_rows` replicas (a finite sum's per-sample temporaries stay
        within `rt.RECORD_BLOCK_BYTES`)."""
        rows = rt.record_rows(self.sim_potential, self.M)
        if rows >= self.M:
            return self.xp.asarray(self.pot.energy(x64), dtype=np.float64)
        out = self.xp.empty(self.M, dtype=np.float64)
        for lo in range(0, self.M, rows):
            out[lo:lo + rows] = self.xp.asarray(self.pot.energy(x64[lo:lo + rows]), np.float64)
        return out

    def observables64(self, x64, energy) -> dict | None:
        """The potential's observables {name: device array} of `x64` (M, d) float64 and the
        energies `energy` (M,) float64 ({} when it has none; None when they are not
        device-clean), on blocks of rows as `energy64`."""
        if not self.pot.observes:
            return {}
        if "observables" in self.pot.bridged:
            return None
        rows = rt.record_rows(self.sim_potential, self.M)
        if rows >= self.M:
            return self.pot.dev.observables(x64, energy)
        parts = [self.pot.dev.observables(x64[lo:lo + rows], energy[lo:lo + rows])
                 for lo in range(0, self.M, rows)]
        return {k: self.xp.concatenate([p[k] for p in parts]) for k in parts[0]}

    def copy_to_host(self, name: str, dev, host: np.ndarray) -> np.ndarray:
        """Copy the device array `dev` into the host array `host` (in place, any layout;
        returned): a DMA copy into the run's page-locked buffer `name` (allocated on first
        use, reused at every record and checkpoint), then a host-side copy into `host`."""
        buf = self.pinned.get(name)
        if buf is None or buf.shape != dev.shape or buf.dtype != dev.dtype:
            buf = self.pinned[name] = rt.empty_pinned(dev.shape, dev.dtype)
        dev.get(out=buf)
        host[...] = buf
        return host

    def device(self, a):
        """`a` as a C-contiguous device array in the state's dtype."""
        return self.xp.ascontiguousarray(a, dtype=self.dtype)

    def grad(self, x, batch=None):
        """The potential's gradient (M, d) at the device positions x (M, d) (over the sample
        indices `batch` (M, B) when given), C-contiguous in the state's dtype."""
        return self.device(self.pot.grad(x, batch))

    def launch(self, kernel, *args) -> None:
        """`kernel` on one thread per replica (M threads; `cuda_runtime.launch`)."""
        rt.launch(kernel, self.M, *args)

    def launch_chunks(self, kernel, n: int, *args) -> None:
        """`kernel` on M `ck.chunks_of(n)` threads: the generic path's elementwise kernels
        over rows of n entries."""
        rt.launch(kernel, self.M * ck.chunks_of(n), *args)

    def elementwise(self, rule: int, t: int, ins: tuple, outs: tuple, p: tuple = (),
                    noisy: bool = False, candidate: bool = False, freeze: bool = True) -> None:
        """`ck.elementwise(rule)` on (M, d) arrays ins -> outs, p: the rule's scalars (cast
        to the state's dtype); then, with `freeze` and unless `candidate` (`commit` follows),
        `freeze` of outs by the first len(outs) of ins."""
        self.launch_chunks(ck.elementwise(rule, self.f32), ins[0].shape[1], ins, outs,
                           self.dstep, self.bad, int(t), self.k0, self.k1, self.rep0,
                           tuple(self.cast(v) for v in p), self.cast(0.0), bool(noisy),
                           self.bound, bool(candidate))
        if freeze and not candidate:
            self.freeze(t, ins[:len(outs)], outs)

    def tangent_step(self, x, dx):
        """retract(x + project(x, dx)) on the device: a constrained step from its candidate
        dx, as the reference takes it."""
        return self.device(self.pot.retract(x + self.pot.project(x, dx)))

    def freeze(self, t: int, olds: tuple, news: tuple) -> None:
        """`ck.freeze` after an elementwise step: replicas flagged in `bad` freeze at step t,
        their old rows olds[k] put back into the new arrays news[k]."""
        self.launch(ck.freeze(), self.dstep, self.bad, int(t), olds, news)

    # -- random numbers on the device -----------------------------------------------------
    def normals(self, start: int, count: int, purpose: int = rng.NOISE, dtype=np.float64):
        """(M, count) standard normals on the device, float32 for a float32 `dtype` else
        float64: each replica's `purpose` stream at positions start .. start+count-1 (the
        reference's `rng.stream_normals`, bit for bit)."""
        out = self.xp.empty((self.M, count), dtype=np.float32 if np.dtype(dtype) == np.float32
                            else np.float64)
        self.launch_chunks(ck.normals(out.dtype == np.float32), count, out, self.k0, self.k1,
                           np.uint64(purpose), self.rep0, int(start))
        return out

    def words(self, purpose: int, start: int, count: int, n: int = 0):
        """(M, count) uint64 words at stream positions start..; with n > 0 the indices
        `rng.bounded_index(word, n)` as int64."""
        out = self.xp.empty((self.M, count), dtype=np.int64 if n > 0 else np.uint64)
        self.launch_chunks(ck.words(), count, out, self.k0, self.k1, np.uint64(purpose),
                           self.rep0, int(start), int(n))
        return out

    def minibatch(self, t: int, batch_size: int, sampling):
        """(M, B) int64 sample indices of step t, as `dynamics.sgd.minibatch` draws them
        (`sampling` as it takes it)."""
        n = self.sim.potential.n_samples
        sampling = sampling_of(sampling)
        if sampling == "iid":
            return self.words(rng.MINIBATCH, t * batch_size, batch_size, n)
        if sampling == "subset":
            return floyd_subset(self.words(rng.SUBSET, t * batch_size, batch_size), n, self.xp)
        epoch, j = divmod(t, n // batch_size)
        perms = self.permutations(epoch)
        return self.xp.ascontiguousarray(perms[:, j * batch_size:(j + 1) * batch_size])

    def permutations(self, epoch: int):
        """(M, n) int64 sample permutations of `epoch` (`rng.epoch_permutation` of every
        replica: a stable sort of PERMUTE words), cached for the current epoch."""
        if self.perm_epoch != epoch:
            n = self.sim.potential.n_samples
            w = self.words(rng.PERMUTE, epoch * n, n)
            self.perms = _argsort_stable(self.xp, w)
            self.perm_epoch = epoch
        return self.perms

    def batch_grad(self, x, t: int, dyn):
        """`dynamics.sgd.batch_gradient` of SGD's or AdamW's step t on the device (minibatch,
        label noise), plus SGD's gradient noise, as `SGD.reference_step` adds it."""
        B, label_noise = dyn.batch_size, getattr(dyn, "label_noise", 0.0)
        sampling = dyn.sampling
        if label_noise > 0:
            n = self.sim.potential.n_samples
            batch = (self.minibatch(t, B, sampling) if B is not None else
                     self.xp.broadcast_to(self.xp.arange(n, dtype=np.int64), (self.M, n)))
            eps = self.normals(t * (B or n), B or n, rng.LABEL_NOISE, x.dtype)
            g = self.device(self.pot.grad_noisy_labels(x, batch,
                                                       x.dtype.type(label_noise) * eps))
        elif B is None:
            g = self.grad(x)
        else:
            g = self.grad(x, self.minibatch(t, B, sampling))
        if getattr(dyn, "grad_noise", 0.0) > 0:
            d = x.shape[1]
            g = g + x.dtype.type(dyn.grad_noise) * self.normals(t * d, d, rng.GRAD_NOISE,
                                                                 x.dtype)
        return g

    # -- one step --------------------------------------------------------------------------
    def step(self, t: int) -> None:
        """Step t of every live replica by the generic path: the dynamics' device rule (or
        its `reference_step` on device arrays), then the first-passage update."""
        sim = self.sim
        if self.rule is not None:
            self.rule(self, sim.dynamics, t)
        else:
            xp_reference_step(self, sim.dynamics, t)
        if self.regions is not None:
            kinds, vecs, thr = self.regions
            s = self.state
            self.launch(ck.first_passage(), s["x"], *(s[k] for k in FP_KEYS), kinds, vecs, thr,
                        int(t + 1))

    def commit(self, t: int, news: list) -> None:
        """Divergence test and freeze of the new arrays [(name, array)], which then become
        the state."""
        self.elementwise(ck.EW_COMMIT, t, tuple(self.state[k] for k, _ in news),
                         tuple(v for _, v in news))
        for k, v in news:
            old, self.state[k] = self.state[k], v
            if self.scratch.get(k) is v:       # a scratch buffer became the state
                self.scratch[k] = old


# ---------------------------------------------------------------- fused dense steps

class Workspace:
    """Device arrays of one fused path that persist across its calls (`arrays`), the CUDA
    graphs captured on them by chunk length (`graphs`), and whether its kernels ran once
    (`warm`): see `DeviceRun.queue_steps`."""

    def __init__(self, arrays: dict):
        self.arrays, self.graphs, self.warm = arrays, {}, False


def padded_columns(M: int) -> int:
    """Columns of the transposed state of M replicas (`gemm_steps`)."""
    return -(-M // ck.GEMM_COLUMNS) * ck.GEMM_COLUMNS


def gemm_block(dyn, N: int) -> tuple:
    """`cuda_kernels.gemm_step`'s thread block for dynamics `dyn` on N coordinates (the
    families build their row rules for it, `gemm_steps` launches it): ``(R, L)``, L =
    `cuda_kernels.GEMM_LANES` threads per replica (at most 32, so that a block of 32 replicas
    stays within CUDA's 1024 threads, and at most N, each slice at least one coordinate) for
    overdamped Langevin and Leimkuhler-Matthews (GEMM_LANE_RULES), R replicas per block
    (`cuda_runtime.lane_block`); (0, 1), one thread per replica, else."""
    lanes = min(ck.GEMM_LANES, 32) if type(dyn) in (OverdampedLangevin, LeimkuhlerMatthews) \
        else 1
    lanes = -(-N // -(-N // lanes)) if lanes > 1 else 1     # no empty slice
    return rt.lane_block(lanes)


def gemm_steps(run: DeviceRun, sim, t0: int, K: int, gemm, row, refresh, aux=(),
               prime=None, energy_constant: float = 0.0, block: tuple = (0, 1),
               stages: tuple | None = None) -> None:
    """Steps t0 .. t0+K-1 of overdamped Langevin for a dense family (the fused "cuda"
    kernels of Quadratic, LinearRegression and SphericalPSpin, and their Leimkuhler-Matthews,
    Heun and full-batch SGD and AdamW (the velocity, or the moments,
    transposed into X2 (and G2) as x into XT); their BAOAB, on the same layout:
    `kernels.quadratic.baoab_form_steps`): the state is transposed once per call into
    XT (N, MP) (replica r in column r, MP = `padded_columns`(M), padding 0), `prime(XT)`
    prepares the first GEMM's operand, then per step ONE GEMM ``gemm(XT, GT)`` writes every
    replica's gradient into GT (N, MP) and ONE launch of `cuda_kernels.gemm_step(row,
    refresh, ...)` draws the noise, applies the family's row rule, tests divergence and
    freezes (aux: the family's arrays a0..a3, up to four); Heun runs two of each per step
    (the predictor's launch, the GEMM at the predictor ``gemm(X2, G2)``, the corrector's).
    MALA (the quadratic forms': gradient GEMM - aux[0], energy y.(GEMM / 2 - aux[0]) +
    `energy_constant`): one GEMM at x per call, then per step the proposal (GEMM_PREDICT into
    X2), the GEMM at it and the Metropolis launch (GEMM_MALA), U and the acceptance count
    updated in place; GT carries the raw gradient, and g = GT - aux[0] at the end.
    The steps are queued by `DeviceRun.queue_steps` (replays of CUDA graphs), so XT, GT, X2,
    G2 and the schedule codes live in a run `Workspace`, and `gemm` and `aux` must use arrays
    that persist for the run; XT is transposed back into the state at the end.  block:
    `gemm_block`(sim.dynamics, N), the block the family built `row` and `refresh` for;
    stages: the row rule's (lane, finish) for the sliced kernel (`cuda_kernels.gemm_step`),
    given to it while `cuda_kernels.GEMM_STREAM` is on: that streamed kernel leaves the new
    state in the gradient's buffer, so XT and GT trade places every step (the GEMM of an odd
    step reads GT and writes XT; graphs are captured per starting phase) and the state is
    transposed back from the buffer that holds it."""
    from ..kernels.common import schedule_code

    xp, x, dyn = run.xp, run.state["x"], sim.dynamics
    M, N = x.shape
    heun, sgd, adam = isinstance(dyn, Heun), isinstance(dyn, SGD), isinstance(dyn, AdamW)
    mala = isinstance(dyn, MALA)
    state = ("m", "s") if adam else ("v",) if sgd else ()   # transposed as x into X2 (G2)
    ecode = schedule_code(dyn.lr if sgd or adam else dyn.step)
    tcode = ecode if adam else schedule_code(dyn.temperature)
    rules = (ck.GEMM_PREDICT, ck.GEMM_CORRECT) if heun else (ck.GEMM_SGD,) if sgd else \
        (ck.GEMM_ADAMW,) if adam else (ck.GEMM_PREDICT, ck.GEMM_MALA) if mala else \
        (ck.GEMM_LM if isinstance(dyn, LeimkuhlerMatthews) else ck.GEMM_OVERDAMPED,)
    q = (float(dyn.beta1), float(dyn.beta2), float(dyn.eps), float(dyn.weight_decay)) if adam \
        else (float(dyn.momentum), float(dyn.grad_noise), 0.0, float(dyn.weight_decay)) if sgd \
        else (float(energy_constant), 0.0, 0.0, 0.0) if mala else (0.0,) * 4
    aux = tuple(aux)

    def build() -> dict:
        XT = xp.zeros((N, padded_columns(M)), dtype=x.dtype)
        if heun or mala:                 # the predictor (proposal) and its gradient
            X2, G2 = xp.empty_like(XT), xp.empty_like(XT)
        else:                            # (unused: distinct, the simulator copies each back)
            X2, G2 = (xp.zeros_like(XT) if k < len(state) else xp.empty((N, 0), x.dtype)
                      for k in range(2))
        return dict(XT=XT, GT=xp.empty_like(XT), X2=X2, G2=G2, es=xp.asarray(ecode),
                    ts=xp.asarray(tcode), aux=aux + tuple(xp.empty(0, x.dtype)
                                                          for _ in range(4 - len(aux))))

    streamed = stages is not None and ck.GEMM_STREAM and block[1] > 1
    key = ("gemm", x.dtype, rules, row, refresh, tuple(map(id, aux)), tuple(ecode),
           tuple(tcode), q, run.regions is not None, block, streamed)
    ws = run.workspace(key, build)
    w = ws.arrays
    XT, GT, X2, G2 = w["XT"], w["GT"], w["X2"], w["G2"]
    XT[:, :M] = x.T
    for k, a in zip(state, (X2, G2)):
        a[:, :M] = run.state[k].T
    if prime is not None:
        prime(XT)
    if mala:                             # GT: the raw gradient at x, carried across steps
        gemm(XT, GT)
        ua = (run.state["u"], run.state["accepted"])
    else:
        ua = w.setdefault("ua", (xp.empty(0), xp.empty(0)))
    kernels = [ck.gemm_step(row, refresh, run.f32, N, rule, block, stages if streamed else None)
               for rule in rules]
    # (state, gradient) by step phase: the streamed kernel leaves the new state in the
    # gradient's buffer, so the two trade places every step
    pairs = ((XT, GT), (GT, XT)) if streamed else ((XT, GT),)
    heads = [rt.kernel_arrays(a, b, X2, G2, run.dstep, run.tv) for a, b in pairs]
    esk, tsk, *auxk = rt.kernel_arrays(w["es"], w["ts"], *w["aux"])
    rest = (run.k0, run.k1, run.rep0, esk, tsk, run.bound, *q, *rt.kernel_arrays(*ua), *auxk)
    observers = [run.observer_launch(pairs[(p + 1) % len(pairs)][0])
                 for p in range(len(pairs))]

    def step(k: int, phase: int) -> None:
        if not mala:
            gemm(*pairs[phase])
        for i, kernel in enumerate(kernels):
            if i:
                gemm(X2, G2)
            rt.launch(kernel, M, *heads[phase], k, *rest, block=block)
        observers[phase](k)

    run.queue_steps(ws, t0, K, step, len(pairs))
    x[...] = pairs[K % len(pairs)][0][:, :M].T
    for k, a in zip(state, (X2, G2)):
        run.state[k][...] = a[:, :M].T
    if mala:
        run.state["g"][...] = (GT[:, :M] - aux[0][:, None]).T


def _argsort_stable(xp, a):
    """Row-wise stable argsort (int64): the reference's mergesort order, on the device."""
    if rt.is_fake(xp):
        return xp.argsort(a, axis=1, kind="stable").astype(np.int64)
    return xp.argsort(a, axis=1).astype(np.int64)   # CuPy's sort is stable (kind=None)


# ---------------------------------------------------------------- update rules

def overdamped_rule(run: DeviceRun, dyn, t: int) -> None:
    """`OverdampedLangevin.reference_step` and `LeimkuhlerMatthews.reference_step` (the
    normals of steps t and t + 1, sigma / 2) on the device."""
    x, pot = run.state["x"], run.pot
    eta, T = dyn.step(t), dyn.temperature(t)
    lm = isinstance(dyn, LeimkuhlerMatthews)
    sigma = noise_scale(eta, T)
    out = run.buffer("x", x)
    run.elementwise(ck.EW_LM if lm else ck.EW_OVERDAMPED, t, (x, run.grad(x)), (out,),
                    (eta, 0.5 * sigma if lm else sigma), noisy=T > 0,
                    candidate=pot.constrained)
    if pot.constrained:
        run.commit(t, [("x", run.tangent_step(x, out))])
    else:
        run.swap("x", out)


def sgd_rule(run: DeviceRun, dyn, t: int) -> None:
    """`SGD.reference_step` on the device (Riemannian heavy ball on constrained potentials)."""
    x, v, pot = run.state["x"], run.state["v"], run.pot
    lr, T = dyn.lr(t), dyn.temperature(t)
    g = run.batch_grad(x, t, dyn)
    if pot.constrained:
        g = run.device(pot.project(x, g))
    xo, vo = run.buffer("x", x), run.buffer("v", v)
    run.elementwise(ck.EW_SGD, t, (x, v, g), (xo, vo),
                    (lr, dyn.momentum, dyn.weight_decay, noise_scale(lr, T)), noisy=T > 0,
                    candidate=pot.constrained)
    if pot.constrained:
        xn = run.tangent_step(x, xo)
        run.commit(t, [("x", xn), ("v", run.device(pot.project(xn, vo)))])
    else:
        run.swap("x", xo)
        run.swap("v", vo)


def adamw_rule(run: DeviceRun, dyn, t: int) -> None:
    """`AdamW.reference_step` on the device."""
    x, m, s, pot = run.state["x"], run.state["m"], run.state["s"], run.pot
    g = run.batch_grad(x, t, dyn)
    if pot.constrained:
        g = run.device(pot.project(x, g))
    c1 = 1.0 - math.pow(dyn.beta1, t + 1)
    c2 = 1.0 - math.pow(dyn.beta2, t + 1)
    a1, a2 = complements(dyn.beta1, dyn.beta2)
    xo, mo, so = run.buffer("x", x), run.buffer("m", m), run.buffer("s", s)
    run.elementwise(ck.EW_ADAMW, t, (x, m, s, g), (xo, mo, so),
                    (dyn.lr(t), dyn.beta1, dyn.beta2, a1, a2, dyn.eps, dyn.weight_decay, c1, c2),
                    candidate=pot.constrained)
    if pot.constrained:
        xn = run.tangent_step(x, xo)
        run.commit(t, [("x", xn), ("m", run.device(pot.project(xn, mo))), ("s", so)])
    else:
        run.swap("x", xo)
        run.swap("m", mo)
        run.swap("s", so)


def baoab_rule(run: DeviceRun, dyn, t: int) -> None:
    """`UnderdampedLangevin.reference_step` on the device: B A O A, the gradient, the closing B
    (a frozen replica carries x, p and g)."""
    x, p, g = run.state["x"], run.state["p"], run.state["g"]
    eta, T = dyn.step(t), dyn.temperature(t)
    c1, c2 = baoab_coeffs(eta, dyn.friction, T, dyn.mass)
    xo, po = run.buffer("x", x), run.buffer("p", p)
    run.elementwise(ck.EW_BAOAB_FIRST, t, (x, p, g), (xo, po), (0.5 * eta, 1.0 / dyn.mass, c1, c2),
                    noisy=True, freeze=False)     # (it tests nothing: the closing B does)
    gn = run.grad(xo)
    run.elementwise(ck.EW_BAOAB_LAST, t, (x, p, g), (xo, po, gn), (0.5 * eta,))
    run.swap("x", xo)
    run.swap("p", po)
    run.state["g"] = gn


def obabo_rule(run: DeviceRun, dyn, t: int) -> None:
    """`OBABO.reference_step` on the device: O B A, the gradient, the closing B O (a frozen
    replica carries x, p and g).  The kernels draw at stream positions s d + i of the step s
    they are given: 2 t for the first O's normals, 2 t + 1 for the second's (n = 2 t d + i,
    i < 2 d); the freeze then flags step t."""
    x, p, g = run.state["x"], run.state["p"], run.state["g"]
    eta, T = dyn.step(t), dyn.temperature(t)
    c1, c2 = baoab_coeffs(0.5 * eta, dyn.friction, T, dyn.mass)
    xo, po = run.buffer("x", x), run.buffer("p", p)
    run.elementwise(ck.EW_OBABO_FIRST, 2 * t, (x, p, g), (xo, po),
                    (0.5 * eta, eta, 1.0 / dyn.mass, c1, c2), noisy=True, freeze=False)
    gn = run.grad(xo)
    run.elementwise(ck.EW_OBABO_LAST, 2 * t + 1, (x, p, g), (xo, po, gn), (0.5 * eta, c1, c2),
                    noisy=True, freeze=False)
    run.freeze(t, (x, p, g), (xo, po, gn))
    run.swap("x", xo)
    run.swap("p", po)
    run.state["g"] = gn


def heun_rule(run: DeviceRun, dyn, t: int) -> None:
    """`Heun.reference_step` on the device: the predictor (untested: the reference tests the
    step's end), its gradient, the corrector on the same normals."""
    x, pot = run.state["x"], run.pot
    eta, T = dyn.step(t), dyn.temperature(t)
    sigma = noise_scale(eta, T)
    g = run.grad(x)
    xt = run.buffer("x~", x)
    run.elementwise(ck.EW_HEUN_PREDICT, t, (x, g), (xt,), (eta, sigma), noisy=T > 0,
                    candidate=pot.constrained, freeze=False)
    if pot.constrained:
        xt = run.tangent_step(x, xt)
    out = run.buffer("x", x)
    run.elementwise(ck.EW_HEUN_CORRECT, t, (x, g, run.grad(xt)), (out,), (0.5 * eta, sigma),
                    noisy=T > 0, candidate=pot.constrained)
    if pot.constrained:
        run.commit(t, [("x", run.tangent_step(x, out))])
    else:
        run.swap("x", out)


RULES = {OverdampedLangevin: overdamped_rule, SGD: sgd_rule, AdamW: adamw_rule,
         UnderdampedLangevin: baoab_rule, Heun: heun_rule, LeimkuhlerMatthews: overdamped_rule,
         OBABO: obabo_rule}


def device_rule(dyn):
    """The rule of `RULES` for `dyn`, or None: its `reference_step` on the device arrays."""
    return RULES.get(type(dyn))


# ---------------------------------------------------------------- other dynamics

class DeviceNoise:
    """`dynamics.base.NoiseSource` on the device: normals and words from Philox kernels at
    the reference's stream positions (`replicas` and `seed` as the reference has them)."""

    def __init__(self, run: DeviceRun):
        sim = run.sim
        self.run, self.seed = run, sim.seed
        self.replicas = np.arange(sim.first_replica, sim.first_replica + sim.n_replicas,
                                  dtype=np.uint64)

    def normals(self, step: int, lanes: int, purpose: int = rng.NOISE, dtype=np.float64):
        return self.run.normals(step * lanes, lanes, purpose, dtype)

    def words(self, purpose: int, start: int, count: int):
        return self.run.words(purpose, start, count)

    def permutations(self, epoch: int, n: int):
        return self.run.permutations(epoch)


def xp_reference_step(run: DeviceRun, dyn, t: int) -> None:
    """A dynamics without a device rule (MALA, new ones): its own `reference_step` on the
    device arrays (all replicas; frozen ones are kept), then the reference's freeze."""
    xp = run.xp
    state = {k: v for k, v in run.state.items() if k not in FP_KEYS}
    new = dyn.reference_step(run.pot, state, t, DeviceNoise(run))
    ok = finite_and_bounded(dyn.bounded(new), run.bound)
    live = run.dstep < 0
    run.dstep = xp.where(live & ~ok, np.int64(t + 1), run.dstep)
    keep = live & ok
    for k, v in new.items():
        sel = keep.reshape((-1,) + (1,) * (v.ndim - 1))
        run.state[k] = xp.ascontiguousarray(xp.where(sel, v, state[k]).astype(state[k].dtype))


# ---------------------------------------------------------------- the potential on the device

def device_copy(potential, xp):
    """A shallow copy of `potential` whose NumPy arrays (attributes, and arrays held in dict
    attributes such as dtype caches) are device arrays: the instance data lives on the device
    and the potential's own methods run there when they use the array module of x.  Every
    dict attribute is the copy's own (a cache filled on the device never reaches the host)."""
    dev = copy.copy(potential)
    for k, v in vars(potential).items():
        if isinstance(v, np.ndarray):
            setattr(dev, k, xp.asarray(v))
        elif isinstance(v, dict):
            setattr(dev, k, {kk: xp.asarray(u) if isinstance(u, np.ndarray) else u
                             for kk, u in v.items()})
    return dev


class DevicePotential:
    """The potential as the device steps see it: `device_copy` of it, and for each method a
    probe: a method that raises TypeError on device arrays (a host conversion, or NumPy
    arrays mixed in: what CuPy refuses) or returns host arrays runs on the host instead,
    with one warning per (class, method) naming it.  Other attributes come from the copy.
    `observes`: whether the potential has observables (records take them on the device
    unless "observables" is in `bridged`)."""

    def __init__(self, potential, xp, x_probe, dynamics):
        self.host, self.xp = potential, xp
        self.dev = device_copy(potential, xp)
        self.bridged: dict[str, str] = {}
        self.cache: dict = {}     # fused kernels' device tables of this potential (by key)
        self.observes = type(potential).observables is not Potential.observables
        needed = ["grad", "energy"]   # energy: records (`CudaBackend.record_energy`)
        if self.observes:
            needed.append("observables")   # records (`CudaBackend.record_observables`)
        if getattr(dynamics, "batch_size", None) is not None:
            needed.append("grad_batch")
        if getattr(dynamics, "label_noise", 0) > 0:
            needed.append("grad_noisy_labels")
        if potential.constrained:
            needed += ["project", "retract"]
        for name in needed:
            why = probe(self.dev, name, x_probe, xp)
            if why:
                self.bridged[name] = why
                key = (type(potential).__name__, name)
                if key not in _warned:
                    _warned.add(key)
                    warnings.warn(f"cuda backend: {key[0]}.{name.replace('_batch', '')}"
                                  f"{'(x, batch)' if name == 'grad_batch' else ''} is not written "
                                  f"with the array module of x ({why}); it runs on the host at "
                                  f"every {'record' if name in RECORD_METHODS else 'step'} "
                                  "(correct, slower): see docs/gpu.md", stacklevel=4)

    def __getattr__(self, name):
        if name in ("host", "xp", "dev", "bridged", "cache", "observes") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dev, name)

    def _host(self, fn, *arrays):
        xp = self.xp
        out = fn(*(None if a is None else rt.asnumpy(a) for a in arrays))
        return tuple(xp.asarray(o) for o in out) if isinstance(out, tuple) else xp.asarray(out)

    def grad(self, x, batch=None):
        if batch is None:
            if "grad" in self.bridged:
                return self._host(self.host.grad, x)
            return self.dev.grad(x)
        if "grad_batch" in self.bridged:
            return self._host(self.host.grad, x, batch)
        return self.dev.grad(x, batch)

    def grad_noisy_labels(self, x, batch, shift):
        if "grad_noisy_labels" in self.bridged:
            return self._host(self.host.grad_noisy_labels, x, batch, shift)
        return self.dev.grad_noisy_labels(x, batch, shift)

    def energy(self, x):
        if "energy" in self.bridged:
            return self._host(self.host.energy, x)
        return self.dev.energy(x)

    def project(self, x, v):
        if "project" in self.bridged:
            return self._host(self.host.project, x, v)
        return self.dev.project(x, v)

    def retract(self, x):
        if "retract" in self.bridged:
            return self._host(self.host.retract, x)
        return self.dev.retract(x)


RECORD_METHODS = ("energy", "observables")   # the methods only records call


def probe(dev, name: str, x, xp) -> str:
    """'' when method `name` of the device copy `dev` runs on device arrays and returns
    device arrays (every value of a returned dict), else why not (one line).  Observables
    are probed on a float64 copy of x, as records call them."""
    calls = {"grad": lambda: dev.grad(x),
             "grad_batch": lambda: dev.grad(x, xp.asarray(np.zeros((x.shape[0], 1), np.int64))),
             "grad_noisy_labels": lambda: dev.grad_noisy_labels(
                 x, xp.asarray(np.zeros((x.shape[0], 1), np.int64)),
                 xp.asarray(np.zeros((x.shape[0], 1), x.dtype))),
             "energy": lambda: dev.energy(x),
             "observables": lambda: dev.observables(xp.asarray(x, dtype=np.float64),
                                                    xp.zeros(x.shape[0], np.float64)),
             "project": lambda: dev.project(x, x),
             "retract": lambda: dev.retract(x),
             "hvp": lambda: dev.hvp(x, x)}
    try:
        with np.errstate(all="ignore"):
            out = calls[name]()
    except (TypeError, AttributeError) as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    outs = tuple(out.values()) if isinstance(out, dict) else out if isinstance(out, tuple) \
        else (out,)
    bad = [o for o in outs if not isinstance(o, xp.ndarray)]
    if bad:
        return f"returns {type(bad[0]).__module__}.{type(bad[0]).__name__}, not a device array"
    return ""


def xp_clean_report(potentials, methods=("energy", "grad", "grad_batch", "hvp",
                                         "observables")) -> dict:
    """{(class name, method): '' if device-clean else why} for instances `potentials`, with
    their arrays on the device (`device_copy`), probed on 2 default-initialized replicas."""
    xp = rt.xp()
    out = {}
    for pot in potentials:
        z = rng.stream_normals(0, rng.INIT, np.arange(2), 0, pot.d)
        x = xp.asarray(np.asarray(pot.default_init(z), dtype=np.float64))
        dev = device_copy(pot, xp)
        for name in methods:
            if name == "grad_batch" and pot.n_samples is None:
                continue
            out[(type(pot).__name__, name)] = probe(dev, name, x, xp)
    return out
