"""Every registered potential against finite differences of itself: gradient vs energy,
Hessian vs gradient, hvp vs Hessian, minibatch gradients (finite sums), and the Riemannian
gradient and Hessian along the retraction (constrained potentials).

Driven by `potentials.REGISTRY`: a new potential class fails `test_every_potential_has_a_small_instance`
until it gets an entry in SMALL.  The per-family tests (test_pspin, test_manifolds, test_toynets,
test_multiwell) cover more parameter choices of their families; this file guarantees a floor
for all of them, including DoubleWell, Quadratic and LinearRegression.

Error budget (float64, central differences with step h on functions of order 1-10): truncation
h^2 |f'''| / 6 ~ 1e-10 and rounding 1e-16 |f| / h ~ 1e-11 at h = 1e-5, so 1e-6 of the
largest entry passes every correct formula and fails any wrong term of relative size > 1e-6.
"""
import inspect

import numpy as np
import pytest

from langevin_sim.potentials import REGISTRY, Potential

H = 1e-5          # central-difference step
RTOL = 1e-6       # of the largest entry, see the module docstring

# Small instances (constructor kwargs) of every potential class, smooth at the test points
# (no ReLU, no walls).
SMALL = {
    "DoubleWell": dict(d=3, barrier=1.5, a=0.8, center=0.2, tilt=0.3),
    "Quadratic": dict(spectrum=[0.5, 1.0, 2.0, 4.0], seed=1, center=[0.1, -0.2, 0.3, 0.0]),
    "LinearRegression": dict(n=11, d=4, noise=0.3, seed=2),
    "TeacherStudentMLP": dict(n=9, d_in=3, hidden=4, teacher_hidden=2, n_test=3, seed=1),
    "ModularArithmeticMLP": dict(p=4, hidden=3, embed=2, activation="tanh", seed=6),
    "ClassifierMLP": dict(dataset="wine", n=10, n_test=4, hidden=3, seed=2, label_corruption=0.3),
    "SphericalPSpin": dict(N=6, p=3, seed=5, planted=0.8),
    "ScaleSymmetric": dict(depth=3, n=7, noise=0.5, l2=0.3, seed=1),
    "Valley": dict(d=3, profile="cos", k0=1.5, alpha=0.8, omega=2.0, weights=[1.0, 2.0]),
    "MultiWell": dict(centers=[[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]], spectra=[[1, 2, 3], [4, 5, 6]],
                      depths=[0.0, 0.2], softness=0.3, seed=2),
    "ShiftedMultiWell": dict(centers=[[0.0, 0.0], [1.5, 0.5]], spectra=[[1, 2], [4, 3]],
                             shifts=[[0.1, -0.2], [-0.3, 0.1], [0.2, 0.1]], depths=[0.0, 0.1],
                             softness=0.3, seed=1),
}


def registered() -> list[str]:
    """Names of the package's potential classes (test-local subclasses excluded)."""
    return sorted(n for n, c in REGISTRY.items() if c.__module__.startswith("langevin_sim."))


def small_potential(name: str) -> Potential:
    """A small instance of the registered potential class `name` (fails if SMALL lacks it)."""
    if name not in SMALL:
        pytest.fail(f"potential {name} is registered but has no entry in "
                    f"tests/test_potential_derivatives.SMALL: add small constructor kwargs")
    return REGISTRY[name](**SMALL[name])


def random_points(pot: Potential, M: int = 3, seed: int = 0) -> np.ndarray:
    """(M, d) float64 points: the potential's initial distribution plus 0.3 N(0, 1) (generic,
    off any constraint manifold and away from zero)."""
    r = np.random.default_rng(seed)
    return np.asarray(pot.default_init(r.standard_normal((M, pot.d))), np.float64) \
        + 0.3 * r.standard_normal((M, pot.d))


def central_differences(f, x, h=H):
    """(M, ..., d): columns j of (f(x + h e_j) - f(x - h e_j)) / (2 h) for f: (M, d) -> (M, ...),
    all M d perturbations evaluated in one call."""
    M, d = x.shape
    E = h * np.eye(d)
    xp = (x[:, None, :] + E).reshape(M * d, d)
    xm = (x[:, None, :] - E).reshape(M * d, d)
    diff = (f(xp) - f(xm)) / (2 * h)
    return np.moveaxis(diff.reshape((M, d) + diff.shape[1:]), 1, -1)


def close(actual, expected, what, rtol=RTOL):
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * np.abs(expected).max(),
                               err_msg=what)


def test_every_potential_has_a_small_instance():
    missing = sorted(set(registered()) - set(SMALL))
    assert not missing, f"add small constructor kwargs to SMALL for {missing}"


@pytest.mark.parametrize("name", registered())
def test_gradient_hessian_hvp(name):
    """grad = d energy (ambient, also for constrained potentials, whose energy and grad are
    defined off the manifold); hessian = d grad; hvp(x, v) = hessian(x) v."""
    pot = small_potential(name)
    x = random_points(pot)
    g = pot.grad(x)
    assert g.shape == x.shape
    close(g, central_differences(pot.energy, x), f"{name}: gradient")
    Hs = pot.hessian(x)
    assert Hs.shape == x.shape + (pot.d,)
    close(Hs, central_differences(pot.grad, x), f"{name}: Hessian")
    close(Hs, Hs.transpose(0, 2, 1), f"{name}: Hessian symmetry", rtol=1e-9)
    v = np.random.default_rng(1).standard_normal(x.shape)
    close(pot.hvp(x, v), np.einsum("mij,mj->mi", Hs, v), f"{name}: hvp", rtol=1e-7)


@pytest.mark.parametrize("name", [n for n in registered() if n in SMALL
                                  and REGISTRY[n](**SMALL[n]).n_samples is not None])
def test_minibatch_gradients(name):
    """Finite sums: the batch of all samples gives the full gradient; a batch gradient is the
    mean of its samples' gradients (repeats included) and depends on the samples; where the
    API has them, batch_loss and hvp(x, v, batch) against differences of batch_loss / grad."""
    pot = small_potential(name)
    x = random_points(pot, seed=2)
    M, n = x.shape[0], pot.n_samples
    every = np.tile(np.arange(n), (M, 1))
    close(pot.grad(x, every), pot.grad(x), f"{name}: batch of all samples", rtol=1e-12)
    single = np.stack([pot.grad(x, np.full((M, 1), i)) for i in range(n)])     # (n, M, d)
    close(single.mean(axis=0), pot.grad(x), f"{name}: mean of per-sample gradients", rtol=1e-12)
    assert np.ptp(single, axis=0).max() > 1e-6, f"{name}: per-sample gradients ignore the sample"
    batch = np.random.default_rng(3).integers(0, n, (M, 5))
    close(pot.grad(x, batch), single[batch, np.arange(M)[:, None]].mean(axis=1),
          f"{name}: batch gradient = mean over its samples", rtol=1e-12)
    if hasattr(pot, "batch_loss"):
        rows = np.repeat(batch, pot.d, axis=0)          # the batch of each perturbed copy
        close(pot.grad(x, batch), central_differences(lambda y: pot.batch_loss(y, rows), x),
              f"{name}: batch gradient vs batch_loss")
    if "batch" in inspect.signature(pot.hvp).parameters:
        v = np.random.default_rng(4).standard_normal(x.shape)
        fd = (pot.grad(x + H * v, batch) - pot.grad(x - H * v, batch)) / (2 * H)
        close(pot.hvp(x, v, batch), fd, f"{name}: batch hvp")


@pytest.mark.parametrize("name", [n for n in registered() if REGISTRY[n].constrained])
def test_riemannian_derivatives(name):
    """On the manifold, with tangent v and the retraction R: d/dt U(R(x + t v)) at 0 equals
    <project(x, grad U), v> (the Riemannian gradient); where defined, riemannian_hessian is
    the second derivative along R (exact for a second-order retraction, such as the metric
    projection onto a sphere) and riemannian_hvp its product with v."""
    pot = small_potential(name)
    r = np.random.default_rng(5)
    x = pot.retract(random_points(pot, seed=5))
    v = pot.project(x, r.standard_normal(x.shape))
    close(pot.project(x, v), v, f"{name}: projection is idempotent", rtol=1e-12)

    def along(t):
        return pot.energy(pot.retract(x + t * v))

    rgrad = pot.project(x, pot.grad(x))
    close(np.sum(rgrad * v, axis=1), (along(H) - along(-H)) / (2 * H), f"{name}: Riemannian gradient")
    if hasattr(pot, "riemannian_hessian"):
        h = 1e-4                                   # second differences: rounding 1e-16 |U| / h^2
        R = pot.riemannian_hessian(x)
        close(np.einsum("mi,mij,mj->m", v, R, v), (along(h) - 2 * along(0.0) + along(-h)) / h ** 2,
              f"{name}: Riemannian Hessian along the retraction", rtol=1e-5)
        w = r.standard_normal(x.shape)
        close(pot.riemannian_hvp(x, w), np.einsum("mij,mj->mi", R, w), f"{name}: riemannian_hvp",
              rtol=1e-10)


def test_potential_arguments_are_checked_where_they_went_wrong_silently():
    """A zero in Quadratic's spectrum was accepted or refused by the seed (the rotated H's
    smallest eigenvalue rounded to +-1e-16: 20 seeds of 40 accepted, the exact variance then
    4e15 or negative), and a positive tiny one was told to be positive; NaN read as "not
    symmetric", inf was accepted; a p-spin spike of norm 2 (or 0) scaled (or dropped) the
    planted term; MultiWell dropped spectra given beside hessians; ScaleSymmetric truncated
    depth=2.5; Valley(bounds=(1.0,)) unpacked into a ValueError; the p-spin's size limit
    read N <= 511 for p = 3 where 512 is allowed."""
    from langevin_sim.errors import ConfigError
    from langevin_sim.potentials import MultiWell, Quadratic, SphericalPSpin
    from langevin_sim.potentials.manifolds import ScaleSymmetric, Valley
    from langevin_sim.potentials.pspin import MAX_TENSOR_ENTRIES, _largest_n

    for seed in range(8):
        with pytest.raises(ConfigError, match="finite positive eigenvalues"):
            Quadratic(spectrum=[0.0, 1.0, 2.0], seed=seed)
    with pytest.raises(ConfigError, match="condition number"):
        Quadratic(spectrum=[1e-16, 1.0, 2.0])
    assert Quadratic(spectrum=[1e-12, 1.0, 2.0], seed=5).eigh[0][0] > 0
    for bad in ([1.0, np.nan], [1.0, np.inf]):
        with pytest.raises(ConfigError, match="finite positive"):
            Quadratic(spectrum=bad)
    with pytest.raises(ConfigError, match="H holds inf or NaN"):
        Quadratic(H=[[1.0, 0.0], [0.0, np.nan]])
    with pytest.raises(ConfigError, match="hessians hold inf or NaN"):
        MultiWell(centers=[[0.0, 0.0]], hessians=[[[1.0, 0.0], [0.0, np.nan]]])
    with pytest.raises(ConfigError, match="hessians or spectra, not both"):
        MultiWell(centers=[[0.0, 0.0]], hessians=[np.eye(2)], spectra=[[5.0, 50.0]])
    with pytest.raises(ConfigError, match="J holds inf or NaN"):
        SphericalPSpin(N=3, p=2, J=np.full((3, 3), np.nan))
    for spike in ([1.0, 1.0, 1.0, 1.0], [0.0] * 4):
        with pytest.raises(ConfigError, match="spike must be a unit vector"):
            SphericalPSpin(N=4, p=3, planted=1.0, spike=spike)
    with pytest.raises(ConfigError, match="depth must be an integer"):
        ScaleSymmetric(depth=2.5)
    with pytest.raises(ConfigError, match=r"bounds must be \(s_lo, s_hi\)"):
        Valley(bounds=(1.0,))
    assert _largest_n(3) == 512 and 512 ** 3 <= MAX_TENSOR_ENTRIES < 513 ** 3
    with pytest.raises(ConfigError, match="use N <= 512 for p=3"):
        SphericalPSpin(N=513, p=3)
