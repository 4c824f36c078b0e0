"""The RNG and every family's step functions compile for numba-cuda from the same source and
match the NumPy reference (under the CUDA simulator); the step functions also compile to PTX."""
import os
import subprocess
import sys
import textwrap

from .conftest import check_ptx_compilation, ptx_compilation, starts_early

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


STEPS_CODE = textwrap.dedent("""
    import numpy as np
    from numba import cuda
    from langevin_sim import kernels
    from langevin_sim.backends.jit import PRIMITIVES
    from langevin_sim.backends.numpy_backend import finite_and_bounded
    from langevin_sim.dynamics import SGD, OverdampedLangevin, Schedule, UnderdampedLangevin
    from langevin_sim.dynamics.base import NoiseSource
    from langevin_sim.dynamics.langevin import noise_scale
    from langevin_sim.dynamics.sgd import minibatch
    from langevin_sim.kernels import common
    from langevin_sim.potentials import (DoubleWell, LinearRegression, MultiWell, Quadratic,
                                         ScaleSymmetric, SphericalPSpin, TeacherStudentMLP, Valley)

    # every family's step functions (with the shared ones) compiled for numba-cuda
    dev = {f.__name__.rsplit(".", 1)[1]: common.compile_steps(f, cuda.jit(device=True), PRIMITIVES)
           for f in kernels.FAMILIES}
    checked = {"double_well", "quadratic", "linear_regression", "pspin", "toynets", "manifolds"}
    own = {name for name, f in zip(dev, kernels.FAMILIES) if f.STEPS}
    assert own <= checked <= set(dev), ("a new family with step functions of its own: add a "
                                        f"one-step check of it below ({own - checked})")
    DW, Q = dev["double_well"], dev["quadratic"]
    LR, PS, TS, MF = dev["linear_regression"], dev["pspin"], dev["toynets"], dev["manifolds"]
    SEED, T_STEP, BOUND = 11, 37, 1e8
    ETA = Schedule("linear", 0.02, 0.01, 100)
    TEMP = Schedule("cosine", 0.7, 0.2, 80)
    THREADS = 8              # per block: the lanes span several blocks

    @cuda.jit
    def overdamped_dw(x, z, es, ts, coef, c, out, ok):
        i = cuda.grid(1)
        if i < x.shape[0]:
            eta = DW.schedule_value(int(es[0]), es[1], es[2], es[3], T_STEP)
            c[i, 0] = eta     # c (n, 3) has x's dtype: eta, sigma and 0 cast to it, as the
            c[i, 1] = DW.noise_scale(eta, DW.schedule_value(int(ts[0]), ts[1], ts[2], ts[3],
                                                            T_STEP))    # CPU kernels take them
            out[i] = DW.overdamped_step(x[i], z[i], c[i, 0], c[i, 1], c[i, 2], coef[0], coef[1],
                                        coef[2], coef[3])
            ok[i] = DW.within_bound(out[i], BOUND)

    @cuda.jit
    def baoab_dw(x, p, g, z, es, ts, friction, mass, coef, out):
        i = cuda.grid(1)
        if i < x.shape[0]:
            eta = DW.schedule_value(int(es[0]), es[1], es[2], es[3], T_STEP)
            c1, c2 = DW.baoab_coeffs(eta, friction, DW.schedule_value(int(ts[0]), ts[1], ts[2],
                                                                      ts[3], T_STEP), mass)
            out[0, i], out[1, i], out[2, i] = DW.baoab_step(x[i], p[i], g[i], z[i], 0.5 * eta,
                                                            1.0 / mass, c1, c2, coef[0], coef[1],
                                                            coef[2], coef[3])

    def overdamped_kernel(F):
        @cuda.jit
        def step(x, g, z, eta, sigma, tangent, out, ok):
            i = cuda.grid(1)
            if i < x.shape[0]:
                if tangent:     # the tangent step dx of a constrained potential
                    out[i] = F.overdamped_update(0.0, g[i], eta, sigma, z[i])
                else:
                    out[i] = F.overdamped_lane(x[i], g[i], z[i], eta, sigma, 0.0)
                ok[i] = F.within_bound(out[i], BOUND)
        return step

    def sgd_kernel(F):
        @cuda.jit
        def step(x, v, g, z, ls, T, momentum, wd, out):
            i = cuda.grid(1)
            if i < x.shape[0]:
                lr = F.schedule_value(int(ls[0]), ls[1], ls[2], ls[3], T_STEP)
                sigma = F.noise_scale(lr, T)
                out[0, i], out[1, i] = F.sgd_update(x[i], v[i], g[i], lr, momentum, wd, sigma, z[i])
        return step

    def noise(M, d, dtype=np.float64):
        src = NoiseSource(SEED, np.arange(M) + 5)
        return src, src.normals(T_STEP, d, dtype=dtype)

    def code(s):
        return np.array(s.code, dtype=np.float64)

    def launch(kernel, *args):     # one thread per lane of the first argument
        kernel[(args[0].size + THREADS - 1) // THREADS, THREADS](*args)

    def flat(a):
        return np.ascontiguousarray(a).reshape(-1)

    # DoubleWell, overdamped (float64 and float32; one replica beyond the bound) and BAOAB
    M, d = 3, 4
    pot = DoubleWell(d=d, barrier=1.5, a=0.8, tilt=0.1)
    for dtype in (np.float64, np.float32):
        x = np.random.default_rng(0).normal(size=(M, d)).astype(dtype)
        x[1, 2] = 3e3                                       # 4 barrier / a^4 x^3 >> 1e8
        src, z = noise(M, d, dtype)
        dyn = OverdampedLangevin(ETA, TEMP)
        ref = dyn.reference_step(pot, {"x": x}, T_STEP, src)["x"]
        out, ok = np.zeros(M * d, dtype), np.zeros(M * d, np.bool_)
        launch(overdamped_dw, flat(x), flat(z), code(ETA), code(TEMP),
               np.array(pot.grad_coeffs, dtype), np.zeros((M * d, 3), dtype), out, ok)
        assert out.dtype == ref.dtype and np.array_equal(out.reshape(M, d), ref), (dtype, out, ref)
        assert np.array_equal(ok.reshape(M, d).all(axis=1), finite_and_bounded([ref], BOUND))
        assert not ok.all()
    dyn = UnderdampedLangevin(ETA, 1.3, TEMP, mass=0.7)
    x = np.random.default_rng(1).normal(size=(M, d))
    state = dyn.init_state(pot, x)
    state["p"] = np.random.default_rng(2).normal(size=(M, d))
    src, z = noise(M, d)
    ref = dyn.reference_step(pot, state, T_STEP, src)
    out = np.zeros((3, M * d))
    launch(baoab_dw, flat(x), flat(state["p"]), flat(state["g"]), flat(z), code(ETA),
           code(TEMP), 1.3, 0.7, np.array(pot.grad_coeffs), out)
    for k, o in zip("xpg", out):
        assert np.array_equal(o.reshape(M, d), ref[k]), k

    # dense and block-gradient families: the gradient from the host array code (what the
    # device runs on CuPy arrays), the step on the device
    dyn = OverdampedLangevin(ETA, TEMP)
    eta, T = ETA(T_STEP), TEMP(T_STEP)
    quad = Quadratic(spectrum=[0.5, 1.0, 2.0, 3.0], seed=2, center=[0.1, 0.2, 0.3, 0.4])
    cases = [(Q, quad, lambda x: x @ quad.H - quad.center @ quad.H, 1e-13),   # as the CPU kernel
             (MF, ScaleSymmetric(depth=4, n=16, noise=0.5, seed=1), None, 0.0),
             (MF, Valley(d=4, profile="exp", k0=2.0, alpha=0.7, bounds=(-0.5, 0.5)), None, 0.0),
             (MF, MultiWell([[-2, 0, 0, 0], [2, 0, 0, 0]], spectra=[[1, 2, 3, 4], [4, 5, 6, 7]]),
              None, 0.0),
             (PS, SphericalPSpin(4, 3, seed=1), None, 0.0)]
    for F, pot, grad, tol in cases:
        x = pot.default_init(np.random.default_rng(3).normal(size=(M, d)))
        src, z = noise(M, d)
        ref = dyn.reference_step(pot, {"x": x}, T_STEP, src)["x"]
        g = pot.grad(x) if grad is None else grad(x)
        out, ok = np.zeros(M * d), np.zeros(M * d, np.bool_)
        launch(overdamped_kernel(F), flat(x), flat(g), flat(z), eta, noise_scale(eta, T),
               pot.constrained, out, ok)
        assert ok.all()
        if pot.constrained:     # projection and retraction: the potential's array code
            out = pot.retract(x + pot.project(x, out.reshape(M, d)))
        np.testing.assert_allclose(out.reshape(M, d), ref, rtol=tol, atol=tol,
                                   err_msg=type(pot).__name__)

    # SGD on the finite-sum families: minibatch gradient on the host, the update on the device
    for F, pot in [(LR, LinearRegression(n=20, d=d, seed=3)),
                   (TS, TeacherStudentMLP(n=20, d_in=2, hidden=2, teacher_hidden=1, seed=1))]:
        dyn = SGD(ETA, 5, momentum=0.6, weight_decay=1e-2, temperature=0.3)
        D = pot.d
        x = np.random.default_rng(4).normal(size=(M, D))
        v = np.random.default_rng(5).normal(size=(M, D))
        src, z = noise(M, D)
        ref = dyn.reference_step(pot, {"x": x, "v": v}, T_STEP, src)
        g = pot.grad(x, minibatch(src, T_STEP, 5, pot.n_samples, False))
        out = np.zeros((2, M * D))
        launch(sgd_kernel(F), flat(x), flat(v), flat(g), flat(z), code(ETA), 0.3, 0.6, 1e-2,
               out)
        assert np.array_equal(out[0].reshape(M, D), ref["x"]), type(pot).__name__
        assert np.array_equal(out[1].reshape(M, D), ref["v"]), type(pot).__name__
    print("ok")
""")


def test_every_family_step_functions_compile_for_cuda_and_match_the_reference():
    """Each family module's step functions, with the shared rules, compile for numba-cuda
    (`kernels.common.compile_steps`, under the simulator) and one step of each family on
    random inputs equals the NumPy reference's step: bit for bit where the device computes
    the same operations (the dense Quadratic kernels take x H - c H: to rounding)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, "-c", STEPS_CODE], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


PTX_CODE = textwrap.dedent("""
    from numba import boolean, float32, float64
    from langevin_sim import kernels
    from langevin_sim.backends.jit import PRIMITIVES
    from langevin_sim.kernels import common

    def family_kernels(F):
        def overdamped(x, g, z, es, ts, out, ok):
            i = cuda.grid(1)
            if i < x.shape[0]:
                eta = F.schedule_value(int(es[0]), es[1], es[2], es[3], 7)
                sigma = F.noise_scale(eta, F.schedule_value(int(ts[0]), ts[1], ts[2], ts[3], 7))
                out[i] = F.overdamped_lane(x[i], g[i], z[i], eta, sigma, 0.0)
                ok[i] = F.within_bound(out[i], 1e8)

        def sgd(x, v, g, z, lr, T, out):
            i = cuda.grid(1)
            if i < x.shape[0]:
                out[0, i], out[1, i] = F.sgd_update(x[i], v[i], g[i], lr, 0.9, 0.01,
                                                    F.noise_scale(lr, T), z[i])

        def baoab(x, p, g, z, eta, T, out):
            i = cuda.grid(1)
            if i < x.shape[0]:
                c1, c2 = F.baoab_coeffs(eta, 1.0, T, 1.0)
                xn, pn = F.baoab_first(x[i], p[i], g[i], 0.5 * eta, 1.0, c1, c2, z[i])
                out[0, i], out[1, i] = xn, F.baoab_last(pn, g[i], 0.5 * eta)
        return overdamped, sgd, baoab

    A, B = float64[::1], float64[:, ::1]
    for f in kernels.FAMILIES:
        F = common.compile_steps(f, cuda.jit(device=True), PRIMITIVES)
        overdamped, sgd, baoab = family_kernels(F)
        cuda.compile_ptx(overdamped, (A, A, A, A, A, A, boolean[::1]), cc=(9, 0))
        cuda.compile_ptx(sgd, (A, A, A, A, float64, float64, B), cc=(9, 0))
        cuda.compile_ptx(baoab, (A, A, A, A, float64, float64, B), cc=(9, 0))

    DW = common.compile_steps(kernels.double_well, cuda.jit(device=True), PRIMITIVES)

    def dw_overdamped(x, z, eta, sigma, coef, out):
        i = cuda.grid(1)
        if i < x.shape[0]:
            out[i] = DW.overdamped_step(x[i], z[i], eta, sigma, x[i] - x[i], coef[0], coef[1],
                                        coef[2], coef[3])

    def dw_baoab(x, p, g, z, h, c1, c2, coef, out):
        i = cuda.grid(1)
        if i < x.shape[0]:
            out[0, i], out[1, i], out[2, i] = DW.baoab_step(x[i], p[i], g[i], z[i], h, h, c1, c2,
                                                            coef[0], coef[1], coef[2], coef[3])

    for ft in (float32, float64):
        V, W = ft[::1], ft[:, ::1]
        ptx, _ = cuda.compile_ptx(dw_overdamped, (V, V, ft, ft, V, V), cc=(9, 0))
        assert (ft is float64) == (".f64" in ptx.split("dw_overdamped")[-1]), ft  # f32 stays f32
        cuda.compile_ptx(dw_baoab, (V, V, V, V, ft, ft, ft, V, W), cc=(9, 0))

    # the row kernels of the cuda backend (`kernels.rows`, with rng's libdevice primitives):
    # DoubleWell's two Langevin kernels, every dynamics on the wells (the largest row gradient,
    # a tuple of arrays as args), ScaleSymmetric's MALA and minibatch SGD, Valley's overdamped,
    # SGD with label noise on LinearRegression (i.i.d. minibatches) and ScaleSymmetric (full),
    # the dense Quadratic's Heun, epoch permutations of 12 samples sorted in the kernel, and
    # DoubleWell's kernels with first-passage observers and for constant schedules only
    from numba import int64, types as nt
    from langevin_sim.kernels import rows
    from langevin_sim.potentials import (DoubleWell, LinearRegression, MultiWell, Quadratic,
                                         ScaleSymmetric, Valley)
    F1, F2 = float64[::1], float64[:, ::1]
    WELLS = nt.Tuple((F2, float64[:, :, ::1], F1, float64, F2))
    cases = [(DoubleWell, k, ft, nt.UniTuple(ft, 7)) for k in (rows.OVERDAMPED, rows.BAOAB)
             for ft in (float32, float64)]
    cases += [(MultiWell, k, float32, WELLS) for k in range(len(rows.RULES))]
    cases += [(ScaleSymmetric, rows.SGD_, float64, nt.Tuple((float64,) * 3 + (F1, F1)), s)
              for s in (rows.IID, rows.EPOCH, rows.SUBSET)]
    VALLEY = nt.Tuple((int64, float64, int64) + (float64,) * 3 + (F1, F1) + (float64,) * 3 + (F1,))
    cases += [(MultiWell, rows.OVERDAMPED, float64, WELLS),
              (ScaleSymmetric, rows.MALA_, float64, nt.Tuple((float64,) * 3 + (F1, F1))),
              (Valley, rows.OVERDAMPED, float32, VALLEY)]
    cases += [(LinearRegression, rows.SGD_, float32, nt.Tuple((F2, F1)), rows.IID, 3, True),
              (ScaleSymmetric, rows.SGD_, float64, nt.Tuple((float64,) * 3 + (F1, F1)), rows.FULL,
               4, True), (Quadratic, rows.HEUN, float64, nt.Tuple((F2, F1))),
              (ScaleSymmetric, rows.SGD_, float32, nt.Tuple((float64,) * 3 + (F1, F1)),
               rows.EPOCH, 3, False, 12),
              (DoubleWell, rows.OVERDAMPED, float32, nt.UniTuple(float32, 7), rows.FULL, 1, False,
               0, 2),                                     # with two first-passage regions
              (DoubleWell, rows.BAOAB, float64, nt.UniTuple(float64, 7), rows.FULL, 1, False,
               0, False, True)]                           # for constant schedules only
    for pcls, kind, ft, args, *samp in cases:
        W = ft[:, ::1]
        k = rows.row_kernel(pcls, kind, ft is float32, 2, *samp, *(3,) * (len(samp) == 1))
        ptx, _ = cuda.compile_ptx(k.py_func, rows.launch_types(ft is float32, args), cc=(9, 0))
        if pcls is DoubleWell:   # the replica's lanes stay in registers (the kernel's body
            body = ptx[ptx.index(".entry"):]          # has no local depot; libdevice's trig
            body = body[:body.find("\\n.func") % (len(body) + 1)]   # slow path has its own)
            assert "__local_depot" not in body, (kind, ft)
    print("ok")
""")


@starts_early(ptx_compilation(PTX_CODE), timeout=600)
def test_step_functions_compile_for_the_real_cuda_target():
    """Every family's step functions compile to PTX with Numba's CUDA target (no GPU needed,
    libNVVM is): the typing the simulator does not do (module-attribute calls of device
    functions, float32 staying float32).  Skipped where libNVVM is missing."""
    check_ptx_compilation(test_step_functions_compile_for_the_real_cuda_target)
