"""Philox4x32-10 known answers, stream layout, Numba parity, normal moments."""
import numpy as np
import pytest

from langevin_sim import rng
from langevin_sim.errors import ConfigError

U = np.uint64

# Known-answer vectors of Random123 (Salmon et al. 2011), philox4x32 with 10 rounds.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_known_answers_numpy(ctr, key, expected):
    out = rng.philox4x32_10(*map(U, ctr), *map(U, key))
    assert tuple(int(v) for v in out) == expected


def test_known_answers_numba_and_vectorized():
    from langevin_sim.kernels.common import rng_cpu as _rng

    for ctr, key, expected in KAT:
        assert tuple(int(v) for v in _rng.philox4x32_10(*map(U, ctr), *map(U, key))) == expected
    c = np.array([k[0] for k in KAT], dtype=np.uint64).T
    k = np.array([k[1] for k in KAT], dtype=np.uint64).T
    out = rng.philox4x32_10(*c, *k)
    assert [tuple(int(o[i]) for o in out) for i in range(3)] == [k[2] for k in KAT]


def test_numba_words_and_normals_match_numpy():
    from langevin_sim.kernels.common import rng_cpu as _rng

    seed = 0x1234_5678_9ABC
    k0, k1 = rng.key_of(seed)
    reps = np.array([0, 1, 7, 1000003])
    words = rng.stream_words(seed, rng.NOISE, reps, 0, 64)
    normals = rng.stream_normals(seed, rng.NOISE, reps, 0, 64)
    for i, r in enumerate(reps):
        for b in range(16):
            w = _rng.block_words(k0, k1, U(rng.NOISE), U(r), U(b))
            assert [int(v) for v in w] == [int(v) for v in words[i, 4 * b:4 * b + 4]]
            z = _rng.block_normals(k0, k1, U(rng.NOISE), U(r), U(b))
            np.testing.assert_allclose(z, normals[i, 4 * b:4 * b + 4], rtol=1e-14, atol=1e-15)


def test_stream_layout_is_step_major():
    seed, reps = 5, np.arange(3)
    full = rng.stream_normals(seed, rng.NOISE, reps, 0, 7 * 10)
    for step in range(10):
        np.testing.assert_array_equal(rng.step_normals(seed, reps, step, 7), full[:, 7 * step:7 * step + 7])
    # purposes and replicas are independent streams
    assert not np.array_equal(rng.stream_words(seed, rng.NOISE, [0], 0, 8),
                              rng.stream_words(seed, rng.INIT, [0], 0, 8))
    assert not np.array_equal(full[0], full[1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_noise_chunk_matches_numpy(dtype):
    """The kernels' vectorized noise passes (Philox, stored word, Box-Muller per dtype) give
    the reference's normals bit for bit, from any stream offset."""
    import numba

    from langevin_sim.kernels.common import noise_buffer, noise_chunk

    @numba.njit
    def draw(k0, k1, rep, n0, count, like):
        z, off = noise_chunk(k0, k1, rng.NOISE, rep, n0, count, noise_buffer(count + 3, like))
        return z[off:off + count].copy()

    seed = 77
    k0, k1 = rng.key_of(seed)
    for rep, n0, count in [(3, 0, 256), (5, 1, 7), (1000003, 4093, 130)]:
        z = draw(k0, k1, U(rep), n0, count, np.zeros(1, dtype))
        ref = rng.stream_normals(seed, rng.NOISE, [rep], n0, count, dtype)[0]
        assert z.dtype == ref.dtype == dtype
        np.testing.assert_array_equal(z, ref)


def test_float32_normals_follow_the_float64_ones():
    """Float32 runs draw float32 normals from the same words: close to the float64 normal of
    the same position except in the tails, bounded by sqrt(48 ln 2)."""
    z64 = rng.stream_normals(3, rng.NOISE, np.arange(16), 0, 1 << 14)
    z32 = rng.stream_normals(3, rng.NOISE, np.arange(16), 0, 1 << 14, np.float32)
    assert z32.dtype == np.float32
    d = np.abs(z32 - z64)
    assert np.quantile(d, 0.99) < 2e-6 and d.max() < 0.1
    assert np.abs(z32).max() <= np.sqrt(48 * np.log(2))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normal_law(dtype):
    """Kolmogorov-Smirnov against N(0, 1) and the tail mass beyond 3.5 within 5 standard
    errors, on 2^20 normals (KS detects CDF errors above ~2e-3)."""
    from scipy import stats

    z = rng.stream_normals(23, rng.NOISE, np.arange(256), 0, 4096, dtype).ravel().astype(np.float64)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    p = 2 * stats.norm.sf(3.5)
    assert abs(np.mean(np.abs(z) > 3.5) - p) < 5 * np.sqrt(p / z.size)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normal_moments(dtype):
    z = rng.stream_normals(11, rng.NOISE, np.arange(64), 0, 4096, dtype).ravel().astype(np.float64)
    n = z.size
    # standard errors of mean, variance and 4th moment of N(0,1): 1/sqrt(n), sqrt(2/n), sqrt(96/n)
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(np.mean(z ** 4) - 3) < 5 * np.sqrt(96 / n)
    # neighbouring normals from one block are uncorrelated
    zz = z.reshape(-1, 4)
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        assert abs(np.mean(zz[:, a] * zz[:, b])) < 5 / np.sqrt(zz.shape[0])


def test_bounded_index_and_permutation():
    w = rng.stream_words(3, rng.MINIBATCH, [0], 0, 40000)[0]
    idx = rng.bounded_index(w, 10)
    counts = np.bincount(idx.astype(np.int64), minlength=10)
    assert idx.max() < 10 and counts.min() > 3600  # expected 4000, sd 60
    p = rng.epoch_permutation(3, 5, 2, 17)
    assert sorted(p) == list(range(17))
    assert not np.array_equal(p, rng.epoch_permutation(3, 5, 3, 17))


def test_reference_epoch_minibatches_are_each_replicas_permutation_sliced():
    """The NumPy reference's epoch minibatches: slices of every replica's
    `rng.epoch_permutation` (made once per epoch for all replicas; they were made per step and
    replica, ~50x slower than iid sampling), across an epoch's end; a caller writing into a
    batch does not change the next."""
    from langevin_sim.dynamics.base import NoiseSource
    from langevin_sim.dynamics.sgd import minibatch

    noise, n, B = NoiseSource(7, np.arange(5, 45)), 20, 4
    for t in (0, 3, 4, 5, 9, 13, 4):
        epoch, j = divmod(t, n // B)
        want = np.stack([rng.epoch_permutation(7, r, epoch, n) for r in range(5, 45)])
        got = minibatch(noise, t, B, n, "epoch")
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want[:, j * B:(j + 1) * B])
        got[:] = -1
    np.testing.assert_array_equal(minibatch(noise, 0, n, n, "epoch"), want)



@pytest.mark.parametrize("read_ahead", [13, 1 << 16])
def test_reference_draws_read_ahead_are_the_step_draws(monkeypatch, read_ahead):
    """With a horizon, the reference's per-step draws come from windows read ahead (windows
    of `read_ahead` numbers at most, here also 13: a window per step or two); they are the
    draws of each step made alone, for normals of odd lane counts in both dtypes, per-step
    words, a step and the one after it (Leimkuhler-Matthews), steps asked again out of order
    and past a window's end; a caller writing into a draw does not change the next."""
    from langevin_sim.dynamics.base import NoiseSource

    monkeypatch.setattr(NoiseSource, "READ_AHEAD", read_ahead)
    reps, H = np.arange(3, 5), 30
    noise = NoiseSource(11, reps, horizon=H)
    for t in (0, 1, 2, 1, 5, 6, 28, 29, 3, 0):
        for lanes, purpose, dt in ((3, rng.NOISE, np.float64), (5, rng.LABEL_NOISE, np.float32)):
            for s in (t, min(t + 1, H - 1)):
                got = noise.normals(s, lanes, purpose, dt)
                assert got.dtype == dt and got.shape == (2, lanes)
                np.testing.assert_array_equal(got, rng.step_normals(11, reps, s, lanes, purpose, dt))
                got[:] = np.nan
        for count, purpose in ((4, rng.MINIBATCH), (1, rng.ACCEPT), (3, rng.SUBSET)):
            got = noise.words(purpose, t * count, count)
            np.testing.assert_array_equal(got, rng.stream_words(11, purpose, reps, t * count, count))
            got[:] = 0
    np.testing.assert_array_equal(noise.words(rng.MINIBATCH, 6, 4),      # not at a step's start
                                  rng.stream_words(11, rng.MINIBATCH, reps, 6, 4))

@pytest.mark.parametrize("dyn", ["lm", "sgd-iid", "mala"])
def test_reference_runs_in_pieces_read_ahead_as_step_by_step(monkeypatch, dyn):
    """The reference's NoiseSource outlives an advance (its read-ahead windows span record and
    swap intervals) while its replicas stay: advanced in pieces of 1 to 7 steps, with a
    replica frozen at its first step and steps asked one ahead (Leimkuhler-Matthews),
    a run equals the same run drawn a step at a time."""
    from langevin_sim import Simulation
    from langevin_sim.backends import numpy_backend
    from langevin_sim.dynamics import MALA, SGD, LeimkuhlerMatthews
    from langevin_sim.dynamics.base import NoiseSource
    from langevin_sim.potentials import DoubleWell, LinearRegression

    make = {"lm": (lambda: DoubleWell(d=2), LeimkuhlerMatthews(0.05, 0.5)),
            "sgd-iid": (lambda: LinearRegression(n=20, d=3, seed=2),
                        SGD(0.05, 4, sampling="iid", temperature=0.1)),
            "mala": (lambda: DoubleWell(d=2), MALA(0.2, 0.5))}[dyn]
    pieces = [1, 7, 3, 1, 1, 5, 2, 6, 4, 7, 1, 3]
    runs = []
    for ahead in (True, False):
        if not ahead:      # a window of one step, drawn anew at every advance
            monkeypatch.setattr(NoiseSource, "READ_AHEAD", 1)
            monkeypatch.setattr(numpy_backend, "READ_PAST", 0)
        pot, dyn_ = make[0](), make[1]
        init = np.full((5, pot.d), 0.3)
        init[2] = 40.0                                    # past the bound: frozen at step 1
        sim = Simulation(pot, dyn_, 5, backend="numpy", seed=9, first_replica=3, init=init,
                         divergence_bound=35.0)
        for k in pieces:
            sim.advance(k)
            if not ahead:
                numpy_backend._NOISE.clear()
        runs.append(sim)
    assert runs[0].diverged_step[2] > 0 and (np.delete(runs[0].diverged_step, 2) < 0).all()
    np.testing.assert_array_equal(runs[0].diverged_step, runs[1].diverged_step)
    for k, v in runs[1].state.items():
        np.testing.assert_array_equal(runs[0].state[k], v, err_msg=k)


def test_bad_seed():
    with pytest.raises(ConfigError, match="seed"):
        rng.key_of(-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_array_primitives_compiled_as_the_reference(dtype):
    """`rng.row_sum` and `rng.set_column` compiled for the CPU (loops, CPU_PRIMITIVES) give
    Numba's own axis sum bit for bit and NumPy's column assignment exactly, in the array's
    dtype; the axis sum agrees with NumPy's (pairwise) to rounding."""
    import numba

    from langevin_sim.backends.jit import compile_functions

    cpu = compile_functions(rng, ["row_sum", "set_column"])
    a = np.random.default_rng(1).normal(size=(7, 37)).astype(dtype)
    got = cpu.row_sum(a)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, numba.njit(lambda v: v.sum(axis=1))(a))
    np.testing.assert_allclose(got, rng.row_sum(a), rtol=20 * np.finfo(dtype).eps, atol=0)
    q, ref = np.ones_like(a), np.ones_like(a)
    v = np.random.default_rng(2).normal(size=7)          # float64 into a's dtype, as NumPy
    cpu.set_column(q, 3, v)
    rng.set_column(ref, 3, v)
    np.testing.assert_array_equal(q, ref)
