"""Critical points by minimizing |grad U|^2, on landscapes whose critical points are known;
the Kac-Rice counts of the p-spin against a direct Kac-Rice integral and against minima
counted on coupling instances."""
import dataclasses
import math

import numpy as np
import pytest
from scipy.special import gammaln

from langevin_sim.analysis.critical import (MinimaCount, abc_complexity, count_minima,
                                            critical_points, descent_census, kac_rice,
                                            pspin_minima_census, semicircle_index_fraction)
from langevin_sim.analysis.spinglass import landmarks
from langevin_sim.errors import ConfigError, DivergenceWarning
from langevin_sim.potentials import DoubleWell, SphericalPSpin


def test_double_well_minima_saddles_and_maximum():
    """Separable DoubleWell in d = 2, U = sum_i (x_i^2 - 1)^2: critical points at x_i in
    {-1, 0, 1}; the index and the energy both count the coordinates at 0 (4 minima, 4 index-1
    saddles, one maximum of index 2)."""
    starts = np.random.default_rng(0).uniform(-1.5, 1.5, (120, 2))
    cp = critical_points(DoubleWell(d=2), starts, tol=1e-8, max_iter=500)
    assert np.allclose(cp.x, np.round(cp.x), atol=1e-6), cp.x
    zeros = np.sum(np.abs(cp.x) < 0.5, axis=1)
    assert np.array_equal(cp.index, zeros) and np.allclose(cp.energy, zeros, atol=1e-10)
    assert {0, 1} <= set(cp.index.tolist())
    assert len({tuple(p) for p in np.round(cp.x)}) == cp.x.shape[0]       # merged
    assert cp.dim == 2 and cp.found == cp.hits.sum()
    assert abs(cp.fraction_minima - np.mean(cp.index == 0)) < 1e-12
    assert cp.fraction_minima_text() == (f"{cp.fraction_minima:.3f} +- "
                                         f"{cp.fraction_minima_se:.3f}")
    # no minimum among K points (a large p-spin's search): the 95 % bound, not "0.000 +- 0.000"
    none = dataclasses.replace(cp, index=np.ones_like(cp.index))
    k = cp.index.size
    said = f"0 of {k} (< {1 - 0.05 ** (1 / k):.2g} at 95 %)"
    assert none.fraction_minima_text() == said and f"(fraction {said})" in none.table()
    # energy bins [-0.5, 0.5), [0.5, 1.5), [1.5, 2.5), [2.5, 3.5): minima, saddles, the maximum,
    # none; the index / dim of each point is its energy / 2 here
    rows = cp.by_energy([-0.5, 0.5, 1.5, 2.5, 3.5])
    counts = [int(np.sum(zeros == k)) for k in range(3)]
    assert [r[2] for r in rows] == counts + [0]
    for k, (lo, hi, n, f0, mean, se) in enumerate(rows[:3]):
        assert (lo, hi) == (k - 0.5, k + 0.5) and f0 == (k == 0) and mean == k / 2
        assert se == 0.0 if n > 1 else np.isnan(se)
    assert all(np.isnan(v) for v in rows[3][3:])


def test_end_points_escaped_to_infinity_are_counted_not_kept():
    """On a tanh teacher-student loss some |grad L|^2 descents end where |grad L| <= tol only
    because they ran off to |x| > 100 x the starts' (units turning into step functions, where
    the gradient decays): they are counted as escaped, not kept as critical points, and
    `far=inf` keeps them (the same end points)."""
    from langevin_sim.potentials.toynets import TeacherStudentMLP

    pot = TeacherStudentMLP(n=64, d_in=3, hidden=2, teacher_hidden=2, noise=0.0, seed=0)
    starts = pot.default_init(np.random.default_rng(1).standard_normal((60, pot.d)))
    cp = critical_points(pot, starts, tol=1e-6, max_iter=1000)
    everything = critical_points(pot, starts, tol=1e-6, max_iter=1000, far=np.inf)
    r0 = np.linalg.norm(starts, axis=1).max()
    radius = np.linalg.norm(everything.x, axis=1)
    assert cp.escaped > 0 and everything.escaped == 0
    assert everything.hits[radius > 10 * r0].sum() == cp.escaped
    assert cp.found + cp.escaped == everything.found
    assert radius[radius > 10 * r0].min() > 100 * r0 and radius[radius <= 10 * r0].max() < 3 * r0
    assert np.all(np.linalg.norm(cp.x, axis=1) <= 10 * r0)
    assert "escaped to infinity" in cp.table()
    pooled = type(cp).pooled([cp, cp])
    assert pooled.escaped == 2 * cp.escaped and pooled.found == 2 * cp.found


def test_an_end_point_on_a_nearly_flat_slope_is_searched_on_to_its_critical_point():
    """A careful user's width-2 teacher-student net (claim 3's, 40 starts): one end point at
    loss 2.167005e-5 passed |grad L| <= 1e-6 (4.1e-7) and was reported with index 2, below the
    saddles' level; searched on it is the width-1 minimum embedded in the width-2 net, a
    saddle of index 1 at 2.167259e-5 with |grad L| ~ 1e-11.  Every kept point is now at
    |grad L| far below tol, and that point is there with its index."""
    from langevin_sim.potentials.toynets import TeacherStudentMLP

    pot = TeacherStudentMLP(n=64, d_in=3, hidden=2, teacher_hidden=2, noise=0.0, seed=0)
    starts = pot.default_init(np.random.default_rng(1).standard_normal((40, pot.d)))
    cp = critical_points(pot, starts, tol=1e-6, max_iter=1000, rtol=1e-6)
    assert cp.grad_norm.max() < 1e-9, cp.grad_norm
    low = cp.energy < 1e-3
    assert np.allclose(cp.energy[low], 2.167259e-5, rtol=1e-6), cp.energy[low]
    assert set(cp.index[low].tolist()) == {1}, cp.index[low]


def test_descent_census_tilted_double_well_basins_are_the_flow_s():
    """U = (x^2 - 1)^2 + 0.3 x (d = 1): the gradient flow (max_step 0.01) from x0 ends in the
    lower left well exactly when x0 < x*, the local maximum (root of 4x^3 - 4x + 0.3); the
    others are stuck at the one bad minimum, whose loss is the only level."""
    pot = DoubleWell(d=1, tilt=0.3)
    x0 = np.random.default_rng(0).uniform(-2, 2, (400, 1))
    c = descent_census(pot, x0, gtol=1e-10, max_iter=2000, max_step=0.01)
    roots = np.roots([4.0, 0.0, -4.0, 0.3]).real
    xstar = roots[np.argsort(np.abs(roots))[0]]
    right = np.sort(roots)[-1]
    left = x0[:, 0] < xstar
    assert np.array_equal(c.at_bottom, left) and np.array_equal(c.stuck, ~left)
    assert c.converged.all() and not c.escaped.any()
    assert np.array_equal(c.minima, ~left) and not c.saddles.any() and not c.undecided.any()
    (level, n), = c.levels()
    assert n == (~left).sum() and abs(level - pot.energy(np.array([[right]]))[0]) < 1e-12
    # the Hessian of the stuck end points, and of the lowest one (is the bottom a minimum?)
    b = c.bottom_point
    assert left[b] and c.index[b] == 0 and c.lowest[b] > 0
    assert "the lowest end point has Hessian index 0 (lowest eigenvalue" in c.table()
    assert np.all(np.delete(c.index, b)[np.delete(left, b)] == -1) and np.all(c.index[~left] == 0)
    assert np.all(c.lowest[~left] > 0)
    assert np.isnan(np.delete(c.lowest, b)[np.delete(left, b)]).all()
    assert np.allclose(c.excess(), level - c.bottom) and c.excess().size == n
    assert abs(c.scale - (np.median(pot.energy(x0)) - c.bottom)) < 1e-12
    assert f"{(~left).sum()} stuck above it ({(~left).sum()} at minima" in c.table()


def test_descent_census_after_gradient_descent_keeps_its_basins():
    """The same tilted double well, gradient descent first (the engine's full-batch SGD, lr
    0.01, 300 steps, numpy backend) then the capped quench: in 1-D gradient descent at a
    small step stays in the gradient flow's basin, so the classes are the flow's; at lr 1
    the replicas started far out diverge, are counted, and are finished from their last
    finite state."""
    from langevin_sim.dynamics import SGD

    pot = DoubleWell(d=1, tilt=0.3)
    x0 = np.random.default_rng(0).uniform(-2, 2, (200, 1))
    xstar = min(np.roots([4.0, 0.0, -4.0, 0.3]).real, key=abs)
    c = descent_census(pot, x0, gtol=1e-10, dynamics=SGD(lr=0.01), steps=300,
                       backend="numpy", max_step=0.01)
    keep = np.abs(x0[:, 0] - xstar) > 0.01
    assert np.array_equal(c.at_bottom[keep], x0[keep, 0] < xstar) and c.diverged == 0
    assert np.array_equal(c.minima, c.stuck) and len(c.levels()) == 1
    assert abs(c.scale - (np.median(pot.energy(x0)) - c.bottom)) < 1e-12   # from the starts
    with pytest.warns(DivergenceWarning):
        wild = descent_census(pot, x0, gtol=1e-10, dynamics=SGD(lr=1.0), steps=20,
                              backend="numpy", max_step=0.01)
    assert wild.diverged > 0 and f"{wild.diverged} diverged" in wild.table()
    assert np.isfinite(wild.loss).all()


def test_descent_census_with_weight_decay_is_of_the_decayed_objective():
    """Tilted double well plus wd x^2 / 2 (wd = 0.5): the end points are the roots of
    U'(x) + wd x = 4x^3 - 3.5x + 0.3, the bad minimum's loss U(x) + wd x^2 / 2 and its Hessian
    U''(x) + wd; gradient descent first (SGD with the same coupled decay) ends alike; another
    decay in the dynamics, AdamW's decoupled one, or a constrained landscape are refused."""
    from langevin_sim.dynamics import SGD, AdamW

    pot, wd = DoubleWell(d=1, tilt=0.3), 0.5
    x0 = np.random.default_rng(0).uniform(-2, 2, (200, 1))
    c = descent_census(pot, x0, gtol=1e-10, max_iter=2000, max_step=0.01, weight_decay=wd)
    roots = np.sort(np.roots([4.0, 0.0, -4.0 + wd, 0.3]).real)
    left = x0[:, 0] < roots[1]
    assert np.array_equal(c.at_bottom, left) and np.array_equal(c.minima, ~left)
    assert np.allclose(c.x[left, 0], roots[0], atol=1e-9)
    assert np.allclose(c.x[~left, 0], roots[2], atol=1e-9)
    objective = lambda x: pot.energy(np.array([[x]]))[0] + wd * x * x / 2  # noqa: E731
    (level, n), = c.levels()
    assert abs(level - objective(roots[2])) < 1e-12 and abs(c.bottom - objective(roots[0])) < 1e-12
    assert np.allclose(c.lowest[~left], 12 * roots[2] ** 2 - 4 + wd)
    assert c.weight_decay == wd and "on U + 0.5 |x|^2 / 2" in c.table()
    plain = descent_census(pot, x0, gtol=1e-10, max_iter=2000, max_step=0.01)
    assert abs(plain.bottom - c.bottom) > 0.01      # the decay changes the answer
    gd = descent_census(pot, x0, gtol=1e-10, dynamics=SGD(lr=0.01, weight_decay=wd), steps=300,
                        backend="numpy", max_step=0.01, weight_decay=wd)
    keep = np.abs(x0[:, 0] - roots[1]) > 0.01
    assert np.array_equal(gd.at_bottom[keep], left[keep])
    with pytest.raises(ConfigError, match="weight_decay 0.0 is not the census's 0.5"):
        descent_census(pot, x0, dynamics=SGD(lr=0.01), steps=10, weight_decay=wd)
    with pytest.raises(ConfigError, match="decoupled"):
        descent_census(pot, x0, dynamics=AdamW(lr=0.01, weight_decay=wd), steps=10,
                       weight_decay=wd)
    sphere = SphericalPSpin(8, 3, seed=0)
    with pytest.raises(ConfigError, match="constrained"):
        descent_census(sphere, sphere.default_init(np.ones((2, 8))), weight_decay=wd)


def test_descent_census_stops_on_the_stable_manifold_of_a_saddle():
    """Separable double well in d = 2: starts with a coordinate exactly 0 keep it (its gradient
    vanishes), so descent ends at a saddle of index = the zero coordinates; the others reach
    one of the four minima, U = 0, the bottom."""
    pot = DoubleWell(d=2)
    x0 = np.vstack([np.random.default_rng(1).uniform(-1.5, 1.5, (50, 2)),
                    [[0.0, 0.5], [-0.7, 0.0], [0.0, 0.0]]])
    c = descent_census(pot, x0, gtol=1e-10, max_iter=500)
    assert c.at_bottom[:50].all() and c.bottom < 1e-18
    assert np.array_equal(c.saddles, np.r_[np.zeros(50, bool), True, True, True])
    assert c.index[50:].tolist() == [1, 1, 2] and c.minima.sum() == 0
    assert np.allclose(c.loss[50:], [1.0, 1.0, 2.0]) and c.levels() == []


def test_descent_census_sets_escaped_end_points_apart():
    """Tanh teacher-student loss at the teacher's width (starts picked from 400 default
    initializations): ten descents reach zero loss, one stops at a bad minimum (loss 1.2e-5,
    |grad| <= 1e-9, no negative eigenvalue), three run off above the bottom to |x| > 10 x the
    starts' (escaped); with far = inf those count as stuck, and the classes partition the
    starts."""
    from langevin_sim.potentials.toynets import TeacherStudentMLP

    pot = TeacherStudentMLP(n=64, d_in=3, hidden=2, teacher_hidden=2, noise=0.0, seed=0)
    starts = pot.default_init(np.random.default_rng(1).standard_normal((400, pot.d)))
    starts = starts[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 18, 23, 136]]
    c = descent_census(pot, starts, max_iter=3000)
    inf = descent_census(pot, starts, max_iter=3000, far=np.inf)
    assert c.at_bottom[:10].all() and c.bottom < 1e-12 * c.scale
    assert c.minima.tolist() == [False] * 10 + [True, False, False, False]
    assert abs(c.levels()[0][0] - 1.15285e-5) < 1e-9 and c.lowest[10] > 0
    assert c.escaped.tolist() == [False] * 11 + [True] * 3 and not inf.escaped.any()
    assert np.all(c.radius[c.escaped] > 10) and np.all(c.index[c.escaped] == -1)
    assert np.array_equal(inf.stuck, c.stuck | c.escaped)
    parts = c.at_bottom.astype(int) + c.escaped + c.minima + c.saddles + c.undecided
    assert np.all(parts == 1)
    with pytest.raises(ConfigError, match="far > 1"):
        descent_census(pot, starts, far=1.0)


def test_p2_sphere_eigenvectors_have_index_equal_to_rank():
    """p = 2: U = x^T A x / 2 on |x|^2 = N; critical points are +-sqrt(N) times A's
    eigenvectors, the k-th lowest has Riemannian index k and energy per spin a_k / 2."""
    N = 6
    pot = SphericalPSpin(N, 2, seed=3)
    A = pot.hessian(np.ones((1, N)))[0]
    a = np.linalg.eigvalsh(A)
    z = np.random.default_rng(1).standard_normal((80, N))
    cp = critical_points(pot, pot.default_init(z), tol=1e-9, max_iter=500)
    assert cp.index.size >= N and cp.dim == N - 1
    for e, k in zip(cp.energy / N, cp.index):
        j = int(np.argmin(np.abs(a / 2 - e)))
        assert abs(a[j] / 2 - e) < 1e-8 and k == j, (e, k, a / 2)


def test_semicircle_index_fraction():
    assert semicircle_index_fraction(-1.2, -1.1547) == 0.0
    assert abs(semicircle_index_fraction(0.0, -1.1547) - 0.5) < 1e-12
    assert semicircle_index_fraction(1.2, -1.1547) == 1.0


def test_critical_points_script_prints_the_table_and_saves_the_figure(tmp_path):
    import os
    import subprocess
    import sys

    import matplotlib.pyplot as plt

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    png = tmp_path / "crit.png"
    out = subprocess.run([sys.executable, os.path.join(root, "analysis", "critical_points.py"),
                          "--N", "6", "--seeds", "0,1", "--widths", "1", "--starts", "12",
                          "--max-iter", "300", "--census", "4:3:20,5:2:20", "--descent-widths",
                          "1,2", "--descent-seeds", "0,1", "--descent-starts", "10",
                          "--descent-iter", "200", "--png", str(png)],
                         capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    assert "index" in out.stdout and "p-spin" in out.stdout.lower(), out.stdout
    assert "24 starts converged" in out.stdout or "/24 starts" in out.stdout, out.stdout
    assert "| 5 | 2 × 20 |" in out.stdout and "Kac-Rice" in out.stdout, out.stdout
    assert "| 2 | 11 | 2 × 10 |" in out.stdout and "descent (L-BFGS) MLP width=1" in out.stdout
    # the census's verdict and the figure's line, as every analysis script prints them
    verdict = [ln for ln in out.stdout.splitlines() if ln.startswith("verdict: ")]
    assert len(verdict) == 1 and "Kac-Rice" in verdict[0] and "N = 5: z = " in verdict[0], \
        out.stdout
    assert f"figure: {png}" in out.stdout.splitlines(), out.stdout
    img = plt.imread(png)
    assert img.shape[0] >= 200 and (img[..., :3].min(axis=-1) < 0.5).mean() > 0.01
    capped = subprocess.run([sys.executable, os.path.join(root, "analysis", "critical_points.py"),
                             "--descent-widths", "2", "--descent-seeds", "0",
                             "--descent-starts", "10", "--descent-iter", "200",
                             "--descent-max-step", "0.05"], capture_output=True, text=True,
                            cwd=root)           # L-BFGS alone with its steps capped
    assert capped.returncode == 0, capped.stderr
    assert "descent: L-BFGS (steps <= 0.05); teacher width 2" in capped.stdout, capped.stdout
    # one instance a width: its fractions have no se (they printed "± nan")
    assert "fractions without an se" in capped.stdout and "nan" not in capped.stdout, capped.stdout


def test_kac_rice_p2_has_two_points_of_each_index():
    kr = kac_rice(5, 2, 0.5, samples=200)
    for k in range(5):
        assert kr.expected(k) == (pytest.approx(2.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))
    assert kr.expected(None)[0] == pytest.approx(10.0)
    minima = count_minima(SphericalPSpin(5, 2, seed=4),
                          SphericalPSpin(5, 2).default_init(
                              np.random.default_rng(0).standard_normal((60, 5))))
    assert minima.count == 2 and minima.saddles == 0              # +- the lowest eigenvector
    assert minima.energy[0] == pytest.approx(minima.energy[1], abs=1e-9)


def _direct_kac_rice(N, p, V, e_max, samples, rng):
    """Kac-Rice written out on the sphere |s|^2 = N: area x density of the tangent gradient at 0
    (N(0, V p) per direction) x E|det Hess| 1{index = k, e < e_max}, with the Riemannian Hessian
    A - p e I, A symmetric Gaussian (off-diagonal variance V p (p-1)/N, diagonal twice that),
    e = H/N ~ N(0, V/N) independent of A."""
    n = N - 1
    a = rng.standard_normal((samples, n, n)) * math.sqrt(V * p * (p - 1) / N)
    e = rng.standard_normal(samples) * math.sqrt(V / N)
    lam = np.linalg.eigvalsh((a + a.transpose(0, 2, 1)) / math.sqrt(2)
                             - p * e[:, None, None] * np.eye(n))
    log_area = math.log(2) + N / 2 * math.log(math.pi) - gammaln(N / 2) + n / 2 * math.log(N)
    pre = math.exp(log_area - n / 2 * math.log(2 * math.pi * V * p))
    w = pre * np.abs(np.prod(lam, axis=1)) * (e < e_max)
    idx = np.sum(lam < 0, axis=1)
    return [(np.mean(w * (idx == k)), np.std(w * (idx == k)) / math.sqrt(samples))
            for k in range(N)]


@pytest.mark.parametrize("N, e_max", [(3, np.inf), (4, np.inf), (4, -0.3)])
def test_kac_rice_matches_the_direct_integral(N, e_max):
    """The GOE(N) form against the Kac-Rice integral over the (N - 1)-dimensional Hessian, at
    every index; e_max checks the energy scale sqrt(2 V (p - 1)/p) l_k."""
    kr = kac_rice(N, 3, 0.5, samples=40000, seed=1)
    direct = _direct_kac_rice(N, 3, 0.5, e_max, 200000, np.random.default_rng(2))
    for k, (m, se) in enumerate(direct):
        got, got_se = kr.expected(k, e_max=e_max)
        assert abs(got - m) < 4 * math.hypot(se, got_se), (k, got, m, se, got_se)
    assert kr.expected(0, e_max=e_max)[0] > 1.0 and kr.expected(N - 1, e_max=e_max)[1] > 0


def test_minima_counted_on_instances_match_kac_rice():
    """N = 3, p = 3: every minimum of 150 coupling instances found by quenching 80 starts (no
    start reaches a minimum only once or twice); the mean count and the mean summed energy of
    the minima per instance against Kac-Rice's E[number of minima] = 3.14 and E[sum of their
    energies], 4 se.  A factor sqrt(p - 1) (GOE(N - 1) for GOE(N)) would be off by 41 %."""
    census = pspin_minima_census(3, 3, seeds=range(150), starts=80, samples=40000)
    r = census.row()
    assert abs(r["z"]) < 4, r
    assert r["kac"] == pytest.approx(3.14, abs=0.03) and r["se"] < 0.1 * r["mean"]
    assert np.all(census.unseen == 0)
    assert census.hits.size == census.energies.size and census.hits.min() >= 3
    assert r["energy_reached"] == pytest.approx(np.average(census.energies, weights=census.hits))
    kr = census.kac
    e_sum = kr.weight[:, 0] * kr.energy[:, 0]
    counts, e = census.counts.astype(int), census.energies
    sums = np.array([s.sum() for s in np.split(e, np.cumsum(counts)[:-1])])
    se = math.hypot(sums.std(ddof=1) / math.sqrt(sums.size), e_sum.std() / math.sqrt(e_sum.size))
    assert abs(sums.mean() - e_sum.mean()) < 4 * se, (sums.mean(), e_sum.mean(), se)
    assert r["energy"] == pytest.approx(e.mean()) and r["kac_energy"] < 0
    assert r["fraction"] == pytest.approx(r["kac"] / r["total"])


def test_abc_complexity_at_the_threshold_of_the_1rsb_solution():
    """Minima complexity 1/2 ln(p-1) - (p-2)/(4(p-1)) u^2 at u = -E_inf, with E_inf = |e_th| /
    sqrt(V) from the 1RSB marginal solution: the same (p - 2)/p."""
    for p in (3, 4):
        total, minima = abc_complexity(p)
        lm = landmarks(p, 0.5)
        assert total == pytest.approx(0.5 * math.log(p - 1))
        assert minima == pytest.approx(total - (p - 2) / (4 * (p - 1)) * lm.e_th ** 2 / 0.5,
                                       rel=1e-9)
    assert abc_complexity(3)[1] == pytest.approx(0.01324, abs=1e-5)


def test_chao1_unseen_estimate():
    c = MinimaCount(np.zeros(5), np.array([1, 1, 1, 2, 5]), 10, 10, 0)
    assert c.count == 5 and c.unseen == pytest.approx(1.5)        # 3 * 2 / (2 * 2)
    assert MinimaCount(np.zeros(2), np.array([4, 6]), 10, 10, 0).unseen == 0
