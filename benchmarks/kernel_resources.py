"""What the cuda backend's kernels ask of a GPU, without one: registers, local memory
(stack frame, spills) and static shared memory per kernel, from the PTX numba-cuda compiles
(libNVVM) assembled by the CUDA toolkit's `ptxas -v`, and the occupancy those allow.

usage: python benchmarks/kernel_resources.py [--arch sm_90,sm_80] [--only toynets,rows,gemm,generic]
           [--out benchmarks/results/kernel-resources.md]

Kernels (each compiled for the argument types the backend launches it with, from the same
Simulation settings, float32 and float64; a net the fused kernel does not take in a dtype is
listed as run by the generic path):
  rows     `kernels/rows.py`: W1 (DoubleWell d=1, overdamped and BAOAB), and the row kernel's
           largest states: the dense Quadratic at MAX_D = 64 with SGD (momentum), and with
           MALA at d = 16, 32, 64 (where registers run out)
  gemm     `cuda_kernels.gemm_step`: W2 (Quadratic d=256) and W3 (p-spin N=64), overdamped
  toynets  `kernels/toynets.py`: W4 (TeacherStudentMLP d_in=16, hidden=32, SGD batch 32), the
           grokking scenario's default net (p=23, hidden 64, full-batch AdamW), its MALA,
           ClassifierMLP at the digits' shapes (d_in=64, hidden 32, 10 classes, SGD batch 32:
           75 parameters per lane, in local memory), and nets at the edge of what the fused kernel `accepts` (MAX_OWNED parameters per lane):
           one-hot p=41 with hidden 128 (gathered inputs), a learned embedding (p=59, e=8,
           hidden 64), TeacherStudentMLP d_in=100 with hidden 256 (8 warps) and batch 128
  generic  `cuda_kernels.elementwise`: the generic path's step kernel of each rule (EW_ARITY,
           `elementwise_signature`)
Per kernel: ptxas' registers per thread, stack frame and spill bytes (local memory, per
thread), static shared memory (bytes per block), then per architecture the resident blocks
per SM (the least of the register, shared-memory, warp and block limits) and the occupancy
(resident warps / the SM's maximum).  Fails (exit 1) where ptxas refuses a kernel, a block's
static shared memory exceeds 48 KiB, or its registers do not fit one block.  Needs
numba-cuda with libNVVM and a `ptxas` at least as new (PATH, $CUDA_HOME/bin or the
nvidia-cuda-nvcc wheel), no GPU or driver (exit 3, naming the fix, where one is missing or
too old).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np

from langevin_sim.backends import cuda_runtime as rt
from langevin_sim.errors import BackendUnavailableError

HERE = os.path.dirname(os.path.abspath(__file__))
STATIC_SHARED = 48 * 1024   # bytes of static shared memory a block may declare
UNAVAILABLE = 3             # exit status where libNVVM or ptxas is missing

# Per-SM limits (CUDA C++ Programming Guide, "Technical Specifications per Compute
# Capability"): registers, shared memory (bytes), resident warps, resident blocks; every
# block also takes 1 KiB of shared memory reserved by the system (cc >= 8.0); registers are
# allocated per warp in units of 256.
ARCHS = {"sm_80": (65536, 167936, 64, 32), "sm_86": (65536, 102400, 48, 16),
         "sm_89": (65536, 102400, 48, 24), "sm_90": (65536, 233472, 64, 32)}
RESERVED_SHARED, REG_UNIT = 1024, 256


@dataclass
class Usage:
    registers: int
    stack: int
    spill_stores: int
    spill_loads: int
    shared: int


def ptxas_release(path: str) -> tuple[int, int]:
    """(major, minor) CUDA release of the ptxas at `path`; (0, 0) where it does not say."""
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def find_ptxas() -> str:
    """The newest ptxas of PATH, $CUDA_HOME/bin, /usr/local/cuda*/bin and the nvidia-cuda-nvcc
    wheels' (libNVVM's PTX needs a ptxas at least as new: numba-cuda with a newer libNVVM
    wheel writes a PTX version an older toolkit's ptxas refuses); BackendUnavailableError
    naming the fix where there is none."""
    roots = [os.environ.get("CUDA_HOME", ""), *sorted(glob.glob("/usr/local/cuda*"))]
    candidates = [shutil.which("ptxas")] + [os.path.join(r, "bin", "ptxas") for r in roots if r]
    try:   # the wheels' layouts: nvidia/cuda_nvcc/bin (CUDA 12), nvidia/cu13/bin (CUDA 13)
        import nvidia
        candidates += [p for root in nvidia.__path__
                       for p in sorted(glob.glob(os.path.join(root, "*", "bin", "ptxas")))]
    except ImportError:
        pass
    found = list(dict.fromkeys(os.path.realpath(p) for p in candidates
                               if p and os.access(p, os.X_OK)))
    if not found:
        raise BackendUnavailableError("ptxas not found: install the CUDA toolkit (set CUDA_HOME) "
                                      "or pip install nvidia-cuda-nvcc (CUDA 13; "
                                      "nvidia-cuda-nvcc-cu12 for CUDA 12)")
    return max(found, key=ptxas_release)


def assemble(ptxas: str, ptx: str, arch: str, workdir: str, max_registers: int = 0) -> Usage:
    """ptxas -v of one kernel's PTX for `arch` (registers capped at `max_registers`, the
    kernel's `cuda.jit(max_registers=...)`; 0: none): the entry function's resources."""
    path = os.path.join(workdir, "kernel.ptx")
    with open(path, "w") as f:
        f.write(ptx)
    cap = [f"--maxrregcount={max_registers}"] if max_registers else []
    r = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", *cap, path, "-o", os.devnull],
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    if r.returncode != 0:
        if "Unsupported .version" in out:    # a tool missing, not a kernel failing
            raise BackendUnavailableError(
                f"{ptxas} is older than libNVVM's PTX ({out.strip().splitlines()[0]}): pip "
                "install nvidia-cuda-nvcc of libNVVM's CUDA release, or set CUDA_HOME to that "
                "toolkit")
        raise RuntimeError(f"ptxas {arch} failed: {out[-1500:]}")
    entry = out[out.index("Compiling entry function"):]
    stack = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                      r"(\d+) bytes spill loads", entry)
    used = re.search(r"Used (\d+) registers.*?(?:(\d+) bytes smem|$)", entry, re.M)
    return Usage(int(used.group(1)), *(int(v) for v in stack.groups()),
                 int(used.group(2) or 0))


def resident(u: Usage, threads: int, arch: str) -> tuple[int, str, float]:
    """(blocks per SM, what limits them, occupancy) of a kernel using `u` in blocks of
    `threads` threads on `arch`."""
    regs, smem, warps_max, blocks_max = ARCHS[arch]
    warps = -(-threads // 32)
    per_warp = -(-u.registers * 32 // REG_UNIT) * REG_UNIT
    limits = {"registers": regs // (per_warp * warps) if u.registers else blocks_max,
              "shared": smem // (u.shared + RESERVED_SHARED),
              "warps": warps_max // warps, "blocks": blocks_max}
    why = min(limits, key=limits.get)
    return limits[why], why, limits[why] * warps / warps_max


def sim(pot, dyn, dtype: str, first_passage=None):
    from langevin_sim import Simulation
    return Simulation(pot, dyn, replicas=2, backend="numpy", dtype=dtype,
                      first_passage=first_passage)


def specimens(only: set[str]):
    """(group, name, dtype, kernel, argument types, threads per block) of every kernel."""
    from langevin_sim.backends import cuda_kernels as ck
    from langevin_sim.dynamics import (MALA, SGD, AdamW, OverdampedLangevin, Schedule,
                                       UnderdampedLangevin)
    from langevin_sim.first_passage import FirstPassage, HalfSpace
    from langevin_sim.kernels import pspin, quadratic, rows, toynets
    from langevin_sim.potentials import (ClassifierMLP, DoubleWell, ModularArithmeticMLP,
                                         Quadratic, TeacherStudentMLP)
    from numba import float32, float64, int64

    threads = rt.threads_per_block()
    rows_cases = [
        ("W1 DoubleWell d=1 overdamped", DoubleWell(), OverdampedLangevin(step=1e-3)),
        ("W1 DoubleWell d=1 BAOAB", DoubleWell(), UnderdampedLangevin(step=1e-2)),
        ("W1 DoubleWell d=1 overdamped, first passage", DoubleWell(),
         OverdampedLangevin(step=1e-3), FirstPassage(HalfSpace([1.0], 0.0, "right"))),
        ("W1 DoubleWell d=1 overdamped, cosine temperature schedule", DoubleWell(),
         OverdampedLangevin(step=1e-3, temperature=Schedule("cosine", 1.0, 0.1, 10 ** 6))),
        ("Quadratic d=64 SGD momentum", Quadratic(np.eye(64) + 0.1),
         SGD(lr=1e-2, momentum=0.9, temperature=0.1)),
        *((f"Quadratic d={d} MALA", Quadratic(np.eye(d) + 0.1), MALA(step=1e-2))
          for d in (16, 32, 64))]
    w4 = TeacherStudentMLP(n=1024, d_in=16, hidden=32, teacher_hidden=8)
    grok = ModularArithmeticMLP(p=23, hidden=64, train_fraction=0.6)
    z = np.random.default_rng(0).standard_normal((1798, 64))    # the digits' shapes, 10 classes
    digits = ClassifierMLP("digits-shaped", hidden=32, inputs=z[:898], labels=np.arange(898) % 10,
                           test_inputs=z[898:], test_labels=np.arange(900) % 10)
    net_cases = [
        ("W4 TeacherStudentMLP 16x32 SGD B=32", w4, SGD(lr=0.05, batch_size=32, momentum=0.9)),
        ("W4 TeacherStudentMLP 16x32 BAOAB", w4, UnderdampedLangevin(step=1e-3)),
        ("grokking p=23 h=64 AdamW", grok, AdamW(lr=3e-3, weight_decay=1.0)),
        ("grokking p=23 h=64 MALA", grok, MALA(step=1e-4)),
        ("one-hot p=41 h=128 AdamW (gathered)",
         ModularArithmeticMLP(p=41, hidden=128, train_fraction=0.5), AdamW()),
        ("embedding p=59 e=8 h=64 AdamW",
         ModularArithmeticMLP(p=59, hidden=64, embed=8, train_fraction=0.3), AdamW()),
        ("ClassifierMLP digits 64x32x10 SGD B=32 (75 per lane, local)", digits,
         SGD(lr=0.1, batch_size=32)),
        ("TeacherStudentMLP 100x256 SGD B=128",
         TeacherStudentMLP(n=4096, d_in=100, hidden=256, teacher_hidden=16),
         SGD(lr=0.01, batch_size=128, momentum=0.9))]
    for dtype in ("float32", "float64"):
        f32, ft = dtype == "float32", float32 if dtype == "float32" else float64
        if "rows" in only:
            for name, pot, dyn, *fp in rows_cases:
                s = sim(pot, dyn, dtype, *fp)
                assert rows.accepts(s), name
                yield "rows", name, dtype, rows.kernel_of(s), rows.cuda_signature(s), threads
        if "gemm" in only:
            row, refresh = quadratic._cuda_rules()        # a0..a3: the offset, unused (1-D)
            yield ("gemm", "W2 Quadratic d=256 overdamped", dtype,
                   ck.gemm_step(row, refresh, f32, 256), ck.gemm_signature(f32, (ft[::1],) * 4),
                   threads)
            L = ck.GEMM_LANES                             # the sliced kernel, both forms
            blk = (32, L)
            wide = f", {L} threads a replica (+{8 * 32 * L // 1024} KiB dynamic shared)"
            forms = ((", streamed", quadratic._cuda_stages()), (", per-thread arrays", None))
            for form, stages in forms:
                yield ("gemm", "W2 Quadratic d=256 overdamped" + wide + form, dtype,
                       ck.gemm_step(row, refresh, f32, 256, ck.GEMM_OVERDAMPED, blk, stages),
                       ck.gemm_signature(f32, (ft[::1],) * 4), blk[0] * blk[1])
            pspin_args = ck.gemm_signature(f32, (ft[:, ::1], int64[:, ::1], int64[::1],
                                                 int64[::1]))   # the packed couplings' operands
            row, refresh, _ = pspin._cuda_rules(f32, 64)
            yield ("gemm", "W3 p-spin N=64 overdamped", dtype,
                   ck.gemm_step(row, refresh, f32, 64), pspin_args, threads)
            row, refresh, _ = pspin._cuda_rules(f32, 64, blk)
            for form, stages in ((", streamed", pspin._cuda_stages(f32, 64, blk)),
                                 (", per-thread arrays", None)):
                yield ("gemm", "W3 p-spin N=64 overdamped" + wide + form, dtype,
                       ck.gemm_step(row, refresh, f32, 64, ck.GEMM_OVERDAMPED, blk, stages),
                       pspin_args, blk[0] * blk[1])
        if "generic" in only:
            names = {v: k[3:].lower() for k, v in vars(ck).items() if k.startswith("EW_")
                     and isinstance(v, int)}
            for rule in ck.EW_ARITY:
                yield ("generic", f"elementwise {names[rule]}", dtype, ck.elementwise(rule, f32),
                       ck.elementwise_signature(rule, f32), threads)
        if "toynets" in only:
            for name, pot, dyn in net_cases:
                s = sim(pot, dyn, dtype)
                if not toynets.accepts(s):   # too large for the kernel in this dtype
                    yield "toynets", name, dtype, None, None, 0
                    continue
                warps, tile, _ = toynets.layout(s)
                yield ("toynets", f"{name} (tile {tile})", dtype, toynets.kernel_of(s),
                       toynets.cuda_signature(s), toynets.WARP * warps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sm_90,sm_80",
                    help=f"architectures, comma-separated (of {', '.join(ARCHS)})")
    ap.add_argument("--only", default="rows,gemm,toynets,generic")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "kernel-resources.md"))
    a = ap.parse_args(argv)
    archs = a.arch.split(",")
    unknown = [x for x in archs if x not in ARCHS]
    if unknown:
        ap.error(f"unknown --arch {unknown}: one of {sorted(ARCHS)}")
    try:
        ptxas = find_ptxas()
        cuda = rt.offline_compiler()
    except BackendUnavailableError as e:
        print(f"kernel_resources: {e}", file=sys.stderr)
        return UNAVAILABLE
    version = [line for line in subprocess.run([ptxas, "--version"], capture_output=True,
                                               text=True).stdout.splitlines()
               if "release" in line][-1].strip()
    import numba

    head = ["| group | kernel | dtype | arch | threads/block | registers | stack B | "
            "spill st/ld B | static smem B | blocks/SM (limit) | occupancy |", "|---" * 11 + "|"]
    lines, failures = [], []
    with tempfile.TemporaryDirectory() as work:
        for group, name, dtype, kernel, sig, threads in specimens(set(a.only.split(","))):
            if kernel is None:
                lines.append(f"| {group} | {name} | {dtype} | | | the generic path: the fused "
                             "kernel does not take it | | | | | |")
                print(lines[-1], flush=True)
                continue
            for arch in archs:
                cc = (int(arch[3:-1]), int(arch[-1]))
                rt.offline_compiler(cc)
                ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=cc)
                cap = getattr(kernel, "targetoptions", {}).get("max_registers") or 0
                try:
                    u = assemble(ptxas, ptx, arch, work, cap)
                except BackendUnavailableError as e:
                    print(f"kernel_resources: {e}", file=sys.stderr)
                    return UNAVAILABLE
                except RuntimeError as e:
                    failures.append(f"{name} {dtype}: {e}")
                    continue
                blocks, why, occ = resident(u, threads, arch)
                if u.shared > STATIC_SHARED:
                    failures.append(f"{name} {dtype} {arch}: {u.shared} B of static shared "
                                    f"memory > {STATIC_SHARED}")
                if blocks < 1:
                    failures.append(f"{name} {dtype} {arch}: one block of {threads} threads "
                                    f"does not fit ({why})")
                line = (f"| {group} | {name} | {dtype} | {arch} | {threads} | {u.registers} | "
                        f"{u.stack} | {u.spill_stores}/{u.spill_loads} | {u.shared} | "
                        f"{blocks} ({why}) | {occ:.0%} |")
                print(line, flush=True)
                lines.append(line)
    report = [f"# The cuda kernels' resources, fused and generic ({', '.join(archs)}), "
              "from ptxas without a GPU", "",
              f"{datetime.date.today()}, `python benchmarks/kernel_resources.py --arch "
              f"{a.arch}` ({platform.machine()}, no GPU): numba {numba.__version__}, ptxas "
              f"{version}.  Registers per thread, stack frame and spills per thread (local "
              "memory), static shared memory per block; blocks per SM and occupancy (resident "
              "warps / the SM's maximum) from the per-SM limits of each architecture.", "",
              *head, *lines, ""]
    if failures:
        report += ["Failures:", "", *(f"- {f}" for f in failures), ""]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(report))
    print("\n".join(f"FAIL {f}" for f in failures) or "all kernels assemble within the limits")
    print(f"wrote {a.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
