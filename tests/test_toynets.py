"""Toy networks: backprop and R-operator against finite differences, data and observables
against naive loops, SGD/AdamW streams (partition, resume), the fused Numba kernel against
the NumPy reference, teacher-student learning and grokking."""
import math

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from langevin_sim import ConfigError, Simulation, open_run
from langevin_sim.dynamics import SGD, AdamW, Schedule
from langevin_sim.potentials import LinearRegression, ModularArithmeticMLP, TeacherStudentMLP
from langevin_sim.potentials.toynets import ACTIVATIONS, act

from .conftest import both_backends

NETS = {
    "ts-tanh": lambda: TeacherStudentMLP(n=23, d_in=3, hidden=5, teacher_hidden=2, n_test=7, seed=1,
                                         n_val=4),
    "ts-relu": lambda: TeacherStudentMLP(n=19, d_in=4, hidden=3, teacher_hidden=3, n_test=5,
                                         activation="relu", seed=2),
    "ts-quadratic": lambda: TeacherStudentMLP(n=17, d_in=2, hidden=4, teacher_hidden=1, n_test=5,
                                              activation="quadratic", seed=3),
    "mod-onehot-relu": lambda: ModularArithmeticMLP(p=5, hidden=4, train_fraction=0.6, seed=4),
    "mod-onehot-quadratic": lambda: ModularArithmeticMLP(p=5, hidden=3, activation="quadratic", seed=5),
    "mod-embed-tanh": lambda: ModularArithmeticMLP(p=5, hidden=4, embed=3, activation="tanh", seed=6),
}


def random_point(pot, M=3, seed=0):
    return 0.7 * np.random.default_rng(seed).standard_normal((M, pot.d))


def central_differences(f, x, eps):
    """Columns j of (f(x + eps e_j) - f(x - eps e_j)) / (2 eps) for f: (M, d) -> (M, ...),
    all d perturbations evaluated at once as M*d extra replicas: returns (M, ..., d)."""
    M, d = x.shape
    E = eps * np.eye(d)
    xp = (x[:, None, :] + E).reshape(M * d, d)
    xm = (x[:, None, :] - E).reshape(M * d, d)
    diff = (f(xp) - f(xm)) / (2 * eps)
    return np.moveaxis(diff.reshape((M, d) + diff.shape[1:]), 1, -1)


@pytest.mark.parametrize("name", sorted(NETS))
def test_gradient_matches_finite_differences(name):
    """Central differences with eps = 1e-6 have error ~ eps^2 f''' + 1e-16 |f| / eps ~ 1e-10
    relative; 1e-7 leaves three orders of margin, a wrong term is off by O(1)."""
    pot = NETS[name]()
    x = random_point(pot)
    fd = central_differences(pot.energy, x, 1e-6)
    g = pot.grad(x)
    assert g.shape == x.shape
    np.testing.assert_allclose(g, fd, rtol=0, atol=1e-7 * np.abs(fd).max())
    # minibatch gradient: the mean over the rows of batch[m], repeated rows included
    M, B = x.shape[0], 6
    batch = np.random.default_rng(1).integers(0, pot.n_samples, (M, B))
    fdb = central_differences(lambda y: pot.batch_loss(y, np.repeat(batch, pot.d, axis=0)), x, 1e-6)
    np.testing.assert_allclose(pot.grad(x, batch), fdb, rtol=0, atol=1e-7 * np.abs(fdb).max())
    # the batch of all samples is the full loss
    allrows = np.tile(np.arange(pot.n_samples), (M, 1))
    np.testing.assert_allclose(pot.grad(x, allrows), g, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(pot.batch_loss(x, allrows), pot.energy(x), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(NETS))
def test_hessian_matches_gradient_differences(name):
    """Analytic Hessians (column by column from the R-operator hvp) against central
    differences of the analytic gradient; same error budget as the gradient test."""
    pot = NETS[name]()
    x = random_point(pot, M=2, seed=3)
    H = pot.hessian(x)
    fd = central_differences(pot.grad, x, 1e-6)
    np.testing.assert_allclose(H, fd, rtol=0, atol=1e-7 * np.abs(fd).max())
    v = np.random.default_rng(4).standard_normal(x.shape)
    np.testing.assert_allclose(pot.hvp(x, v), np.einsum("mij,mj->mi", H, v), rtol=1e-10,
                               atol=1e-12 * np.abs(H).max() * np.abs(v).sum())
    batch = np.random.default_rng(5).integers(0, pot.n_samples, (2, 5))
    fdb = (pot.grad(x + 1e-6 * v, batch) - pot.grad(x - 1e-6 * v, batch)) / 2e-6
    np.testing.assert_allclose(pot.hvp(x, v, batch), fdb, rtol=0, atol=1e-7 * np.abs(fdb).max())


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("chunk", [None, 1])
def test_hvp_at_gives_hvp_bit_for_bit(name, chunk, monkeypatch):
    """The operator `hvp_at(x)` (x's passes done once, for Lanczos and Hutchinson) returns
    exactly `hvp(x, v)` for several v in turn, in both dtypes; with replica chunks (each
    product redoing its passes) too."""
    from langevin_sim.potentials import toynets

    if chunk is not None:
        monkeypatch.setattr(toynets, "CHUNK_ELEMENTS", chunk)
    pot = NETS[name]()
    rng = np.random.default_rng(7)
    for dtype in (np.float64, np.float32):
        x = random_point(pot, M=4, seed=8).astype(dtype)
        op = pot.hvp_at(x)
        for _ in range(3):
            v = rng.standard_normal(x.shape).astype(dtype)
            hv = op(v)
            assert hv.dtype == dtype and np.array_equal(hv, pot.hvp(x, v))


def naive_mlp(a, W1, b1, W2, b2, activation):
    """One sample through the network with explicit loops (the test's own reference)."""
    h = [act(np.array(sum(W1[j, i] * a[i] for i in range(a.size)) + b1[j]), ACTIVATIONS[activation])
         for j in range(b1.size)]
    return np.array([sum(W2[k, j] * h[j] for j in range(b1.size)) + b2[k] for k in range(b2.size)])


def test_teacher_student_losses_against_naive_loops():
    pot = TeacherStudentMLP(n=11, d_in=3, hidden=4, teacher_hidden=2, n_test=6, seed=8, n_val=5)
    x = random_point(pot, M=2)
    P = pot.layout.unpack(x)
    obs = pot.observables(x)
    assert list(obs) == ["train_loss", "test_loss", "val_loss", "weight_norm"]
    for m in range(2):
        net = [P[k][m] for k in ("W1", "b1", "W2", "b2")]
        losses = {name: np.mean([0.5 * (naive_mlp(a, *net, "tanh")[0] - y) ** 2
                                 for a, y in zip(A, Y)])
                  for name, A, Y in (("train", pot.inputs, pot.labels),
                                     ("test", pot.test_inputs, pot.test_labels),
                                     ("val", pot.val_inputs, pot.val_labels))}
        assert math.isclose(pot.energy(x)[m], losses["train"], rel_tol=1e-12)
        for name, want in losses.items():
            assert math.isclose(obs[f"{name}_loss"][m], want, rel_tol=1e-12)
        assert math.isclose(obs["weight_norm"][m], math.sqrt(np.sum(x[m] ** 2)), rel_tol=1e-12)
    # parameter layout: W1 row-major first, then b1, W2, b2
    assert pot.d == 4 * 3 + 4 + 4 + 1
    assert P["W1"][1, 2, 1] == x[1, 2 * 3 + 1] and P["b2"][0, 0] == x[0, -1]


def test_modular_losses_and_accuracies_against_naive_loops():
    pot = ModularArithmeticMLP(p=5, hidden=6, embed=2, train_fraction=0.4, seed=3)
    x = random_point(pot, M=2, seed=2)
    P = pot.layout.unpack(x)
    obs = pot.observables(x)
    for m in range(2):
        net = [P[k][m] for k in ("W1", "b1", "W2", "b2")]
        for pairs, tag in ((pot.train_pairs, "train"), (pot.test_pairs, "test")):
            losses, hits = [], []
            for a, b in pairs:
                logits = naive_mlp(np.concatenate([P["E"][m, a], P["E"][m, b]]), *net, "relu")
                c = (a + b) % 5
                losses.append(math.log(np.sum(np.exp(logits))) - logits[c])
                hits.append(np.argmax(logits) == c)
            assert math.isclose(obs[f"{tag}_loss"][m], np.mean(losses), rel_tol=1e-12)
            assert obs[f"{tag}_accuracy"][m] == np.mean(hits)
        assert math.isclose(pot.energy(x)[m], obs["train_loss"][m], rel_tol=1e-12)


def test_modular_split():
    pot = ModularArithmeticMLP(p=7, train_fraction=0.3, seed=11)
    train = {tuple(r) for r in pot.train_pairs}
    test = {tuple(r) for r in pot.test_pairs}
    assert len(train) == pot.n_samples == round(0.3 * 49) and not train & test
    assert train | test == {(a, b) for a in range(7) for b in range(7)}
    assert {tuple(r) for r in ModularArithmeticMLP(p=7, train_fraction=0.3, seed=12).train_pairs} != train


def test_teacher_student_labels_are_teacher_plus_noise():
    """Residuals y - f*(a) are the label noise: their std over N = 4096 samples is noise
    within 4 standard errors (SE of a normal sample std = noise / sqrt(2N)); the same for the
    validation set alone (N = 2048), whose inputs are standard normal too."""
    pot = TeacherStudentMLP(n=2048, n_test=2048, d_in=5, teacher_hidden=3, noise=0.3, seed=5,
                            n_val=2048)
    r = np.concatenate([pot.labels - pot.teacher(pot.inputs), pot.test_labels - pot.teacher(pot.test_inputs)])
    rv = pot.val_labels - pot.teacher(pot.val_inputs)
    for r in (r, rv):
        assert abs(r.std() - 0.3) <= 4 * 0.3 / math.sqrt(2 * r.size)
        assert abs(r.mean()) <= 4 * 0.3 / math.sqrt(r.size)
    a = pot.val_inputs.ravel()
    assert abs(a.std() - 1) <= 4 / math.sqrt(2 * a.size) and abs(a.mean()) <= 4 / math.sqrt(a.size)


def test_a_validation_set_leaves_the_training_and_test_sets_as_they_were():
    """n_val adds samples of its own (not copies of training or test samples) and changes
    neither the data, the teacher nor the observables already recorded; without it there is
    no val_loss (and asking for one says how to get it)."""
    base = TeacherStudentMLP(n=13, d_in=3, teacher_hidden=2, n_test=9, noise=0.2, seed=4)
    pot = TeacherStudentMLP(n=13, d_in=3, teacher_hidden=2, n_test=9, noise=0.2, seed=4, n_val=6)
    for k, v in base.arrays().items():
        assert np.array_equal(getattr(pot, k), v), k
    assert pot.val_inputs.shape == (6, 3) and base.val_inputs.shape == (0, 3)
    seen = np.concatenate([pot.inputs, pot.test_inputs])
    assert not np.isin(pot.val_inputs, seen).any()
    x = random_point(pot, M=3)
    obs, obs0 = pot.observables(x), base.observables(x)
    assert "val_loss" not in obs0 and set(obs) == set(obs0) | {"val_loss"}
    for k, v in obs0.items():
        assert np.array_equal(obs[k], v), k
    with pytest.raises(ConfigError, match="n_val > 0"):
        base.val_loss(x)
    with pytest.raises(ConfigError, match="n_val"):
        TeacherStudentMLP(n_val=-1)


@pytest.mark.parametrize("name", ["ts-tanh", "mod-embed-tanh"])
def test_instance_round_trip_through_run_file(name, tmp_run):
    pot = NETS[name]()
    sim = Simulation(pot, SGD(0.05, 4), 3, backend="numpy", seed=2)
    run = sim.run(20, 10, out=tmp_run)
    back = open_run(tmp_run).potential
    assert type(back) is type(pot) and back.params() == pot.params()
    x = np.asarray(run.positions[-1])
    np.testing.assert_array_equal(back.energy(x), pot.energy(x))
    for k in ("test_loss", "val_loss") if "val_loss" in run.names else ("test_loss",):
        np.testing.assert_array_equal(run[k][-1], pot.observables(x)[k])
    assert name != "ts-tanh" or back.n_val == 4 and np.array_equal(back.val_labels, pot.val_labels)


def test_config_errors():
    with pytest.raises(ConfigError, match="activation"):
        TeacherStudentMLP(activation="gelu")
    with pytest.raises(ConfigError, match="train_fraction"):
        ModularArithmeticMLP(p=5, train_fraction=1.0)
    with pytest.raises(ConfigError, match="batch"):
        TeacherStudentMLP().grad(np.zeros((2, TeacherStudentMLP().d)), np.zeros((3, 4), int))
    with pytest.raises(ConfigError, match="beta2"):
        AdamW(beta2=1.0)
    with pytest.raises(ConfigError, match="exceeds"):
        Simulation(ModularArithmeticMLP(p=3), AdamW(batch_size=100), 2)


# ---------------------------------------------------------------- dynamics on the nets

TS_SMALL = TeacherStudentMLP(n=37, d_in=3, hidden=5, teacher_hidden=2, n_test=11, seed=7)
SGD_CASES = {
    "permutation": SGD(Schedule("linear", 0.08, 0.02, 250), 7, momentum=0.3, weight_decay=1e-3,
                       temperature=1e-4),
    "replacement": SGD(0.05, 6, sampling="iid"),
    "full-batch": SGD(0.05, None, momentum=0.5),
    "noise-models": SGD(0.05, 6, momentum=0.5, sampling="subset", label_noise=0.1,
                        grad_noise=0.05),
}


# each (case, dtype) compiles a kernel of its own (the sampling and the noises are compile-time
# options, the activation a run-time one): float32 takes the case with the most code (subset
# sampling, label and gradient noise) by default, the others with -m slow
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype, case", [
    pytest.param(dt, c, marks=() if dt == "float64" or c == "noise-models" else pytest.mark.slow)
    for dt in ("float64", "float32") for c in sorted(SGD_CASES)])
def test_numba_matches_numpy(dtype, case, activation):
    """Fused kernel vs reference over 250 steps, M = 5 replicas (odd), n = 37, B = 7 or 6,
    d = 26.  float64: both evaluate the same formulas, differences are summation order
    (~1e-15 per step); float32: ~1e-7 per step, 2e-4 allows the growth over 250 steps."""
    pot = TeacherStudentMLP(n=37, d_in=3, hidden=5, teacher_hidden=2, n_test=11, seed=7,
                            activation=activation, init_scale=0.8)
    sims = both_backends(pot, SGD_CASES[case], 5, 250, seed=13, dtype=dtype)
    assert all((sim.diverged_step < 0).all() for sim in sims.values())
    out = {b: sim.state for b, sim in sims.items()}
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == "float64" else dict(rtol=2e-4, atol=2e-4)
    for k in out["numpy"]:
        np.testing.assert_allclose(out["numba"][k], out["numpy"][k], **tol, err_msg=f"state {k}")


def test_numba_freezes_diverging_replicas_like_numpy():
    dyn = SGD(Schedule("linear", 0.05, 40.0, 60), 5)
    res = {b: (sim.diverged_step, sim.state["x"]) for b, sim in
           both_backends(TS_SMALL, dyn, 4, 80, seed=1, divergence_bound=50.0).items()}
    assert (res["numpy"][0] > 0).any()
    np.testing.assert_array_equal(res["numba"][0], res["numpy"][0])
    np.testing.assert_allclose(res["numba"][1], res["numpy"][1], rtol=1e-9, atol=1e-10)


STREAM_PAIRS = {
    "ts-sgd-permutation": (TS_SMALL, SGD_CASES["permutation"]),
    "ts-sgd-replacement": (TS_SMALL, SGD_CASES["replacement"]),
    "ts-sgd-noise-models": (TS_SMALL, SGD_CASES["noise-models"]),
    "mod-adamw-permutation": (ModularArithmeticMLP(p=5, hidden=4, seed=2), AdamW(0.01, 4, weight_decay=0.5)),
    "mod-adamw-replacement": (ModularArithmeticMLP(p=5, hidden=4, embed=2, seed=2),
                              AdamW(0.01, 3, sampling="iid")),
}


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", sorted(STREAM_PAIRS))
def test_partition_and_resume_invariance(backend, name):
    """Replicas split over two Simulations (first_replica) and a run cut at step 100 and
    continued by a new Simulation from the carried state give the identical trajectory."""
    pot, dyn = STREAM_PAIRS[name]
    M = 6
    whole = Simulation(pot, dyn, M, backend=backend, seed=21)
    whole.advance(300)
    parts = [Simulation(pot, dyn, r, backend=backend, seed=21, first_replica=r0)
             for r0, r in ((0, 2), (2, 4))]
    for p in parts:
        p.advance(300)
    first = Simulation(pot, dyn, M, backend=backend, seed=21)
    first.advance(100)
    second = Simulation(pot, dyn, M, backend=backend, seed=21, init=first.state["x"])
    second.state = {k: v.copy() for k, v in first.state.items()}
    second.step = first.step
    second.advance(200)
    for k in whole.state:
        np.testing.assert_array_equal(np.concatenate([p.state[k] for p in parts]), whole.state[k])
        np.testing.assert_array_equal(second.state[k], whole.state[k])


def test_teacher_student_sgd_learns_the_teacher():
    """Realizable teacher-student (teacher width 4, student width 16, tanh, label noise 0.01):
    minibatch SGD brings the test loss of every replica below 1% of its initial value and
    below 1% of var(y_test)/2 (the loss of the best constant predictor).  Its floor is the
    label noise, noise^2/2 = 5e-5, ~1e-4 of the initial loss."""
    pot = TeacherStudentMLP(n=512, d_in=8, hidden=16, teacher_hidden=4, noise=0.01, n_test=1024, seed=1)
    sim = Simulation(pot, SGD(0.05, 32, momentum=0.9), 4, backend="numba", seed=0)
    run = sim.run(2000, 500, record_positions=False, progress=False)
    test_loss = np.asarray(run["test_loss"])
    assert (test_loss[-1] < 0.01 * test_loss[0]).all(), test_loss
    assert (test_loss[-1] < 0.01 * np.var(pot.test_labels) / 2).all(), test_loss


# ---------------------------------------------------------------- AdamW

def test_adamw_first_step_and_bias_correction():
    """At t = 0 the bias-corrected moments are g and g^2, so the step is
    x1 = x0 - lr (wd x0 + g / (|g| + eps)) exactly; at t = 1 with a second gradient g1,
    mhat = (beta1 (1-beta1) g0 + (1-beta1) g1) / (1 - beta1^2), similarly shat."""
    pot = LinearRegression(n=40, d=5, seed=2)
    dyn = AdamW(lr=0.01, beta1=0.8, beta2=0.9, eps=1e-3, weight_decay=0.5)
    sim = Simulation(pot, dyn, 3, backend="numpy", seed=1)
    x0 = sim.state["x"].copy()
    g0 = pot.grad(x0)
    sim.advance(1)
    x1 = x0 - 0.01 * (0.5 * x0 + g0 / (np.abs(g0) + 1e-3))
    np.testing.assert_allclose(sim.state["x"], x1, rtol=1e-14)
    g1 = pot.grad(x1)
    sim.advance(1)
    mhat = (0.8 * 0.2 * g0 + 0.2 * g1) / (1 - 0.8 ** 2)
    shat = (0.9 * 0.1 * g0 ** 2 + 0.1 * g1 ** 2) / (1 - 0.9 ** 2)
    np.testing.assert_allclose(sim.state["x"], x1 - 0.01 * (0.5 * x1 + mhat / (np.sqrt(shat) + 1e-3)),
                               rtol=1e-14)


def test_adamw_converges_to_least_squares():
    """Without weight decay and with a decaying lr, full-batch AdamW ends at the
    least-squares minimizer (distance far below the ~lr_end step scale)."""
    pot = LinearRegression(n=60, d=4, seed=5)
    sim = Simulation(pot, AdamW(Schedule("exponential", 0.05, 1e-5, 3000), weight_decay=0.0), 3,
                     backend="numpy", seed=2)
    sim.advance(3000)
    np.testing.assert_allclose(sim.state["x"], np.broadcast_to(pot.minimizer(), (3, 4)), atol=1e-4)


# ---------------------------------------------------------------- grokking

def test_grokking_delay():
    """scenarios/grokking.py setting (p = 23, one-hot, width 64, quadratic activation, 60% of
    pairs, full-batch AdamW lr 3e-3, beta2 0.98, weight decay 1), 3 replicas, 3000 steps
    (~8 s): every replica fits the training set (accuracy 1.0) at least 5x earlier than its
    test accuracy reaches 0.9 (measured: step 150 vs 1700-1850), and its test accuracy at
    that earlier step is below 0.1 (chance is 1/23; measured 0-0.01)."""
    from langevin_sim.scenario import load_scenario, resolve_params

    mod = load_scenario("scenarios/grokking.py")
    p = resolve_params(mod.Params, sets={"replicas": 3, "steps": 3000, "record_every": 50,
                                         "backend": "numpy"})
    with threadpool_limits(1, user_api="blas"):
        sim = mod.build(p)
        run = sim.run(p.steps, p.record_every, record_positions=False, progress=False)
    step = np.asarray(run.step)
    train, test = np.asarray(run["train_accuracy"]), np.asarray(run["test_accuracy"])
    for m in range(p.replicas):
        assert (train[:, m] == 1.0).any() and (test[:, m] >= 0.9).any(), (train[:, m], test[:, m])
        fit = np.argmax(train[:, m] == 1.0)
        grok = np.argmax(test[:, m] >= 0.9)
        assert step[grok] >= 5 * step[fit], (step[fit], step[grok])
        assert test[fit, m] < 0.1


@pytest.mark.parametrize("name", ["ts-relu", "ts-quadratic", "mod-onehot-relu",
                                  "mod-onehot-quadratic"])
def test_rescaled_units_keep_the_function_and_transform_the_hessian(name):
    """Rescaling hidden units (W1, b1 by c, W2 by c^-k) is a symmetry of relu (k = 1) and
    quadratic (k = 2) nets: energy and every observable are unchanged, and since L(D z) = L(z)
    for the diagonal map D, the Hessian at D x is D^-1 H(x) D^-1: hvp(Dx, v) = D^-1 hvp(x,
    D^-1 v), so the top eigenvalue moves while nothing the net computes does."""
    from langevin_sim.potentials.sharpness import top_eigenvalue

    pot = NETS[name]()
    x = random_point(pot, M=3, seed=5)
    c = np.exp(np.random.default_rng(6).uniform(-1, 1, (3, pot.hidden)))
    y = pot.rescaled(x, c)
    np.testing.assert_allclose(pot.energy(y), pot.energy(x), rtol=1e-12)
    for k, v in pot.observables(x).items():
        if k != "weight_norm":
            np.testing.assert_allclose(pot.observables(y)[k], v, rtol=1e-11, atol=1e-14, err_msg=k)
    D = pot.rescaled(np.ones_like(x), c)                 # the diagonal of the map, per replica
    assert np.allclose(y, D * x) and not np.allclose(D, 1)
    v = np.random.default_rng(7).standard_normal(x.shape)
    np.testing.assert_allclose(pot.hvp(y, v), pot.hvp(x, v / D) / D, rtol=1e-9,
                               atol=1e-9 * np.abs(pot.hvp(y, v)).max())
    s0, s1 = top_eigenvalue(pot, x, iters=pot.d), top_eigenvalue(pot, y, iters=pot.d)
    assert np.all(np.abs(np.log(s1 / s0)) > 0.05), (s0, s1)
    assert np.array_equal(pot.rescaled(x, 1.0), x)


def test_rescaling_errors():
    with pytest.raises(ConfigError, match="no rescaling symmetry"):
        NETS["ts-tanh"]().rescaled(np.zeros((1, NETS["ts-tanh"]().d)), 2.0)
    pot = NETS["ts-relu"]()
    with pytest.raises(ConfigError, match="> 0"):
        pot.rescaled(np.zeros((2, pot.d)), -1.0)


def test_own_data_without_a_teacher_is_one_error_naming_it():
    """Own inputs= without teacher_W1/teacher_W2 crashed in NumPy's matmul (the validation
    set's labels call the teacher)."""
    from langevin_sim.errors import ConfigError

    X = np.random.default_rng(0).normal(size=(6, 2))
    with pytest.raises(ConfigError, match=r"teacher_W1 \(2, 2\) and teacher_W2 \(2,\)"):
        TeacherStudentMLP(n=4, d_in=2, teacher_hidden=2, n_test=2, inputs=X[:4], labels=X[:4, 0],
                          test_inputs=X[4:], test_labels=X[4:, 0])
