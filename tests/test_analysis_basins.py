"""Basins: quench, clustering, Hessian spectra, Laplace volumes, attraction fractions and
occupancy, each against a case with a known answer, then against Langevin simulations."""
import os
import runpy
import subprocess
import sys
from unittest import mock

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy.optimize import brentq

from langevin_sim import Simulation, open_run
from langevin_sim.analysis.basins import (assign_basins, exact_basin_log_z, find_basins,
                                          hessian_spectrum,
                                          isotropic_pair_log_z, laplace_log_z,
                                          occupancy, occupancy_from_log_z, quench,
                                          run_occupancy)
from langevin_sim.analysis.stationary import constant_temperature
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.errors import ConfigError
from langevin_sim.potentials import DoubleWell, MultiWell, Quadratic, SphericalPSpin
from langevin_sim.scenario import run_scenario

from .conftest import assert_within_se

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_multiwell_minima_spectra_and_laplace_volumes():
    """Two rotated quadratic wells 4 apart (softness 0.05: the joining terms are e^-160 at the
    centres): the quench finds both centres, the Hessian spectra are the wells' spectra, and
    log Z_b = -E_b/T + (3/2) log(2 pi T) - 1/2 log det H_b exactly, so the predicted
    occupancy ratio is e^(-0.3/T) sqrt(6 / 120)."""
    pot = MultiWell([[-2, 0, 0], [2, 0, 0]], spectra=[[1, 2, 3], [4, 5, 6]], depths=[0, 0.3],
                    softness=0.05, seed=3)
    T = 0.2
    b = find_basins(pot, 2 * np.random.default_rng(0).standard_normal((1000, 3)), temperature=T)
    assert b.points.shape == (2, 3) and b.n_unconverged == 0 and b.counts.sum() == 1000
    np.testing.assert_allclose(b.points, pot.centers, atol=1e-8)
    np.testing.assert_allclose(b.energy, [0, 0.3], atol=1e-12)
    np.testing.assert_allclose(b.eigenvalues, [[1, 2, 3], [4, 5, 6]], rtol=1e-9)
    assert list(b.index) == [0, 0]
    analytic = -pot.depths / T + 1.5 * np.log(2 * np.pi * T) - 0.5 * np.log([6.0, 120.0])
    np.testing.assert_allclose(b.log_z, analytic, rtol=1e-10)
    p = b.predicted
    np.testing.assert_allclose(p[1] / p[0], np.exp(-0.3 / T) * np.sqrt(6 / 120), rtol=1e-10)
    assert "Laplace P" in b.table()


def test_quench_on_the_sphere_and_riemannian_spectrum():
    """Spherical 2-spin H = -s^T J s on |s|^2 = N: the only minima are +-sqrt(N) v_1 (top
    eigenvector of J), energy -N lam_1, Riemannian Hessian eigenvalues 2 (lam_1 - lam_i),
    i >= 2; random starts reach each with probability 1/2 (binomial, 4 se), and the Lanczos
    path gives the same smallest eigenvalues as the dense one."""
    N = 8
    pot = SphericalPSpin(N=N, p=2, seed=1)
    lam, V = np.linalg.eigh(pot.J)
    b = find_basins(pot, np.random.default_rng(1).standard_normal((2000, N)), tol=1e-3)
    assert b.points.shape == (2, N) and b.n_unconverged == 0
    np.testing.assert_allclose(np.abs(b.points @ V[:, -1]), np.sqrt(N), rtol=1e-8)
    np.testing.assert_allclose(b.energy, -N * lam[-1], rtol=1e-10)
    np.testing.assert_allclose(b.eigenvalues, np.tile(2 * (lam[-1] - lam[:-1])[::-1], (2, 1)),
                               rtol=1e-6)
    assert_within_se(b.fraction, 0.5, b.fraction_se, what="attraction fraction on the sphere")
    np.testing.assert_allclose(hessian_spectrum(pot, b.points, k=3), b.eigenvalues[:, :3],
                               rtol=1e-8)


def test_lanczos_spectrum_of_a_large_quadratic():
    """Quadratic d = 60 with a known spectrum: dense gives it all, Lanczos the 4 smallest."""
    spec = np.geomspace(0.1, 100, 60)
    pot = Quadratic(spectrum=spec, seed=2)
    x = np.zeros((1, 60))
    np.testing.assert_allclose(hessian_spectrum(pot, x)[0], spec, rtol=1e-10)
    np.testing.assert_allclose(hessian_spectrum(pot, x, k=4)[0], spec[:4], rtol=1e-8)
    q = quench(pot, np.random.default_rng(3).standard_normal((200, 60)), gtol=1e-9)
    assert q.converged.all() and np.abs(q.x).max() < 1e-7
    assert "200 converged" in q.table()
    fig, ax = plt.subplots()
    q.plot(ax)
    plt.close(fig)


def test_attraction_fractions_of_a_tilted_double_well():
    """1-D double well with tilt 1: the basins are split at the barrier top x_b (root of
    U' = 4 x (x^2 - 1) + 1 near 0, x_b = 0.2696), so starts uniform on [-1, 3] reach the left
    minimum with probability (x_b + 1) / 4 = 0.317 (binomial, 4 se; a boundary at 0 would
    give 0.25).  max_step keeps the quench on the gradient flow (without it, ~7% of the
    starts overshoot into the deeper well)."""
    pot = DoubleWell(d=1, tilt=1.0)
    x0 = np.random.default_rng(4).uniform(-1, 3, size=(4000, 1))
    b = find_basins(pot, x0, max_step=0.1)
    xb = brentq(lambda y: 4 * y * (y * y - 1) + 1.0, -0.5, 0.5)
    assert b.points.shape == (2, 1) and b.points[0, 0] < 0 < b.points[1, 0]
    assert_within_se(b.fraction[0], (xb + 1) / 4, b.fraction_se[0], what="left attraction fraction")
    # symmetric 2-D double well: four basins of a quarter each
    b2 = find_basins(DoubleWell(d=2), np.random.default_rng(5).uniform(-2, 2, size=(4000, 2)),
                     max_step=0.1)
    assert b2.points.shape == (4, 2)
    assert_within_se(b2.fraction, 0.25, b2.fraction_se, what="2-D attraction fractions")


def test_laplace_approaches_quadrature_at_low_temperature():
    """Tilted 1-D double well: log Z_exact - log Z_Laplace = c_1 T + O(T^2) with
    c_1 = 5 U'''^2 / (24 U''^3) - U'''' / (8 U''^2) at each minimum; at T = 0.0125 the
    quadrature matches to |(exact - Laplace)/T - c_1| < 0.01 (measured 0.002 and 0.004).
    Quadratic MultiWell wells in 2-D (grid quadrature over quenched basins): exact equals
    Laplace to 1e-6 once the joining region is negligible (T = 0.1), 2-D separable double well
    = sum of the 1-D ones."""
    pot = DoubleWell(d=1, tilt=0.25)
    b = find_basins(pot, np.array([[-1.0], [1.0]]))
    x = b.points[:, 0]
    f2, f3, f4 = 12 * x ** 2 - 4, 24 * x, 24.0
    c1 = 5 * f3 ** 2 / (24 * f2 ** 3) - f4 / (8 * f2 ** 2)
    errs = []
    for T in (0.05, 0.025, 0.0125):
        diff = exact_basin_log_z(pot, b, T) - laplace_log_z(b.energy, b.eigenvalues, T)
        errs.append(np.abs(diff / T - c1))
    assert np.all(errs[-1] < 0.01), errs
    assert np.all(np.diff(errs, axis=0) < 0), errs
    b2 = find_basins(DoubleWell(d=2, tilt=0.25), np.array([[-1.0, -1], [-1, 1], [1, -1], [1, 1]]))
    one = exact_basin_log_z(pot, b, 0.3)
    expect = [one[0] + one[0], one[0] + one[1], one[0] + one[1], one[1] + one[1]]
    np.testing.assert_allclose(exact_basin_log_z(DoubleWell(d=2, tilt=0.25), b2, 0.3), expect,
                               rtol=1e-9)
    mw = MultiWell([[-1.5, 0], [1.5, 0]], spectra=[[8, 8], [1, 1]], depths=[0, 0.5],
                   softness=0.1, seed=0)
    bm = find_basins(mw, np.array([[-1.5, 0.1], [1.4, 0.0]]), temperature=0.1)
    np.testing.assert_allclose(exact_basin_log_z(mw, bm, 0.1), bm.log_z, atol=1e-6)
    mw3 = MultiWell(3 * np.eye(3), spectra=np.ones((3, 3)))
    with pytest.raises(ConfigError, match="d <= 2 or a separable"):
        exact_basin_log_z(mw3, find_basins(mw3, 3 * np.eye(3)), 0.1)


def test_isotropic_pair_log_z_against_sampling_and_quadrature():
    """Two isotropic wells (sharp, flat, equal curvatures; depth gaps of either sign; d = 1,
    3, 6): each basin's probability under its own Gaussian N(c_b, T/k_b), estimated from 4e5
    draws labelled by the hard minimum, within 4 binomial se of the closed form (a wrong
    ball radius or centre, or a swapped depth, is off by 10-1000 se); at d = 1 and 2 the
    closed form equals quadrature over the gradient-flow basins of a MultiWell of softness
    0.005 to 1e-3 in log Z (the smooth minimum's difference, <= tau ln 2 / T = 0.0035)."""
    rng = np.random.default_rng(5)
    n, D = 400_000, 2.0
    for d, T, k, E in ((1, 0.7, (4.0, 1.0), (0.0, 0.8)), (3, 1.0, (4.0, 1.0), (0.0, 0.0)),
                       (3, 0.5, (1.0, 6.0), (0.3, 0.0)), (6, 1.3, (2.0, 2.0), (0.0, -0.4)),
                       (6, 1.0, (3.0, 1.5), (-1.0, 0.0))):
        got = isotropic_pair_log_z(d, T, D, k, E)
        c = np.zeros((2, d))
        c[1, 0] = D
        for b in (0, 1):
            x = c[b] + np.sqrt(T / k[b]) * rng.standard_normal((n, d))
            q = [E[j] + 0.5 * k[j] * ((x - c[j]) ** 2).sum(axis=1) for j in (0, 1)]
            p = np.mean(q[b] < q[1 - b])
            se = np.sqrt(p * (1 - p) / n)
            want = np.exp(got[b] + E[b] / T - 0.5 * d * np.log(2 * np.pi * T / k[b]))
            assert abs(p - want) < 4 * se + 1e-12, (d, T, k, E, b, p, want, se)
    for d in (1, 2):
        centers = np.zeros((2, d))
        centers[1, 0] = D
        mw = MultiWell(centers, spectra=[[4.0] * d, [1.0] * d], depths=[0.0, 0.6],
                       softness=0.005, seed=0)
        bm = find_basins(mw, centers + 0.01, temperature=0.5)
        np.testing.assert_allclose(exact_basin_log_z(mw, bm, 0.5),
                                   isotropic_pair_log_z(d, 0.5, D, (4.0, 1.0), (0.0, 0.6)),
                                   atol=1e-3)
    assert isotropic_pair_log_z(2, 1.0, 1.0, (4.0, 1.0), (5.0, 0.0))[0] == -np.inf
    with pytest.raises(ConfigError, match="must be > 0"):
        isotropic_pair_log_z(2, -1.0, 1.0, (4.0, 1.0))


@pytest.fixture(scope="module")
def tilted_run(tmp_path_factory):
    """Overdamped Langevin, tilted 1-D double well (tilt 0.25, barrier 1), T = 0.5, h = 0.01:
    4000 replicas starting half in each well; the well-to-well relaxation time is ~4, the
    run lasts t = 30 (records every t = 1)."""
    path = tmp_path_factory.mktemp("basins") / "dw.h5"
    sim = Simulation(DoubleWell(d=1, tilt=0.25), OverdampedLangevin(step=0.01, temperature=0.5),
                     4000, backend="numpy", seed=1)
    sim.run(3000, record_every=100, out=path).close()
    return path


def test_langevin_occupancy_matches_quadrature(tilted_run):
    """Replicas at the last record (independent; binomial se 0.007) occupy the left well with
    the exact quadrature probability 0.7095 within 4 se, as do the last 10 records pooled (se
    across replicas, 0.005), while the first record is ~1/2; the Laplace prediction is 0.712.
    The nearest-minimum rule misplaces the barrier top (at +0.063, the midpoint of the minima
    is -0.03) and the 1.2% of mass in between: it is biased by ~ -2.4 se here."""
    with open_run(tilted_run) as run:
        basins, occ = run_occupancy(run)
        _, pooled = run_occupancy(run, basins=basins, tail=10)
    assert basins.points.shape == (2, 1)
    assert abs(occ.exact[0] - 0.7095) < 1e-3 and abs(occ.laplace[0] - 0.712) < 1e-3
    assert abs(occ.fractions[0, 0] - 0.5) < 0.05
    assert_within_se(occ.final, occ.exact, occ.final_se, what="last-record occupancy")
    np.testing.assert_allclose(occ.final_se, occ.se[-1], rtol=1e-3)
    assert_within_se(pooled.final, pooled.exact, pooled.final_se, what="pooled occupancy")
    assert "CONSISTENT with exact quadrature" in occ.table()


@pytest.mark.slow
def test_langevin_occupancy_flat_vs_sharp_2d(tmp_path):
    """Flat (k = 1) and sharp (k = 8) wells in 2-D at equal depth, T = 0.7 (barrier 3.5 T),
    h = 0.0025 (Euler bias on the sharp well's volume < 1%): 8192 replicas from the sharp
    centre, t = 100; the pooled occupancy of the last 10 records (t >= 55) matches the grid
    quadrature within 4 se, and the Laplace ratio 8 : 1 is within 2% of it."""
    run = run_scenario(os.path.join(ROOT, "scenarios", "flat_vs_sharp.py"),
                       ["d=2", "temperature=0.7", "step=0.0025", "replicas=8192", "steps=40000",
                        "record_every=2000", "record_positions=true"], out=tmp_path / "fs.h5",
                       progress=False)
    with run:
        basins, occ = run_occupancy(run, tail=10)
    np.testing.assert_allclose(occ.laplace, occ.exact, atol=0.02 * occ.exact.max())
    assert_within_se(occ.final, occ.exact, occ.final_se, what="flat/sharp occupancy")


def test_occupancy_z_when_none_or_all_replicas_are_in_a_basin():
    """0 of 2048 replicas in a basin of predicted occupancy 2e-4 (flat_vs_sharp at d = 8) has
    final_se = 0: z was -2e296 and the verdict DIFFERS.  The se under the prediction,
    sqrt(p (1 - p) / M), makes it -0.64; a wrong prediction (5%) stays far out, and with
    replicas in both basins (final nearer 1/2 than p) z is the measured final_se's."""
    lap = np.array([2e-4, 1 - 2e-4])
    occ = occupancy(np.ones((3, 2048), int), 2, tail=3, laplace=lap)
    np.testing.assert_allclose(occ.z("laplace"), [-0.64, 0.64], atol=0.01)
    assert "CONSISTENT" in occ.verdict()
    wrong = occupancy(np.ones((3, 2048), int), 2, laplace=[0.05, 0.95])
    np.testing.assert_allclose(wrong.z("laplace"), [-10.4, 10.4], atol=0.05)
    assert "DIFFERS" in wrong.verdict()
    np.testing.assert_array_equal(occupancy(np.ones((1, 4), int), 2, laplace=[0, 1]).z("laplace"),
                                  [0, 0])
    labels = (np.random.default_rng(0).random((3, 400)) < 0.5).astype(int)
    mixed = occupancy(labels, 2, tail=3, laplace=[0.6, 0.4])
    np.testing.assert_allclose(mixed.z("laplace"), (mixed.final - [0.6, 0.4]) / mixed.final_se)


def test_occupancy_from_log_z():
    """Z_b / sum Z, NaN entries (saddles) left out."""
    np.testing.assert_allclose(occupancy_from_log_z([np.log(3), 0.0, np.nan]), [0.75, 0.25, 0])


def test_basins_script_on_flat_vs_sharp(tmp_path, capsys):
    """analysis/basins.py on a quick flat_vs_sharp run (d = 2, 1000 replicas, t = 25 at
    T = 1; the sharp well drains to equilibrium by t ~ 13): prints the basins table with the Hessian
    spectra (1, 1) and (8, 8) and Laplace occupancies 8/9 and 1/9, the sampled occupancy
    against quadrature with the verdict, and an 800 x 320 figure."""
    out = tmp_path / "fs.h5"
    run_scenario(os.path.join(ROOT, "scenarios", "flat_vs_sharp.py"),
                 ["d=2", "replicas=1000", "steps=2500", "step=0.01", "record_every=250",
                  "record_positions=true", "backend=numpy"], out=out, progress=False).close()
    with open_run(out) as run:
        _, by_quench = run_occupancy(run, tail=3)
        _, by_label = run_occupancy(run, tail=3, method="observable")
        assert "(no exact column" not in by_quench.table()
        assert "(no exact column" in run_occupancy(run, tail=3, exact=False)[1].table()
        with pytest.raises(ConfigError, match="'nearest' or 'observable'"):
            run_occupancy(run, method="voronoi")
    np.testing.assert_allclose(by_label.final, by_quench.final, atol=0.02)
    png = tmp_path / "basins.png"
    res = subprocess.run([sys.executable, os.path.join(ROOT, "analysis", "basins.py"), str(out),
                          "--tail", "3", "--starts", "200", "--png", str(png)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "2 minima from 200 starts" in text and "0.8889" in text and "0.1111" in text, text
    # (a p-spin's 1000 default starts took minutes without a word: it says what it does)
    assert "finding the basins of MultiWell (d = 2): quenching 200 starts" in res.stderr
    assert "CONSISTENT with exact quadrature" in text, text
    # --records 4 quenches records 0, 3, 7 and 10 and the pooled last 3 (8, 9, 10): the same
    # pooled occupancy, from 6 of the 11 records
    main = runpy.run_path(os.path.join(ROOT, "analysis", "basins.py"))["main"]
    calls = []
    with mock.patch("langevin_sim.analysis.basins.assign_basins",
                    side_effect=lambda *a, **k: calls.append(len(a[1])) or assign_basins(*a, **k)):
        main([str(out), "--tail", "3", "--starts", "200", "--records", "4",
              "--png", str(tmp_path / "b4.png")])
    pooled = [line for line in text.splitlines() if "CONSISTENT" in line]
    assert calls.count(1000) == 6 and pooled and pooled[0] in capsys.readouterr().out
    img = plt.imread(png)
    assert img.shape == (320, 800, 4)
    rgb = img[..., :3]
    assert (rgb.max(axis=-1) - rgb.min(axis=-1) > 0.1).mean() > 0.01, "no coloured curves"
    assert (rgb.max(axis=-1) < 0.3).mean() > 0.002, "no axes or text drawn"


def test_observable_occupancy_of_an_isotropic_pair_in_d_4_has_the_exact_column(tmp_path):
    """flat_vs_sharp at d = 4 (wells k = 8 and 1, 3 apart, T = 1): beyond d = 2 there was no
    exact column although `isotropic_pair_log_z` is exact for these labels in any d; the
    sampled labels (1000 replicas, t = 25) agree with it.  A MultiWell with anisotropic
    wells still has none, and the figure's title names no dotted line then."""
    out = tmp_path / "fs4.h5"
    run_scenario(os.path.join(ROOT, "scenarios", "flat_vs_sharp.py"),
                 ["d=4", "replicas=1000", "steps=2500", "step=0.01", "record_every=250",
                  "backend=numpy"], out=out, progress=False).close()
    with open_run(out) as run:
        basins, occ = run_occupancy(run, tail=3, method="observable")
        pot, T = run.potential, constant_temperature(run.config)
    lz = isotropic_pair_log_z(4, T, 3.0, pot.hessians[:, 0, 0], pot.depths)
    well = pot.basin(basins.points)
    np.testing.assert_allclose(occ.exact, occupancy_from_log_z(lz)[well], rtol=1e-12)
    assert 0.01 < occ.exact[0] < 0.02 and occ.exact[0] != pytest.approx(occ.laplace[0], abs=5e-4)
    assert "CONSISTENT with the exact isotropic pair" in occ.verdict(), occ.table()
    aniso = MultiWell([[-1.5, 0, 0], [1.5, 0, 0]], spectra=[[1, 2, 3], [4, 5, 6]])
    sim = Simulation(aniso, OverdampedLangevin(0.01, 1.0), 8, backend="numpy")
    sim.run(20, 10, out=tmp_path / "aniso.h5", progress=False).close()
    with open_run(tmp_path / "aniso.h5") as run:
        _, occ = run_occupancy(run, method="observable", starts=50)
    assert occ.exact is None and "(no exact column" in occ.table()
    fig, ax = plt.subplots()
    assert occ.plot(ax).get_title() == "occupancy (dashed: Laplace)"
    plt.close(fig)


def test_run_occupancy_refuses_zero_temperature_before_quenching(tmp_path):
    """A zero-temperature SGD run (the quick teacher-student net, 161 weights, whose quench
    ran > 60 s before the temperature was checked) is refused at once, naming sgd_basins;
    an explicit temperature <= 0 likewise; AdamW (no temperature) too."""
    import time

    out = tmp_path / "ts.h5"
    run_scenario(os.path.join(ROOT, "scenarios", "teacher_student.py"), [], out=out, quick=True,
                 progress=False).close()
    with open_run(out) as run:
        t = time.perf_counter()
        with pytest.raises(ConfigError, match=r"need a temperature > 0; this run's is 0 \(SGD "
                                              r"without Langevin noise\)\.  For SGD runs use "
                                              r"langevin_sim\.analysis\.sgd_basins"):
            run_occupancy(run)
        assert time.perf_counter() - t < 2
        with pytest.raises(ConfigError, match="need a temperature > 0; got -1"):
            run_occupancy(run, temperature=-1)
    out = tmp_path / "adamw.h5"
    run_scenario(os.path.join(ROOT, "scenarios", "grokking.py"), [], out=out, quick=True,
                 progress=False).close()
    with open_run(out) as run, pytest.raises(ConfigError, match="AdamW dynamics has no temp"):
        run_occupancy(run)


def test_observable_occupancy_is_compared_with_the_labels_gibbs_weight(tmp_path):
    """With method="observable" the sampled fractions are of the recorded `basin` labels; on
    a ShiftedMultiWell (claim 2b's Langevin check) the labels split x at -0.45, the saddle
    at 0, so the gradient-flow basins' quadrature (0.41 sharp) is not what they sample
    (0.36, the notebook's label_occupancy): the exact column must be the labels' weight."""
    from langevin_sim.analysis.sgd_basins import label_occupancy

    out = tmp_path / "shifted.h5"
    run_scenario(os.path.join(ROOT, "scenarios", "flat_vs_sharp_sgd.py"),
                 ["dynamics=langevin", "lr=0.02", "temperature=0.5242", "replicas=16",
                  "steps=100"], out=out, quick=True, progress=False).close()
    with open_run(out) as run:
        basins, occ = run_occupancy(run, method="observable")
        pot = run.potential
    well = pot.basin(basins.points)
    want = label_occupancy(pot, 0.5242, [[-20, 20]], n_grid=20001)[well]
    np.testing.assert_allclose(occ.exact, want, atol=2e-3)
    flow = occupancy_from_log_z(exact_basin_log_z(pot, basins, 0.5242))
    assert np.max(np.abs(flow - want)) > 0.03


def test_quench_without_positions_names_the_scripts_flag(tmp_path):
    """basins.py --method quench on a run without positions said "use
    method='observable'", the Python keyword only."""
    out = tmp_path / "fs.h5"
    run_scenario(os.path.join(ROOT, "scenarios", "flat_vs_sharp.py"),
                 ["replicas=8", "steps=20", "record_every=10"], out=out, quick=True,
                 progress=False).close()
    with open_run(out) as run, pytest.raises(ConfigError, match=r"use method='observable' "
                                                               r"\(analysis/basins.py: --method "
                                                               r"observable\)"):
        run_occupancy(run, method="quench")


def test_spectra_within_a_decade_keep_their_tick_labels():
    """The Hessian-spectra panel (log axis) dropped its minor tick labels: eigenvalues 1 and 8
    sat on one labelled tick, 10^0."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from langevin_sim.analysis.basins import find_basins
    from langevin_sim.potentials import MultiWell

    pot = MultiWell(centers=[[-1.5, 0.0], [1.5, 0.0]], spectra=[[8.0, 8.0], [1.0, 1.0]])
    b = find_basins(pot, np.random.default_rng(0).uniform(-3, 3, (200, 2)), temperature=1.0)
    fig, ax = plt.subplots()
    b.plot(ax)
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    labels = [t.get_text() for t in ax.get_yticklabels(minor=True) + ax.get_yticklabels()
              if lo <= t.get_position()[1] <= hi and t.get_text()]
    assert len(labels) >= 3, labels
    plt.close(fig)
