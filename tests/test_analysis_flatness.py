"""Flatness against generalization: rank correlations on data whose association is known, and
on a teacher-student run that records sharpness."""
import dataclasses
import warnings

import numpy as np
import pytest
from scipy import stats

from langevin_sim.analysis.flatness import (early_stopped, flatness_vs_generalization, matched_fit,
                                            pooled, run_flatness)
from langevin_sim.errors import ConfigError, LangevinSimWarning


def test_monotone_association_is_found_whatever_the_scale():
    rng = np.random.default_rng(0)
    s = rng.lognormal(size=300)
    test = np.exp(2 * np.log(s) + 0.3 * rng.standard_normal(300))      # monotone, noisy
    fg = flatness_vs_generalization(s, test)
    assert fg.rho == pytest.approx(stats.spearmanr(s, test)[0], abs=1e-12)
    assert fg.ci[0] > 0.8 and fg.p < 1e-50
    assert flatness_vs_generalization(s ** 3, np.log(test)).rho == pytest.approx(fg.rho)
    assert np.isnan(fg.partial_rho) and "given" not in fg.table()


def test_interval_covers_zero_at_the_nominal_rate_without_association():
    """400 independent data sets of 60 replicas: the 95 % Fisher interval of Spearman's rho
    covers 0 in 95 % of them (binomial se 1.1 %), p < 0.05 in 5 %."""
    rng = np.random.default_rng(1)
    cover, small_p = [], []
    for _ in range(400):
        fg = flatness_vs_generalization(rng.standard_normal(60), rng.standard_normal(60),
                                        rng.standard_normal(60))
        cover.append((fg.ci[0] < 0 < fg.ci[1], fg.partial_ci[0] < 0 < fg.partial_ci[1]))
        small_p.append((fg.p < 0.05, fg.partial_p < 0.05))
    cover, small_p = np.mean(cover, axis=0), np.mean(small_p, axis=0)
    assert np.all((cover > 0.915) & (cover < 0.985)), cover
    assert np.all((small_p > 0.015) & (small_p < 0.085)), small_p


def test_few_points_get_the_exact_permutation_p():
    """Up to 9 values (a scan's points' medians) p counts all n! pairings (here counted
    again with scipy's Spearman over every permutation): rho = 0.7 on 5 points is reached or
    passed in 28 of 120; rho = -0.976 on 8 in 16 of 40320 (the t approximation: 3.3e-5).
    From 10 values on, the t p."""
    import itertools
    import math

    x, y = [4, 2, 5, 3, 1], [3, 4, 5, 2, 1]
    fg = flatness_vs_generalization(x, y)
    null = [stats.spearmanr(x, q)[0] for q in itertools.permutations(y)]
    assert fg.rho == pytest.approx(0.7) and fg.p == pytest.approx(28 / 120)
    assert fg.p == pytest.approx(np.mean(np.abs(null) >= 0.7 - 1e-9))
    y = -np.arange(8.0)
    y[[0, 1]] = y[[1, 0]]
    fg = flatness_vs_generalization(np.arange(8.0), y)
    assert fg.rho == pytest.approx(-0.97619, abs=1e-5) and fg.p == pytest.approx(16 / 40320)
    x = np.arange(10.0)
    fg = flatness_vs_generalization(x, x[[1, 0, *range(2, 10)]])
    t = fg.rho * math.sqrt(8 / (1 - fg.rho ** 2))
    assert fg.p == pytest.approx(2 * stats.t.sf(t, 8))


def test_the_script_decides_few_points_by_the_exact_p():
    """analysis/flatness.py's verdict on at most 9 values (points' medians) is the exact p's:
    rho = 0.9 on 5 points has a Fisher interval above 0 but exact p = 10/120; rho = 1 on 6
    has p = 2/720."""
    import os
    import runpy

    said = runpy.run_path(os.path.join(os.path.dirname(os.path.dirname(__file__)), "analysis",
                                       "flatness.py"))["said"]
    fg = flatness_vs_generalization([1, 2, 3, 4, 5], [2, 1, 3, 4, 5])
    assert fg.rho == pytest.approx(0.9) and fg.ci[0] > 0 and fg.p == pytest.approx(10 / 120)
    assert said(fg) == "not established (exact p = 0.083)"
    assert said(flatness_vs_generalization(np.arange(6.0), -np.arange(6.0))) == "reversed"


def test_a_common_driver_is_removed_by_the_partial_correlation():
    """Train loss u drives both sharpness and test loss, which are otherwise independent: the
    raw correlation is large, the partial one given u is not; with a direct link it stays."""
    rng = np.random.default_rng(2)
    u = rng.standard_normal(400)
    s = u + 0.5 * rng.standard_normal(400)
    fg = flatness_vs_generalization(np.exp(s), u + 0.5 * rng.standard_normal(400), np.exp(u))
    assert fg.rho > 0.6 and fg.partial_ci[0] < 0 < fg.partial_ci[1]
    fg2 = flatness_vs_generalization(np.exp(s), u + s + 0.5 * rng.standard_normal(400), u)
    assert fg2.partial_ci[0] > 0.3 and fg2.partial_p < 1e-10


def test_pooled_points_recover_a_common_correlation_and_flag_disagreement():
    """12 points of 60 replicas with rank correlation ~0.2 each: the pooled interval covers the
    truth (Gaussian copula, rho_s = (6/pi) asin(r/2)) and Q is unremarkable; points split
    between +0.6 and -0.6 give a pooled rho near 0 and a tiny Q p-value."""
    rng = np.random.default_rng(3)

    def point(r, n=60):
        x = rng.standard_normal(n)
        y = r * x + np.sqrt(1 - r * r) * rng.standard_normal(n)
        return flatness_vs_generalization(np.exp(x), y, rng.standard_normal(n))

    pc = pooled([point(0.21) for _ in range(12)])
    truth = 6 / np.pi * np.arcsin(0.21 / 2)
    assert pc.ci[0] < truth < pc.ci[1] and pc.ci[0] > 0.05 and pc.q_p > 0.01, pc.table()
    assert pc.k == 12 and "raw" in pc.table() and "on 11 dof" in pc.table()
    one = pooled([point(0.21)])        # printed "Q = 0.0 on 0 dof (p = nan)"
    assert one.k == 1 and "one point: no heterogeneity test" in one.table() and "nan" not in one.table()
    mixed = pooled([point(0.6) for _ in range(4)] + [point(-0.6) for _ in range(4)])
    assert abs(mixed.rho) < 0.15 and mixed.q_p < 1e-6, mixed.table()
    part = pooled([point(0.21) for _ in range(12)], partial=True)
    assert part.partial and part.ci[0] < truth < part.ci[1]
    with pytest.raises(ConfigError, match="finite correlation"):
        pooled([flatness_vs_generalization(np.arange(9.0), np.arange(9.0) ** 2)], partial=True)


def test_a_constant_column_has_no_correlation_and_is_left_out_of_the_pooling():
    """A classifier's test error the same for every replica (iris, 6 replicas: a real scan's
    point) gave rho NaN, a partial rho of rounding noise (-0.05), printed "+nan", and pooled
    stopped the script with a traceback; a measure whose ranks are the train loss's gave a
    partial rho of rounding noise too."""
    rng = np.random.default_rng(5)
    flat = flatness_vs_generalization(rng.random(6), np.full(6, 0.053), rng.random(6),
                                      target="test_error")
    assert np.isnan(flat.rho) and np.isnan(flat.partial_rho)
    assert "no rank correlation: the test error is the same" in flat.table()
    assert "nan" not in flat.table()
    fixed = flatness_vs_generalization(np.arange(5.0), [4, 4, 4, 1, 1], np.arange(5.0) ** 2)
    assert np.isfinite(fixed.rho) and np.isnan(fixed.partial_rho)
    assert "given the train loss none" in fixed.table() and "nan" not in fixed.table()
    good = [flatness_vs_generalization(*rng.standard_normal((3, 30))) for _ in range(3)]
    with pytest.warns(LangevinSimWarning, match="1 of 4 points have no rank correlation"):
        pc = pooled(good + [flat])
    assert pc.k == 3 and pc == pooled(good)
    with pytest.raises(ConfigError, match="no point has a finite correlation"):
        pooled([flat])


def test_pooled_random_effects_match_a_hand_computation():
    """Three points, n = 28, 53, 103 (Fisher variances 1.06/25, /50, /100: weights a(1, 2, 4),
    a = 25/1.06) with z = atanh(rho) = 0.5, -0.2, 0.1.  By hand: fixed effect z = 0.5/7;
    Q = a (9/49 + 2 (19/70)^2 + 4 (2/70)^2) = a 1638/4900 = 7.88410 on 2 dof (p = 0.0194);
    C = a (7 - 21/7) = 4a, tau2 = (Q - 2)/C = 0.0835714 - 0.5/a = 0.062371; w* = 1/(v + tau2) =
    9.54459, 11.96581, 13.70399, z* = 3.749532/35.214393 = 0.106477, se = 0.168516, so the
    random-effects interval is tanh(0.106477 -+ 0.330291) = [-0.22015, +0.41096] (the fixed-effect one
    [-0.0811, +0.2220] excludes nothing either but is 1.8x narrower); with Q rejecting at 5 %
    `quoted` gives the random-effects one.  Homogeneous points (Q < k - 1) give tau2 = 0."""
    rng = np.random.default_rng(0)

    def point(z, n):
        fg = flatness_vs_generalization(rng.random(n), rng.random(n))
        return dataclasses.replace(fg, rho=float(np.tanh(z)))

    pc = pooled([point(0.5, 28), point(-0.2, 53), point(0.1, 103)])
    assert pc.q == pytest.approx(7.88410, rel=1e-5)
    assert pc.q_p == pytest.approx(stats.chi2.sf(7.88410, 2), rel=1e-4)
    assert pc.rho == pytest.approx(np.tanh(0.5 / 7), rel=1e-9)
    assert pc.tau2 == pytest.approx(0.062371, rel=1e-4)
    assert pc.re_rho == pytest.approx(np.tanh(0.106477), rel=1e-4)
    assert pc.re_ci[0] == pytest.approx(-0.22015, abs=2e-5) and pc.re_ci[1] == pytest.approx(0.41096, abs=2e-5)
    assert pc.re_p == pytest.approx(2 * stats.norm.sf(0.106477 / 0.168516), rel=1e-4)
    assert pc.heterogeneous() and pc.quoted() == (pc.re_rho, pc.re_ci, pc.re_p)
    assert "DerSimonian-Laird" in pc.table()
    same = pooled([point(0.2, 53), point(0.21, 53), point(0.19, 53)])
    assert same.tau2 == 0.0 and same.re_ci == pytest.approx(same.ci) and not same.heterogeneous()
    assert same.quoted() == (same.rho, same.ci, same.p)


def test_bad_input():
    with pytest.raises(ConfigError, match="one value per replica"):
        flatness_vs_generalization(np.ones(5), np.ones(6))
    with pytest.raises(ConfigError, match=">= 5 finite"):
        flatness_vs_generalization([1, 2, np.nan, 4, 5], [1, 2, 3, 4, 5])


def _teacher_student_run(path):
    from langevin_sim import Simulation
    from langevin_sim.dynamics import SGD
    from langevin_sim.potentials import TeacherStudentMLP
    from langevin_sim.potentials.sharpness import SharpnessObserver

    pot = TeacherStudentMLP(n=32, d_in=3, hidden=4, teacher_hidden=2, noise=0.3, seed=0,
                            n_test=64)
    sim = Simulation(pot, SGD(lr=0.05, batch_size=8, momentum=0.0), replicas=12,
                     backend="numpy", seed=3, observers=(SharpnessObserver(every=20),))
    sim.run(60, record_every=10, out=path)
    return path


def test_run_flatness_reads_the_last_sharpness_record(tmp_path):
    from langevin_sim import open_run

    path = _teacher_student_run(tmp_path / "ts.h5")
    with open_run(path) as r:
        fg = run_flatness(r)
        S = np.asarray(r["sharpness"])
        assert np.all(np.isfinite(S[-1])) and not np.all(np.isfinite(S[-2]))
        assert np.array_equal(fg.sharpness, S[-1])
        assert np.array_equal(fg.test_loss, np.asarray(r["test_loss"][-1]))
        assert fg.n == 12 and np.isfinite(fg.partial_rho)
        assert np.all(fg.sharpness > 0)
        tr = run_flatness(r, measure="hessian_trace")
        assert np.array_equal(tr.sharpness, np.asarray(r["hessian_trace"][-1]))
        with pytest.raises(ConfigError, match="measure must be one of"):
            run_flatness(r, measure="trace")
        wn = run_flatness(r, measure="weight_norm")             # recorded at every record
        assert np.array_equal(wn.sharpness, np.asarray(r["weight_norm"][-1]))
        assert wn.measure == "weight_norm" and "weight_norm median" in wn.table()
        assert early_stopped(r, measure="weight_norm").step.max() <= 60
        assert set(early_stopped(r, measure="weight_norm").step) - {0, 20, 40, 60}


def test_flatness_script_prints_the_table_and_saves_the_figure(tmp_path, capsys, monkeypatch):
    import os
    import runpy
    import sys

    import matplotlib.pyplot as plt

    from langevin_sim import open_run

    path = _teacher_student_run(tmp_path / "ts.h5")
    png = tmp_path / "fl.png"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setattr(sys, "argv", ["flatness.py", str(path), "--png", str(png)])
    runpy.run_path(os.path.join(root, "analysis", "flatness.py"), run_name="__main__")
    text = capsys.readouterr().out
    with open_run(path) as r:
        assert run_flatness(r).table() in text
    assert "pooled over 1 points" in text and "verdict:" in text
    with open_run(path) as r:
        assert early_stopped(r).table() in text
        assert matched_fit([r], np.median(run_flatness(r).train_loss)).table(["run ts"]) in text
    img = plt.imread(png)
    assert img.shape[0] >= 200 and (img[..., :3].min(axis=-1) < 0.5).mean() > 0.01


class _Records:
    """A run's records as `analysis.flatness` reads them: names, step, diverged_step, [name]."""

    def __init__(self, step, diverged_step=None, **series):
        self.step = np.asarray(step)
        self._series = {k: np.asarray(v, np.float64) for k, v in series.items()}
        M = next(iter(self._series.values())).shape[1]
        self.diverged_step = (np.full(M, -1) if diverged_step is None
                              else np.asarray(diverged_step))
        self.names = list(self._series)

    def __getitem__(self, name):
        return self._series[name]


def test_early_stop_takes_each_replica_at_its_lowest_test_loss_among_measured_records():
    """Sharpness at steps 0, 20, 40 only; a lower test loss at an unmeasured record (step 10) is
    not taken; the diverged replica is dropped."""
    nan = np.nan
    S = [[1, 2, 3, 4, 5, 6], [nan] * 6, [2, 3, 4, 5, 6, 7], [nan] * 6, [3, 4, 5, 6, 7, 8]]
    test = [[5, 5, 1, 5, 5, 5], [0, 0, 0, 0, 0, 0], [4, 1, 5, 1, 9, 2], [0] * 6,
            [1, 2, 3, 4, 9, 9]]
    train = np.arange(30.0).reshape(5, 6)
    run = _Records([0, 10, 20, 30, 40], diverged_step=[-1, -1, -1, -1, 7, -1],
                   sharpness=S, test_loss=test, train_loss=train)
    fg = early_stopped(run)
    pick = np.array([4, 2, 0, 2, 2])                   # record index of each live replica
    live = np.array([0, 1, 2, 3, 5])
    assert np.array_equal(fg.step, np.array([0, 10, 20, 30, 40])[pick])
    assert np.array_equal(fg.sharpness, np.asarray(S, float)[pick, live])
    assert np.array_equal(fg.test_loss, np.asarray(test, float)[pick, live])
    assert np.array_equal(fg.train_loss, train[pick, live])
    last = run_flatness(run)
    assert np.array_equal(last.sharpness, np.asarray(S, float)[4, live]) and set(last.step) == {40}
    assert fg.stopped_by == "test_loss" and "(each at its lowest test_loss)" in fg.table()
    assert np.array_equal(run_flatness(run, record=2).sharpness, np.asarray(S, float)[2, live])
    with pytest.raises(ConfigError, match="holds no sharpness"):
        run_flatness(run, record=1)
    with pytest.raises(ConfigError, match="n_val"):
        early_stopped(run, by="val_loss")


def test_a_record_with_the_measure_for_only_some_live_replicas_is_left_out_with_a_warning():
    """A sharpness non-finite for one replica not flagged diverged (its power iteration
    overflowed) at the last record: the analyses read the earlier record where every live
    replica has one, and say which records they left out (silently, before)."""
    from langevin_sim.errors import LangevinSimWarning

    nan = np.nan
    S = [[1, 2, 3, 4, 5, 6], [nan] * 6, [2, 3, 4, 5, 6, 7], [nan] * 6, [3, 4, nan, 6, 7, 8]]
    test = np.arange(30.0).reshape(5, 6) % 7
    run = _Records([0, 10, 20, 30, 40], sharpness=S, test_loss=test, train_loss=test + 1)
    with pytest.warns(LangevinSimWarning, match=r"1 record\(s\) \(steps 40\) hold a sharpness "
                      r"for only some live replicas \(1 replica\(s\) non-finite.*the last: "
                      r"step 20\)"):
        last = run_flatness(run)
    assert set(last.step) == {20}
    np.testing.assert_array_equal(last.sharpness, np.asarray(S, float)[2])
    with pytest.warns(LangevinSimWarning, match="steps 40"):
        assert set(early_stopped(run).step) <= {0, 20}
    clean = _Records([0, 10, 20], sharpness=S[:3], test_loss=test[:3], train_loss=test[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # unmeasured records are not "partial"
        assert set(run_flatness(clean).step) == {20}


def test_a_hutchinson_trace_mostly_noise_is_flagged():
    """The trace's recorded standard errors against its spread across replicas: probe noise
    above 20 % of the variance warns (correlations attenuated toward 0); a precise trace
    does not."""
    from langevin_sim.errors import LangevinSimWarning

    rng = np.random.default_rng(1)
    true = rng.normal(40, 1.6, 64)
    test = np.vstack([rng.uniform(size=64), rng.uniform(size=64)])
    noisy = _Records([0, 10], hessian_trace=np.vstack([true, true + rng.normal(0, 4, 64)]),
                     hessian_trace_se=np.full((2, 64), 4.0), test_loss=test)
    with pytest.warns(LangevinSimWarning, match=r"hessian_trace at step 10: its probes' noise "
                      r"is \d+% of its variance .*reliability -?0\.\d\d\).*exact_hessian_trace"):
        run_flatness(noisy, measure="hessian_trace")
    precise = _Records([0, 10], hessian_trace=np.vstack([true, true]),
                       hessian_trace_se=np.full((2, 64), 0.3), test_loss=test)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_flatness(precise, measure="hessian_trace")


def test_early_stop_by_the_validation_loss_reports_the_test_loss_there():
    """With val_loss recorded the stop is its minimum (by default), not the test loss's: the
    replicas' picks differ from the oracle's, and the test loss is read at the picked record."""
    nan = np.nan
    S = [[1, 2, 3, 4, 5], [nan] * 5, [2, 3, 4, 5, 6], [3, 4, 5, 6, 7]]
    test = [[5, 5, 1, 5, 5], [0] * 5, [4, 1, 5, 1, 9], [1, 2, 3, 4, 9]]
    val = [[1, 9, 9, 2, 2], [0] * 5, [3, 1, 0, 3, 1], [2, 0, 1, 1, 4]]
    run = _Records([0, 10, 20, 30], sharpness=S, test_loss=test, val_loss=val,
                   train_loss=np.ones((4, 5)))
    fg = early_stopped(run)
    pick = np.array([0, 3, 2, 3, 2])
    assert fg.stopped_by == "val_loss" and "(each at its lowest val_loss)" in fg.table()
    assert np.array_equal(fg.step, np.array([0, 10, 20, 30])[pick])
    assert np.array_equal(fg.test_loss, np.asarray(test, float)[pick, np.arange(5)])
    assert np.array_equal(fg.sharpness, np.asarray(S, float)[pick, np.arange(5)])
    oracle = early_stopped(run, by="test_loss")
    assert np.all(oracle.test_loss <= fg.test_loss) and np.any(oracle.test_loss < fg.test_loss)


def test_test_error_target_reads_one_minus_the_test_accuracy():
    """target="test_error": the column is 1 - test_accuracy at the same records (last, early
    stopped at its own minimum, at equal fit), the test loss ignored; labelled so; a run
    without accuracies says which target it can take."""
    nan = np.nan
    S = [[1, 2, 3, 4, 5], [nan] * 5, [2, 3, 4, 5, 6], [3, 4, 5, 6, 7]]
    acc = np.array([[0.5, 0.9, 0.7, 0.6, 0.8], [1.0] * 5, [0.6, 0.7, 0.8, 0.9, 0.5],
                    [0.7, 0.8, 0.9, 0.5, 0.9]])
    test = [[9, 9, 9, 9, 9], [0] * 5, [1, 2, 3, 4, 5], [5, 4, 3, 2, 1]]
    train = np.array([[1.0] * 5, [0.5] * 5, [0.1] * 5, [0.05] * 5])
    run = _Records([0, 10, 20, 30], sharpness=S, test_loss=test, test_accuracy=acc,
                   train_loss=train)
    last = run_flatness(run, target="test_error")
    np.testing.assert_array_equal(last.test_loss, 1 - acc[3])
    assert last.target == "test_error" and "test error median" in last.table()
    fg = early_stopped(run, target="test_error")
    pick = np.argmax(acc[[0, 2, 3]], axis=0)
    pick = np.array([0, 2, 3])[pick]
    assert fg.stopped_by == "test_error"
    np.testing.assert_array_equal(fg.test_loss, 1 - acc[pick, np.arange(5)])
    np.testing.assert_array_equal(fg.sharpness, np.asarray(S, float)[pick, np.arange(5)])
    mf = matched_fit([run], 0.1, factor=1.2, target="test_error")
    np.testing.assert_array_equal(mf.fg.test_loss, 1 - acc[2])
    assert "test error median" in mf.table()
    # with a validation set's accuracy recorded, the stop is its lowest validation error
    val_acc = np.array([[0.9, 0.1, 0.1, 0.1, 0.9], [0.0] * 5, [0.1, 0.9, 0.1, 0.1, 0.1],
                        [0.1, 0.1, 0.9, 0.9, 0.1]])
    run_v = _Records([0, 10, 20, 30], sharpness=S, test_loss=test, test_accuracy=acc,
                     train_loss=train, val_accuracy=val_acc)
    fv = early_stopped(run_v, target="test_error")
    pick = np.array([0, 2, 3, 3, 0])
    assert fv.stopped_by == "val_error"
    np.testing.assert_array_equal(fv.test_loss, 1 - acc[pick, np.arange(5)])
    assert early_stopped(run_v, target="test_error", by="test_error").stopped_by == "test_error"
    no_acc = _Records([0, 10], sharpness=[[1, 2, 3, 4, 5]] * 2, test_loss=[[1] * 5] * 2)
    with pytest.raises(ConfigError, match="test_accuracy records.*take target test_loss"):
        run_flatness(no_acc, target="test_error")
    with pytest.raises(ConfigError, match="target must be one of"):
        run_flatness(run, target="accuracy")


def test_matched_fit_takes_the_first_record_in_the_band_and_separates_across_from_within():
    """Two points whose replicas are flatter -> better within each point (rank correlation
    ~0.6), while the flatter point is the worse one: at equal train loss the correlation over
    all replicas is negative, the pooled within-point one positive.  Each replica's train loss
    falls by a factor 2 per record; the one that jumps past the band, and the one that never
    reaches it, are left out; each replica is taken at its first record in the band."""
    rng = np.random.default_rng(4)
    M, R = 200, 12
    steps = 10 * np.arange(R)

    def point(flat_shift, test_shift, start):
        u = rng.standard_normal(M)
        s = np.exp(0.3 * u + flat_shift)
        t = test_shift + 0.6 * u + 0.8 * rng.standard_normal(M)
        train = start[None, :] * 0.5 ** np.arange(R)[:, None]
        S = np.tile(s, (R, 1)) * (1 + 0.01 * np.arange(R))[:, None]   # record-dependent
        return _Records(steps, sharpness=S, test_loss=np.tile(t, (R, 1)) + 0.001 * steps[:, None],
                        train_loss=train), s, t

    start_a = rng.uniform(1, 2, M)
    start_a[0] = 1e-9                                   # never in the band: below from the start
    start_b = rng.uniform(1, 2, M)
    a, sa, ta = point(0.0, 3.0, start_a)                # flat and worse
    b, sb, tb = point(1.0, 0.0, start_b)                # sharp and better
    a._series["train_loss"][:, 1] = np.array([1.0, 1e-3] + [1e-4] * (R - 2))  # jumps past
    mf = matched_fit([a, b], level=0.05, factor=2.0)
    assert list(mf.live) == [M, M] and list(mf.reached) == [M - 2, M]
    for k, run in enumerate((a, b)):
        tr = run["train_loss"]
        on = mf.point == k
        first = np.argmax(tr <= 0.1, axis=0)
        keep = (tr[first, np.arange(M)] >= 0.025) & (tr <= 0.1).any(axis=0)
        assert np.array_equal(mf.fg.step[on], steps[first[keep]])
        assert np.array_equal(mf.fg.sharpness[on],
                              run["sharpness"][first[keep], np.arange(M)[keep]])
        assert np.all((mf.fg.train_loss[on] <= 0.1) & (mf.fg.train_loss[on] >= 0.025))
    assert mf.fg.ci[1] < -0.3, mf.table()
    assert mf.within.k == 2 and mf.within.ci[0] > 0.4, mf.table()
    assert mf.pick == "first" and "the first record at or below 0.1" in mf.table()
    assert "across points" in mf.table(["a", "b"]) and "a: 198 of 200" in mf.table(["a", "b"])
    with pytest.raises(ConfigError, match="only 0 replicas"):
        matched_fit([a, b], level=1e-30)
    with pytest.raises(ConfigError, match="level > 0 and factor > 1"):
        matched_fit([a], level=0.05, factor=1.0)


def test_matched_fit_last_pick_takes_the_record_where_a_replica_leaves_the_band():
    """A noisy replica dips into the band [0.05, 0.2] (level 0.1, factor 2) early, leaves it
    and comes back: pick="first" takes the dip, pick="last" its last record >= 0.05; a
    replica with one record in the band is taken there either way; one that jumps past the
    band is left out by both."""
    train = np.array([[1.0, 0.15, 0.5, 0.3, 0.12, 0.01],     # dips into the band at 1
                      [1.0, 0.6, 0.3, 0.1, 0.01, 0.01],      # one record in the band
                      [1.0, 0.3, 0.01, 0.01, 0.01, 0.01],    # jumps past the band
                      [1.0, 0.5, 0.15, 0.15, 0.06, 0.01],
                      [1.0, 0.5, 0.3, 0.09, 0.09, 0.01],
                      [1.0, 0.5, 0.3, 0.15, 0.09, 0.09]]).T  # (records, replicas)
    S = np.arange(36.0).reshape(6, 6) + 1
    test = np.arange(36.0).reshape(6, 6)[::-1] * 0.1
    run = _Records(np.arange(6) * 10, sharpness=S, test_loss=test, train_loss=train)
    first = matched_fit([run], 0.1, factor=2.0)
    last = matched_fit([run], 0.1, factor=2.0, pick="last")
    want_first = {0: 1, 1: 3, 3: 2, 4: 3, 5: 3}     # replica: record
    want_last = {0: 4, 1: 3, 3: 4, 4: 4, 5: 5}
    for mf, want in ((first, want_first), (last, want_last)):
        cols = np.array(sorted(want))
        rows = np.array([want[c] for c in cols])
        assert np.array_equal(mf.fg.step, 10 * rows), (mf.pick, mf.fg.step)
        assert np.array_equal(mf.fg.sharpness, S[rows, cols])
        assert np.array_equal(mf.fg.test_loss, test[rows, cols])
        assert list(mf.reached) == [5] and list(mf.live) == [6]
    assert "the last record at or above 0.05" in last.table()
    with pytest.raises(ConfigError, match="pick"):
        matched_fit([run], 0.1, pick="middle")


def test_the_sharpness_bracket_says_what_it_is():
    """The table printed "median 1.785 [1.534, 2.161]", a 10-90 % range beside a 95 % CI and
    a panel of quartiles: the bracket is labelled now."""
    from langevin_sim.analysis.flatness import flatness_vs_generalization

    g = np.random.default_rng(0)
    s = g.lognormal(0, 0.3, 64)
    text = flatness_vs_generalization(s, s * g.lognormal(0, 0.3, 64)).table()
    lo, hi = np.quantile(s, [0.1, 0.9])
    assert f"[10-90 %: {lo:.4g}, {hi:.4g}]" in text


def test_matched_fit_tests_settings_with_the_points_as_units():
    """Eight points whose medians are unrelated (flatness and test loss drawn independently
    per point) while flatter replicas test better within each: the correlation over all
    replicas mixes the two, and its interval excludes 0 in most draws; the one over the
    points' medians (`settings`) stays near its nominal 5 % (8 points, 60 draws: at most 9
    exclude 0, where the replicas' interval does in at least 30)."""
    rng = np.random.default_rng(11)
    M, steps = 64, np.array([0, 10])
    replicas, settings = 0, 0
    for _ in range(60):
        runs = []
        for _k in range(8):
            u = rng.standard_normal(M)
            s = np.exp(0.3 * u + rng.standard_normal())         # the point's own flatness
            t = rng.standard_normal() + 0.15 * u + 0.2 * rng.standard_normal(M)
            runs.append(_Records(steps, sharpness=np.tile(s, (2, 1)), test_loss=np.tile(t, (2, 1)),
                                 train_loss=np.full((2, M), 0.05)))
        mf = matched_fit(runs, level=0.05, factor=2.0)
        replicas += mf.fg.ci[0] > 0 or mf.fg.ci[1] < 0
        settings += mf.settings.ci[0] > 0 or mf.settings.ci[1] < 0
        assert mf.settings.sharpness.size == 8
    assert replicas >= 30 and settings <= 9, (replicas, settings)
    meds = [np.median(mf.fg.sharpness[mf.point == k]) for k in range(8)]
    np.testing.assert_array_equal(mf.settings.sharpness, meds)
    assert "the points' medians as units" in mf.table()
    few = matched_fit(runs[:4], level=0.05, factor=2.0)
    assert few.settings is None and "fewer than 5 points" in few.table()
