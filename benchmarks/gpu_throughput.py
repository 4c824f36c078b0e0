"""Chain-steps per second of the cuda backend, next to the device's limits measured here.

usage: python benchmarks/gpu_throughput.py [--only W1,W2] [--dtypes float32,float64]
           [--seconds S] [--no-jax] [--tiny] [--ab-only] [--no-tune]
           [--out benchmarks/results/gpu-MODEL.md]

Workloads (the issue's GPU sizes; float32 and float64):
  W1  DoubleWell d=1, 2^24 replicas, overdamped Langevin
  W2  Quadratic dense H, d=256, 2^16 replicas, overdamped Langevin
  W3  spherical p=3 spin glass, N=64, 2^14 replicas, overdamped Langevin
  W4  TeacherStudentMLP d_in=16, hidden=32, 2^12 replicas, SGD batch 32, momentum 0.9
W2 and W3 also with their GEMMs left out (where a dense step's time goes), and both by the
dense step kernel with 1, 4, 8 and 16 threads per replica (cuda_kernels.GEMM_LANES), and at 16
with per-thread arrays instead of streaming (cuda_kernels.GEMM_STREAM).
Beside them (first dtype only): W3's landscape at 256 replicas with and without CUDA graphs,
and the grokking scenario's default net (p = 23, hidden 64, full-batch AdamW, 256 replicas)
by the fused toy-net kernel and by the generic path; and W4 by the toy-net kernel with its
one-tile batch loops opaque to the compiler (the default) and unrolled whole, with the
registers and local memory the device reports for each; a p = 97 grokking net (beyond the
fused kernel) by the generic path, its step against its gradient alone; W1 with the row
kernel's registers
capped at REGCAP and not; and the dense Quadratic at
d = quadratic.FORM_ROWS_MAX_D and at the row kernel's limit rows.MAX_D (float64, SGD and
MALA) by the row kernel and by the GEMM path.

The threads-per-replica and register-cap A/Bs run first, and the workloads' table runs at the
settings they choose (`tuned`: the library's default unless another setting is TUNE_MARGIN
faster; the report's "Settings" section says which, and which defaults to set); --no-tune
measures the table at the library's defaults.

Limits, measured on the same device in the same run: the Philox-only normal rate of the
project's own generator (rng.block_normals compiled for numba-cuda, every normal consumed),
device copy bandwidth, the cuBLAS GEMM rate at each dense workload's shape and of a square
8192 product (the ceiling), and (when JAX is installed) a JAX jit + lax.scan implementation
of the same workload (peers.JaxScan: the step
tests/test_benchmark_peers.py checks against the engine's reference step, from the
workload's initial state; its matmuls in true float32, `JAX_PRECISION`; in float32 also at
JAX's TF32 default, for information).  Rates
are medians of repeats; each repeat runs enough steps to last about --seconds / 4, after one
untimed call of that many (JAX's compilation of a scan of that length, the engine's graph
capture for it).  Targets
(issue 12): W1 >= 50% of the Philox-only rate; W2, W3 >= 50% of the GEMM rate at their
shape; every workload ahead of JAX.  `--tiny` shrinks every size so that the script runs
under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1; the numbers then mean nothing).  Writes
markdown and JSON to --out (default benchmarks/results/gpu-<device model>.md).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable
from unittest import mock

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peers  # noqa: E402  (benchmarks/ is not a package)
from notes import kept_notes  # noqa: E402  (the "## Notes ... by hand" of the file replaced)

cuda = None   # numba.cuda, set by `setup()` (a module global: the simulator swaps it in kernels)


# ------------------------------------------------------------------ device helpers

def setup():
    """(xp, backend class, device description, synchronize)."""
    global cuda
    from langevin_sim.backends import cuda_runtime as rt
    from langevin_sim.backends.cuda_backend import CudaBackend

    desc = rt.require()
    xp = rt.xp()
    cuda = rt.cuda()
    if rt.is_fake(xp):
        def sync():
            pass
    else:
        def sync():
            xp.cuda.Device().synchronize()
    return xp, CudaBackend, desc, sync


def cuda_simulation(potential, dynamics, replicas, dtype, backend_cls):
    """A Simulation stepped by the cuda backend, syncing to the host only when asked (the
    benchmark times device steps, not copies)."""
    from langevin_sim import Simulation

    sim = Simulation(potential, dynamics, replicas, backend="numpy", dtype=dtype, seed=1)
    sim.backend, sim.backend_name = backend_cls(), "cuda"
    sim.sync = lambda: sim.backend.to_host(sim)      # lazy host mirror (docs/gpu.md)
    return sim


def median_rate(run: Callable[[int], None], work_per_step: float, seconds: float, sync,
                repeats: int = 5, max_steps: int = 1 << 16) -> float:
    """Median of `repeats` timings of run(k) (k steps, chosen to last ~seconds/4), as work
    per second; run(1) first compiles and warms up, and one untimed run(k) does what a first
    call at k steps does once (JAX compiles a scan per length, the engine captures a CUDA
    graph per chunk length)."""
    run(1)
    sync()
    t = time.perf_counter()
    run(1)
    sync()
    one = max(time.perf_counter() - t, 1e-6)
    k = int(min(max_steps, max(1, seconds / 4 / one)))
    run(k)
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(k)
        sync()
        times.append(time.perf_counter() - t)
    return work_per_step * k / statistics.median(times)


def device_rate(sim, seconds: float, sync, repeats: int) -> float:
    """Chain-steps per second of `sim`'s device steps alone (`median_rate` of its backend's
    advance; the host copy is not timed)."""
    def run(k):
        sim.backend.advance(sim, sim.step, k)
        sim.step += k
    return median_rate(run, sim.n_replicas, seconds, sync, repeats=repeats)


def recorded_rate(sim, record_every: int, records: int, sync, repeats: int = 3,
                  warm: bool = True) -> float:
    """Chain-steps per second of `sim.run` with `records` records (energies and positions,
    every `record_every` steps) into an in-memory run file: the run loop as a user runs it,
    each record computed on the device and copied to the host while the next block computes
    (median of `repeats`, after one warm-up record if `warm`)."""
    if warm:
        sim.run(record_every, record_every, progress=False).close()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sim.run(records * record_every, record_every, progress=False).close()
        sync()
        times.append(time.perf_counter() - t)
    return sim.n_replicas * records * record_every / statistics.median(times)


# ------------------------------------------------------------------ limits

_philox_kernels: dict = {}


def philox_kernel(f32: bool):
    """M threads, each drawing `count` normals of its replica's NOISE stream with the
    project's generator (four per Philox block) and counting the positive ones."""
    if f32 in _philox_kernels:
        return _philox_kernels[f32]
    from langevin_sim.backends.cuda_kernels import device_rng

    dev = device_rng()
    bn = dev.block_normals_f32 if f32 else dev.block_normals
    noise = np.uint64(1)

    @cuda.jit
    def kernel(acc, count, k0, k1):
        r = cuda.grid(1)
        if r >= acc.shape[0]:
            return
        s = 0
        rep = np.uint64(r)
        for b in range((count + 3) // 4):
            z0, z1, z2, z3 = bn(k0, k1, noise, rep, np.uint64(b))
            s += (z0 > 0) + (z1 > 0) + (z2 > 0) + (z3 > 0)
        acc[r] = s
    _philox_kernels[f32] = kernel
    return kernel


def philox_rate(xp, M: int, dtype: str, seconds: float, sync) -> float:
    from langevin_sim import rng
    from langevin_sim.backends import cuda_runtime as rt

    acc = xp.zeros(M, dtype=np.int64)
    k0, k1 = rng.key_of(1)
    kern = philox_kernel(dtype == "float32")
    return median_rate(lambda k: rt.launch(kern, M, acc, 4 * k, k0, k1), 4.0 * M, seconds, sync)


def copy_bandwidth(xp, nbytes: int, seconds: float, sync) -> float:
    a = xp.ones(nbytes // 4, dtype=np.float32)
    b = xp.empty_like(a)

    def run(k):
        for _ in range(k):
            b[...] = a
    return median_rate(run, 2.0 * a.nbytes, seconds, sync)


GEMM_CEILING_N = 8192    # the square product whose rate is the device's GEMM ceiling


def gemm_rate(xp, shape, dtype: str, seconds: float, sync) -> float:
    """FLOP/s of xp.matmul at `shape`: (m, k, n) or (batch, m, k, n)."""
    r = np.random.default_rng(0)
    if len(shape) == 3:
        m, k, n = shape
        a = xp.asarray(r.standard_normal((m, k)).astype(dtype))
        b = xp.asarray(r.standard_normal((k, n)).astype(dtype))
        flops = 2.0 * m * k * n
    else:
        nb, m, k, n = shape
        a = xp.asarray(r.standard_normal((nb, m, k)).astype(dtype))
        b = xp.asarray(r.standard_normal((nb, k, n)).astype(dtype))
        flops = 2.0 * nb * m * k * n

    def run(steps):
        for _ in range(steps):
            xp.matmul(a, b)
    return median_rate(run, flops, seconds, sync)


# ------------------------------------------------------------------ workloads

@dataclass
class Workload:
    name: str
    title: str
    replicas: int
    build: Callable                 # (dtype, backend class) -> Simulation
    gemm_shape: tuple | None = None
    flops_per_chain_step: float = 0.0


def workloads(tiny: bool) -> dict:
    from langevin_sim.dynamics import SGD, OverdampedLangevin
    from langevin_sim.potentials import DoubleWell, Quadratic, SphericalPSpin, TeacherStudentMLP

    # tiny W4: 1 replica (the simulator runs the fused kernel's block per replica in Python)
    M1, M2, M3, M4 = (16, 8, 8, 1) if tiny else (1 << 24, 1 << 16, 1 << 14, 1 << 12)
    d2, N3 = (8, 4) if tiny else (256, 64)
    n4, din, hid, B = (64, 4, 4, 8) if tiny else (1024, 16, 32, 32)
    quad = Quadratic(spectrum=np.linspace(0.1, 1.0, d2), seed=1)
    pspin = SphericalPSpin(N3, 3, seed=1)
    P3 = math.comb(N3 + 1, 2)     # the fused W3 kernel's packed products (kernels/pspin.py)
    mlp = TeacherStudentMLP(n=n4, d_in=din, hidden=hid, teacher_hidden=max(1, hid // 4),
                            noise=0.01, seed=1, n_test=16)
    out = {
        "W1": Workload("W1", f"DoubleWell d=1, {M1} replicas, overdamped Langevin", M1,
                       lambda dt, be: cuda_simulation(DoubleWell(d=1), OverdampedLangevin(1e-3, 0.5),
                                                      M1, dt, be)),
        "W2": Workload("W2", f"Quadratic dense H, d={d2}, {M2} replicas, overdamped Langevin", M2,
                       lambda dt, be: cuda_simulation(quad, OverdampedLangevin(1e-2, 0.5), M2, dt, be),
                       # the fused kernel's GEMM: H^T (d, d) @ XT (d, M), state transposed
                       gemm_shape=(d2, d2, M2), flops_per_chain_step=2.0 * d2 * d2),
        "W3": Workload("W3", f"spherical p=3 spin glass, N={N3}, {M3} replicas, overdamped Langevin",
                       M3, lambda dt, be: cuda_simulation(pspin, OverdampedLangevin(1e-2, 0.5), M3,
                                                          dt, be),
                       # the fused kernel's packed GEMM: CT (N, P) @ YT (P, M)
                       gemm_shape=(N3, P3, M3), flops_per_chain_step=2.0 * N3 * P3),
        "W4": Workload("W4", f"TeacherStudentMLP d_in={din}, hidden={hid}, {M4} replicas, SGD "
                             f"batch {B}", M4,
                       lambda dt, be: cuda_simulation(mlp, SGD(0.02, B, momentum=0.9), M4, dt, be),
                       gemm_shape=(M4, B, din, hid),
                       # forward A W1^T, H W2^T; backward dout W2, dZ^T A, dout^T H
                       flops_per_chain_step=2.0 * B * hid * (2 * din + 3)),
    }
    return out


def graph_gain(tiny: bool, dt: str, backend_cls, seconds: float, sync) -> dict:
    """W3's landscape at few replicas, where the host's launches bound the rate: chain-steps
    per second with the dense steps queued as replays of CUDA graphs (the default) and one
    launch at a time (LANGEVIN_SIM_CUDA_GRAPH_STEPS=0); "graphs_failed": why capture failed,
    if it did (the first rate is then one launch at a time as well)."""
    from langevin_sim.backends import cuda_runtime as rt
    from langevin_sim.dynamics import OverdampedLangevin
    from langevin_sim.potentials import SphericalPSpin

    N, M = (4, 8) if tiny else (64, 256)
    out = {"N": N, "replicas": M, "dtype": dt}
    with mock.patch.dict(os.environ):
        os.environ.pop(rt.GRAPH_ENV, None)
        for label, steps in (("graphs", None), ("one_by_one", "0")):
            if steps is not None:
                os.environ[rt.GRAPH_ENV] = steps
            sim = cuda_simulation(SphericalPSpin(N, 3, seed=1), OverdampedLangevin(1e-2, 0.5), M,
                                  dt, backend_cls)
            out[label] = device_rate(sim, seconds, sync, 1 if tiny else 3)
    if rt._GRAPHS_FAILED:
        out["graphs_failed"] = rt._GRAPHS_FAILED[0]
    return out


def toynet_gain(tiny: bool, dt: str, backend_cls, seconds: float, sync) -> dict:
    """The grokking scenario's default net (ModularArithmeticMLP p = 23, hidden 64, 317
    training pairs, full-batch AdamW) at 256 replicas: chain-steps per second by the fused
    toy-net kernel (two warps per replica, the batch in tiles) and by the generic path (the
    potential's batched products in CuPy, one update kernel per step; the fused kernel declined
    with `toynets.MAX_OWNED` = 0)."""
    from langevin_sim.backends.cuda_backend import fused_kernel
    from langevin_sim.dynamics import AdamW
    from langevin_sim.kernels import toynets
    from langevin_sim.potentials import ModularArithmeticMLP

    p, hidden, M = (3, 2, 2) if tiny else (23, 64, 256)
    pot = ModularArithmeticMLP(p=p, hidden=hidden, train_fraction=0.6, seed=1)
    out = {"p": p, "hidden": hidden, "samples": pot.n_samples, "replicas": M, "dtype": dt}
    for label in ("fused", "generic"):
        with mock.patch.object(toynets, "MAX_OWNED",
                               0 if label == "generic" else toynets.MAX_OWNED):
            sim = cuda_simulation(pot, AdamW(1e-3, None, weight_decay=1.0), M, dt, backend_cls)
            assert (fused_kernel(sim) is not None) == (label == "fused"), label
            if label == "fused":
                out["warps"], out["tile"], _ = toynets.layout(sim)
            out[label] = device_rate(sim, seconds, sync, 1 if tiny else 3)
    return out


def generic_split(tiny: bool, dt: str, backend_cls, seconds: float, sync) -> dict:
    """A net beyond the fused toy-net kernel (ModularArithmeticMLP one-hot p = 97, hidden 128:
    ~37 000 parameters, the canonical grokking size; full-batch AdamW, 64 replicas) on the
    generic path: chain-steps per second of the whole step and of its gradient alone (the
    potential's array code), so that 1 - step / gradient is the share of the step the
    update kernels and `freeze` take (design_changes 84: elementwise, a thread per replica
    and Philox block of its row)."""
    from langevin_sim.backends.cuda_backend import fused_kernel
    from langevin_sim.dynamics import AdamW
    from langevin_sim.kernels import toynets
    from langevin_sim.potentials import ModularArithmeticMLP

    p, hidden, M = (3, 2, 2) if tiny else (97, 128, 64)
    pot = ModularArithmeticMLP(p=p, hidden=hidden, train_fraction=0.5, seed=1)
    out = {"p": p, "hidden": hidden, "parameters": pot.d, "samples": pot.n_samples,
           "replicas": M, "dtype": dt}
    with mock.patch.object(toynets, "MAX_OWNED", 0 if tiny else toynets.MAX_OWNED):
        sim = cuda_simulation(pot, AdamW(1e-3, None, weight_decay=1.0), M, dt, backend_cls)
        assert fused_kernel(sim) is None     # (tiny: declined; p = 97: beyond the kernel)
        out["step"] = device_rate(sim, seconds, sync, 1 if tiny else 3)
    run = sim.backend.device_run(sim)

    def grads(k):
        for _ in range(k):
            run.grad(run.state["x"])
    out["gradient"] = median_rate(grads, M, seconds, sync, repeats=1 if tiny else 3)
    return out


def kernel_resources(kernel) -> list | None:
    """Registers and local memory per thread and shared memory per block of each compiled
    specialization of a numba-cuda kernel, as the device reports them; None in the
    simulator."""
    if not hasattr(kernel, "get_regs_per_thread"):
        return None
    return [{"registers": o.regs_per_thread, "local_bytes": o.local_mem_per_thread,
             "shared_bytes": o.shared_mem_per_block} for o in kernel.overloads.values()]


def unroll_gain(w4: Workload, tiny: bool, dt: str, backend_cls, seconds: float, sync) -> dict:
    """W4 (its batch in one tile) by the fused toy-net kernel with the batch's sample count
    opaque to the compiler (`toynets.OPAQUE_BATCH`, the default) and as a constant (the
    forward and backward sample loops unrolled whole; ptxas: 255 registers and spills, design
    changes 59): chain-steps per second of each, and the resources the device reports."""
    from langevin_sim.kernels import toynets

    out = {"dtype": dt, "replicas": w4.replicas}
    for label, opaque in (("opaque", True), ("unrolled", False)):
        with mock.patch.object(toynets, "OPAQUE_BATCH", opaque):
            sim = w4.build(dt, backend_cls)
            out[label] = device_rate(sim, seconds, sync, 1 if tiny else 3)
            out[f"{label}_resources"] = kernel_resources(toynets.kernel_of(sim))
    return out


def regcap_gain(w1: Workload, tiny: bool, dtypes: list, backend_cls, seconds: float,
                sync) -> dict:
    """W1 by the row kernel with the compiler's register count (31 float32, 42 float64 on
    sm_90 by ptxas: 16 and 10 blocks of 128 per SM) and capped at REGCAP (`rows.MAX_REGISTERS`:
    float64 12 blocks, a few bytes spilled; float32 unchanged, a control): chain-steps per
    second of each and the resources the device reports, per dtype (design_changes 64, 75,
    76)."""
    from langevin_sim.kernels import rows

    out = {}
    for dt in dtypes:
        got = out[dt] = {"replicas": w1.replicas}
        for label, cap in (("default", 0), ("capped", REGCAP)):
            with mock.patch.object(rows, "MAX_REGISTERS", cap):
                sim = w1.build(dt, backend_cls)
                got[label] = device_rate(sim, seconds, sync, 1 if tiny else 3)
                got[f"{label}_resources"] = kernel_resources(rows.kernel_of(sim))
    return out


LANES = (1, 4, 8, 16)    # threads per replica `lanes_gain` measures
REGCAP = 40              # registers per thread `regcap_gain` caps W1's row kernel at


def lanes_gain(W: dict, names: list, tiny: bool, dtypes: list, backend_cls, seconds: float,
               sync) -> dict:
    """W2 and W3 (those in `names`) by `gemm_step` with each of LANES threads per replica
    (`cuda_kernels.GEMM_LANES`; 1: the default, one thread looping over the N coordinates;
    more: the sliced kernel, design_changes 65, streamed), and at L = LANES[-1] the sliced
    kernel's other form (`cuda_kernels.GEMM_STREAM` off: per-thread arrays, design_changes
    103): chain-steps per second of the whole step, {"W2 float32": {"1": rate, "4": ...,
    "16 arrays": ...}} (the step without its GEMM is in the workloads' table)."""
    from langevin_sim.backends import cuda_kernels as ck

    out = {}
    for name in (n for n in ("W2", "W3") if n in names):
        for dt in dtypes:
            got = out[f"{name} {dt}"] = {"replicas": W[name].replicas}
            for lanes, stream in [(L, True) for L in LANES] + [(LANES[-1], False)]:
                with mock.patch.object(ck, "GEMM_LANES", lanes), \
                        mock.patch.object(ck, "GEMM_STREAM", stream):
                    got[f"{lanes}" + ("" if stream else " arrays")] = device_rate(
                        W[name].build(dt, backend_cls), seconds, sync, 1 if tiny else 3)
    return out


TUNE_MARGIN = 1.02       # a setting replaces the library's default when this much faster


def geometric_mean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def tuned(lanes: dict | None, regcap: dict | None) -> dict:
    """The settings the workloads' table runs with, from the A/B sections measured before it:
    `cuda_kernels.GEMM_LANES` the L of LANES with the highest geometric mean of chain-steps/s
    over the rows of `lanes_gain` (W2, W3 x dtypes), `rows.MAX_REGISTERS` REGCAP where
    capping W1 was faster in the geometric mean over the dtypes; a library default stays
    unless the other setting is TUNE_MARGIN faster; `cuda_kernels.GEMM_STREAM` off where
    the sliced kernel with per-thread arrays was that much faster than streamed at L =
    LANES[-1].  {"GEMM_LANES": {"value", "default", "gain", "best_per_row"}, "GEMM_STREAM":
    {...}, "MAX_REGISTERS": {...}}: gain is the chosen setting's geometric mean over the
    default's (1 where the default stays)."""
    from langevin_sim.backends import cuda_kernels as ck
    from langevin_sim.kernels import rows

    out = {}
    if lanes:
        base = ck.GEMM_LANES
        gains = {L: geometric_mean(r[f"{L}"] / r[f"{base}"] for r in lanes.values())
                 for L in LANES}
        best = max(gains, key=gains.get)
        pick = best if gains[best] >= TUNE_MARGIN else base
        out["GEMM_LANES"] = {"value": pick, "default": base, "gain": gains[pick],
                             "best_per_row": {k: max(LANES, key=lambda L: r[f"{L}"])
                                              for k, r in lanes.items()}}
        L = LANES[-1]
        base = ck.GEMM_STREAM
        gain = geometric_mean(r[f"{L} arrays"] / r[f"{L}"] for r in lanes.values())
        if not base:
            gain = 1.0 / gain
        pick = (not base) if gain >= TUNE_MARGIN else base
        out["GEMM_STREAM"] = {"value": pick, "default": base,
                              "gain": gain if pick != base else 1.0}
    if regcap:
        base = rows.MAX_REGISTERS
        gain = geometric_mean(r["capped"] / r["default"] for r in regcap.values())
        if base:       # the default caps already: "default" ran uncapped
            gain = 1.0 / gain
        other = 0 if base else REGCAP
        pick = other if gain >= TUNE_MARGIN else base
        out["MAX_REGISTERS"] = {"value": pick, "default": base,
                                "gain": gain if pick != base else 1.0}
    return out


def applied(settings: dict) -> contextlib.ExitStack:
    """A context in which `tuned`'s settings replace the library's defaults."""
    from langevin_sim.backends import cuda_kernels as ck
    from langevin_sim.kernels import rows

    stack = contextlib.ExitStack()
    for name, module in (("GEMM_LANES", ck), ("GEMM_STREAM", ck), ("MAX_REGISTERS", rows)):
        if name in settings:
            stack.enter_context(mock.patch.object(module, name, settings[name]["value"]))
    return stack


def rows_gain(tiny: bool, backend_cls, seconds: float, sync) -> dict:
    """The dense Quadratic at d = quadratic.FORM_ROWS_MAX_D and at the row kernel's limit
    rows.MAX_D (2^14 replicas, float64; the row kernel's local arrays spill most at MAX_D:
    kernel-resources.md), full-batch SGD with momentum and MALA, by the row kernel (a thread
    per replica, the d^2 product in its own loop) and by the GEMM form path
    (`quadratic.quadratic_form_steps`, one cuBLAS GEMM for all replicas per gradient):
    chain-steps per second of each, {d: {"sgd_rows": ..., ...}}, which says where the forms'
    crossover FORM_ROWS_MAX_D should be (design_changes 62)."""
    from langevin_sim.dynamics import MALA, SGD
    from langevin_sim.kernels import quadratic, rows
    from langevin_sim.potentials import Quadratic

    M = 8 if tiny else 1 << 14
    out = {"replicas": M, "dtype": "float64"}
    for d in ((2, 4) if tiny else sorted({quadratic.FORM_ROWS_MAX_D, rows.MAX_D})):
        pot = Quadratic(spectrum=np.linspace(0.1, 1.0, d), seed=1)
        got = out[d] = {}
        for rule, dyn in (("sgd", SGD(0.05, None, momentum=0.9, temperature=0.1)),
                          ("mala", MALA(0.05, 0.5))):
            for label, max_d in (("rows", d), ("gemm", 0)):
                with mock.patch.object(quadratic, "FORM_ROWS_MAX_D", max_d):
                    sim = cuda_simulation(pot, dyn, M, "float64", backend_cls)
                    assert quadratic.by_rows(sim) == (label == "rows"), label
                    got[f"{rule}_{label}"] = device_rate(sim, seconds, sync, 1 if tiny else 3)
    return out


# ------------------------------------------------------------------ JAX peers

JAX_PRECISION = "highest"   # JAX's matmuls in true float32, as cuBLAS computes ours; JAX's
# default on NVIDIA GPUs since Ampere rounds float32 operands to TF32 (10-bit mantissas)


def jax_run(sim, precision: str | None) -> tuple[Callable[[int], None], int]:
    """(run, chain-steps per run(1)) of the JAX peer of sim's workload: run(k) advances a
    `peers.JaxScan` from sim's state now (build it before the device moves sim) by k of its
    units of steps (1 step; SGD a whole epoch of batches, per-epoch permutations as the
    engine's), blocking until done, its matmuls at `jax_default_matmul_precision` =
    precision (None: JAX's default)."""
    peer = peers.JaxScan(sim, seed=1, precision=precision)
    return (lambda k: peer.advance(k * peer.multiple)), sim.n_replicas * peer.multiple


# ------------------------------------------------------------------ report

def device_model(desc: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", desc.split(",")[0]).strip("-") or "device"


def versions() -> dict:
    import importlib.metadata as md
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for pkg in ("cupy", "cupy-cuda12x", "cupy-cuda13x", "numba", "numba-cuda", "jax", "jaxlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def without_gemm_rate(w: Workload, dt: str, backend_cls, seconds: float, sync,
                      tiny: bool) -> float:
    """Chain-steps per second of a dense workload (W2, W3) with its GEMMs left out: a new
    run whose `cuda_runtime.gemm` computes the first step's product only (outside the graphs,
    which are captured afterwards without it), so every later step reuses that gradient and
    the rate is that of everything else (the fused step kernel, W3's products, the graphs'
    launches; where the streamed kernel's state and gradient buffers trade places, a step's
    "gradient" is then an older state: the same memory traffic).  Set against the GEMM rate
    at the shape it says where a step's time goes."""
    from langevin_sim.backends import cuda_runtime as rt

    real, done = rt.gemm, []

    def first_only(a, b, out):
        if not done:
            real(a, b, out)
            done.append(True)
    with mock.patch.object(rt, "gemm", first_only):
        return device_rate(w.build(dt, backend_cls), seconds, sync, 1 if tiny else 5)


def measure(w: Workload, dt: str, backend_cls, xp, limits: dict, seconds: float, sync,
            record_every: int, tiny: bool, use_jax: bool) -> dict:
    """One row of the report: workload `w` in dtype `dt`, its device-only and recorded rates,
    the GEMM rate at its shape, its share of the limits, and the JAX peer."""
    from langevin_sim.backends.cuda_backend import fused_kernel

    sim = w.build(dt, backend_cls)
    M = sim.n_replicas
    # the JAX peers start from the engine's initial state: built before the device moves it;
    # in float32 where the step has matmuls also at JAX's TF32 default, for information
    columns = {"jax_chain_steps_per_s": JAX_PRECISION}
    if dt == "float32" and w.name != "W1":
        columns["jax_default_chain_steps_per_s"] = None
    jax_runs, jax_error = {}, None
    if use_jax:
        try:
            jax_runs = {col: jax_run(sim, p) for col, p in columns.items()}
        except Exception as e:   # a peer that fails is reported, not fatal
            jax_error = e
    t0 = time.perf_counter()
    rate = device_rate(sim, seconds, sync, 1 if tiny else 5)
    sim.sync()
    row = {"workload": w.name, "title": w.title, "dtype": dt, "replicas": M,
           "cuda_chain_steps_per_s": rate, "wall_s": round(time.perf_counter() - t0, 3),
           "host_bridged": sorted(sim.backend.device_run(sim).pot.bridged),
           "path": "fused" if fused_kernel(sim) is not None else "generic",
           "finite": bool(np.isfinite(sim.state["x"]).all())}
    row["recorded_chain_steps_per_s"] = recorded_rate(
        sim, record_every, 1 if tiny else 4, sync, repeats=1 if tiny else 3, warm=not tiny)
    row["record_bytes"] = M * 8 + sim.state["x"].nbytes     # energies (float64), positions
    if w.gemm_shape:
        g = gemm_rate(xp, w.gemm_shape, dt, seconds, sync)
        row["gemm_flops_per_s"] = g
        row["gemm_fraction"] = rate * w.flops_per_chain_step / g
        row["gemm_ceiling_fraction"] = (rate * w.flops_per_chain_step
                                        / limits[f"gemm_flops_per_s_{dt}"])
        if w.name in ("W2", "W3") and row["path"] == "fused":
            row["without_gemm_chain_steps_per_s"] = without_gemm_rate(w, dt, backend_cls,
                                                                      seconds, sync, tiny)
    if w.name == "W1":
        row["philox_fraction"] = rate / limits[f"philox_normals_per_s_{dt}"]
    try:
        for col, (run, chain_steps) in jax_runs.items():
            row[col] = median_rate(run, chain_steps, seconds, lambda: None,
                                   repeats=1 if tiny else 5)
    except Exception as e:
        jax_error = e
    if jax_error is not None:
        row["jax_error"] = f"{type(jax_error).__name__}: {jax_error}"[:200]
    return row


def settings_lines(settings: dict) -> list:
    """The report's section on the settings the table ran with (`tuned`)."""
    if not settings:
        return []
    where = {"GEMM_LANES": ("cuda_kernels.GEMM_LANES", "threads per replica in the dense "
                            "step kernel, design_changes 65"),
             "GEMM_STREAM": ("cuda_kernels.GEMM_STREAM", "the sliced kernel streams each "
                             "coordinate, no per-thread arrays, design_changes 103"),
             "MAX_REGISTERS": ("rows.MAX_REGISTERS", "registers per thread of the row "
                               "kernels, 0: the compiler's choice, design_changes 64")}
    out = ["## Settings the table ran with", "",
           "Chosen by the A/B sections below, measured first (a setting replaces the library's "
           f"default where it was {TUNE_MARGIN:g}x faster in the geometric mean over the "
           "workloads and dtypes it measured):", ""]
    changed = []
    for key, s in settings.items():
        name, what = where[key]
        gain = f", {s['gain']:.2f}x" if s["value"] != s["default"] else ""
        extra = f", best per row: {s['best_per_row']}" if "best_per_row" in s else ""
        out.append(f"- {name} = {s['value']} ({what}; library default {s['default']}{gain}"
                   f"{extra})")
        if s["value"] != s["default"]:
            changed.append(f"{name} = {s['value']}")
    out += ["", f"**Set {' and '.join(changed)} as the library's default** (the table's numbers "
            "are at these settings)." if changed else "The library's defaults won: the table "
            "ran at them.", ""]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated workload names (default all)")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement")
    ap.add_argument("--record-every", type=int, default=1000,
                    help="steps between records in the recorded-run measurement")
    ap.add_argument("--no-jax", action="store_true", help="skip the JAX peer")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (CUDA simulator smoke test)")
    ap.add_argument("--out", help="markdown report path (JSON next to it)")
    ap.add_argument("--ab-only", action="store_true",
                    help="skip the workloads' table: only the A/B sections of the workloads "
                         "named (threads per replica, CUDA graphs, fused toy net, W4 unrolled, "
                         "W1 register cap, row kernel vs GEMM)")
    ap.add_argument("--no-tune", action="store_true",
                    help="measure the workloads' table at the library's defaults, not at the "
                         "settings the threads-per-replica and register-cap A/Bs choose")
    a = ap.parse_args(argv)
    xp, backend_cls, desc, sync = setup()
    seconds = 0.05 if a.tiny else a.seconds
    record_every = 1 if a.tiny else a.record_every
    W = workloads(a.tiny)
    names = a.only.split(",") if a.only else list(W)
    dtypes = a.dtypes.split(",")
    use_jax = not a.no_jax and peers.jax_module() is not None
    # what the JAX column says where JAX did not run
    no_jax = "" if use_jax else "skipped (--no-jax)" if a.no_jax else "not installed"
    print(f"device: {desc}; {versions()}", flush=True)

    limits = {"copy_GBps": copy_bandwidth(xp, (1 << 16) if a.tiny else (1 << 28), seconds, sync) / 1e9}
    for dt in dtypes:
        limits[f"philox_normals_per_s_{dt}"] = philox_rate(
            xp, 16 if a.tiny else 1 << 22, dt, seconds, sync)
        n = 16 if a.tiny else GEMM_CEILING_N
        limits[f"gemm_flops_per_s_{dt}"] = gemm_rate(xp, (n, n, n), dt, seconds, sync)
    print(f"limits: {limits}", flush=True)
    rows, cut = [], []      # cut: where the time budget's SIGINT stopped the measurements

    def optional(label: str, wanted: bool, fn, *args):
        """fn(*args) unless not wanted or cut short before; None when the budget's SIGINT
        interrupts it (the report is still written, saying where it was cut)."""
        if not wanted or cut:
            return None
        try:
            out = fn(*args)
        except KeyboardInterrupt:
            cut.append(label)
            return None
        print(json.dumps({label: out}), flush=True)
        return out

    # the A/B sections whose answers are settings still open first, then the workloads'
    # table at the settings they chose (`tuned`), then the rest (the budget may cut it:
    # graphs, the fused net and W4's loops were measured on the H200 already)
    lanes = optional("lanes_gain", "W2" in names or "W3" in names, lanes_gain, W, names,
                     a.tiny, dtypes, backend_cls, seconds, sync)
    regcap = optional("regcap_gain", "W1" in names, regcap_gain, W["W1"], a.tiny, dtypes,
                      backend_cls, seconds, sync)
    settings = {} if a.no_tune else tuned(lanes, regcap)
    print(json.dumps({"settings": settings}), flush=True)
    try:
        with applied(settings):
            for name in ([] if a.ab_only or cut else names):
                for dt in dtypes:
                    rows.append(measure(W[name], dt, backend_cls, xp, limits, seconds, sync,
                                        record_every, a.tiny, use_jax))
                    print(json.dumps(rows[-1]), flush=True)
    except KeyboardInterrupt:
        cut.append(f"{name} {dt}")
    crossover = optional("rows_gain", "W2" in names, rows_gain, a.tiny, backend_cls, seconds,
                         sync)
    gain = optional("graph_gain", "W3" in names, graph_gain, a.tiny, dtypes[0], backend_cls,
                    seconds, sync)
    nets = optional("toynet_gain", "W4" in names, toynet_gain, a.tiny, dtypes[0], backend_cls,
                    seconds, sync)
    unroll = optional("unroll_gain", "W4" in names, lambda: {dtypes[0]: unroll_gain(
        W["W4"], a.tiny, dtypes[0], backend_cls, seconds, sync)})
    beyond = optional("generic_split", "W4" in names, generic_split, a.tiny, dtypes[0],
                      backend_cls, seconds, sync)
    checks = []
    for r in rows:
        tag = f"{r['workload']} {r['dtype']}"
        if "philox_fraction" in r:
            checks.append((f"{tag}: >= 50% of the Philox-only normal rate", r["philox_fraction"], 0.5))
        if r["workload"] in ("W2", "W3") and "gemm_fraction" in r:
            checks.append((f"{tag}: >= 50% of the GEMM rate at its shape", r["gemm_fraction"], 0.5))
        if "jax_chain_steps_per_s" in r:
            checks.append((f"{tag}: ahead of JAX jit+scan", r["cuda_chain_steps_per_s"]
                           / r["jax_chain_steps_per_s"], 1.0))
    lines = [f"# GPU throughput on {desc}", "",
             f"{'TINY SIZES UNDER THE SIMULATOR: not a measurement. ' if a.tiny else ''}"
             f"`python benchmarks/gpu_throughput.py{' --tiny' if a.tiny else ''}`, "
             f"{time.strftime('%Y-%m-%d %H:%M')}; versions: {versions()}", "",
             *([f"**Cut short by the time budget (SIGINT) at: {cut[0]}**; what follows is what "
                "was measured before it.", ""] if cut else []),
             "## Device limits (measured in this run)", "",
             f"- device copy bandwidth: {limits['copy_GBps']:.1f} GB/s (read + write)",
             *(f"- Philox-only {dt} normals (the project's generator, rng.block_normals"
               f"{'_f32' if dt == 'float32' else ''} on the device): "
               f"{limits[f'philox_normals_per_s_{dt}']:.3g} /s" for dt in dtypes),
             *(f"- cuBLAS GEMM ceiling {dt} (a square product, n = "
               f"{16 if a.tiny else GEMM_CEILING_N}): {limits[f'gemm_flops_per_s_{dt}']:.3g} FLOP/s"
               for dt in dtypes), "",
             *settings_lines(settings), "## Chain-steps per second (medians)", "",
             "| workload | dtype | path | cuda | with records | GEMM rate at its shape (FLOP/s) "
             "| % of GEMM (shape / ceiling) | % of Philox | JAX jit+scan | cuda / JAX "
             "| JAX, TF32 matmuls "
             "| host-run methods |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g = r.get("gemm_flops_per_s")
        j = r.get("jax_chain_steps_per_s")
        lines.append(
            f"| {r['workload']} {r['title']} | {r['dtype']} | {r['path']} | "
            f"{r['cuda_chain_steps_per_s']:.3g} | "
            f"{r['recorded_chain_steps_per_s']:.3g} "
            f"({100 * r['recorded_chain_steps_per_s'] / r['cuda_chain_steps_per_s']:.0f}%) | "
            + (f"{g:.3g} | {100 * r['gemm_fraction']:.0f}% / "
               f"{100 * r['gemm_ceiling_fraction']:.0f}% | " if g else "– | – | ")
            + (f"{100 * r['philox_fraction']:.0f}% | " if "philox_fraction" in r else "– | ")
            + (f"{j:.3g} | {r['cuda_chain_steps_per_s'] / j:.2f} | " if j else
               f"{r.get('jax_error', no_jax or '–')} | – | ")
            + (f"{r['jax_default_chain_steps_per_s']:.3g} | "
               if "jax_default_chain_steps_per_s" in r else "– | ")
            + (", ".join(r["host_bridged"]) or "none") + " |")
    if use_jax:
        lines += ["", "The JAX peers are benchmarks/peers.py's `JaxScan` (each step written "
                  "once, checked against the engine's reference step by "
                  "tests/test_benchmark_peers.py), from the workload's initial state, written "
                  "as a user would write them, not as this engine computes: W3's takes the "
                  "p-spin gradient as one (M, N^2) @ (N^2, N) product (twice the "
                  "multiply-adds of the engine's packed C(N+1, 2) products); W4's runs "
                  "per-epoch permutations, as the engine's SGD, timed by whole epochs."]
    split = [r for r in rows if "without_gemm_chain_steps_per_s" in r]
    if split:
        lines += ["", "## Where a dense step's time goes (W2, W3)", "",
                  "Microseconds per step of all replicas: the whole step, the same run with its "
                  "GEMMs left out (each step reusing the first step's product), and the GEMM "
                  "alone at its shape.", "",
                  "| workload | dtype | step (us) | without the GEMM (us) | GEMM alone (us) "
                  "| remainder / GEMM |", "|---|---|---|---|---|---|"]
        for r in split:
            w = W[r["workload"]]
            us = [1e6 * r["replicas"] / r["cuda_chain_steps_per_s"],
                  1e6 * r["replicas"] / r["without_gemm_chain_steps_per_s"],
                  1e6 * r["replicas"] * w.flops_per_chain_step / r["gemm_flops_per_s"]]
            lines.append(f"| {r['workload']} | {r['dtype']} | {us[0]:.3g} | {us[1]:.3g} | "
                         f"{us[2]:.3g} | {us[1] / us[2]:.2f} |")
    if lanes:
        gemm = {f"{r['workload']} {r['dtype']}": r["gemm_flops_per_s"] for r in rows
                if "gemm_flops_per_s" in r}
        lines += ["", "## Threads per replica in the dense step kernel (cuda_kernels.GEMM_LANES)",
                  "", "Chain-steps per second by `gemm_step` with L threads per replica (1: one "
                  "thread looping over the coordinates; more: each thread a slice of them, "
                  "design_changes 65, streaming each coordinate; 'arrays': the slice's normals "
                  "and new values in per-thread arrays, `cuda_kernels.GEMM_STREAM` off, "
                  "design_changes 103), GEMM included, and the share of the GEMM rate at the "
                  "workload's shape (from the table) that makes.", "",
                  "| workload | dtype | L | chain-steps/s | / L = 1 | % of GEMM |",
                  "|---|---|---|---|---|---|"]
        for key, r in lanes.items():
            g = gemm.get(key)
            for L in [f"{L}" for L in LANES] + [f"{LANES[-1]} arrays"]:
                share = f"{100 * r[L] * W[key.split()[0]].flops_per_chain_step / g:.0f}%" \
                    if g else "–"
                lines.append(f"| {key.split()[0]} | {key.split()[1]} | {L} | {r[L]:.3g} | "
                             f"{r[L] / r['1']:.2f} | {share} |")
    if gain:
        lines += ["", "## CUDA graphs at a launch-bound size", "",
                  f"W3's landscape at N={gain['N']}, {gain['replicas']} replicas, {gain['dtype']}: "
                  f"{gain['graphs']:.3g} chain-steps/s with the steps queued as CUDA graph replays "
                  f"({'capture FAILED: ' + gain['graphs_failed'] if 'graphs_failed' in gain else 'the default'}), "
                  f"{gain['one_by_one']:.3g} with one GEMM and one launch at a time "
                  f"(LANGEVIN_SIM_CUDA_GRAPH_STEPS=0): {gain['graphs'] / gain['one_by_one']:.2f}x."]
    if nets:
        lines += ["", "## A large toy net: the fused kernel against the generic path", "",
                  f"ModularArithmeticMLP p={nets['p']}, hidden {nets['hidden']}, "
                  f"{nets['samples']} training pairs (the grokking scenario's default net), "
                  f"full-batch AdamW, {nets['replicas']} replicas, {nets['dtype']}: "
                  f"{nets['fused']:.3g} chain-steps/s by the fused kernel ({nets['warps']} "
                  f"warps per replica, tiles of {nets['tile']} samples), {nets['generic']:.3g} "
                  f"by the generic path: {nets['fused'] / nets['generic']:.2f}x."]
    if unroll:
        lines += ["", "## W4's batch loops: opaque or unrolled whole (design_changes 59)", "",
                  "| dtype | opaque (default) chain-steps/s | unrolled | opaque / unrolled | "
                  "resources opaque | resources unrolled |", "|---|---|---|---|---|---|"]
        for dt, u in unroll.items():
            lines.append(f"| {dt} | {u['opaque']:.3g} | {u['unrolled']:.3g} | "
                         f"{u['opaque'] / u['unrolled']:.2f} | {u['opaque_resources']} | "
                         f"{u['unrolled_resources']} |")
    if beyond:
        g = beyond
        lines += ["", "## A net beyond the fused kernel: the generic path's step and its gradient",
                  "", f"ModularArithmeticMLP p={g['p']}, hidden {g['hidden']} ({g['parameters']} "
                  f"parameters), {g['samples']} training pairs, full-batch AdamW, "
                  f"{g['replicas']} replicas, {g['dtype']}: {g['step']:.3g} chain-steps/s, its "
                  f"gradient alone (array code) {g['gradient']:.3g}: the update kernels and "
                  f"`freeze` take {100 * max(0.0, 1 - g['step'] / g['gradient']):.0f}% of the "
                  "step (design_changes 84)."]
    if regcap:
        lines += ["", f"## W1's row kernel with its registers capped at {REGCAP} (rows.MAX_REGISTERS)",
                  "", f"| dtype | default chain-steps/s | capped at {REGCAP} | cap / default | resources "
                  "default | resources capped |", "|---|---|---|---|---|---|",
                  *(f"| {dt} | {r['default']:.3g} | {r['capped']:.3g} | "
                    f"{r['capped'] / r['default']:.2f} | {r['default_resources']} | "
                    f"{r['capped_resources']} |" for dt, r in regcap.items()),
                  "", "Above 1, the cap pays (design_changes 64)."]
    if crossover:
        from langevin_sim.kernels import quadratic

        c = crossover
        lines += ["", "## Quadratic forms: the row kernel against the GEMM path "
                  "(quadratic.FORM_ROWS_MAX_D)", "",
                  f"Dense Quadratic, {c['replicas']} replicas, {c['dtype']}, chain-steps/s:", "",
                  "| d | dynamics | row kernel | GEMM path | row / GEMM |", "|---|---|---|---|---|",
                  *(f"| {d} | {rule} | {r[rule + '_rows']:.3g} | {r[rule + '_gemm']:.3g} | "
                    f"{r[rule + '_rows'] / r[rule + '_gemm']:.2f} |"
                    for d, r in c.items() if isinstance(r, dict) for rule in ("sgd", "mala")),
                  "", "Below 1, the GEMM path is faster at that d; FORM_ROWS_MAX_D (now "
                  f"{quadratic.FORM_ROWS_MAX_D}) should be below it (design_changes 62)."]
    lines += ["", "## Targets (issue 12)", ""]
    for text, value, need in checks:
        lines.append(f"- {'PASS' if value >= need else 'FAIL'}: {text} (measured {value:.2f}, "
                     f"need {need})")
    if not checks:
        lines.append("- no target could be evaluated")
    lines += ["", f"'with records': `Simulation.run` recording energies and positions every "
              f"{record_every} steps into an in-memory run file (each record computed on the "
              "device and copied to page-locked host memory while the next block computes; the "
              "HDF5 writer in its own thread), and its percentage of the device-only rate. "
              "A record's bytes and the rate the host took them at (where the recorded rate "
              "falls far below the device's, the host's writes bound it): " + "; ".join(
                  f"{r['workload']} {r['dtype']} {r['record_bytes'] / 1e6:.3g} MB, "
                  f"{r['record_bytes'] * r['recorded_chain_steps_per_s'] / (r['replicas'] * record_every) / 1e9:.3g} GB/s"
                  for r in rows if "record_bytes" in r) + ".",
              "", "Path: 'fused' is the pair's registered numba-cuda kernel "
              "(langevin_sim/kernels/<family>.py; W1 one multi-step kernel per launch, W4 one "
              "multi-step kernel per launch with a block per replica (each epoch's permutation "
              "sorted in the kernel), W2 and W3 one cuBLAS GEMM + one fused step kernel per step, queued as "
              "replays of 32-step CUDA graphs), 'generic' "
              "the per-step path (potential gradient in CuPy array code, one numba-cuda update "
              "kernel per step). GEMM shapes are those the fused kernels run (W2 H^T @ XT; W3 the "
              "packed CT (N, C(N+1, 2)) @ YT); 'host-run methods' are potential methods not yet "
              "written with the array module of x (docs/gpu.md).", "",
              f"JAX jit+scan runs its matmuls at `jax_default_matmul_precision` = "
              f"'{JAX_PRECISION}' (true float32, as cuBLAS computes ours; the targets compare "
              "with it); 'JAX, TF32 matmuls' is JAX's own default on this GPU (float32 operands "
              "rounded to TF32's 10-bit mantissas: a different computation), for information."]
    report = "\n".join(lines)
    print(report)
    out = a.out or os.path.join(HERE, "results", f"gpu-{device_model(desc)}.md")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    notes = kept_notes(out)
    with open(out, "w") as fh:
        fh.write("\n".join([report, *notes]) + "\n")
    with open(os.path.splitext(out)[0] + ".json", "w") as fh:
        json.dump({"device": desc, "versions": versions(), "limits": limits, "rows": rows,
                   "graph_gain": gain, "toynet_gain": nets, "unroll_gain": unroll,
                   "rows_gain": crossover, "regcap_gain": regcap, "lanes_gain": lanes,
                   "settings": settings, "generic_split": beyond,
                   "cut": cut[0] if cut else None,
                   "tiny": a.tiny}, fh, indent=1)
    print(f"wrote {out}", file=sys.stderr)
    return 1 if cut else 0


if __name__ == "__main__":
    sys.exit(main())
