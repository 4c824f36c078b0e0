"""Chain-steps per second per workload and backend, next to this machine's limits.

usage: python benchmarks/throughput.py [--only W1,W2] [--quick] [--out benchmarks/results/NAME.md]

Limits are measured in the same run: the rate at which the kernels' own Philox + Box-Muller
code generates normals alone (the ceiling for cheap potentials), the BLAS GEMM rate for the
dense workloads' matrix shapes, and memory bandwidth.  Each workload states the criterion it
is held to.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from typing import Callable

import numba
import numpy as np
from numba import prange
from threadpoolctl import threadpool_info, threadpool_limits

from langevin_sim import Simulation, rng
from langevin_sim.kernels.common import (CHUNK, TILE, chunk_buffer, fill_noise_tile_d1,
                                         noise_chunk)
from langevin_sim.dynamics import SGD, OverdampedLangevin
from langevin_sim.potentials import DoubleWell, Quadratic, SphericalPSpin, TeacherStudentMLP


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


def timed(fn, min_time=1.0):
    """Best-of wall time of fn() over repeats filling about `min_time` seconds."""
    fn()
    best, total, n = np.inf, 0.0, 0
    while total < min_time or n < 3:
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, total, n = min(best, dt), total + dt, n + 1
    return best


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


def normal_rate(d: int, M: int, steps: int, dtype: str) -> float:
    """Normals per second of the generation code the kernels use for d lanes."""
    k0, k1 = rng.key_of(1)
    like = np.zeros(1, dtype)
    if d == 1:
        return M * steps / timed(lambda: _normals_only_d1(M, steps, k0, k1, like))
    return M * steps * d / timed(lambda: _normals_only(M, steps, d, k0, k1, like))


def gemm_rate(m: int, k: int, n: int, dtype) -> float:
    a = np.random.default_rng(0).standard_normal((m, k)).astype(dtype)
    b = np.random.default_rng(1).standard_normal((k, n)).astype(dtype)
    return 2.0 * m * k * n / timed(lambda: a @ b, 0.5)


def memory_bandwidth() -> float:
    a = np.ones(1 << 26)
    b = np.empty_like(a)
    return 2 * a.nbytes / timed(lambda: np.copyto(b, a), 0.5)


# ------------------------------------------------------------------ workloads

@dataclass
class Workload:
    name: str
    title: str
    build: Callable[[str, str], Simulation]      # (backend, dtype) -> Simulation
    steps: dict                                  # backend -> steps to time
    dtypes: tuple = ("float32", "float64")
    flops_per_chain_step: float = 0.0            # for GEMM-bound workloads
    gemm_shape: tuple | None = None              # (m, k, n) of one step's product
    normals_per_chain_step: int = 0              # noise drawn besides the product


WORKLOADS: dict[str, Workload] = {}


def workload(w: Workload) -> Workload:
    WORKLOADS[w.name] = w
    return w


workload(Workload(
    "W1", "DoubleWell d=1, 2^20 replicas, overdamped Langevin",
    lambda be, dt: Simulation(DoubleWell(d=1), OverdampedLangevin(1e-3, 0.5), 1 << 20,
                              backend=be, dtype=dt, seed=1),
    {"numpy": 4, "numba": 1024}))

workload(Workload(
    "W2", "Quadratic dense H, d=256, 1024 replicas, overdamped Langevin",
    lambda be, dt: Simulation(Quadratic(spectrum=np.linspace(0.1, 1.0, 256), seed=1),
                              OverdampedLangevin(1e-2, 0.5), 1024, backend=be, dtype=dt, seed=1),
    {"numpy": 10, "numba": 100},
    flops_per_chain_step=2.0 * 256 * 256, gemm_shape=(1024, 256, 256), normals_per_chain_step=256))

workload(Workload(
    "W3", "Spherical p=3 spin glass, N=64, 256 replicas, overdamped Langevin",
    lambda be, dt: Simulation(SphericalPSpin(64, 3, seed=1), OverdampedLangevin(1e-2, 0.5), 256,
                              backend=be, dtype=dt, seed=1),
    {"numpy": 10, "numba": 50},
    flops_per_chain_step=2.0 * 64 ** 3, gemm_shape=(256, 64 * 64, 64), normals_per_chain_step=64))

workload(Workload(
    "W4", "TeacherStudentMLP d_in=16, hidden=32, tanh, 64 replicas, SGD batch 32",
    lambda be, dt: Simulation(TeacherStudentMLP(n=1024, d_in=16, hidden=32, teacher_hidden=8,
                                                noise=0.01, seed=1),
                              SGD(0.02, 32, momentum=0.9), 64, backend=be, dtype=dt, seed=1),
    {"numpy": 50, "numba": 500},
    # forward A W1^T, H W2^T and backward dout W2, dZ^T A, dout^T H: 2 B h (2 d_in + 3)
    flops_per_chain_step=2.0 * 32 * 32 * (2 * 16 + 3), gemm_shape=(32, 16, 32)))


def measure(w: Workload, backend: str, dtype: str, quick: bool) -> float:
    sim = w.build(backend, dtype)
    steps = max(1, w.steps[backend] // (4 if quick else 1))
    sim.advance(1)  # compile / warm caches
    dt = timed(lambda: sim.advance(steps), 0.5 if quick else 2.0)
    return sim.n_replicas * steps / dt


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = [{k: i.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return {"cpu": cpu, "cores": os.cpu_count(), "numba_threads": numba.get_num_threads(),
            "numpy": np.__version__, "numba": numba.__version__, "blas": blas,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated workload names")
    ap.add_argument("--quick", action="store_true", help="shorter timings (smoke test)")
    ap.add_argument("--out", help="write a markdown + JSON report here")
    a = ap.parse_args(argv)
    names = a.only.split(",") if a.only else list(WORKLOADS)
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, BLAS {info['blas']}, "
          f"OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE']}")
    limits = {"memory_GBps": memory_bandwidth() / 1e9}
    for dtype in ("float32", "float64"):     # float32 runs draw float32 normals
        limits[f"normals_per_s_d1_{dtype}"] = normal_rate(1, 1 << 20, 256, dtype)
        limits[f"normals_per_s_d256_{dtype}"] = normal_rate(256, 1024, 32, dtype)
    rows, checks = [], []
    for name in names:
        w = WORKLOADS[name]
        for dtype in w.dtypes:
            rate = {be: measure(w, be, dtype, a.quick) for be in w.steps}
            row = {"workload": name, "title": w.title, "dtype": dtype,
                   **{f"{be}_chain_steps_per_s": r for be, r in rate.items()}}
            if w.gemm_shape:
                g = gemm_rate(*w.gemm_shape, np.dtype(dtype))
                row["gemm_flops_per_s"] = g
                row["numba_gemm_fraction"] = rate["numba"] * w.flops_per_chain_step / g
                # the best fraction of GEMM rate possible when the noise costs what it costs
                # alone: t_gemm / (t_gemm + t_noise) per chain-step
                t_gemm = w.flops_per_chain_step / g
                t_noise = w.normals_per_chain_step / limits[f"normals_per_s_d256_{dtype}"]
                row["gemm_fraction_ceiling_given_rng"] = t_gemm / (t_gemm + t_noise)
            rows.append(row)
    for r in rows:
        nb, npy = r.get("numba_chain_steps_per_s"), r.get("numpy_chain_steps_per_s")
        if r["workload"] == "W1":
            checks += [(f"W1 {r['dtype']}: numba >= 10x numpy", nb / npy, 10.0),
                       (f"W1 {r['dtype']}: numba >= 0.5x normals-alone rate",
                        nb / limits[f"normals_per_s_d1_{r['dtype']}"], 0.5)]
        if r["workload"] == "W2":
            checks += [(f"W2 {r['dtype']}: numba >= numpy", nb / npy, 1.0),
                       (f"W2 {r['dtype']}: numba >= 0.5x GEMM rate", r["numba_gemm_fraction"], 0.5)]
        if r["workload"] == "W3":
            checks += [(f"W3 {r['dtype']}: numba >= numpy", nb / npy, 1.0),
                       (f"W3 {r['dtype']}: numba >= 0.5x GEMM rate", r["numba_gemm_fraction"], 0.5)]
        if r["workload"] == "W4":  # small per-replica products + B*h scalar libm tanh per step
            checks += [(f"W4 {r['dtype']}: numba >= 2x numpy", nb / npy, 2.0)]
    lines = [f"# Throughput on {info['cpu']} ({info['cores']} cores)", "",
             f"numpy {info['numpy']}, numba {info['numba']} ({info['numba_threads']} threads), "
             f"BLAS {info['blas']}, OPENBLAS_CORETYPE={info['OPENBLAS_CORETYPE']}", "",
             "## Machine limits (measured in this run)", "",
             f"- memory bandwidth (copy): {limits['memory_GBps']:.1f} GB/s",
             *(f"- Philox + Box-Muller {dt} normals alone (the kernels' code: across replicas for "
               f"d=1, per replica stream for d=256), d=1: "
               f"{limits[f'normals_per_s_d1_{dt}']:.3g} /s, d=256: "
               f"{limits[f'normals_per_s_d256_{dt}']:.3g} /s" for dt in ("float32", "float64")), "",
             "## Chain-steps per second", "",
             "| workload | dtype | numpy | numba | numba/numpy | GEMM rate (FLOP/s) | numba % of GEMM "
             "| ceiling % of GEMM (GEMM + noise alone) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        nb, npy = r.get("numba_chain_steps_per_s", np.nan), r.get("numpy_chain_steps_per_s", np.nan)
        g = r.get("gemm_flops_per_s")
        lines.append(f"| {r['workload']} {r['title']} | {r['dtype']} | {npy:.3g} | {nb:.3g} | {nb / npy:.1f} | "
                     + (f"{g:.3g} | {100 * r['numba_gemm_fraction']:.0f}% | "
                        f"{100 * r['gemm_fraction_ceiling_given_rng']:.0f}% |" if g else "– | – | – |"))
    lines += ["", "## Criteria", ""]
    for text, value, need in checks:
        lines.append(f"- {'PASS' if value >= need else 'FAIL'}: {text} (measured {value:.2f}, need {need})")
    report = "\n".join(lines)
    print(report)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(report + "\n")
        with open(os.path.splitext(a.out)[0] + ".json", "w") as fh:
            json.dump({"machine": info, "limits": limits, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    with threadpool_limits(None):
        main()
