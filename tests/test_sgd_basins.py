"""ShiftedMultiWell's minibatch noise, the linearized SGD law at a minimum, and the occupancy
predictions of analysis.sgd_basins, against closed forms and short simulations.

Stochastic tolerances: 4 standard errors (independent replicas, fixed seeds)."""
import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.analysis.basins import find_basins
from langevin_sim.analysis.covariance import (gradient_noise_covariance, linearized_sgd,
                                              sgd_law)
from langevin_sim.analysis.sgd_basins import basin_noise, blowtorch_occupancy, label_occupancy
from langevin_sim.dynamics import SGD
from langevin_sim.errors import ConfigError
from langevin_sim.potentials import LinearRegression, MultiWell
from langevin_sim.potentials.multiwell import ShiftedMultiWell, random_shifts


def one_well(d=2, n=40, scale=0.3):
    return ShiftedMultiWell([[0.2] * d], random_shifts(n, d, scale, 3),
                            hessians=[np.array([[2.0, 0.5], [0.5, 1.0]])[:d, :d]])


def test_shifted_wells_noise_is_hessian_aligned_and_full_loss_is_raised():
    """One well: per-sample gradients H (x - c - xi_i), so C = H Cov(xi) H exactly, and the
    full loss is q(x) + tr(H Cov(xi)) / 2 (smoothing)."""
    pot = one_well()
    H, S = pot.hessians[0], pot.shift_covariance
    x = np.array([[0.7, -0.4], [0.1, 0.3]])
    np.testing.assert_allclose(gradient_noise_covariance(pot, x[0]), H @ S @ H, rtol=1e-12)
    q = 0.5 * np.einsum("mi,ij,mj->m", x - 0.2, H, x - 0.2)
    np.testing.assert_allclose(pot.energy(x), q + pot.smoothing()[0], rtol=1e-12)
    plain = MultiWell([[0.2, 0.2]], hessians=[H])
    np.testing.assert_allclose(pot.grad(x), plain.grad(x), atol=1e-12)   # centred shifts


@pytest.mark.parametrize("dtype,momentum", [("float64", 0.0), ("float32", 0.0), ("float64", 0.6)])
def test_linearized_law_matches_sgd_on_one_shifted_well(dtype, momentum):
    """On one shifted well SGD (with or without heavy-ball momentum) is exactly the linear
    recursion with additive noise: the sampled covariance matches `linearized_sgd`'s
    discrete law (4 se), not the continuous one at lr lam_max = 0.9."""
    pot = one_well()
    lin = linearized_sgd(pot.hessians[0], gradient_noise_covariance(pot, pot.centers[0]),
                         lr=0.4, batch_size=2, n=pot.n_samples, momentum=momentum)
    sim = Simulation(pot, SGD(lr=0.4, batch_size=2, sampling="iid", momentum=momentum), 4000,
                     backend="numpy", dtype=dtype, seed=1, init=pot.centers[0])
    sim.advance(60)
    y = (sim.state["x"].astype(np.float64) - pot.centers[0]) @ lin.V
    v = y.var(axis=0)
    se = v * np.sqrt(2 / y.shape[0])
    ex, co = np.diag(lin.discrete.cov), np.diag(lin.continuous.cov)
    assert np.all(np.abs(v - ex) < 4 * se), (v, ex, se)
    assert np.abs(v - co).max() > 6 * se.max()


def test_linearized_law_equations_and_limits():
    """The discrete law solves its Lyapunov equation and tends to the continuous one as
    lr -> 0; on least squares (per-sample Hessians a_i a_i^T, multiplicative noise) the
    exact `sgd_law` differs from the linearized additive-noise law by O(lr) only."""
    pot = LinearRegression(n=30, d=3, noise=0.5, seed=2)
    m, H = pot.minimizer(), pot.hessian_matrix
    C = gradient_noise_covariance(pot, m)
    small = linearized_sgd(H, C, 1e-4, 3, 30)
    np.testing.assert_allclose(small.discrete.cov, small.continuous.cov, rtol=1e-3)
    lin = linearized_sgd(H, C, 0.05, 3, 30)
    A = np.eye(3) - 0.05 * np.diag(lin.lam)
    np.testing.assert_allclose(A @ lin.discrete.cov @ A + 0.05 ** 2 / 3 * lin.C, lin.discrete.cov,
                               rtol=1e-10)
    exact = lin.V.T @ sgd_law(pot, 0.05, 3).cov @ lin.V
    np.testing.assert_allclose(lin.discrete.cov, exact, rtol=0.1)
    assert lin.temperature == pytest.approx(0.05 * np.trace(C) / (2 * 3 * 3))
    # heavy ball in 1-D: Var = lr^2 f c (1 + mu) / (lr lam (1 - mu) (2 (1 + mu) - lr lam))
    for mu, lr in ((0.0, 0.5), (0.5, 1.2), (0.9, 0.1), (0.9, 2.8)):
        one = linearized_sgd([[1.3]], [[0.7]], lr, 2, 50, momentum=mu)
        want = lr ** 2 * 0.5 * 0.7 * (1 + mu) / (lr * 1.3 * (1 - mu) * (2 * (1 + mu) - lr * 1.3))
        assert one.discrete.cov[0, 0] == pytest.approx(want, rel=1e-10), (mu, lr)
        assert one.temperature == pytest.approx(lr * 0.5 * 0.7 / (2 * (1 - mu)))
    with pytest.raises(ConfigError, match="2 \\(1 \\+ momentum\\)"):
        linearized_sgd([[1.3]], [[0.7]], 3.0, 2, 50, momentum=0.1)


def two_wells_1d():
    c = [[-1.5], [1.5]]
    return ShiftedMultiWell(c, random_shifts(16, 1, 0.5, 1), hessians=[[[4.0]], [[1.0]]],
                            softness=0.02)


def test_label_occupancy_and_blowtorch_against_gibbs():
    """label_occupancy against a direct 1-D sum; the sharp well's matched temperature is
    (k_sharp / k_flat)^2 = 16 times the flat one's, and under the blowtorch density the
    hotter sharp well holds less than Gibbs gives it even at the sharp well's T."""
    pot = two_wells_1d()
    x = np.linspace(-12, 14, 200001)[:, None]
    w = np.exp(-(pot.energy(x) - pot.energy(x).min()) / 0.3)
    direct = w[pot.basin(x) == 0].sum() / w.sum()
    assert label_occupancy(pot, 0.3, [[-12, 14]], n_grid=40001)[0] == pytest.approx(direct, rel=1e-4)
    bas = find_basins(pot, pot.centers, tol=1e-3)
    Ts = [b.temperature for b in basin_noise(pot, bas, 0.5, 4)]
    assert max(Ts) / min(Ts) == pytest.approx(16, rel=0.05)   # (k_sharp / k_flat)^2
    assert blowtorch_occupancy(pot, 0.5, 4, [[-8, 10]])[0] < label_occupancy(pot, max(Ts), [[-8, 10]])[0]


def test_laws_of_independent_batches_refuse_epoch_sampling():
    """`linearized_sgd` (and `basin_noise` through it) and `blowtorch_occupancy` took
    sampling="epoch" (SGD's default) for independent subsets: at n = 6, S = 1, lr = 0.1 the
    linearized variance read 0.0921 where the exact epoch law (`sgd_law`) and a simulation
    give 0.0034."""
    from langevin_sim.analysis.covariance import linearized_sgd
    from langevin_sim.analysis.sgd_basins import blowtorch_occupancy
    from langevin_sim.errors import ConfigError
    from langevin_sim.potentials.multiwell import ShiftedMultiWell, random_shifts

    H, C = np.eye(1), np.eye(1)
    with pytest.raises(ConfigError, match="sampling='epoch'"):
        linearized_sgd(H, C, 0.1, 1, 6, "epoch")
    assert linearized_sgd(H, C, 0.1, 6, 6, "epoch").noise_factor == 0.0   # full batch
    sm = ShiftedMultiWell(centers=[[-1.5], [1.5]], shifts=random_shifts(16, 1, 0.8, 0),
                          spectra=[[4.0], [1.0]], softness=0.02)
    with pytest.raises(ConfigError, match="sampling='epoch'"):
        blowtorch_occupancy(sm, 0.2, 1, [[-8, 8]], sampling="epoch")
    assert blowtorch_occupancy(sm, 0.2, 1, [[-8, 8]], sampling="subset").sum() == pytest.approx(1)


def test_sgd_chain_law_of_one_shifted_well_is_the_linear_recursion():
    """On one quadratic well with per-sample shifts SGD is linear, x' = (1 - lr k) x +
    lr k xi_batch (c = 0.3 added back), with stationary variance lr^2 k^2 f Var(xi) /
    (1 - (1 - lr k)^2) (f = 1/S i.i.d., (n - S)/(S (n - 1)) subset): the grid law matches it
    through each construction (S = 1, 2 enumerated; S = 3, 5 convolved, i.i.d. and subset:
    f = 1/3 against 3/11 at S = 3 differ by 22 %, far beyond the split), with the linear split
    adding at most h^2/4 per draw and step: 0 <= Var - want <= S h^2 / (4 (1 - a^2))."""
    from langevin_sim.analysis.sgd_basins import (_convolved_kernel, _enumerated_kernel,
                                                  _sample_gradients, _stationary)
    xi = random_shifts(12, 1, 0.4, 5)
    pot = ShiftedMultiWell([[0.3]], xi, hessians=[[[2.0]]])
    lr, k, n = 0.3, 2.0, 12
    x = np.linspace(-3, 3.6, 3001)
    h, a = x[1] - x[0], 1 - lr * k
    g = _sample_gradients(pot, x)
    for S, sampling in ((1, "iid"), (2, "iid"), (2, "subset"), (3, "iid"), (5, "iid"),
                        (3, "subset"), (5, "subset")):
        P, lost = (_enumerated_kernel(x, g, lr, S, sampling) if S <= 2 else
                   _convolved_kernel(x, g, lr, S, sampling))
        assert lost.max() == 0
        p = _stationary(P)
        m = p @ x
        f = 1 / S if sampling == "iid" else (n - S) / (S * (n - 1))
        want = lr ** 2 * k ** 2 * f * xi.var() / (1 - a * a)
        assert m == pytest.approx(0.3, abs=1e-10)
        assert 0 <= p @ (x - m) ** 2 - want <= S * h * h / (4 * (1 - a * a)), (S, sampling)


def test_sgd_chain_occupancy_converges_and_matches_a_simulation():
    """Two shifted wells (n = 32, lr = 0.2, S = 1): the sharp label's occupancy of the chain's
    law moves by < 1 % from n_grid 1001 to 2001 to 4001 (0.02672, 0.02666, 0.02648; 8001:
    0.02649), the convolution (any S) agrees with the enumerated pairs at S = 2, and an own
    NumPy SGD simulation (4000 replicas, 1500 steps after 300) gives 0.02654 +- 0.00014
    where the blowtorch density gives 0.0302 (25 se off)."""
    from langevin_sim.analysis.sgd_basins import (_convolved_kernel, _enumerated_kernel,
                                                  _hat_label_mass, _sample_gradients,
                                                  _stationary, sgd_chain_occupancy)
    pot = ShiftedMultiWell([[-1.0], [1.0]], random_shifts(32, 1, 1.0, 1),
                           hessians=[[[4.0]], [[1.0]]], softness=0.02)
    b = [[-8, 10]]
    occ = [sgd_chain_occupancy(pot, 0.2, 1, b, n_grid=N)[0] for N in (1001, 2001, 4001)]
    assert np.ptp(occ) < 0.01 * occ[2], occ
    x = np.linspace(-8, 10, 1001)
    g = _sample_gradients(pot, x)
    two = [_hat_label_mass(pot, x, _stationary(K(x, g, 0.2, 2, "iid")[0] if K is _enumerated_kernel
                                               else K(x, g, 0.2, 2)[0]))[0]
           for K in (_enumerated_kernel, _convolved_kernel)]
    assert two[1] == pytest.approx(two[0], rel=0.05), two

    rng = np.random.default_rng(0)
    M, burn, steps = 4000, 300, 1500
    y = np.repeat(pot.centers[:1], M, axis=0)
    acc = np.zeros(M)
    for t in range(burn + steps):
        y = y - 0.2 * pot.grad(y, rng.integers(0, pot.n_samples, size=(M, 1)))
        if t >= burn:
            acc += pot.basin(y) == 0
    sim, se = (acc / steps).mean(), (acc / steps).std() / np.sqrt(M)
    assert abs(sim - occ[2]) < 4 * se, (sim, se, occ[2])
    assert abs(sim - blowtorch_occupancy(pot, 0.2, 1, b)[0]) > 15 * se


def test_subset_kernel_is_the_mean_over_every_batch_of_its_draws_convolved():
    """Subset batches of S >= 3 (S distinct samples, each of the C(n, S) batches alike): the
    kernel built from the elementary symmetric polynomial of the draws' lattice laws equals,
    column by column, the mean over all C(7, 3) = 35 batches of the convolution of their
    three draws' two-point laws (np.convolve, placed by hand), to round-off; and it differs
    from the i.i.d. kernel (repeats allowed) by far more."""
    from itertools import combinations
    from math import comb

    from langevin_sim.analysis.sgd_basins import _convolved_kernel, _sample_gradients
    n, S, lr = 7, 3, 0.3
    pot = ShiftedMultiWell([[-1.0], [1.0]], random_shifts(n, 1, 0.8, 2),
                           hessians=[[[3.0]], [[1.0]]], softness=0.05)
    x = np.linspace(-6, 6, 241)
    h, N = x[1] - x[0], x.size
    g = _sample_gradients(pot, x)
    P = _convolved_kernel(x, g, lr, S, "subset")[0].toarray()
    want = np.zeros((N, N))
    for j in range(N):
        u = -lr * g[:, j] / (S * h)
        m = np.floor(u).astype(int)
        t = u - m
        for batch in combinations(range(n), S):
            law, at = np.ones(1), 0
            for i in batch:
                law, at = np.convolve(law, [1 - t[i], t[i]]), at + m[i]
            rows = np.clip(j + at + np.arange(law.size), 0, N - 1)
            np.add.at(want[:, j], rows, law / comb(n, S))
    assert np.abs(P - want).max() < 1e-12
    assert np.abs(P - _convolved_kernel(x, g, lr, S, "iid")[0].toarray()).max() > 0.01


def test_sgd_chain_occupancy_of_subset_batches_matches_the_package_sgd():
    """Subset batches of S = 3 on two shifted wells (n = 16, lr = 0.25, the sharp one deeper
    by 0.5): the chain's sharp-label occupancy (0.0372) against the package's own
    SGD(sampling="subset") (NumPy reference, 2000 replicas, 1000 steps after 200; the
    replicas forget their start within ~100 steps); the i.i.d. chain, whose noise is 15 %
    larger (f = 1/3 against 13/45), gives 0.0491."""
    from langevin_sim.analysis.sgd_basins import sgd_chain_occupancy
    pot = ShiftedMultiWell([[-0.8], [0.8]], random_shifts(16, 1, 1.2, 1),
                           hessians=[[[2.0]], [[1.0]]], depths=[-0.5, 0.0], softness=0.02)
    b = [[-8, 10]]
    occ = sgd_chain_occupancy(pot, 0.25, 3, b, sampling="subset", n_grid=2001)[0]
    iid = sgd_chain_occupancy(pot, 0.25, 3, b, sampling="iid", n_grid=2001)[0]
    M, burn, steps = 2000, 200, 1000
    sim = Simulation(pot, SGD(lr=0.25, batch_size=3, sampling="subset"), M, backend="numpy",
                     seed=3, init=pot.centers[0])
    sim.advance(burn)
    acc = np.zeros(M)
    for _ in range(steps):
        sim.advance(1)
        acc += pot.basin(sim.state["x"]) == 0
    frac = acc / steps
    mean, se = frac.mean(), frac.std(ddof=1) / np.sqrt(M)
    assert abs(mean - occ) < 4 * se, (mean, se, occ)
    assert abs(mean - iid) > 8 * se, (mean, se, iid)


def test_sgd_chain_occupancy_tends_to_the_blowtorch_in_the_diffusion_limit(monkeypatch):
    """lr -> 0 at fixed D(x) = lr Var_i l_i'/2 (deviations amplified by sqrt(1/lr)): the
    chain's sharp-well occupancy approaches the blowtorch density's (+24 % at lr = 0.05, +3 %
    at 0.0125; slowly, as the steps' sd sqrt(lr)).  At a fixed landscape (noise ~ lr) it does
    not: the occupancy is exponentially small in 1/lr and its exponent depends on the noise's
    whole law, not only its variance."""
    from langevin_sim.analysis.sgd_basins import sgd_chain_occupancy
    from langevin_sim.potentials import base

    # (a subclass registers itself: kept out of the registry the pair-coverage tests read)
    monkeypatch.setattr(base, "REGISTRY", dict(base.REGISTRY))

    class _Amplified(ShiftedMultiWell):
        """Per-sample gradient deviations from the full gradient multiplied by `amp`: the
        full loss unchanged, Var_i l_i' multiplied by amp^2."""
        amp = 1.0

        def grad(self, x, batch=None):
            full = super().grad(x)
            return full if batch is None else full + self.amp * (super().grad(x, batch) - full)

    err = []
    for lr in (0.05, 0.0125):
        pot = _Amplified([[-1.0], [1.0]], random_shifts(16, 1, 0.5, 1),
                         hessians=[[[4.0]], [[1.0]]], softness=0.02)
        pot.amp = np.sqrt(1.0 / lr)
        b = blowtorch_occupancy(pot, lr, 1, [[-9, 10]])[0]
        err.append(sgd_chain_occupancy(pot, lr, 1, [[-9, 10]], n_grid=2001)[0] / b - 1)
    assert 0.15 < err[0] < 0.35 and abs(err[1]) < 0.05, err


def test_sgd_chain_occupancy_refusals():
    """d != 1, per-epoch batches (x is no Markov chain), the full batch, bounds the chain's
    mass leaves, and a law that leaves a label with too little mass per step for the
    operator to resolve the labels' split (lr = 0.2, S = 3 here: 1e-17, whose occupancies
    came out as round-off) are ConfigErrors naming the fix."""
    from langevin_sim.analysis.sgd_basins import sgd_chain_occupancy
    pot = two_wells_1d()
    with pytest.raises(ConfigError, match="d = 1"):
        sgd_chain_occupancy(one_well(), 0.2, 1, [[-8, 10]])
    with pytest.raises(ConfigError, match="sampling='iid'"):
        sgd_chain_occupancy(pot, 0.2, 1, [[-8, 10]], sampling="epoch")
    with pytest.raises(ConfigError, match="full-batch"):
        sgd_chain_occupancy(pot, 0.2, None, [[-8, 10]])
    with pytest.raises(ConfigError, match="widen bounds"):
        sgd_chain_occupancy(pot, 0.2, 1, [[-2, 2]], n_grid=501)
    with pytest.raises(ConfigError, match="leaves label .* raise lr or lower batch_size"):
        sgd_chain_occupancy(pot, 0.2, 3, [[-8, 10]], n_grid=501)
    # three wells, two close ones exchanging 5e-3 of the mass per step, and a third of the
    # same depth and curvature as the flat one 4.6 away that the chain leaves with ~1e-20:
    # by symmetry its share is comparable to the flat one's (a ratio of two tiny rates), and
    # it was computed as 0
    far = ShiftedMultiWell([[-0.4], [0.4], [5.0]], random_shifts(16, 1, 0.5, 1),
                           hessians=[[[2.0]], [[1.0]], [[1.0]]], softness=0.05)
    with pytest.raises(ConfigError, match="leaves label 2 with"):
        sgd_chain_occupancy(far, 0.2, 1, [[-6, 11]], n_grid=1001)
    occ = sgd_chain_occupancy(pot, 0.45, 2, [[-8, 10]], n_grid=501)   # returned: 2.6e-8 (2.0e-8
    # at n_grid 2001: so rare a label converges slowly in the grid)
    assert occ.sum() == pytest.approx(1) and 0 < occ[0] < 1e-6
