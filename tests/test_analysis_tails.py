"""Heavy tails: Hill estimator on Pareto samples, Kesten's index on closed forms, and SGD
on least squares, whose stationary tail index must match Kesten's from its data set."""
import os
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.analysis.tails import (hill, hill_plot, kesten_alpha, moment_exponent,
                                         moment_exponent_2, run_tail_index)
from langevin_sim.dynamics import SGD
from langevin_sim.potentials import LinearRegression

from .conftest import assert_within_se

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("alpha", [1.5, 3.0])
def test_hill_recovers_pareto_index(alpha):
    """Pareto(alpha) samples, P(X > u) = u^-alpha: Hill within 4 se (alpha / sqrt(k), ~6% at
    the default k = 316 of 1e5, so alpha/2 or 2 alpha fails) at the default k and at k = 3000;
    every point of the Hill plot too (a Pareto law has no second-order bias)."""
    x = np.random.default_rng(7).pareto(alpha, size=100_000) + 1.0
    h = hill(x)
    assert h.k == 316 and h.n == 100_000
    assert_within_se(h.alpha, alpha, h.se, what="Hill alpha")
    h3 = hill(x, k=3000)
    assert_within_se(h3.alpha, alpha, h3.se, what="Hill alpha at k = 3000")
    hp = hill_plot(x)
    assert_within_se(hp.alpha, alpha, hp.se, k=4.5, what="Hill plot")


def test_kesten_two_point_closed_forms():
    """d = 1: with 1 - lr a^2 in {1/2, -sqrt(7)/2} equally likely, E|1 - lr a^2|^alpha =
    (2^-alpha + (7/4)^(alpha/2)) / 2 = 1 at alpha = 2 exactly (so the exact h(2) is 0); with
    {1/4, -2}: 4^-alpha + 2^alpha = 2 gives 2^alpha = golden ratio."""
    lr = 1.0
    a = np.sqrt([[0.5], [1 + np.sqrt(7) / 2]])
    k = kesten_alpha(a, lr)
    assert k.method == "exact" and k.se == 0
    assert abs(k.alpha - 2.0) < 1e-6
    assert abs(k.h2) < 1e-12
    k = kesten_alpha(np.sqrt([[0.75], [3.0]]), lr)
    assert abs(k.alpha - np.log2((1 + np.sqrt(5)) / 2)) < 1e-6
    # all |1 - lr a^2| <= 1: bounded stationary law, no power tail
    assert kesten_alpha(np.sqrt([[0.5], [1.5]]), lr).alpha == np.inf


def test_moment_exponent_monte_carlo_against_exact():
    """The population-dynamics h(alpha) agrees within 4 se with exact values: d = 1,
    log mean |1 - lr a^2|^alpha (alpha = 1, 3); d = 3 and a batch of 4, h(2) =
    log rho(E[A (x) A]).  A wrong batch normalization (lr vs lr/b) moves h(2) by > 0.1."""
    A1 = LinearRegression(n=200, d=1, noise=0.5, seed=1).A
    for alpha in (1.0, 3.0):
        h, se = moment_exponent(A1, 0.6, alpha, walkers=4000, steps=300)
        exact = np.log(np.mean(np.abs(1 - 0.6 * A1[:, 0] ** 2) ** alpha))
        assert_within_se(h, exact, se, what=f"h({alpha}), d = 1")
    A3 = LinearRegression(n=200, d=3, noise=0.5, seed=1).A
    for lr, b in ((0.4, 1), (1.2, 4)):
        h, se = moment_exponent(A3, lr, 2.0, batch_size=b, walkers=4000, steps=300)
        assert_within_se(h, moment_exponent_2(A3, lr, b), se, what=f"h(2), d = 3, b = {b}")
    assert abs(moment_exponent_2(A3, 1.2, 4) - moment_exponent_2(A3, 0.3, 1)) > 0.1


def test_kesten_monte_carlo_root():
    """d = 2: the Monte Carlo root lies on the side of 2 that the exact h(2) says (alpha > 2
    iff h(2) < 0; measured 3.46 at lr 0.4, 1.86 at lr 0.5), h changes sign at it, and se is
    small (< 2%)."""
    A = LinearRegression(n=200, d=2, noise=0.5, seed=1).A
    for lr in (0.4, 0.5):
        k = kesten_alpha(A, lr, walkers=2000, steps=200)
        assert k.method == "Monte Carlo" and 0 < k.se < 0.02 * k.alpha
        assert (k.alpha > 2) == (k.h2 < 0), k.table()
        assert np.all(k.h[k.alphas < 0.9 * k.alpha][1:] < 0)
        assert np.all(k.h[k.alphas > 1.1 * k.alpha] > 0)


def test_sgd_step_is_the_kesten_recursion():
    """The engine's SGD with batch 1 on LinearRegression (L = 1/(2n) sum (a.x - y)^2) maps x
    to (1 - lr a a^T) x + lr a y for the drawn row (here the only row), to rounding."""
    pot = LinearRegression(n=1, d=2, noise=0.3, seed=4)
    x0 = np.array([[0.7, -1.3], [2.0, 0.5]])
    sim = Simulation(pot, SGD(lr=0.3, batch_size=1, sampling="iid"), 2, backend="numpy",
                     init=x0)
    sim.advance(1)
    a, y = pot.A[0], pot.y[0]
    expect = x0 - 0.3 * np.outer(x0 @ a, a) + 0.3 * a * y
    np.testing.assert_allclose(sim.state["x"], expect, rtol=1e-14, atol=1e-14)


def _sgd_run(path, d, lr, replicas, steps, record_every):
    pot = LinearRegression(n=200, d=d, noise=0.5, seed=1)
    sim = Simulation(pot, SGD(lr=lr, batch_size=1, sampling="iid"), replicas, backend="numpy",
                     init="zeros", seed=2)
    sim.run(steps, record_every=record_every, out=path).close()
    return path


@pytest.fixture(scope="module")
def sgd_run_1d(tmp_path_factory):
    """SGD, batch 1, lr 0.6 on a d = 1 data set of 200 rows (Kesten alpha = 3.15): 20000
    replicas from x = 0, records every 200 steps (contraction E log|A| = -0.5 per step, so
    records 200 steps apart are independent and the chain is stationary after ~100 steps)."""
    return _sgd_run(tmp_path_factory.mktemp("tails") / "sgd1.h5", 1, 0.6, 20_000, 800, 200)


def test_sgd_tail_index_matches_kesten(sgd_run_1d):
    """Hill's alpha of |x - x*| over 3 records x 20000 replicas (k = 244) matches Kesten's
    exact alpha = 3.15 within 4 se (se = alpha/sqrt(k) ~ 0.2: half or double alpha fails)."""
    from langevin_sim import open_run

    with open_run(sgd_run_1d) as run:
        tc = run_tail_index(run, records=3)
    assert tc.kesten.method == "exact" and abs(tc.kesten.alpha - 3.152) < 1e-3
    assert tc.hill.n == 60_000
    assert_within_se(tc.hill.alpha, tc.kesten.alpha, np.hypot(tc.hill.se, tc.kesten.se),
                     what="Hill alpha of SGD iterates vs Kesten")
    assert tc.consistent, tc.table()


@pytest.mark.slow
def test_sgd_tail_index_matches_kesten_2d(tmp_path):
    """d = 2, lr 0.4: Hill's alpha of |x - x*| (4 records x 50000 replicas, k = 447) matches
    the Monte Carlo Kesten alpha (~3.45) within 4 combined se (measured 3.47 +- 0.16)."""
    from langevin_sim import open_run

    path = _sgd_run(tmp_path / "sgd2.h5", 2, 0.4, 50_000, 1500, 250)
    with open_run(path) as run:
        tc = run_tail_index(run, records=4)
    assert tc.kesten.method == "Monte Carlo"
    assert_within_se(tc.hill.alpha, tc.kesten.alpha, np.hypot(tc.hill.se, tc.kesten.se),
                     what="Hill alpha of SGD iterates vs Kesten, d = 2")


def test_tails_script(sgd_run_1d, tmp_path):
    """analysis/tails.py prints Hill vs Kesten with the verdict and saves an 800 x 320 figure
    (10 x 4 in at 80 dpi) with a coloured band and dark curves."""
    png = tmp_path / "tails.png"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "analysis", "tails.py"),
                          str(sgd_run_1d), "--records", "3", "--png", str(png)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Kesten alpha = 3.152 (exact" in out.stdout
    assert "CONSISTENT" in out.stdout and "INCONSISTENT" not in out.stdout, out.stdout
    img = plt.imread(png)
    assert img.shape == (320, 800, 4)
    rgb = img[..., :3]
    assert (rgb.max(axis=-1) - rgb.min(axis=-1) > 0.1).mean() > 0.01, "no coloured band drawn"
    assert (rgb.max(axis=-1) < 0.3).mean() > 0.002, "no axes, text or curve drawn"


def test_run_tail_index_rejects_other_runs():
    """A Langevin run on a DoubleWell is refused with an error naming what is needed."""
    from langevin_sim.dynamics import OverdampedLangevin
    from langevin_sim.errors import ConfigError
    from langevin_sim.potentials import DoubleWell

    run = Simulation(DoubleWell(), OverdampedLangevin(step=0.01, temperature=1.0), 4,
                     backend="numpy").run(10, record_every=10)
    with pytest.raises(ConfigError, match="needs SGD on LinearRegression"):
        run_tail_index(run)


def test_results_tables_and_plots():
    """HillEstimate (with and without samples), HillPlot and KestenIndex draw on an axis and
    tabulate."""
    x = np.random.default_rng(8).pareto(2.0, size=5000) + 1.0
    h, hp = hill(x), hill_plot(x, reference=2.0)
    k = kesten_alpha(np.sqrt([[0.5], [1 + np.sqrt(7) / 2]]), 1.0)
    fig, axes = plt.subplots(1, 4)
    h.plot(axes[0], x)
    h.plot(axes[1])
    hp.plot(axes[2])
    k.plot(axes[3])
    plt.close(fig)
    assert "k = 70 of n = 5000" in h.table()
    assert len(hp.table().splitlines()) == hp.ks.size + 1
    assert "alpha = 2.000 (exact" in k.table()


def test_verdict_when_kesten_predicts_light_tails_and_when_it_predicts_a_power_law(tmp_path):
    """d = 1, batch 1 on 200 rows with max a^2 = 6.50: at lr = 0.2 every |1 - lr a^2| <= 1, so
    the exact Kesten index is infinite (light tails); at lr = 0.6 it is 3.152.  8192 replicas
    x 3 records each.  Light: Hill's index (measured 20.1 +- 1.6) is > 2 by >= 3 se:
    CONSISTENT; Pareto(1.5) samples against the same prediction are INCONSISTENT, Pareto(2)
    ones UNDECIDED.  Power law: Hill matches 3.152 (measured 3.25 +- 0.26), and the light
    run's samples against it are INCONSISTENT.  The script prints the light verdict."""
    from langevin_sim import open_run
    from langevin_sim.analysis.tails import TailComparison

    res = {}
    for lr in (0.2, 0.6):
        path = tmp_path / f"sgd_lr{lr}.h5"
        pot = LinearRegression(n=200, d=1, noise=0.5, seed=1)
        Simulation(pot, SGD(lr=lr, batch_size=1, sampling="iid"), 8192, backend="numpy",
                   init="zeros", seed=2).run(800, record_every=200, out=path).close()
        with open_run(path) as run:
            res[lr] = run_tail_index(run, records=3)
    light, power = res[0.2], res[0.6]
    assert light.kesten.method == "exact" and light.kesten.alpha == np.inf and light.light
    assert light.consistent and light.z >= 3, light.table()
    assert "light tails predicted" in light.table() and "CONSISTENT" in light.table()
    assert light.hill_plot.reference is None
    for alpha, word in ((1.5, "INCONSISTENT"), (2.0, "UNDECIDED")):
        x = np.random.default_rng(9).pareto(alpha, size=24_576) + 1.0
        tc = TailComparison(hill(x), light.kesten, hill_plot(x))
        assert not tc.consistent and f": {word} (" in tc.verdict(), tc.verdict()
    assert not power.light and abs(power.kesten.alpha - 3.152) < 1e-3
    assert power.consistent and "CONSISTENT (|z| <= 3)" in power.table(), power.table()
    wrong = TailComparison(light.hill, power.kesten, light.hill_plot)
    assert not wrong.consistent and "INCONSISTENT (|z| <= 3)" in wrong.table()
    png = tmp_path / "light.png"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "analysis", "tails.py"),
                          str(tmp_path / "sgd_lr0.2.h5"), "--records", "3", "--png", str(png)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert "light tails predicted" in out.stdout and ": CONSISTENT (no heavy tail" in out.stdout


def test_run_tail_index_checks_records_and_diverged_runs(tmp_path):
    """records outside 1..n_records and an all-diverged run are ConfigErrors naming the fix."""
    from langevin_sim import open_run
    from langevin_sim.errors import ConfigError

    path = tmp_path / "sgd.h5"
    Simulation(LinearRegression(n=50, d=1, noise=0.5, seed=1), SGD(lr=0.2, batch_size=1),
               64, backend="numpy", seed=2).run(40, record_every=20, out=path).close()
    with open_run(path) as run:
        for bad in (0, -3, 4):
            with pytest.raises(ConfigError, match=r"records must be in 1\.\.3 \(the run has 3 "):
                run_tail_index(run, records=bad)
    with pytest.raises(ConfigError, match="needs >= 3 finite samples, got 2"):
        hill([1.0, 2.0, np.nan])
    path = tmp_path / "div.h5"
    with pytest.warns(Warning, match="8 of 8 replicas diverged"):
        Simulation(LinearRegression(n=50, d=1, noise=0.5, seed=1), SGD(lr=5.0, batch_size=1),
                   8, backend="numpy", seed=2).run(200, record_every=100, out=path).close()
    with open_run(path) as run:
        with pytest.raises(ConfigError, match="all 8 replicas diverged.*smaller learning rate"):
            run_tail_index(run)


def test_diverged_replicas_are_the_tail_and_the_verdict_says_so(tmp_path):
    """SGD at lr = 2 on a 1-d least squares: most replicas pass the divergence bound, and the
    script fitted the rest (92 of 256) and printed CONSISTENT without a word about the 164
    left out, the tail's largest samples.  Where they outnumber Hill's k there is no verdict;
    where fewer diverged the verdict says they were left out."""
    import dataclasses
    import warnings

    from langevin_sim import open_run

    path = tmp_path / "heavy.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Simulation(LinearRegression(n=200, d=1, noise=1.0, seed=0), SGD(lr=2.0, batch_size=1),
                   128, backend="numpy", seed=2).run(600, record_every=100, out=path).close()
    with open_run(path) as run:
        tc = run_tail_index(run)
        dead = int(np.sum(run.diverged_step >= 0))
    assert tc.diverged == dead >= tc.hill.k and tc.hill.n == 128 - dead
    assert tc.verdict().startswith(f"no verdict: {dead} replicas diverged")
    few = dataclasses.replace(tc, diverged=1)
    assert few.verdict().endswith("(1 diverged replicas, the tail's largest samples, left out: "
                                  "they pull the index up)")
    assert "CONSISTENT" in few.verdict() or "INCONSISTENT" in few.verdict()


def test_h2_by_lanczos_equals_the_dense_eigen_solve():
    """h(2) took the spectral radius of the dense d^2 x d^2 matrix (O(d^6): 47 s and 0.8 GB
    at d = 64, on every `kesten_alpha`); above d = 16 it is now the top eigenvalue of the
    matrix-free operator U -> E[A U A], equal to the dense radius to rounding."""
    for d, b, lr in ((17, 1, 0.5 / 17), (20, 2, 1.5 / 20), (24, 1, 3.0 / 24)):
        A = np.random.default_rng(d).standard_normal((300, d))
        n, C, Id = A.shape[0], A.T @ A / A.shape[0], np.eye(d)
        aa = np.einsum("ni,nj->nij", A, A).reshape(n, d * d)
        K = (np.kron(Id, Id) - lr * (np.kron(C, Id) + np.kron(Id, C))
             + lr ** 2 * (aa.T @ aa / n / b + (1 - 1 / b) * np.kron(C, C)))
        dense = np.log(np.max(np.abs(np.linalg.eigvals(K))))
        assert moment_exponent_2(A, lr, b) == pytest.approx(dense, abs=1e-12)
    assert np.isfinite(moment_exponent_2(np.random.default_rng(0).standard_normal((500, 64)),
                                         0.5 / 64))


def test_kesten_root_between_the_last_doubling_and_alpha_max_is_found():
    """Two rows with |1 - lr a^2| = 0.5 and 1.08: the root of log mean |.|^alpha is 8.994;
    the bracket doubled 0.25 ... 8, then 16 > alpha_max = 10 and it returned inf ("light
    tails") though the root lies below alpha_max."""
    from scipy.optimize import brentq

    from langevin_sim.errors import ConfigError
    A = np.sqrt([[0.5], [2.08]])
    root = brentq(lambda a: np.log((0.5 ** a + 1.08 ** a) / 2), 1.0, 20.0, xtol=1e-12)
    for amax in (9.5, 10.0, 12.0, 64.0):
        assert abs(kesten_alpha(A, 1.0, alpha_max=amax).alpha - root) < 1e-5, amax
    assert np.isinf(kesten_alpha(A, 1.0, alpha_max=8.5).alpha)
    with pytest.raises(ConfigError, match="largest samples are all equal"):
        hill([5.0] * 12 + [1.0, 2.0, 3.0], k=10)
