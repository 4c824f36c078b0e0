"""The fused toy-net kernel (kernels/toynets.py: SGD and AdamW on TeacherStudentMLP,
ModularArithmeticMLP and ClassifierMLP) against the NumPy reference in both dtypes, with partition, resume and
divergence checks, its vectorizable tanh / exp against NumPy's, and the epoch permutation of
`common.minibatch_rows` against `rng.epoch_permutation`, and SGD's noises compiled away
(None arguments) equal to the noises at zero, bit for bit.

The kernel compiles per net, dynamics, set of SGD noises on and dtype, so the default run
keeps to one SGD and one AdamW case per net (between them: label noise, gradient noise, a
temperature that reaches 0, one-hot, embedded and dense inputs to a softmax); the other option combinations are
marked slow."""
import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.dynamics import SGD, AdamW, Schedule
from langevin_sim.potentials import ClassifierMLP, ModularArithmeticMLP, TeacherStudentMLP

from .conftest import both_backends


def ts(activation="tanh"):
    return TeacherStudentMLP(n=29, d_in=3, hidden=5, teacher_hidden=2, n_test=5, seed=7,
                             activation=activation, init_scale=0.8)


def mod(embed=None, activation="quadratic"):
    return ModularArithmeticMLP(p=5, hidden=6, train_fraction=0.6, embed=embed,
                                activation=activation, seed=3)


def wine(activation="tanh"):
    return ClassifierMLP("wine", n=30, n_test=10, hidden=5, activation=activation, seed=4,
                         label_corruption=0.2)


CASES = {
    "ts-sgd-epoch-tanh": (ts, SGD(Schedule("linear", 0.08, 0.02, 60), 6, momentum=0.5,
                                  weight_decay=1e-2, temperature=1e-4)),
    "ts-sgd-iid-relu": (lambda: ts("relu"), SGD(0.05, 5, sampling="iid", momentum=0.3)),
    "ts-sgd-subset-noise": (lambda: ts("quadratic"), SGD(0.03, 6, momentum=0.5, sampling="subset",
                                                       label_noise=0.1, grad_noise=0.05)),
    "ts-sgd-full": (ts, SGD(0.05, None, momentum=0.9, label_noise=0.05)),
    "ts-sgd-epoch-label-cooling": (ts, SGD(Schedule("linear", 0.08, 0.02, 60), 6, momentum=0.5,
                                           weight_decay=1e-2, label_noise=0.1,
                                           temperature=Schedule("linear", 1e-4, 0.0, 30))),
    "ts-adamw-epoch": (ts, AdamW(0.01, 6, weight_decay=0.1)),
    "ts-adamw-subset": (ts, AdamW(0.01, 6, weight_decay=0.1, sampling="subset")),
    "ts-adamw-iid": (lambda: ts("relu"), AdamW(Schedule("cosine", 0.02, 0.002, 60), 5,
                                               sampling="iid", beta2=0.98)),
    "mod-sgd-epoch": (mod, SGD(0.1, 4, momentum=0.9, weight_decay=1e-2)),
    "mod-sgd-subset-embed": (lambda: mod(3, "tanh"), SGD(0.1, 5, sampling="subset",
                                                       grad_noise=0.05, temperature=1e-4)),
    "mod-adamw-full": (mod, AdamW(0.01, None, weight_decay=1.0, beta2=0.98)),
    "mod-adamw-iid-embed": (lambda: mod(2, "relu"), AdamW(0.01, 4, sampling="iid",
                                                          weight_decay=0.5)),
    "wine-sgd-epoch-tanh": (wine, SGD(0.1, 6, momentum=0.9, weight_decay=1e-3)),
    "wine-adamw-epoch-relu": (lambda: wine("relu"), AdamW(0.01, 7, weight_decay=0.1)),
}


# each (case, dtype) compiles a kernel of its own (per-option pruning): the default suite
# runs every net, dynamics, sampling and noise path in one dtype at least
DEFAULT = {"ts-sgd-epoch-label-cooling": ("float64", "float32"), "ts-adamw-epoch": ("float64",),
           "mod-sgd-subset-embed": ("float64",), "mod-adamw-full": ("float32",),
           "wine-sgd-epoch-tanh": ("float64", "float32")}


@pytest.mark.parametrize("name, dtype", [
    pytest.param(n, dt, marks=() if dt in DEFAULT.get(n, ()) else pytest.mark.slow)
    for n in sorted(CASES) for dt in ("float64", "float32")])
def test_kernel_matches_reference(name, dtype):
    """60 steps on 3 replicas: float64 to rounding (summation orders differ from BLAS),
    float32 to float32 rounding grown over the steps."""
    make, dyn = CASES[name]
    sims = both_backends(make(), dyn, 3, 60, seed=13, dtype=dtype)
    assert all((sim.diverged_step < 0).all() for sim in sims.values())
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == "float64" else dict(rtol=2e-3, atol=2e-4)
    for k, ref in sims["numpy"].state.items():
        np.testing.assert_allclose(sims["numba"].state[k], ref, **tol, err_msg=f"{name} {k}")


@pytest.mark.parametrize("name", ["ts-sgd-subset-noise", "mod-adamw-iid-embed",
                                  pytest.param("ts-adamw-epoch", marks=pytest.mark.slow),
                                  pytest.param("mod-sgd-epoch", marks=pytest.mark.slow)])
def test_partition_and_resume(name):
    """Replicas 2..5 run alone (first_replica=2) are rows 2..5 of the full run, and a run
    advanced in two blocks equals one advanced at once, bit for bit."""
    make, dyn = CASES[name]
    pot = make()
    whole = Simulation(pot, dyn, 6, backend="numba", seed=5)
    whole.advance(40)
    part = Simulation(pot, dyn, 4, backend="numba", seed=5, first_replica=2)
    part.advance(17)
    part.advance(23)
    for k in whole.state:
        np.testing.assert_array_equal(part.state[k], whole.state[k][2:], err_msg=k)


DIVERGING = {"sgd": SGD(Schedule("linear", 0.05, 60.0, 40), 5, momentum=0.5),
             "adamw": AdamW(Schedule("exponential", 0.01, 300.0, 40), 5, weight_decay=0.0)}


@pytest.mark.parametrize("net, dyn", [("ts", "sgd"), ("mod", "adamw"),
                                      pytest.param("ts", "adamw", marks=pytest.mark.slow),
                                      pytest.param("mod", "sgd", marks=pytest.mark.slow)])
def test_divergence_is_flagged_like_the_reference(net, dyn):
    """A learning rate ramped up to absurd values makes replicas leave the bound at
    different steps; the kernel flags the same steps and keeps the others' states (to
    rounding amplified by the huge steps: 1e-9 relative for SGD, 1e-6 for AdamW, whose
    normalized steps magnify differences where g ~ 0)."""
    pot, dyn = ts() if net == "ts" else mod(), DIVERGING[dyn]
    init = 0.5 * np.random.default_rng(0).standard_normal((4, pot.d))
    init[1] *= 6.0
    out = both_backends(pot, dyn, 4, 50, seed=2, init=init, divergence_bound=30.0)
    dn, db = out["numpy"].diverged_step, out["numba"].diverged_step
    assert (dn > 0).any(), dn
    np.testing.assert_array_equal(db, dn)
    rtol = 1e-6 if isinstance(dyn, AdamW) else 1e-9
    for k, ref in out["numpy"].state.items():
        np.testing.assert_allclose(out["numba"].state[k], ref, rtol=rtol, atol=rtol / 10, err_msg=k)


def test_tanh_and_expm1_against_numpy():
    """The branch-free tanh, expm1 and exp (softmax's) of the kernel: relative error < 1e-15
    (tanh), < 4e-16 (expm1) and < 4e-16 (exp, down to -708) over 12 decades and both signs;
    NaN propagates; float32 tanh rounds to within one float32 ulp of NumPy's."""
    import numba

    from langevin_sim.kernels.toynets import exp64_neg, expm1_neg, tanh64

    @numba.njit(error_model="numpy")
    def both(z):
        t, e, x = np.empty_like(z), np.empty_like(z), np.empty_like(z)
        for i in range(z.shape[0]):
            t[i] = tanh64(z[i])
            e[i] = expm1_neg(-abs(z[i]))
            x[i] = exp64_neg(-abs(z[i]))
        return t, e, x

    mag = np.logspace(-9, 2.9, 200001)
    z = np.concatenate([mag, -mag, [0.0, np.inf, -np.inf]])
    t, e, x = both(z)
    assert np.nanmax(np.abs(t - np.tanh(z)) / np.maximum(np.abs(np.tanh(z)), 1e-300)) < 1e-15
    ref = np.expm1(-np.abs(z))
    assert np.max(np.abs(e - ref) / np.maximum(np.abs(ref), 1e-300)) < 4e-16
    inside = np.abs(z) <= 708
    ref = np.exp(-np.abs(z[inside]))
    assert np.max(np.abs(x[inside] - ref) / ref) < 4e-16
    assert np.all(x[~inside] == x[~inside].max()) and 0 < x.min() < 1e-307
    nan = both(np.array([np.nan]))
    assert all(np.isnan(v).all() for v in nan)
    z32 = z.astype(np.float32)
    t32 = both(z32.astype(np.float64))[0].astype(np.float32)
    assert np.max(np.abs(t32 - np.tanh(z32)) / np.spacing(np.abs(np.tanh(z32)) + 1e-30)) <= 1.0


def test_float32_tanh_and_exp_against_numpy():
    """float32 runs evaluate tanh (Eigen's rational) and softmax's exp (Cephes' expf) in
    float32: tanh within 6 float32 ulp of NumPy's over 12 decades and both signs, exp within
    1.5 ulp of the exact value down to -87 (measured: 6 and 0.97); NaN propagates; tanh
    saturates to +-1 and exp stays at ~1.6e-38 below -87."""
    import numba

    from langevin_sim.kernels.toynets import exp_of, tanh_of

    @numba.njit
    def both(z):
        t, e = np.empty_like(z), np.empty_like(z)
        for i in range(z.shape[0]):
            t[i] = tanh_of(z[i])
            e[i] = exp_of(-abs(z[i]))
        return t, e

    mag = np.logspace(-9, 2.9, 200001)
    z = np.concatenate([mag, -mag, [0.0]]).astype(np.float32)
    t, e = both(z)
    assert t.dtype == e.dtype == np.float32
    ulp = lambda a, ref: np.max(np.abs(a - ref) / np.spacing(np.abs(ref)))
    assert ulp(t, np.tanh(z)) <= 6
    small = np.abs(z) <= 87
    exact = np.exp(-np.abs(z[small]).astype(np.float64))
    assert np.max(np.abs(e[small] - exact) / np.spacing(exact.astype(np.float32))) <= 1.5
    assert np.all(e[~small] <= np.float32(1.7e-38)) and np.all(e >= 0)
    assert t[np.argmax(z)] == 1 and t[np.argmin(z)] == -1
    nan = both(np.array([np.nan], np.float32))
    assert np.isnan(nan[0]).all() and np.isnan(nan[1]).all()


@pytest.mark.parametrize("n", [1, 7, 29, 1024])
def test_epoch_permutation_matches_rng(n):
    """The kernels' epoch permutation (Philox words four per call, radix argsort) equals the
    reference's stable argsort, at epochs whose words start mid-block; ties keep index order."""
    from langevin_sim import rng
    from langevin_sim.kernels.common import epoch_words, stable_argsort32

    k0, k1 = rng.key_of(5)
    for epoch in (0, 3):
        keys, perm = np.empty(n, np.uint64), np.full(n, -1, np.int64)
        epoch_words(keys, k0, k1, np.uint64(3), epoch * n)
        out = stable_argsort32(keys, perm)
        np.testing.assert_array_equal(out, rng.epoch_permutation(5, 3, epoch, n))
        np.testing.assert_array_equal(perm, out)
    ties = np.random.default_rng(0).integers(0, 50, 1000).astype(np.uint64) << np.uint64(20)
    np.testing.assert_array_equal(stable_argsort32(ties, np.empty(1000, np.int64)),
                                  np.argsort(ties, kind="mergesort"))


def test_bound_like_is_the_references_divergence_test():
    """`bound_like`: the kernel's float32 test |v| <= bound_like(bound) agrees with the
    reference's (`within_bound` on float32 arrays: NumPy casts the bound to float32) for
    values next to the bound, inf and NaN; beyond float32's range inf still diverges; float64
    keeps the bound."""
    from langevin_sim.backends.numpy_backend import within_bound
    from langevin_sim.kernels.toynets import bound_like

    for bound in (30.0, 0.1, 1e-3, 16777217.0, 1e10, 3e38):
        assert bound_like(bound, np.float64) == bound
        b32 = bound_like(bound, np.float32)
        assert b32.dtype == np.float32
        c = np.float32(bound)
        v = np.array([c, np.nextafter(c, np.float32(0)), np.nextafter(c, np.float32(np.inf)),
                      np.inf, np.nan, 0.0], np.float32)
        v = np.concatenate([v, -v])
        np.testing.assert_array_equal(np.abs(v) <= b32, within_bound(v, bound), err_msg=str(bound))
    huge = bound_like(1e300, np.float32)
    assert huge == np.finfo(np.float32).max and not np.inf <= huge


def test_temperature_code_is_none_only_for_a_temperature_zero_at_every_step():
    """`temperature_code` drops the temperature (None) of schedules that are +0.0 at every
    step, and keeps the code of the others (-0.0 included); `noise_level` drops amplitudes
    that are not > 0."""
    from langevin_sim.kernels.common import noise_level, temperature_code

    for zero in (Schedule(), Schedule("constant", 0.0, 5.0), Schedule("linear", 0.0, 0.0, 9),
                 Schedule("cosine", 0.0, 0.0, 9)):
        assert temperature_code(zero) is None, zero
        assert all(zero(t) == 0.0 and np.copysign(1.0, zero(t)) > 0 for t in range(12)), zero
    for hot in (Schedule("constant", 1e-3), Schedule("linear", 1e-3, 0.0, 9),
                Schedule("cosine", 0.0, 1e-3, 9), Schedule("exponential", 1e-3, 1e-4, 9),
                Schedule("constant", -0.0), Schedule("linear", 0.0, -0.0, 9)):
        np.testing.assert_array_equal(temperature_code(hot), hot.code, err_msg=str(hot))
    assert noise_level(0.0) is None and noise_level(-0.0) is None
    assert noise_level(0.25) == 0.25


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sgd_step_without_noises_is_the_step_at_zero_noise(dtype):
    """`common.sgd_step` with ts and gsig None (compiled without the temperature and gradient
    noise) writes the bits of the step with an all-zero temperature schedule and gsig 0,
    and its code calls no Philox normals (`noise_chunk`) while the other's does."""
    import numba

    from langevin_sim.kernels.common import noise_buffer, schedule_code, sgd_step
    from langevin_sim.kernels.toynets import bound_like

    step = numba.njit(sgd_step.py_func)   # uncached: its LLVM IR can be read
    d = 7
    gen = np.random.default_rng(1)
    x0, v0, g0 = (gen.standard_normal(d).astype(dtype) for _ in range(3))
    out = {}
    for ts, gsig in ((None, None), (schedule_code(Schedule("linear", 0.0, 0.0, 5)), 0.0)):
        x, v, g = x0.copy(), v0.copy(), g0.copy()
        ok = step(x, v, g, 3, np.uint64(1), np.uint64(2), np.uint64(0), 0.05, ts, 0.5, 1e-2,
                  bound_like(1e6, dtype), noise_buffer(d, x), np.empty_like(x), np.empty_like(x),
                  gsig)
        assert ok
        out[ts is None] = (x, v, g)
    for a, b in zip(out[True], out[False]):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    assert not np.array_equal(out[True][0], x0)
    llvm = {sig[8] == numba.types.none: ir for sig, ir in step.inspect_llvm().items()}
    assert "noise_chunk" not in llvm[True] and "noise_chunk" in llvm[False]
