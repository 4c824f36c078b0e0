"""SGD noise models against exact oracles: independent without-replacement minibatches
(sampling="subset"), fresh label noise (label_noise) and additive gradient noise inside the
momentum buffer (grad_noise); their API (the deprecated `replacement` alias) and refusals.
Parity with the numba kernels and partition / chunking invariance: tests/test_backends.py
(PAIRS "linreg-*-subset/-noise"), tests/test_toynets.py ("noise-models"), and the cuda
backend under the simulator: tests/test_cuda_backend.py ("SGD-subset-gradnoise",
"SGD-labelnoise").
"""
import numpy as np
import pytest
from scipy import linalg, stats

from langevin_sim import Simulation
from langevin_sim.analysis.covariance import StationaryLaw, compare_covariance, sgd_law
from langevin_sim.dynamics import SGD
from langevin_sim.dynamics.base import Dynamics, NoiseSource
from langevin_sim.dynamics.sgd import floyd_subset, minibatch
from langevin_sim.errors import ConfigError
from langevin_sim.potentials import DoubleWell, LinearRegression, Quadratic

from .test_analysis_covariance import least_squares


# ---------------------------------------------------------------- API

def test_sampling_api_and_the_deprecated_replacement_alias():
    assert SGD(0.1, 2).sampling == "epoch" and SGD(0.1, 2).replacement is False
    with pytest.warns(DeprecationWarning, match="sampling='iid'"):
        assert SGD(0.1, 2, replacement=True).sampling == "iid"
    with pytest.warns(DeprecationWarning, match="sampling='epoch'"):
        assert SGD(0.1, 2, replacement=False).sampling == "epoch"
    sub = SGD(0.1, 2, sampling="subset", label_noise=0.2, grad_noise=0.1)
    assert sub.replacement is False
    assert Dynamics.from_dict(sub.to_dict()) == sub
    old = {"class": "SGD", "lr": 0.1, "batch_size": 2, "momentum": 0.0, "weight_decay": 0.0,
           "temperature": 0.0, "replacement": True}          # a run written before `sampling`
    assert Dynamics.from_dict(old).sampling == "iid"
    with pytest.raises(ConfigError, match="contradicts"):
        SGD(0.1, 2, replacement=True, sampling="subset")
    with pytest.raises(ConfigError, match="sampling must be one of"):
        SGD(0.1, 2, sampling="shuffle")
    with pytest.raises(ConfigError, match="grad_noise must be >= 0"):
        SGD(0.1, 2, grad_noise=-1.0)


def test_label_noise_refused_without_labels():
    for pot in (Quadratic(spectrum=[1.0, 2.0]), DoubleWell(d=2)):
        with pytest.raises(ConfigError, match="label_noise=0.1 needs a least-squares") as e:
            Simulation(pot, SGD(0.1, label_noise=0.1), 2, backend="numpy")
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="use grad_noise for a Quadratic"):
        sgd_law(Quadratic(spectrum=[1.0]), 0.1, label_noise=0.1)


def test_subset_batches_are_uniform_subsets_and_pure_functions_of_the_step():
    """Floyd's subsets: distinct indices; every index equally likely (chi2 over 20000
    draws of S = 4 of n = 7); pairs of indices uniform too; the same (seed, replica, step)
    gives the same subset whatever the replica split."""
    n, S = 7, 4
    noise = NoiseSource(3, np.arange(5000))
    idx = np.concatenate([minibatch(noise, t, S, n, "subset") for t in range(4)])
    assert all(len(set(row)) == S for row in idx)
    counts = np.bincount(idx.ravel(), minlength=n)
    assert stats.chisquare(counts).pvalue > 1e-3
    pair = np.zeros((n, n))
    for row in idx:
        for a in row:
            for b in row:
                if a < b:
                    pair[a, b] += 1
    assert stats.chisquare(pair[np.triu_indices(n, 1)]).pvalue > 1e-3
    part = minibatch(NoiseSource(3, np.arange(1000, 1010)), 2, S, n, "subset")
    np.testing.assert_array_equal(part, minibatch(noise, 2, S, n, "subset")[1000:1010])
    w = np.array([[0, 0, 0, 0]], dtype=np.uint64)           # word 0 -> index 0 each time:
    np.testing.assert_array_equal(floyd_subset(w, n), [[0, 4, 5, 6]])   # Floyd takes j


# ---------------------------------------------------------------- oracles

def test_independent_subsets_match_the_subset_law_and_reject_iid():
    """sampling="subset" on least squares (n = 6, d = 2, S = 4, lr lam_max = 0.9, momentum
    0.3; numba, 2000 replicas x 300 records every 5 steps): consistent with
    sgd_law(sampling="subset") (finite-population factor (n-S)/(S(n-1)) = 0.1 vs i.i.d.
    1/S = 0.25); the i.i.d. law, 2.9-3.2 x the variance (measured), is rejected (every
    z < -100)."""
    pot = least_squares(n=6, d=2, spectrum=(0.5, 1.0))
    dyn = SGD(lr=0.9, batch_size=4, momentum=0.3, sampling="subset")
    run = Simulation(pot, dyn, replicas=2000, backend="numba", seed=21,
                     init=pot.minimizer()).run(steps=1500, record_every=5)
    subset = sgd_law(pot, 0.9, 4, momentum=0.3, sampling="subset")
    iid = sgd_law(pot, 0.9, 4, momentum=0.3, sampling="iid")
    c = compare_covariance(run, subset, (iid,))
    assert c.consistent, c.table()
    assert np.all(np.diag(c.z_scores(iid)[1]) < -100), c.table()
    ratio = np.diag(c.in_basis(iid)[1]) / np.diag(c.sampled.cov)
    assert np.all(ratio > 2.5), ratio


def test_label_noise_law_closed_form_in_one_dimension():
    """d = 1, full batch, no momentum: x' - x* = (1 - lr h)(x - x*) + lr s (1/n) sum eps_i a_i,
    so Var = lr^2 s^2 h / n / (1 - (1 - lr h)^2) (h = mean a^2); sgd_law agrees to 1e-12, and
    with minibatches S (iid) the label part is s^2 h / S per step on top of the SGD noise."""
    pot = LinearRegression(n=5, d=1, seed=2)
    h = float(np.mean(pot.A[:, 0] ** 2))
    lr, s = 0.3, 0.7
    law = sgd_law(pot, lr, None, label_noise=s)
    exact = lr ** 2 * s ** 2 * h / 5 / (1 - (1 - lr * h) ** 2)
    assert law.cov[0, 0] == pytest.approx(exact, rel=1e-12)
    plain = sgd_law(pot, lr, 2).cov[0, 0]
    noisy = sgd_law(pot, lr, 2, label_noise=s).cov[0, 0]
    m4 = float(np.mean(pot.A[:, 0] ** 4))
    contraction = (1 - lr * h) ** 2 + lr ** 2 * (m4 - h * h) / 2    # E[(1 - lr a_B^2)^2], S = 2
    assert noisy - plain == pytest.approx(lr ** 2 * s ** 2 * h / 2 / (1 - contraction), rel=1e-9)


@pytest.mark.parametrize("sampling", ["iid", "epoch"])
def test_label_noise_matches_the_exact_law(sampling):
    """label_noise 0.8 on least squares (n = 6, d = 2, S = 2, lr = 0.6, momentum 0.3;
    numba, 2000 replicas, records at epoch boundaries every 3 steps): consistent with
    sgd_law(label_noise=0.8) of the sampling (measured chi2 p = 0.10 iid, 0.54 epoch), and the
    law without label noise (5-60 x smaller eigen-variances, z > 400) is rejected."""
    pot = least_squares(n=6, d=2, spectrum=(0.5, 1.0))
    kw = dict(momentum=0.3, label_noise=0.8)
    run = Simulation(pot, SGD(lr=0.6, batch_size=2, sampling=sampling, **kw), replicas=2000,
                     backend="numba", seed=22, init=pot.minimizer()).run(steps=900, record_every=3)
    law = sgd_law(pot, 0.6, 2, sampling=sampling, **kw)
    clean = sgd_law(pot, 0.6, 2, sampling=sampling, momentum=0.3)
    c = compare_covariance(run, law, (clean,))
    assert c.consistent, c.table()
    assert c.chi2(clean)[2] < 1e-10, c.table()


def lyapunov_buffer_noise(H, lr, momentum, s):
    """Stationary Cov of (x, v) for v' = mu v + H x + s xi, x' = x - lr v' (centred), by
    scipy's discrete Lyapunov solver."""
    d = H.shape[0]
    I = np.eye(d)
    F = np.block([[I - lr * H, -lr * momentum * I], [H, momentum * I]])
    G = s * np.vstack([-lr * I, I])
    return linalg.solve_discrete_lyapunov(F, G @ G.T)


def test_grad_noise_in_the_buffer_matches_the_discrete_lyapunov_law_not_sgld():
    """grad_noise 0.5 with momentum 0.8 on a Quadratic (lam = 0.5, 2; lr = 0.2, full batch):
    sgd_law equals the 4x4 discrete Lyapunov solution; the simulation (numpy, 1000
    replicas) is consistent with it; SGLD at the same injected variance per step (2 lr T =
    lr^2 s^2), whose eigen-variances are 2.5 and 7.8 x smaller, is rejected; with momentum 0 the two coincide."""
    pot = Quadratic(spectrum=[0.5, 2.0], seed=1, center=[0.3, -0.2])
    lr, mu, s = 0.2, 0.8, 0.5
    law = sgd_law(pot, lr, None, momentum=mu, grad_noise=s)
    S = lyapunov_buffer_noise(pot.H, lr, mu, s)
    np.testing.assert_allclose(law.cov, S[:2, :2], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(law.momentum_cov, S[2:, 2:], rtol=1e-10, atol=1e-14)
    T = lr * s ** 2 / 2
    sgld = sgd_law(pot, lr, None, momentum=mu, temperature=T)
    assert np.all(np.linalg.eigvalsh(law.cov) > 2 * np.linalg.eigvalsh(sgld.cov))
    run = Simulation(pot, SGD(lr, None, momentum=mu, grad_noise=s), replicas=1000,
                     backend="numpy", seed=23, init="zeros").run(steps=2000, record_every=10)
    c = compare_covariance(run, law, (sgld,))
    assert c.consistent, c.table()
    assert np.all(np.diag(c.z_scores(sgld)[1]) > 100), c.table()
    np.testing.assert_allclose(sgd_law(pot, lr, None, grad_noise=s).cov,
                               sgd_law(pot, lr, None, temperature=T).cov, rtol=1e-12)
