"""The RNG compiles for numba-cuda from the same source (run under the CUDA simulator)."""
import os
import subprocess
import sys
import textwrap

CODE = textwrap.dedent("""
    import numpy as np
    from numba import cuda
    from langevin_sim import rng
    from langevin_sim.backends.jit import compile_functions
    dev = compile_functions(rng, rng.DEVICE_FUNCTIONS, compiler=cuda.jit(device=True))
    bn = dev.block_normals

    @cuda.jit
    def normals(k0, k1, block, out):
        i = cuda.grid(1)
        if i < out.shape[0]:
            z0, z1, z2, z3 = bn(k0, k1, np.uint64(1), np.uint64(i), np.uint64(block))
            out[i, 0] = z0
            out[i, 1] = z1
            out[i, 2] = z2
            out[i, 3] = z3

    out = np.zeros((7, 4))
    k0, k1 = rng.key_of(9)
    normals[2, 4](k0, k1, 5, out)          # 2 blocks of 4 threads: M=7 spans both
    ref = rng.stream_normals(9, rng.NOISE, np.arange(7), 20, 4)
    assert np.array_equal(out, ref), np.abs(out - ref).max()
    print("ok")
""")


def test_rng_under_cuda_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
