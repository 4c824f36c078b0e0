"""ScaleSymmetric and Valley: exact derivatives, backend parity, run files, and what each
noise does on a manifold of minima.

Deterministic identities are tested to rounding (float64).  Stochastic laws are tested
against exact predictions with a tolerance of k = 4 standard errors, where the standard
error comes from independent replicas (the effective sample size is the number of replicas:
replicas share no random numbers), plus a stated bound on the O(eta) bias of the discrete
dynamics where that is not negligible; sizes are chosen so that a factor-2 error fails.
"""
import math

import numpy as np
import pytest

from langevin_sim import Simulation, open_run
from langevin_sim.analysis.stationary import fit_marginal
from langevin_sim.dynamics import SGD, OverdampedLangevin
from langevin_sim.dynamics.base import NoiseSource
from langevin_sim.dynamics.sgd import minibatch
from langevin_sim.errors import ConfigError
from langevin_sim.potentials import ScaleSymmetric, Valley

from .conftest import assert_within_se, both_backends


# --------------------------------------------------------------------------- derivatives

def check_derivatives(pot, x, eps=1e-5, rtol=1e-6):
    """grad vs central differences of energy, Hessian vs central differences of grad, and
    hvp vs Hessian @ v, at the (M, d) float64 points x.

    Central differences with step eps have truncation error ~eps^2 |U'''| ~ 1e-10 and
    rounding error ~1e-16 |U| / eps ~ 1e-11 here, so rtol = 1e-6 of the largest entry
    passes every correct formula and fails any wrong term of relative size > 1e-6.
    """
    M, d = x.shape
    g = pot.grad(x)
    fd = np.empty_like(x)
    fdH = np.empty((M, d, d))
    for j in range(d):
        e = np.zeros_like(x)
        e[:, j] = eps
        fd[:, j] = (pot.energy(x + e) - pot.energy(x - e)) / (2 * eps)
        fdH[:, :, j] = (pot.grad(x + e) - pot.grad(x - e)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=0, atol=rtol * np.abs(fd).max(), err_msg="gradient")
    H = pot.hessian(x)
    np.testing.assert_allclose(H, fdH, rtol=0, atol=rtol * np.abs(fdH).max(), err_msg="Hessian")
    v = np.random.default_rng(0).standard_normal(x.shape)
    np.testing.assert_allclose(pot.hvp(x, v), np.einsum("mij,mj->mi", H, v), rtol=1e-12,
                               atol=1e-12 * np.abs(H).max() * np.abs(v).max(), err_msg="hvp")


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_scale_symmetric_derivatives(depth):
    r = np.random.default_rng(depth)
    pot = ScaleSymmetric(depth=depth, inputs=r.standard_normal(7), noise=0.5, l2=0.3, seed=1)
    x = r.standard_normal((6, depth))
    check_derivatives(pot, x)
    # minibatch gradient = exact gradient of that batch's loss (a ScaleSymmetric on the batch)
    batch = r.integers(0, 7, size=(6, 3))
    g = pot.grad(x, batch)
    for m in range(6):
        sub = ScaleSymmetric(depth=depth, inputs=pot.inputs[batch[m]],
                             targets=pot.targets[batch[m]], l2=0.3)
        np.testing.assert_allclose(g[m], sub.grad(x[m:m + 1])[0], rtol=1e-12, atol=1e-14)
    full = np.broadcast_to(np.arange(7), (6, 7))
    np.testing.assert_allclose(pot.grad(x, full), pot.grad(x), rtol=1e-12, atol=1e-14)


def valley_cases():
    tab = np.linspace(-0.5, 2.0, 6)
    circ = np.linspace(-1.5 * math.pi, 1.5 * math.pi, 7)
    return {
        "line-exp-walls": Valley(d=4, profile="exp", k0=2.0, alpha=0.7, bounds=(-0.5, 0.5),
                                 wall=10.0, weights=[1.0, 2.0, 0.5]),
        "line-cos-d2": Valley(d=2, profile="cos", k0=1.5, alpha=0.8, omega=2.0),
        "line-table": Valley(d=3, profile="table", nodes_s=tab, nodes_k=[1, 3, 2, 5, 4, 1]),
        "circle-cos": Valley(d=5, curve="circle", radius=1.5, profile="cos", k0=2.0, alpha=0.6,
                             omega=2 / 1.5, weights=[1, 2, 3, 4]),
        "circle-table": Valley(d=3, curve="circle", radius=1.5, profile="table", nodes_s=circ,
                               nodes_k=[1, 2, 3, 1, 5, 2, 1]),
    }


VALLEYS = valley_cases()


@pytest.mark.parametrize("name", sorted(VALLEYS))
def test_valley_derivatives(name):
    pot = VALLEYS[name]
    r = np.random.default_rng(len(name))
    x = r.standard_normal((8, pot.d))
    if pot.curve == "circle":
        x[:, 0] += 1.5                      # keep away from the singular centre
    check_derivatives(pot, x)


def test_valley_profiles_and_geometry():
    # the line: s = x_1, U = k(s)/2 sum w_i x_i^2 exactly
    pot = Valley(d=3, profile="exp", k0=2.0, alpha=-0.5, weights=[1.0, 3.0])
    x = np.array([[0.3, 0.2, -0.1], [-1.0, 0.0, 0.0]])
    k = 2.0 * np.exp(-0.5 * x[:, 0])
    np.testing.assert_allclose(pot.energy(x), 0.5 * k * (x[:, 1] ** 2 + 3 * x[:, 2] ** 2), rtol=1e-15)
    obs = pot.observables(x)
    np.testing.assert_allclose(obs["s"], x[:, 0])
    np.testing.assert_allclose(obs["curvature"], k)
    # points on the curve are exact minima: zero energy and gradient
    for p in VALLEYS.values():
        lo_hi = (-0.4, 0.4) if p.bounds is not None else (-3.0, 3.0)
        s = np.linspace(*lo_hi, 7)
        on = p.point(s)
        np.testing.assert_allclose(p.energy(on), 0.0, atol=1e-14)
        np.testing.assert_allclose(p.grad(on), 0.0, atol=1e-13)
        np.testing.assert_allclose(p.observables(on)["s"], s, atol=1e-13)
        np.testing.assert_allclose(p.observables(on)["distance"], 0.0, atol=1e-13)
    # table: piecewise linear interpolation, constant beyond the end nodes
    tab = Valley(d=2, profile="table", nodes_s=[0.0, 1.0, 3.0], nodes_k=[1.0, 3.0, 2.0])
    np.testing.assert_allclose(tab.curvature([-1.0, 0.5, 2.0, 5.0]), [1.0, 2.0, 2.5, 2.0])


# --------------------------------------------------------------------------- backends, files

def parity_cases():
    r = np.random.default_rng(5)
    return {
        "scale-symmetric-3": ScaleSymmetric(depth=3, inputs=r.standard_normal(5), noise=0.5, l2=0.1),
        "valley-line": VALLEYS["line-exp-walls"],
        "valley-circle": VALLEYS["circle-table"],
        "valley-line-d5": Valley(d=5, profile="table", nodes_s=[-1.0, 0.0, 2.0],
                                 nodes_k=[2.0, 1.0, 4.0], bounds=(-1.0, 2.0)),
    }


PARITY = parity_cases()


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("name", sorted(PARITY))
def test_numba_matches_numpy(name, dtype, tol):
    """The fused kernel equals the NumPy reference to rounding: 301 replicas (two blocks,
    the second partial), 23 steps with a step-size schedule; float32 states agree to float32
    rounding (the kernel evaluates gradients in float64)."""
    pot = PARITY[name]
    dyn = OverdampedLangevin({"kind": "linear", "start": 0.02, "end": 0.005, "steps": 20}, 0.3)
    out = both_backends(pot, dyn, 301, 23, dtype=dtype, seed=7)
    np.testing.assert_allclose(out["numba"].state["x"], out["numpy"].state["x"], rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(PARITY))
def test_numba_divergence_and_partition(name):
    """Replicas leaving |x| <= bound freeze at the same step in both backends; splitting the
    replicas over two Simulations gives bit-identical states."""
    pot = PARITY[name]
    dyn = OverdampedLangevin(0.05, 2.0)
    out = both_backends(pot, dyn, 40, 60, seed=3, divergence_bound=2.5)
    states = {b: sim.state["x"] for b, sim in out.items()}
    dsteps = {b: sim.diverged_step for b, sim in out.items()}
    assert 0 < np.sum(dsteps["numba"] >= 0) < 40, dsteps["numba"]
    np.testing.assert_array_equal(dsteps["numba"], dsteps["numpy"])
    np.testing.assert_allclose(states["numba"], states["numpy"], rtol=1e-12, atol=1e-12)
    parts = [Simulation(pot, dyn, 20, backend="numba", seed=3, first_replica=r0,
                        divergence_bound=2.5) for r0 in (0, 20)]
    for p in parts:
        p.advance(60)
    np.testing.assert_array_equal(np.concatenate([p.state["x"] for p in parts]), states["numba"])


def test_run_file_round_trip(tmp_run):
    pot = Valley(d=3, profile="table", nodes_s=[0.0, 1.0, 2.0], nodes_k=[4.0, 1.0, 2.0],
                 bounds=(0.0, 2.0), weights=[1.0, 2.0])
    run = Simulation(pot, OverdampedLangevin(0.01, 0.2), 5, seed=1).run(40, 10, out=tmp_run)
    back = run.potential
    assert isinstance(back, Valley) and back.params() == pot.params()
    for k, v in pot.arrays().items():
        np.testing.assert_array_equal(back.arrays()[k], v)
    x = run.positions[-1]
    np.testing.assert_allclose(run["s"][-1], pot.observables(x)["s"])
    np.testing.assert_allclose(run["curvature"][-1], pot.curvature(x[:, 0]))
    run.close()
    ss = ScaleSymmetric(depth=3, n=9, noise=0.3, seed=4, l2=0.01)
    path = tmp_run.with_name("ss.h5")
    Simulation(ss, OverdampedLangevin(0.01, 0.1), 4, seed=2).run(20, 10, out=path).close()
    with open_run(path) as r:
        back = r.potential
        assert back.params() == ss.params()
        np.testing.assert_array_equal(back.targets, ss.targets)
        x = r.positions[-1]
        assert r["imbalance"].shape == (3, 4, 2)
        np.testing.assert_allclose(r["imbalance"][-1], x[:, :2] ** 2 - x[:, 1:] ** 2)
        np.testing.assert_allclose(r["product"][-1], np.prod(x, axis=1))


@pytest.mark.parametrize("kwargs", [
    dict(cls=ScaleSymmetric, depth=1), dict(cls=ScaleSymmetric, noise=-1.0),
    dict(cls=ScaleSymmetric, l2=-0.1), dict(cls=ScaleSymmetric, inputs=[0.0, 0.0], targets=[1, 2]),
    dict(cls=ScaleSymmetric, inputs=[1.0, 2.0], targets=[1.0]),
    dict(cls=Valley, d=1), dict(cls=Valley, curve="helix"), dict(cls=Valley, profile="gauss"),
    dict(cls=Valley, k0=0.0), dict(cls=Valley, curve="circle", profile="exp"),
    dict(cls=Valley, curve="circle", profile="cos", omega=0.5, radius=1.0),
    dict(cls=Valley, curve="circle", profile="cos", bounds=(0, 1)),
    dict(cls=Valley, profile="table", nodes_s=[0, 0], nodes_k=[1, 1]),
    dict(cls=Valley, profile="table", nodes_s=[0, 1], nodes_k=[1, -1]),
    dict(cls=Valley, profile="table"), dict(cls=Valley, bounds=(1, 0)),
    dict(cls=Valley, d=3, weights=[1.0]), dict(cls=Valley, curve="circle", profile="table",
                                              nodes_s=[-1, 1], nodes_k=[1, 1]),
])
def test_config_errors(kwargs):
    kwargs = dict(kwargs)
    cls = kwargs.pop("cls")
    with pytest.raises(ConfigError):
        cls(**kwargs)


# --------------------------------------------------------------------------- ScaleSymmetric physics

def imbalance(x):
    """D_jl for all pairs j < l: (M, k(k-1)/2), and the matching prod_{m != j,l} a_m^2."""
    k = x.shape[1]
    D, C = [], []
    for j in range(k):
        for l in range(j + 1, k):
            D.append(x[:, j] ** 2 - x[:, l] ** 2)
            others = [m for m in range(k) if m not in (j, l)]
            C.append(np.prod(x[:, others] ** 2, axis=1))
    return np.stack(D, 1), np.stack(C, 1)


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("how", ["gd-numpy", "weight-decay-numpy", "l2-langevin-T0-numba"])
def test_discrete_gd_imbalance_identity(depth, how):
    """(a), (c): a' = (1 - eta lam) a - eta r q gives, exactly,
    D'_jl = [(1 - eta lam)^2 - eta^2 r^2 prod_{m != j,l} a_m^2] D_jl  (r = S_xx p - S_xy).
    Plain GD (lam = 0) shrinks |D| by O(eta^2) per step; weight decay by (1 - eta lam)^2.
    Tested per step to rounding: |lhs - rhs| <= 1e-13 |a|^2."""
    r = np.random.default_rng(depth)
    eta, lam = 0.05, 0.3
    l2 = lam if how == "l2-langevin-T0-numba" else 0.0
    pot = ScaleSymmetric(depth=depth, inputs=r.standard_normal(6), noise=0.7, seed=2, l2=l2)
    if how == "gd-numpy":
        lam, dyn, backend = 0.0, SGD(eta, None), "numpy"
    elif how == "weight-decay-numpy":
        dyn, backend = SGD(eta, None, weight_decay=lam), "numpy"
    else:
        dyn, backend = OverdampedLangevin(eta, 0.0), "numba"
    x0 = 0.5 + r.random((5, depth)) * 1.0
    sim = Simulation(pot, dyn, 5, backend=backend, init=x0)
    for _ in range(40):
        x = sim.state["x"].copy()
        res = pot.residual(x)
        D, C = imbalance(x)
        sim.advance(1)
        D1, _ = imbalance(sim.state["x"])
        factor = (1 - eta * lam) ** 2 - eta ** 2 * res[:, None] ** 2 * C
        scale = np.sum(x ** 2, axis=1, keepdims=True)
        np.testing.assert_allclose(D1, factor * D, rtol=0, atol=1e-13 * scale.max())
    assert np.all(np.abs(D1) < np.abs(imbalance(x0)[0]))       # |D| shrank, as the factor says


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_imbalance_continuous_time_limit_is_first_order(lam):
    """Gradient flow conserves D (lam = 0) and weight decay gives D(t) = D(0) exp(-2 lam t):
    for GD on [0, t] the error of ln(D_N / D_0) + 2 lam t is -eta int r^2 dt + O(eta^2), so
    halving eta halves it (fitted order in [0.95, 1.05] over four step sizes)."""
    pot = ScaleSymmetric(depth=2, inputs=[1.0, 2.0, -0.5], targets=[1.0, 1.5, 0.2])
    a0 = np.array([[2.0, 0.3]])                     # off the manifold: r != 0 along the way
    t_end, errs, etas = 2.0, [], np.array([0.02, 0.01, 0.005, 0.0025])
    for eta in etas:
        sim = Simulation(pot, SGD(eta, None, weight_decay=lam), 1, backend="numpy", init=a0)
        sim.advance(int(round(t_end / eta)))
        D0, D1 = (v[0, 0] ** 2 - v[0, 1] ** 2 for v in (a0, sim.state["x"]))
        errs.append(math.log(D1 / D0) + 2 * lam * t_end)
    order = np.polyfit(np.log(etas), np.log(np.abs(errs)), 1)[0]
    assert np.all(np.array(errs) < 0)                # discrete GD balances: |D| decays
    assert 0.95 < order < 1.05, f"order {order}, errors {errs}"


def test_isotropic_langevin_imbalance_diffuses_without_drift():
    """(b) Isotropic Langevin: dD = 2 sqrt(2T)(a_1 dW_1 - a_2 dW_2), no drift.  Discrete
    Euler-Maruyama: E[D' | a] = (1 - eta^2 r^2) D exactly (the noise terms have mean zero),
    and with the transverse residual at equilibrium E r^2 = S_xx T (1 + O(eta kappa)), so
    E D_N = D_0 (1 - eta^2 S_xx T N) (1 + O(eta kappa)) here: a 1.4% drift, 0.35 SE.  The variance
    of D_N grows as sum_t 8 eta T E|a_t|^2 (+ O(eta^2)), estimated from 20 snapshots
    (trapezoid rule; quadrature error < 1%)."""
    pot = ScaleSymmetric(depth=2, n=1)                  # L = (a_1 a_2 - 1)^2 / 2, S_xx = 1
    eta, T, N, M = 0.01, 0.0137, 10_000, 2000           # T: SGD's noise strength, test below
    a0 = np.array([2.0, 0.5])
    D0 = a0[0] ** 2 - a0[1] ** 2
    sim = Simulation(pot, OverdampedLangevin(eta, T), M, backend="numba", seed=21, init=a0)
    a2 = [np.sum(a0 ** 2)]
    for _ in range(20):
        sim.advance(N // 20)
        a2.append(np.mean(np.sum(sim.state["x"] ** 2, axis=1)))
    x = sim.state["x"]
    D = x[:, 0] ** 2 - x[:, 1] ** 2
    drift = D0 * eta ** 2 * pot.sxx * T * N
    assert_within_se(D.mean(), D0 - drift, D.std(ddof=1) / math.sqrt(M), what="mean imbalance")
    var_pred = 8 * eta * T * (N / 20) * (np.sum(a2) - 0.5 * (a2[0] + a2[-1]))
    dev2 = (D - D0) ** 2
    assert_within_se(dev2.mean(), var_pred, dev2.std(ddof=1) / math.sqrt(M),
                     what="E (D_N - D_0)^2 (diffusion of the imbalance)")
    assert np.abs(D.mean() - D0) < 0.1 * D0            # no balancing: contrast with SGD below


def test_label_noise_sgd_drives_to_balance():
    """(d) SGD, batch 1 drawn with replacement, on data with label noise.  Per step, exactly,
    D' = (1 - eta^2 r_B^2) D with r_B the batch residual (tested to rounding).  So
    E ln|D_N/D_0| = -eta^2 sum_t E r_B^2: at a point of the manifold E r_B^2 = sigma^2 =
    mean_i (p* x_i - y_i)^2 x_i^2 / B, and SGD's own fluctuations of p add E rbar^2 =
    sigma^2 eta kappa / (2 - eta kappa) (linearized transverse AR(1), kappa = S_xx |a|^2 the
    transverse curvature), i.e. E r_B^2 = sigma^2 * 2 / (2 - eta kappa).  kappa decreases
    from kappa_0 (start) towards 2 S_xx p* (balanced), which brackets the prediction; the
    tolerance is that bracket plus 4 SE over replicas."""
    pot = ScaleSymmetric(depth=2, n=32, teacher=1.0, noise=1.0, seed=3)
    a0 = np.array([2.0, 0.5]) * math.sqrt(pot.p_star)         # on the manifold, imbalanced
    eta, N, M, B = 0.01, 10_000, 200, 1
    sigma2 = pot.batch_residual_second_moment(a0[None], B)[0]
    dyn = SGD(eta, B, sampling="iid")
    # exact per-step identity with the batch residual (numpy reference, first steps)
    sim = Simulation(pot, dyn, M, backend="numpy", seed=5, init=a0)
    noise = NoiseSource(5, np.arange(M))
    for t in range(5):
        x = sim.state["x"].copy()
        rb = pot.residual(x, minibatch(noise, t, B, pot.n_samples, True))
        sim.advance(1)
        D, D1 = x[:, 0] ** 2 - x[:, 1] ** 2, sim.state["x"][:, 0] ** 2 - sim.state["x"][:, 1] ** 2
        np.testing.assert_allclose(D1, (1 - eta ** 2 * rb ** 2) * D, rtol=0,
                                   atol=1e-13 * np.sum(x ** 2, axis=1).max())
    sim.advance(N - 5)
    x = sim.state["x"]
    D0 = a0[0] ** 2 - a0[1] ** 2
    ln = np.log(np.abs((x[:, 0] ** 2 - x[:, 1] ** 2) / D0))
    se = ln.std(ddof=1) / math.sqrt(M)
    kappa0, kappa_bal = np.sum(a0 ** 2) * pot.sxx, 2 * pot.sxx * abs(pot.p_star)
    lo, hi = (-eta ** 2 * sigma2 * N * 2 / (2 - eta * k) for k in (kappa0, kappa_bal))
    assert lo - 4 * se <= ln.mean() <= hi + 4 * se, (
        f"stochastic test: E ln|D_N/D_0| = {ln.mean():.4f} +- {se:.4f}, predicted [{lo:.4f}, {hi:.4f}]")
    assert ln.mean() < -0.5                                  # clearly toward balance


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")  # quad of a tabulated F
def test_isotropic_langevin_gibbs_marginal_uniform_in_log_ratio():
    """(b) Stationary law.  With u = ln|a_1/a_2| and p = a_1 a_2, da_1 da_2 = dp du/2 on each
    quadrant, so exp(-U/T) da has u-marginal prop. to int dp exp(-U(p, u)/T): with no
    regularizer this is uniform in u (improper).  Confined by the stated regularizer
    l2/2 |a|^2 = l2 |p| cosh u, the exact marginal is int dp exp(-(L(p) + l2 |p| cosh u)/T)
    (1-D quadrature), flat up to the factor the regularizer puts in.  Started balanced
    (u = 0), 3000 replicas run 120 time units (u-diffusion D_u >= 2T; the chi-square is
    already acceptable after 60); chi-square on independent replicas at the end, p > 1e-3.
    The naive "flat minima win" law (an extra factor kappa^(-1/2) prop. to cosh(u)^(-1/2))
    must be rejected (p < 1e-6).  Discretization bias: eta kappa <= 0.12 only in the far
    tails (density there off by <= 3%, below its SE)."""
    from scipy import integrate

    T, l2, eta = 0.2, 0.02, 2e-3
    pot = ScaleSymmetric(depth=2, n=1, l2=l2)           # L = (p - 1)^2 / 2
    M = 3000
    sim = Simulation(pot, OverdampedLangevin(eta, T), M, backend="numba", seed=31,
                     init=np.array([1.0, 1.0]))
    sim.advance(60_000)
    u = pot.observables(sim.state["x"])["log_ratio"][:, 0]

    def free_energy(extra):
        """-T ln int dp exp(-(L(p) + l2 |p| cosh u)/T) (+ extra T ln cosh u) on a grid, and
        +huge beyond |u| = 9 where the density is below exp(-400)."""
        grid = np.linspace(-9, 9, 721)
        z = [integrate.quad(lambda p: math.exp(-(0.5 * (p - 1) ** 2 + l2 * abs(p) * math.cosh(w)) / T),
                            -6, 8, points=[0.0, 1.0], limit=200)[0] for w in grid]
        F = -T * np.log(z) + extra * T * np.log(np.cosh(grid))
        return lambda v: np.where(np.abs(v) > 9, 1e4, np.interp(v, grid, F))

    exact = fit_marginal(u, free_energy(0.0), T, bins=40)
    assert exact.p_value > 1e-3, f"stochastic test: chi2 {exact.chi2:.1f}/{exact.dof}\n{exact.table()}"
    naive = fit_marginal(u, free_energy(0.5), T, bins=40)
    assert naive.p_value < 1e-6, f"kappa^(-1/2) law not rejected: chi2 {naive.chi2:.1f}/{naive.dof}"


# --------------------------------------------------------------------------- Valley physics

def test_valley_density_per_arclength_matches_laplace():
    """Density of s prop. to k(s)^(-(d-1)/2) (the Laplace law prod(curvatures)^(-1/2), exact
    for this valley) inside the walls [0, 2] (samples beyond the walls are left out: the law
    is compared conditioned on [0, 2]), for k = exp(s), d = 3: density e^(-s).
    6000 independent replicas, started uniform in s on the curve, run 5 time units
    (relaxation time S^2/(pi^2 T) = 0.4); chi-square p > 1e-3 on 25 bins.  EM bias:
    transverse variance T/(k (1 - eta k/2)), eta k <= 0.015: < 0.8% tilt.  Power: exponent
    x 1.25 and the uniform law must be rejected (p < 1e-6)."""
    T, d, S = 1.0, 3, 2.0
    pot = Valley(d=d, profile="exp", k0=1.0, alpha=1.0, bounds=(0.0, S), wall=200.0)
    M = 6000
    s0 = (np.arange(M) + 0.5) / M * S
    sim = Simulation(pot, OverdampedLangevin(2e-3, T), M, backend="numba", seed=11, init=pot.point(s0))
    sim.advance(2500)
    s = pot.observables(sim.state["x"])["s"]
    s = s[(s >= 0) & (s <= S)]

    def free(scale):
        """Free energy of the law conditioned on [0, S] (+huge outside)."""
        return lambda v: np.where((v < 0) | (v > S), 1e4, -T * scale * pot.log_density(np.clip(v, 0, S), T))

    good = fit_marginal(s, free(1.0), T, bins=25, lo=0.0, hi=S)
    assert good.p_value > 1e-3, f"stochastic test: chi2 {good.chi2:.1f}/{good.dof}\n{good.table()}"
    for wrong in (free(1.25), free(0.0)):
        bad = fit_marginal(s, wrong, T, bins=25, lo=0.0, hi=S)
        assert bad.p_value < 1e-6, f"wrong law not rejected: chi2 {bad.chi2:.1f}/{bad.dof}"


def test_valley_langevin_drifts_from_sharp_to_flat():
    """dU/ds = (k'/k) U for k = k0 exp(alpha s), and equipartition gives E U = (d-1) T/2 at
    every s, so s drifts at the constant speed v = -alpha (d-1) T / 2 toward the flat side
    (alpha < 0: flat at large s) and diffuses with 2T.  Started at the sharp end s = 0
    (k = 20) with transverse coordinates at equilibrium; 2000 replicas, t = 2.  Model error:
    EM transverse variance +eta k/2 <= 1%, adiabatic lag of the transverse variance
    alpha v / 2k >= -1%: tolerance 4 SE + 3% of the prediction."""
    T, d, alpha, k0, eta, N, M = 0.5, 5, -0.5, 20.0, 1e-3, 2000, 2000
    pot = Valley(d=d, profile="exp", k0=k0, alpha=alpha)
    z = np.random.default_rng(4).standard_normal((M, d - 1))
    x0 = pot.point(np.zeros(M), z * math.sqrt(T / (k0 * (1 - eta * k0 / 2))))
    sim = Simulation(pot, OverdampedLangevin(eta, T), M, backend="numba", seed=8, init=x0)
    sim.advance(N)
    s = pot.observables(sim.state["x"])["s"]
    v = -alpha * (d - 1) * T / 2
    se = s.std(ddof=1) / math.sqrt(M)
    assert s.mean() > 10 * se                              # a clear drift toward the flat side
    assert abs(s.mean() - v * N * eta) <= 4 * se + 0.03 * v * N * eta, (
        f"stochastic test: mean displacement {s.mean():.4f} +- {se:.4f} vs v t = {v * N * eta:.4f}")
    U = pot.energy(sim.state["x"])                          # equipartition at the end
    se_u, u_pred = U.std(ddof=1) / math.sqrt(M), (d - 1) * T / 2
    assert abs(U.mean() - u_pred) <= 4 * se_u + 0.01 * u_pred, (
        f"stochastic test: transverse energy {U.mean():.4f} +- {se_u:.4f} vs (d-1)T/2 = {u_pred}")


@pytest.mark.slow
def test_valley_circle_density_matches_laplace():
    """On the circle (R = 1) with k = 20 exp(0.7 cos s), d = 4: density per arclength
    prop. to k(s)^(-3/2) up to exp(-k R^2 / 2T) terms (< e^(-20)).  Started at s = 0 (the
    sharpest point), 6000 replicas run 20 time units (relaxation time R^2/T = 2); eta k <=
    0.02 (< 1.5% bias); chi-square p > 1e-3; the exponent x 1.25 is rejected (p < 1e-6)."""
    T = 0.5
    pot = Valley(d=4, curve="circle", radius=1.0, profile="cos", k0=20.0, alpha=0.7, omega=1.0)
    M = 6000
    sim = Simulation(pot, OverdampedLangevin(5e-4, T), M, backend="numba", seed=12,
                     init=pot.point(np.zeros(M)))
    sim.advance(40_000)
    s = pot.observables(sim.state["x"])["s"]

    def free(scale):
        """Free energy on the period (-pi, pi], +huge outside (s never leaves it)."""
        return lambda v: np.where(np.abs(v) > math.pi, 1e4, -T * scale * pot.log_density(v, T))

    good = fit_marginal(s, free(1.0), T, bins=30, lo=-math.pi, hi=math.pi)
    assert good.p_value > 1e-3, f"stochastic test: chi2 {good.chi2:.1f}/{good.dof}\n{good.table()}"
    bad = fit_marginal(s, free(1.25), T, bins=30, lo=-math.pi, hi=math.pi)
    assert bad.p_value < 1e-6, f"wrong law not rejected: chi2 {bad.chi2:.1f}/{bad.dof}"
