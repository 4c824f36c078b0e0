"""Flatness against generalization: rank correlations on data whose association is known, and
on a teacher-student run that records sharpness."""
import numpy as np
import pytest
from scipy import stats

from langevin_sim.analysis.flatness import flatness_vs_generalization, pooled, run_flatness
from langevin_sim.errors import ConfigError


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
    assert pc.k == 12 and "raw" in pc.table()
    mixed = pooled([point(0.6) for _ in range(4)] + [point(-0.6) for _ in range(4)])
    assert abs(mixed.rho) < 0.15 and mixed.q_p < 1e-6, mixed.table()
    part = pooled([point(0.21) for _ in range(12)], partial=True)
    assert part.partial and part.ci[0] < truth < part.ci[1]
    with pytest.raises(ConfigError, match="finite correlation"):
        pooled([flatness_vs_generalization(np.arange(9.0), np.arange(9.0) ** 2)], partial=True)


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
    img = plt.imread(png)
    assert img.shape[0] >= 200 and (img[..., :3].min(axis=-1) < 0.5).mean() > 0.01
