"""The RNG compiles for numba-cuda from the same source (run under the CUDA simulator)."""
import os
import subprocess
import sys
import textwrap

CODE = textwrap.dedent("""
    import numpy as np
    from numba import cuda
    from langevin_sim import rng
    from langevin_sim.backends.jit import PRIMITIVES, compile_functions
    dev = compile_functions(rng, rng.DEVICE_FUNCTIONS, compiler=cuda.jit(device=True),
                            primitives=PRIMITIVES)
    bn, bn32 = dev.block_normals, dev.block_normals_f32

    @cuda.jit
    def normals(k0, k1, block, out, out32):
        i = cuda.grid(1)
        if i < out.shape[0]:
            z0, z1, z2, z3 = bn(k0, k1, np.uint64(1), np.uint64(i), np.uint64(block))
            out[i, 0] = z0
            out[i, 1] = z1
            out[i, 2] = z2
            out[i, 3] = z3
            z0, z1, z2, z3 = bn32(k0, k1, np.uint64(1), np.uint64(i), np.uint64(block))
            out32[i, 0] = z0
            out32[i, 1] = z1
            out32[i, 2] = z2
            out32[i, 3] = z3

    out, out32 = np.zeros((7, 4)), np.zeros((7, 4), dtype=np.float32)
    k0, k1 = rng.key_of(9)
    normals[2, 4](k0, k1, 5, out, out32)   # 2 blocks of 4 threads: M=7 spans both
    ref = rng.stream_normals(9, rng.NOISE, np.arange(7), 20, 4)
    assert np.array_equal(out, ref), np.abs(out - ref).max()
    ref32 = rng.stream_normals(9, rng.NOISE, np.arange(7), 20, 4, np.float32)
    assert ref32.dtype == np.float32 and np.array_equal(out32, ref32), np.abs(out32 - ref32).max()
    print("ok")
""")


def test_rng_under_cuda_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
