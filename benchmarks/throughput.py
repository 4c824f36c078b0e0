"""Chain-steps per second per workload: the engine against its peers and this machine's limits.

usage: python benchmarks/throughput.py [--only W1,W3b] [--quick] [--repeats N] [--out PATH.md]

Per workload and dtype every implementation is timed in the same run, round-robin: repeat
r calls each implementation once (in an order rotated by r, reversed in odd repeats), and a figure is the median over
the repeats, so each ratio compares timings taken under the same conditions.  The
implementations: the engine's NumPy reference (`numpy`), the engine's Numba backend
advancing (`numba`: ``sim.advance(steps)``) and running with ten records of the positions
into an HDF5 file (`numba_run`: ``sim.run(steps, record_every=steps // 10, out=...)``, the
same steps as `numba`'s call: ~2-6 s here, so that ten records sit in a run of a length a
user records ten times, and per-call costs weigh as in a run; the seconds per record are
reported, so other lengths can be read off; the recording cost is the median over the
rounds of 1 - t(numba) / t(numba_run), both timed in the same round),
and the peers of `peers.py`: a plain NumPy loop (`numpy_loop`) and JAX jit + lax.scan (`jax`;
skipped where JAX is missing; in a process of its own, `PeerProcess`, so that the row's
NumPy implementations run as in a script without JAX).  The GEMM of the workload's shape is timed in the same
round-robin.  Limits measured once per run: the rate at which the kernels' own Philox +
Box-Muller code generates normals alone, memory bandwidth, and the FLOP/s of a square GEMM
(the ceiling every GEMM-bound row is also read against).  Each row (workload and
dtype) runs in a new process, as a user's script starts; then its cold start is timed in
another, with an empty Numba cache.  Each workload states the criteria it is held to; W1 and
W2 are also compared with a committed result of the same machine (--baseline; by default the
result that --out replaces).  A "## Notes (... by hand ...)" section of the report --out
replaces is carried over to the new one, marked as written for the earlier run.  With --only,
--out naming an existing report of this machine (same CPU family and model) and results
`FORMAT` updates only the named workloads' rows and criteria in it (.md and .json) and keeps
the others; its header then lists the runs the rows come from (code revision, date, settings,
machine limits of each).  A report of another machine or format is refused.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Callable

import numba
import numpy as np
from numba import prange
from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits

from langevin_sim import Simulation, rng
from langevin_sim.backends import registry
from langevin_sim.dynamics import SGD, OverdampedLangevin
from langevin_sim.errors import UnrecordedStepsWarning
from langevin_sim.kernels.common import (CHUNK, TILE, chunk_buffer, fill_noise_tile_d1,
                                         noise_chunk)
from langevin_sim.potentials import (ClassifierMLP, DoubleWell, Quadratic, SphericalPSpin,
                                     TeacherStudentMLP)
from langevin_sim.scenario import load_scenario

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (benchmarks/ is not a package)
from notes import kept_notes  # noqa: E402,F401  (also gpu_throughput's)

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "benchmarks" / "results" / "epyc-2core-ci-class.json"


# ------------------------------------------------------------------ timing

def wall(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def median_time(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time (s) of fn() over `repeats` calls after one warm-up call."""
    fn()
    return float(np.median([wall(fn) for _ in range(repeats)]))


@dataclass
class Entry:
    """One timed implementation: `call` does `work` units (chain-steps or FLOP); `warm`
    compiles it before timing (other first-call costs are left to the median); `close`
    frees what it holds."""
    call: Callable[[], object]
    work: float
    warm: Callable[[], object] = lambda: None
    close: Callable[[], object] = lambda: None


class PeerProcess:
    """The JAX peer of one row (`peers.JaxScan` of workload `name`'s numba Simulation in
    `dtype`, from its initial state) in a process of its own, as a user's JAX script runs:
    once JAX has run in a process, glibc's heap there serves NumPy's temporaries from pages
    already touched (W5's NumPy reference 1.8x faster after one JAX call, design_changes
    119), which no NumPy script without JAX sees.  `call()` advances it by `steps` and waits
    (the row's round-robin times it as the others: the pipe's round trip, well under a
    millisecond, is in it); `positions()` its state's positions (M, d)."""

    def __init__(self, name: str, dtype: str, steps: int):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_peer, args=(child, name, dtype, steps), daemon=True)
        self.proc.start()
        self._ask("ready")

    def _ask(self, what: str):
        if what != "ready":
            self.conn.send(what)
        ok, value = self.conn.recv()
        if not ok:
            raise RuntimeError(f"the JAX peer's process failed: {value}")
        return value

    def call(self) -> None:
        self._ask("advance")

    def positions(self) -> np.ndarray:
        return self._ask("positions")

    def close(self) -> None:
        if self.proc.is_alive():
            self.conn.send(None)
            self.proc.join(30)
        self.conn.close()


def _serve_peer(conn, name: str, dtype: str, steps: int) -> None:
    """`PeerProcess`'s side: build the peer, then answer "advance" and "positions" with
    (True, value) or (False, the error) until None."""
    try:
        peer = peers.JaxScan(WORKLOADS[name].build("numba", dtype), seed=1)
    except BaseException as e:
        conn.send((False, f"{type(e).__name__}: {e}"))
        return
    conn.send((True, None))
    while (what := conn.recv()) is not None:
        try:
            conn.send((True, peer.advance(steps) if what == "advance" else peer.positions))
        except BaseException as e:
            conn.send((False, f"{type(e).__name__}: {e}"))


def interleaved(entries: dict[str, Entry], repeats: int) -> dict[str, list[float]]:
    """Wall times (s) of each entry over `repeats` round-robin rounds, the order rotated by
    one entry per round and reversed in odd rounds (a rotation alone keeps each entry behind
    the same neighbour: numpy_loop always ran right after numba_run's threads)."""
    for e in entries.values():
        e.warm()
    names = list(entries)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order[::-1] if r % 2 else order:
            times[k].append(wall(entries[k].call))
    return times


# ------------------------------------------------------------------ machine limits

@numba.njit(cache=True)
def _positives(z, lo, hi):
    """Count of z[lo:hi] > 0 (a separate function: inlined into the parallel loop, the count
    compiled to slower code and understated the ceiling)."""
    s = 0
    for i in range(lo, hi):
        s += z[i] > 0.0
    return s


@numba.njit(parallel=True, cache=True)
def _normals_only(M, steps, d, k0, k1, like):
    """Normals (like's dtype) a fused kernel draws for M replicas x steps x d lanes, drawn
    the same way (`noise_chunk` calls of `chunk_buffer(d)` steps): its RNG ceiling.  Each
    normal is consumed by a vectorizable count of positives (a float sum would add a serial
    dependency chain and understate the ceiling)."""
    acc = np.zeros(M, dtype=np.int64)
    for m in prange(M):
        buf, per = chunk_buffer(d, like)
        t = 0
        s = 0
        while t < steps:
            tb = min(steps, t + per)
            z, off = noise_chunk(k0, k1, rng.NOISE, np.uint64(m), t * d, (tb - t) * d, buf)
            s += _positives(z, off, off + (tb - t) * d)
            t = tb
        acc[m] = s
    return acc


@numba.njit(parallel=True, cache=True)
def _normals_only_d1(M, steps, k0, k1, like):
    """d = 1 normals drawn as the d = 1 DoubleWell kernel draws them (`fill_noise_tile_d1`
    across tiles of TILE replicas, CHUNK steps at a time), each counted as in `_normals_only`."""
    acc = np.zeros((M + TILE - 1) // TILE, dtype=np.int64)
    for b in prange((M + TILE - 1) // TILE):
        lo = b * TILE
        n = min(M, lo + TILE) - lo
        rep = np.arange(n).astype(np.uint64) + np.uint64(lo)
        Z = np.empty((CHUNK + 4, n), dtype=like.dtype)
        W = np.empty((4, n), dtype=like.dtype)
        t = 0
        while t < steps:
            sn = min(CHUNK, steps - t)
            fill_noise_tile_d1(Z, W, k0, k1, rep, t, sn)
            acc[b] += _positives(Z[t % 4:t % 4 + sn].reshape(-1), 0, sn * n)
            t += sn
    return acc


def normal_rate(d: int, M: int, steps: int, dtype: str, repeats: int) -> float:
    """Normals per second (median) of the generation code the kernels use for d lanes."""
    k0, k1 = rng.key_of(1)
    like = np.zeros(1, dtype)
    if d == 1:
        return M * steps / median_time(lambda: _normals_only_d1(M, steps, k0, k1, like), repeats)
    return M * steps * d / median_time(lambda: _normals_only(M, steps, d, k0, k1, like), repeats)


GEMM_CEILING_N = 1024    # square products of 512-2048 read within 10 % of each other here


def gemm_entry(m: int, k: int, n: int, dtype) -> Entry:
    """The BLAS product (m, k) @ (k, n) in `dtype`, repeated to take ~ as long as a kernel
    call, into one reused output (a fresh 1 MiB result each time paid first touches of new
    pages, 15-35 us each on these VMs: W2's "GEMM rate" read 1.65x low and the engine
    131 % of it); small shapes as a stack of independent products in one call (`batch`
    of them, ~1 MiB of operands: one Python call per 32 x 16 x 32 product timed NumPy's
    call overhead, and the engine read up to 204 % of that "limit")."""
    rng = np.random.default_rng(0)
    batch = max(1, (1 << 17) // (m * k + k * n + m * n))
    a = rng.standard_normal((batch, m, k)).astype(dtype)
    b = rng.standard_normal((batch, k, n)).astype(dtype)
    c = np.empty((batch, m, n), dtype)
    flops = 2.0 * m * k * n * batch
    reps = max(1, int(5e9 // flops))

    def call():
        for _ in range(reps):
            np.matmul(a, b, out=c)
    return Entry(call, flops * reps, call)


def gemm_ceiling(dtype: str, repeats: int) -> float:
    """FLOP/s of a square BLAS product (n = 1024, all BLAS threads): the machine's GEMM
    ceiling in `dtype`, against which every GEMM-bound row is also read (a product at a
    workload's own shape can run well below it: W3's (64, 2080, 256) at 63-80 % of it
    here, where our packed kernel beat BLAS)."""
    e = gemm_entry(GEMM_CEILING_N, GEMM_CEILING_N, GEMM_CEILING_N, np.dtype(dtype))
    return e.work / median_time(e.call, repeats)


def keep_freed_memory() -> bool:
    """Tell glibc to keep freed memory for reuse (mmap threshold at its 32 MiB maximum, trim
    threshold 1 GiB) instead of returning it to the kernel: on a VM whose host takes freed
    pages back, every fresh page costs 15-35 us on first touch (docs/design_changes.md 24).
    Process-wide from here on; False where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
                    and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


def memory_bandwidth(repeats: int) -> float:
    """Bytes per second (median) read + written by a 512 MiB float64 copy."""
    a = np.ones(1 << 26)
    b = np.empty_like(a)
    return 2 * a.nbytes / median_time(lambda: np.copyto(b, a), repeats)


# ------------------------------------------------------------------ workloads

IMPLEMENTATIONS = ("numpy", "numba", "numba_run", "numpy_loop", "jax")


@dataclass
class Workload:
    name: str
    title: str
    build: Callable[[str, str], Simulation]      # (backend, dtype) -> Simulation
    steps: dict                                  # implementation -> steps per timed call
    # (numba and numba_run: the same steps, a run of ~2-6 s on a 2-core machine)
    dtypes: tuple = ("float32", "float64")
    # BLAS threads of the engine's backends while timed (None: as set; the peers run as set)
    blas_threads: int | None = None
    flops_per_chain_step: float = 0.0            # for GEMM-bound workloads
    gemm_shape: tuple | None = None              # (m, k, n) of one step's product
    multiple: dict = field(default_factory=dict)  # implementation -> steps must be a multiple of
    # time the NumPy reference once more after `keep_freed_memory` (its temporaries then reuse
    # memory: no first-touch page faults), next to its rate in the process as a user starts it
    # (the NumPy loop peer is, in every row)
    kept_memory_reference: bool = False
    needs: tuple = ()          # modules its build imports beyond the package's requirements
                               # (imported before a cold start is timed: every run pays them)


def missing_modules(names) -> dict[str, list[str]]:
    """{module: [workloads]} of the modules the named workloads need that are not installed
    (checked before the run: a row whose build fails ended the whole run, with no report)."""
    out: dict[str, list[str]] = {}
    for n in names:
        for mod in {m.split(".")[0] for m in WORKLOADS[n].needs}:
            if importlib.util.find_spec(mod) is None:
                out.setdefault(mod, []).append(n)
    return out


WORKLOADS: dict[str, Workload] = {}


def workload(w: Workload) -> Workload:
    WORKLOADS[w.name] = w
    return w


def sim_of(potential: Callable, dynamics, replicas: int) -> Callable[[str, str], Simulation]:
    """A Workload.build of one (cached) potential instance, seed 1."""
    return lambda be, dt: Simulation(potential(), dynamics, replicas, backend=be, dtype=dt, seed=1)


def grokking(be: str, dt: str) -> Simulation:
    """scenarios/grokking.py's Simulation with 64 replicas (its other parameters as default)."""
    mod = load_scenario(ROOT / "scenarios" / "grokking.py")
    with threadpool_limits(limits=None):     # build() limits BLAS for good: keep it to W5
        return mod.build(mod.Params(replicas=64, backend=be, dtype=dt))


workload(Workload(
    "W1", "DoubleWell d=1, 2^20 replicas, overdamped Langevin",
    sim_of(cache(lambda: DoubleWell(d=1)), OverdampedLangevin(1e-3, 0.5), 1 << 20),
    {"numpy": 4, "numba": 4000, "numpy_loop": 16, "jax": 64}))

workload(Workload(
    "W2", "Quadratic dense H, d=256, 1024 replicas, overdamped Langevin",
    sim_of(cache(lambda: Quadratic(spectrum=np.linspace(0.1, 1.0, 256), seed=1)),
           OverdampedLangevin(1e-2, 0.5), 1024),
    {"numpy": 20, "numba": 2000, "numpy_loop": 20, "jax": 100},
    flops_per_chain_step=2.0 * 256 * 256, gemm_shape=(1024, 256, 256)))

workload(Workload(
    "W3", "Spherical p=3 spin glass, N=64, 256 replicas, overdamped Langevin",
    sim_of(cache(lambda: SphericalPSpin(64, 3, seed=1)), OverdampedLangevin(1e-2, 0.5), 256),
    {"numpy": 40, "numba": 4000, "numpy_loop": 40, "jax": 200},
    # the kernel's product: -p J over the N(N+1)/2 unique pairs (kernels/pspin.py) times the
    # replicas' packed x_j x_k, half the full contraction's 2 N^3 (the peers do all of it)
    flops_per_chain_step=2.0 * 64 * 2080, gemm_shape=(64, 2080, 256)))

workload(Workload(
    "W3b", "Spherical p=3 spin glass, N=256, 32 replicas, overdamped Langevin",
    sim_of(cache(lambda: SphericalPSpin(256, 3, seed=1)), OverdampedLangevin(1e-2, 0.5), 32),
    {"numba": 200, "numpy_loop": 20, "jax": 40},
    flops_per_chain_step=2.0 * 256 * 32896, gemm_shape=(256, 32896, 32)))

workload(Workload(
    "W4", "TeacherStudentMLP d_in=16, hidden=32, tanh, 64 replicas, SGD batch 32",
    sim_of(cache(lambda: TeacherStudentMLP(n=1024, d_in=16, hidden=32, teacher_hidden=8,
                                           noise=0.01, seed=1)),
           SGD(0.02, 32, momentum=0.9), 64),
    {"numpy": 50, "numba": 16000, "numpy_loop": 300, "jax": 1024},
    # forward A W1^T, H W2^T and backward dout W2, dZ^T A, dout^T H: 2 B h (2 d_in + 3)
    flops_per_chain_step=2.0 * 32 * 32 * (2 * 16 + 3), gemm_shape=(32, 16, 32),
    multiple={"jax": 32}))          # the JAX peer runs whole epochs of 1024 / 32 batches

workload(Workload(
    "W5", "grokking: ModularArithmeticMLP p=23, hidden=64, quadratic, full batch, AdamW, "
          "64 replicas (scenarios/grokking.py)",
    grokking, {"numpy": 10, "numba": 1000, "numpy_loop": 20, "jax": 100}, blas_threads=1,
    kept_memory_reference=True))


workload(Workload(
    "W6", "ClassifierMLP digits (512 training images, 64 features, 10 classes), hidden=32, tanh, "
          "64 replicas, SGD batch 32 (scenarios/classifier.py's net)",
    sim_of(cache(lambda: ClassifierMLP("digits", n=512, hidden=32)), SGD(0.1, 32), 64),
    {"numpy": 50, "numba": 8000, "numpy_loop": 320, "jax": 1024},
    # forward A W1^T, H W2^T and backward dout W2, dZ^T A, dout^T H: 2 B h (2 d_in + 3 K)
    flops_per_chain_step=2.0 * 32 * 32 * (2 * 64 + 3 * 10), gemm_shape=(32, 64, 32),
    multiple={"jax": 16},           # the JAX peer runs whole epochs of 512 / 32 batches
    needs=("sklearn.datasets",)))   # the digits are scikit-learn's


def steps_of(w: Workload, impl: str, quick: bool) -> int:
    """Steps per timed call (an eighth with --quick), a multiple of 10 for the engine (ten
    records per run) and of the implementation's own granularity."""
    base = w.steps["numba" if impl == "numba_run" else impl]
    q = {"numba": 10, "numba_run": 10}.get(impl, w.multiple.get(impl, 1))
    return max(q, (base // (8 if quick else 1)) // q * q)


def entries(w: Workload, dtype: str, quick: bool,
            folder: str) -> tuple[dict[str, Entry], dict, Simulation]:
    """The timed entries of one workload and dtype, their steps per call, the numba Simulation.
    The engine's entries run with `w.blas_threads` BLAS threads, the peers' with those set."""
    nb = w.build("numba", dtype)
    M = nb.n_replicas
    out, steps = {}, {}
    impls = [i for i in IMPLEMENTATIONS if i in w.steps or i == "numba_run"]
    if "jax" in impls and importlib.util.find_spec("jax") is None:   # (not imported here)
        impls.remove("jax")
    blas = ThreadpoolController()

    def engine(fn):
        if w.blas_threads is None:
            return fn

        def limited():
            with blas.limit(limits=w.blas_threads, user_api="blas"):
                return fn()
        return limited

    for impl in impls:
        s = steps[impl] = steps_of(w, impl, quick)
        if impl == "numpy":
            ref = w.build("numpy", dtype)
            out[impl] = Entry(engine(lambda ref=ref, s=s: ref.advance(s)), M * s,
                              engine(lambda ref=ref: ref.advance(1)))
        elif impl == "numba":
            out[impl] = Entry(engine(lambda s=s: nb.advance(s)), M * s)
        elif impl == "numba_run":
            path = os.path.join(folder, f"{w.name}-{dtype}.h5")
            out[impl] = Entry(engine(lambda s=s: nb.run(s, record_every=s // 10, out=path,
                                                        overwrite=True, progress=False).close()),
                              M * s, engine(nb.snapshot))  # compiles the record-time functions
        elif impl == "numpy_loop":   # from the engine's initial state: built before it moves
            peer = peers.NumpyLoop(nb, seed=1)
            out[impl] = Entry(lambda peer=peer, s=s: peer.advance(s), M * s)
        else:
            jax = PeerProcess(w.name, dtype, s)
            out[impl] = Entry(jax.call, M * s, jax.call, jax.close)
    if w.gemm_shape:
        out["gemm"] = gemm_entry(*w.gemm_shape, np.dtype(dtype))
    nb.advance(1)    # compiles; off the record grid: each run then writes ten records
    warnings.simplefilter("ignore", UnrecordedStepsWarning)      # (its last step, on purpose)
    return out, steps, nb


def measure_fresh(name: str, dtype: str, quick: bool, repeats: int, folder: str,
                  limits: dict) -> dict:
    """`measure` in a new Python process: each row starts as a user's script starts (malloc's
    state, hence the NumPy implementations' page faults, does not depend on the rows before
    it; design_changes 26)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        return ex.submit(_measure_named, name, dtype, quick, repeats, folder, limits).result()


def _measure_named(name: str, dtype: str, quick: bool, repeats: int, folder: str,
                   limits: dict) -> dict:
    with threadpool_limits(None):
        return measure(WORKLOADS[name], dtype, quick, repeats, folder, limits)


def cold_start(name: str, dtype: str) -> float:
    """Seconds a user's first call waits with an empty Numba cache: building the workload's
    numba Simulation, its first `advance(1)` and its first record (`snapshot`: the compiled
    record-time energy and observables), in a new process with a new NUMBA_CACHE_DIR; the
    workload's `needs` imported before the clock starts (scikit-learn's ~1.2 s import is the
    same in every run, cold or warm: not the compilation this times)."""
    with tempfile.TemporaryDirectory(prefix="numba-cold-") as cache:
        res = subprocess.run([sys.executable, __file__, "--cold-one", name, dtype],
                             env=dict(os.environ, NUMBA_CACHE_DIR=cache), capture_output=True,
                             text=True, check=True)
    return float(res.stdout.split()[-1])


def _cold_one(name: str, dtype: str) -> None:
    for mod in WORKLOADS[name].needs:
        importlib.import_module(mod)
    t = time.perf_counter()
    sim = WORKLOADS[name].build("numba", dtype)
    sim.advance(1)
    sim.snapshot()
    print(time.perf_counter() - t)


def measure(w: Workload, dtype: str, quick: bool, repeats: int, folder: str, limits: dict) -> dict:
    """One row: rates (work per second, medians of interleaved repeats) of every entry."""
    es, steps, sim = entries(w, dtype, quick, folder)
    try:
        times = interleaved(es, repeats)
    finally:
        for e in es.values():
            e.close()
    # the NumPy loop peer (and W5's reference) once more with freed memory kept: the same code
    # without this VM's first touches of fresh pages (W4 / W5 float64 peers ~1.7x faster)
    again = [k for k in ("numpy",) * w.kept_memory_reference + ("numpy_loop",) if k in es]
    kept = {k: es[k].work / median_time(es[k].call, repeats)
            for k in again} if again and keep_freed_memory() else {}
    med = {k: float(np.median(v)) for k, v in times.items()}
    row = {"workload": w.name, "title": w.title, "dtype": dtype, "steps_per_call": steps,
           "numba_fused": registry.kernel_for(sim.potential, sim.dynamics, "numba") is not None,
           "times_s": times,
           "spread": {k: float(np.subtract(*np.percentile(v, [75, 25])) / med[k])
                      for k, v in times.items()},
           **{f"{k}_chain_steps_per_s": es[k].work / med[k] for k in es if k != "gemm"}}
    for k, rate in kept.items():
        row[f"{k}_kept_memory_chain_steps_per_s"] = rate
    if "jax" in times:   # its speed switches between modes on a 2-vCPU VM (`report`'s note)
        row["jax_fastest_chain_steps_per_s"] = es["jax"].work / min(times["jax"])
    rate = row["numba_chain_steps_per_s"]
    # paired by round: both calls of a round ran under the same conditions
    adv, run = np.array(times["numba"]), np.array(times["numba_run"])
    row["recording_cost"] = float(np.median(1.0 - adv / run))
    row["seconds_per_record"] = float(np.median(run - adv)) / 10
    if "gemm" in es:
        g = row["gemm_flops_per_s"] = es["gemm"].work / med["gemm"]
        row["numba_gemm_fraction"] = rate * w.flops_per_chain_step / g
        row["numba_gemm_ceiling_fraction"] = (rate * w.flops_per_chain_step
                                              / limits[f"gemm_flops_per_s_{dtype}"])
    return row


# ------------------------------------------------------------------ criteria and report

def cpu_id(cpuinfo: str) -> str | None:
    """"vendor family F model M" of the first CPU in /proc/cpuinfo's text, or None: the model
    name alone ("AMD EPYC", "Intel(R) Xeon(R) Processor" on these VMs) names several machines
    (a Zen 4 and a Zen 5 EPYC both read "AMD EPYC")."""
    fields = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break
        k, _, v = line.partition(":")
        fields[k.strip()] = v.strip()
    if "cpu family" not in fields or "model" not in fields:
        return None
    return f"{fields.get('vendor_id', '?')} family {fields['cpu family']} model {fields['model']}"


def revision(root: Path = ROOT) -> str:
    """The checkout the run measured: `git describe --always --dirty` of `root` and the commit's
    date, or why not (the results' rule: regenerated after kernel changes, so a reader must
    see which code a file's numbers are of)."""
    try:
        rev = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, check=True).stdout.strip()
        date = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%cd",
                               "--date=short"], capture_output=True, text=True,
                              check=True).stdout.strip()
        return f"{rev} ({date})"
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def machine() -> dict:
    cpu, ident = platform.processor(), None
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        ident = cpu_id(text)
        cpu = next(line.split(":", 1)[1].strip() for line in text.splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = [{k: i.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for i in threadpool_info() if i.get("user_api") == "blas"]
    jax = peers.jax_module()
    return {"cpu": cpu, "cpu_id": ident, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numba_threads": numba.get_num_threads(),
            "numpy": np.__version__, "numba": numba.__version__, "blas": blas,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
            "jax": jax.__version__ if jax else None,
            "jax_devices": [str(d) for d in jax.devices()] if jax else [],
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", "(unset: one XLA thread per core)")}


def baseline_of(path, info: dict) -> tuple[dict | None, str]:
    """Numba rates {(workload, dtype): chain-steps/s} of a committed result on the same
    machine (cpu name, family and model, and cores), or None and why not.  A result that
    does not record the family and model (made before `cpu_id`) is not compared: its cpu
    name may be another machine's."""
    try:
        with open(path) as fh:
            base = json.load(fh)
    except OSError as e:
        return None, f"no baseline ({e.strerror}: {path})"
    why = other_machine(base["machine"], info)
    if why:
        return None, f"baseline {why}"
    return {(r["workload"], r["dtype"]): r["numba_chain_steps_per_s"] for r in base["rows"]}, ""


def other_machine(m: dict, info: dict) -> str:
    """Why the machine `m` of a result may not be this one (`info`), or "" where it is: cpu
    name, family and model, and cores (a result that does not record the family and model,
    made before `cpu_id`, may be another machine of the same name)."""
    if (m["cpu"], m["cores"]) != (info["cpu"], info["cores"]):
        return f"machine {m['cpu']} ({m['cores']} cores) is not this one"
    if not m.get("cpu_id") or m.get("cpu_id") != info.get("cpu_id"):
        was = m.get("cpu_id") or "family and model not recorded"
        return f"machine {m['cpu']} ({was}) may not be this one ({info.get('cpu_id')})"
    return ""


def criteria(rows: list[dict], limits: dict, baseline: dict | None, why: str) -> list[tuple]:
    """(text, measured or None for SKIP, op, need) per criterion."""
    out = []
    for r in rows:
        w, dt = r["workload"], r["dtype"]
        nb, npy = r["numba_chain_steps_per_s"], r.get("numpy_chain_steps_per_s")
        jx = r.get("jax_fastest_chain_steps_per_s", r.get("jax_chain_steps_per_s"))
        rel = lambda other: None if other is None else nb / other  # noqa: E731
        jax_need = {"W1": 1.0, "W2": 1.0, "W3": 1.5, "W3b": 1.5, "W4": 2.5, "W5": 1.0,
                    "W6": 1.0}.get(w)
        if w == "W1":
            out += [(f"W1 {dt}: numba >= 10x the NumPy reference", rel(npy), ">=", 10.0),
                    (f"W1 {dt}: numba >= 0.5x normals-alone rate",
                     nb / limits[f"normals_per_s_d1_{dt}"], ">=", 0.5)]
        if w in ("W2", "W3"):
            out += [(f"{w} {dt}: numba >= the NumPy reference", rel(npy), ">=", 1.0),
                    (f"{w} {dt}: numba >= 0.5x GEMM rate", r["numba_gemm_fraction"], ">=", 0.5)]
        if w in ("W4", "W6"):
            out += [(f"{w} {dt}: numba >= 2x the NumPy reference", rel(npy), ">=", 2.0)]
        if jax_need:
            out += [(f"{w} {dt}: numba >= {jax_need:g}x JAX (at its fastest call)"
                     + ("" if jx else " (jax is not installed)"), rel(jx), ">=", jax_need)]
        if w in ("W1", "W2", "W3", "W4", "W6"):
            out += [(f"{w} {dt}: recording cost (1 - advance/run time, 10 records) <= 10%",
                     r["recording_cost"], "<=", 0.10)]
        if w in ("W1", "W2"):
            b = None if baseline is None else baseline.get((w, dt))
            out += [(f"{w} {dt}: numba no slower than the committed result (ratio)"
                     + ("" if b else f" ({why or 'no committed figure'})"), rel(b), ">=", 0.9)]
        if w == "W5":
            out += [(f"W5 {dt}: numba >= 10x the NumPy reference", rel(npy), ">=", 10.0)]
        if w != "W3b":      # W3b: the pair and dtype of W3
            out += [(f"{w} {dt}: cold start (empty Numba cache) <= 10 s", r.get("cold_start_s"),
                     "<=", 10.0)]
    return out


def fastest(r: dict) -> float | None:
    """numba / JAX's fastest call of row r (None without JAX or in rows measured before it)."""
    jf = r.get("jax_fastest_chain_steps_per_s")
    return None if jf is None else r["numba_chain_steps_per_s"] / jf


def verdict(value, op: str, need: float) -> str:
    if value is None:
        return "SKIP"
    return "PASS" if (value >= need if op == ">=" else value <= need) else "FAIL"


def fmt(v) -> str:
    return "–" if v is None else f"{v:.3g}"


# ------------------------------------------------------------------ results and merges

FORMAT = 1   # the results' layout (the JSON's "format"; files made before it was recorded have
# this one): --only merges into a result of the same layout only
SOFTWARE = ("platform", "python", "numpy", "numba", "numba_threads", "numba_threading_layer",
            "blas", "OPENBLAS_CORETYPE", "jax", "jax_devices", "XLA_FLAGS")


def result(info: dict, settings: dict, wall_s: float, limits: dict, rows: list[dict],
           checks: list[tuple]) -> dict:
    """The JSON of one run: machine (with the code's revision and the date), settings, wall time
    (s), machine limits, rows, criteria; "earlier": the runs whose rows a merge kept (none)."""
    return {"format": FORMAT, "machine": info, "settings": settings, "wall_s": wall_s,
            "limits": limits, "rows": rows,
            "criteria": [{"text": t, "measured": v, "op": op, "need": n,
                          "verdict": verdict(v, op, n)} for t, v, op, n in checks],
            "earlier": []}


def runs(data: dict) -> list[dict]:
    """The runs a result's rows were measured in, earliest first, each {"workloads", "machine",
    "settings", "wall_s", "limits"}: its "earlier" runs, then its own (the other workloads)."""
    earlier = data.get("earlier", [])
    done = {w for r in earlier for w in r["workloads"]}
    own = [w for w in dict.fromkeys(r["workload"] for r in data["rows"]) if w not in done]
    return [*earlier, {"workloads": own, **{k: data[k] for k in ("machine", "settings", "wall_s",
                                                                  "limits")}}]


def merged(old: dict, new: dict) -> dict:
    """`new` (a run of some workloads) with `old`'s rows, criteria and runs of the others kept:
    rows and criteria in WORKLOADS' order (then those of workloads no longer defined), each
    workload's from the run that measured it last.  A criterion's workload is its text's
    first word ("W1 float32: ...")."""
    fresh = {r["workload"] for r in new["rows"]}
    order = {w: i for i, w in enumerate(WORKLOADS)}

    def kept(key: str, workload: Callable[[dict], str]) -> list[dict]:
        items = [x for x in old[key] if workload(x) not in fresh] + new[key]
        return sorted(items, key=lambda x: order.get(workload(x), len(order)))   # stable

    earlier = [dict(r, workloads=[w for w in r["workloads"] if w not in fresh]) for r in runs(old)]
    return {**new, "rows": kept("rows", lambda r: r["workload"]),
            "criteria": kept("criteria", lambda c: c["text"].split(" ", 1)[0]),
            "earlier": [r for r in earlier if r["workloads"]]}


def merge_base(out: str, info: dict) -> dict:
    """The result at `out` (the report; its JSON next to it) that a run of some workloads
    (--only) updates, {} where there is none; ValueError (one line) where it may not be merged
    into: a report without its JSON, another layout (`FORMAT`) or another machine."""
    path = os.path.splitext(out)[0] + ".json"
    if not os.path.exists(path):
        if os.path.exists(out):
            raise ValueError(f"--only into {out}: there is no {path} to merge the rows into")
        return {}
    with open(path) as fh:
        base = json.load(fh)
    fix = "measure every workload (no --only) or write another --out"
    if base.get("format", 1) != FORMAT:
        raise ValueError(f"--only into {out}: {path} is of results format {base.get('format', 1)}, "
                         f"this script writes format {FORMAT}: {fix}")
    why = other_machine(base["machine"], info)
    if why:
        raise ValueError(f"--only into {out}: {path}'s {why}: {fix}")
    return base


def limit_lines(limits: dict) -> list[str]:
    """The machine limits of one run, as list items."""
    return [f"- memory bandwidth (copy): {limits['memory_GBps']:.1f} GB/s",
            *(f"- Philox + Box-Muller {dt} normals alone (the kernels' code: across replicas for "
              f"d=1, per replica stream for d=256), d=1: "
              f"{limits[f'normals_per_s_d1_{dt}']:.3g} /s, d=256: "
              f"{limits[f'normals_per_s_d256_{dt}']:.3g} /s" for dt in ("float32", "float64")),
            *([f"- GEMM ceiling (square {GEMM_CEILING_N} x {GEMM_CEILING_N} BLAS product, its "
               f"threads above): float32 {limits['gemm_flops_per_s_float32']:.3g} FLOP/s, "
               f"float64 {limits['gemm_flops_per_s_float64']:.3g} FLOP/s"]
              if "gemm_flops_per_s_float64" in limits else [])]


def run_text(run: dict, info: dict) -> str:
    """Which code one run measured, when, how: its revision, date, repeats, wall time, the
    result W1 and W2 were compared with (where it ran them), and its software where it is not
    `info`'s."""
    m, st = run["machine"], run["settings"]
    other = [f"{k} {m.get(k)}" for k in SOFTWARE if m.get(k) != info.get(k)]
    return (f"{', '.join(run['workloads'])}: code at {m.get('revision', 'unknown')}, run "
            f"{m.get('date', 'at an unknown date')}, medians of {st['repeats']} interleaved "
            f"repeats{' (--quick)' if st['quick'] else ''}, whole benchmark {run['wall_s']:.0f} s"
            + (f", W1 and W2 compared with {st['baseline']}"
               if {"W1", "W2"} & set(run["workloads"]) else "")
            + (f", with {', '.join(other)}" if other else ""))


def report(data: dict) -> str:
    """The markdown report of a result (`result`, `merged`)."""
    info, rows, parts = data["machine"], data["rows"], runs(data)
    quick = any(r["settings"]["quick"] for r in parts)
    if len(parts) == 1:
        st = data["settings"]
        when = (f"Code at {info.get('revision', 'unknown')}, run "
                f"{info.get('date', 'at an unknown date')}.  Medians of {st['repeats']} interleaved "
                f"repeats{' (--quick)' if quick else ''}; whole benchmark {data['wall_s']:.0f} s.  ")
        compared = f"  Committed result W1 and W2 are compared with: {st['baseline']}."
        limits = ["## Machine limits (measured in this run)", "", *limit_lines(data["limits"])]
    else:
        when = (f"Rows measured in {len(parts)} runs (`--only` merged into this report; the "
                "software line above is the last run's): "
                + "; ".join(run_text(r, info) for r in parts) + ".  ")
        compared = ""
        limits = ["## Machine limits (measured in each run)", ""]
        for r in parts:
            limits += [f"- the run of {', '.join(r['workloads'])}:",
                       *("  " + line for line in limit_lines(r["limits"]))]
    blas = ", ".join(f"{b['internal_api']} {b['version']} {b['architecture']} "
                     f"({b['num_threads']} threads)" for b in info["blas"])
    lines = [f"# Throughput on {info['cpu']} ({info.get('cpu_id') or 'family and model unknown'}, "
             f"{info['cores']} cores)", "",
             f"{info['platform']}, Python {info['python']}; numpy {info['numpy']}, numba "
             f"{info['numba']} ({info['numba_threads']} threads, "
             f"{info['numba_threading_layer']} layer); BLAS {blas}, "
             f"OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE']}; JAX {info['jax'] or '(not installed)'} "
             f"{info['jax_devices']}, XLA_FLAGS={info['XLA_FLAGS']}.", "",
             when + "numba: `sim.advance(steps)`; numba_run: "
             "`sim.run(steps, record_every=steps // 10, out=file.h5)` (positions recorded; the same "
             "steps per call as numba, below: "
             + ("an eighth of the full run's ~2-6 s (--quick: per-call costs weigh 8x more, "
                "so the recording costs and their criteria overstate)" if quick
                else "~2-6 s here") + ", ten records each; recording cost: "
             "median over the rounds of 1 - t(numba) / t(numba_run)); "
             "numpy_loop / jax: benchmarks/peers.py.  Run files in "
             f"{data['settings']['run_files_in']}.  "
             "W5 times both engine backends with one BLAS thread, as scenarios/grokking.py "
             "runs; its peers, as a user's script, with the BLAS threads above and XLA's own.  "
             "Each row is measured in a new process (as a user's script starts: "
             "malloc's state, which decides the NumPy implementations' page faults here, does not "
             "carry over from the rows before)." + compared, "", *limits,
             "- GEMM of each workload's shape: in the table (timed in its round-robin); numba's "
             "FLOP/s against it and against the ceiling above", "",
             "## Chain-steps per second", "",
             "| workload | dtype | numpy | numba | numba_run | numpy_loop | jax | numba/numpy "
             "| numba/numpy_loop | numba/jax | numba/jax's fastest | recording cost "
             "| s per record | GEMM FLOP/s | numba % of GEMM (shape / ceiling) | max spread "
             "| cold start s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rate = {i: r.get(f"{i}_chain_steps_per_s") for i in IMPLEMENTATIONS}
        ratio = lambda i: None if rate[i] is None else rate["numba"] / rate[i]  # noqa: E731
        g = r.get("gemm_flops_per_s")
        cells = [fmt(rate[i]) + ("†" if i == "numba" and not r["numba_fused"] else "")
                 for i in IMPLEMENTATIONS]
        lines.append(f"| {r['workload']} {r['title']} | {r['dtype']} | " + " | ".join(cells) + " | "
                     + " | ".join(fmt(ratio(i)) for i in ("numpy", "numpy_loop", "jax"))
                     + f" | {fmt(fastest(r))} | {100 * r['recording_cost']:.1f}% | "
                     + f"{r['seconds_per_record']:.3g} | "
                     + (f"{g:.3g} | {100 * r['numba_gemm_fraction']:.0f}%"
                        + (f" / {100 * r['numba_gemm_ceiling_fraction']:.0f}%"
                           if "numba_gemm_ceiling_fraction" in r else "") if g else "– | –")
                     + f" | {100 * max(r['spread'].values()):.0f}% | "
                     + f"{fmt(r.get('cold_start_s'))} |")
    for impl, what in (("numpy", "The NumPy reference"), ("numpy_loop", "The NumPy loop peer")):
        key = f"{impl}_kept_memory_chain_steps_per_s"
        kept = [r for r in rows if r.get(key)]
        if kept:
            lines += ["", f"{what} once more in the same process after glibc was told to keep "
                      "freed memory (`keep_freed_memory`: its temporaries then reuse pages instead "
                      "of touching fresh ones, 15-35 us each on this VM), for comparison: "
                      + "; ".join(f"{r['workload']} {r['dtype']} {r[key]:.3g} chain-steps/s "
                                  f"(numba / that: {r['numba_chain_steps_per_s'] / r[key]:.3g})"
                                  for r in kept) + "."]
    lines += ["", "numpy: the engine's own NumPy reference backend, not a peer; the peers (what a user "
              "would otherwise write) are numpy_loop and jax.",
              "†: no fused numba kernel for the pair, the numba backend ran the NumPy reference.",
              "numba/jax's fastest: against JAX's fastest call of the row.  On a 2-vCPU VM JAX's "
              "calls switch between speeds up to 4x apart, in runs of several calls, with "
              "nothing else running (W1 float32 alone: 0.21 s a call, then 0.89 s for four "
              "calls, then 0.21 s again); the median lands on either.  The criteria \"ahead of "
              "JAX\" take its fastest call, the conservative side.",
              "Spread: interquartile range / median of a row's timings, the largest over its "
              "implementations.  Cold start: seconds from building the numba Simulation to the end "
              "of its first step and first record, with an empty Numba cache, in a new process "
              "(`cold_start`; what a first run waits, the kernels then load from the cache; the "
              "workload's third-party modules, scikit-learn for W6, imported first: every run, "
              "cold or warm, pays them).  "
              "Steps per call: "
              + "; ".join(f"{r['workload']} {r['dtype']} {r['steps_per_call']}" for r in rows
                          if r["dtype"] == rows[0]["dtype"]) + ".", "", "## Criteria", ""]
    for c in data["criteria"]:
        lines.append(f"- {c['verdict']}: {c['text']}" + ("" if c["measured"] is None else
                     f" (measured {c['measured']:.3g}, need {c['op']} {c['need']:g})"))
    return "\n".join(lines)


def write(data: dict, out: str | None) -> None:
    """Print the report of `data` and, with `out`, write it there (the hand notes of the report
    it replaces kept) and the JSON next to it."""
    text = "\n".join([report(data), *kept_notes(out)])
    print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as fh:
            fh.write(text + "\n")
        with open(os.path.splitext(out)[0] + ".json", "w") as fh:
            json.dump(data, fh, indent=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated workload names (of " + ", ".join(WORKLOADS)
                    + "); with --out naming an existing report, only their rows are replaced")
    ap.add_argument("--quick", action="store_true",
                    help="an eighth of the steps, 3 repeats (smoke test)")
    ap.add_argument("--repeats", type=int,
                    help="interleaved repeats per workload (default 5, --quick 3)")
    ap.add_argument("--baseline", help="committed JSON result W1 and W2 must not fall below (same "
                                       "machine only; default: the JSON next to --out when it "
                                       f"exists, the result being replaced, else {BASELINE.name})")
    ap.add_argument("--out", help="write a markdown report here and the JSON next to it")
    ap.add_argument("--cold-one", nargs=2, metavar=("WORKLOAD", "DTYPE"),
                    help=argparse.SUPPRESS)    # `cold_start`'s child
    a = ap.parse_args(argv)
    if a.cold_one:
        return _cold_one(*a.cold_one)
    a.repeats = a.repeats or (3 if a.quick else 5)
    if a.out and not a.out.endswith(".md"):
        # (--out results/x wrote a file "x" beside "x.md", whose hand notes it did not keep)
        ap.error(f"--out {a.out}: the report is markdown; name it {a.out}.md (the JSON goes "
                 "next to it)")
    if a.baseline is None:
        replaced = a.out and os.path.splitext(a.out)[0] + ".json"
        a.baseline = replaced if replaced and os.path.exists(replaced) else str(BASELINE)
    names = a.only.split(",") if a.only else list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    missing = missing_modules(names)
    if missing:
        ap.error("; ".join(f"{', '.join(ws)} need(s) {mod}, which is not installed"
                           for mod, ws in missing.items())
                 + ": pip install -e \".[bench]\", or leave them out with --only")
    start = time.perf_counter()
    info = machine()
    info["revision"] = revision()
    info["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    try:
        base = merge_base(a.out, info) if a.only and a.out else {}
    except ValueError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    print(f"machine: {info['cpu']}, {info['cores']} cores, BLAS {info['blas']}, "
          f"OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE']}, JAX {info['jax']}", flush=True)
    limits = {"memory_GBps": memory_bandwidth(a.repeats) / 1e9}
    for dtype in ("float32", "float64"):     # float32 runs draw float32 normals
        limits[f"normals_per_s_d1_{dtype}"] = normal_rate(1, 1 << 20, 256, dtype, a.repeats)
        limits[f"normals_per_s_d256_{dtype}"] = normal_rate(256, 1024, 32, dtype, a.repeats)
        limits[f"gemm_flops_per_s_{dtype}"] = gemm_ceiling(dtype, a.repeats)
    info["numba_threading_layer"] = numba.threading_layer()   # known once a parallel kernel ran
    rows = []
    with tempfile.TemporaryDirectory(prefix="throughput-") as folder:
        for name in names:
            for dtype in WORKLOADS[name].dtypes:
                t = time.perf_counter()
                rows.append(measure_fresh(name, dtype, a.quick, a.repeats, folder, limits))
                r = rows[-1]
                r["cold_start_s"] = cold_start(name, dtype)
                print(f"{name} {dtype} ({time.perf_counter() - t:.0f} s): "
                      + ", ".join(f"{i} {r[f'{i}_chain_steps_per_s']:.3g}" for i in IMPLEMENTATIONS
                                  if f"{i}_chain_steps_per_s" in r), flush=True)
    baseline, why = baseline_of(a.baseline, info)
    checks = criteria(rows, limits, baseline, why)
    wall_s = time.perf_counter() - start
    data = result(info, {"quick": a.quick, "repeats": a.repeats, "baseline": a.baseline,
                         "run_files_in": tempfile.gettempdir()}, wall_s, limits, rows, checks)
    write(merged(base, data) if base else data, a.out)
    print(f"wall time of the whole benchmark: {wall_s:.0f} s")


if __name__ == "__main__":
    with threadpool_limits(None):
        main()
