"""Critical points by minimizing |grad U|^2, on landscapes whose critical points are known."""
import numpy as np

from langevin_sim.analysis.critical import critical_points, semicircle_index_fraction
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
                          "--N", "6", "--widths", "1", "--starts", "12", "--max-iter", "300",
                          "--png", str(png)], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    assert "index" in out.stdout and "p-spin" in out.stdout.lower(), out.stdout
    img = plt.imread(png)
    assert img.shape[0] >= 200 and (img[..., :3].min(axis=-1) < 0.5).mean() > 0.01
