"""ClassifierMLP and `langevin_sim.datasets`: the seeded split and standardization, label
corruption, given arrays, the run-file round trip, the errors, and that a net trained by SGD
on the digits learns them (labels aligned with their images)."""
import builtins

import numpy as np
import pytest

from langevin_sim import Simulation, datasets, open_run
from langevin_sim.dynamics import SGD
from langevin_sim.errors import ConfigError
from langevin_sim.potentials import ClassifierMLP


def test_split_is_seeded_disjoint_and_standardized_by_the_training_set():
    X, y = datasets.load("wine")
    a = ClassifierMLP("wine", n=100, n_test=50, seed=3, hidden=4)
    b = ClassifierMLP("wine", n=100, n_test=50, seed=3, hidden=4)
    c = ClassifierMLP("wine", n=100, n_test=50, seed=4, hidden=4)
    assert np.array_equal(a.inputs, b.inputs) and not np.array_equal(a.inputs, c.inputs)
    np.testing.assert_allclose(a.inputs.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(a.inputs.std(axis=0), 1, rtol=1e-12)
    # the samples in the DATA stream's order: 100 for training, the next 50 for testing, both
    # scaled by the training set's statistics
    order = np.argsort(datasets.rng.stream_words(3, datasets.rng.DATA, [0], 0, len(y))[0],
                       kind="mergesort")
    train, test = order[:100], order[100:150]
    np.testing.assert_array_equal(a.labels, y[train])
    np.testing.assert_array_equal(a.test_labels, y[test])
    m, s = X[train].mean(axis=0), X[train].std(axis=0)
    np.testing.assert_allclose(a.test_inputs, (X[test] - m) / s, rtol=1e-12)
    assert (a.n_samples, a.n_test, a.classes, a.d_in) == (100, 50, 3, 13)
    assert a.d == 4 * 14 + 3 * 5


def test_defaults_take_half_for_training_and_the_rest_for_testing():
    p = ClassifierMLP("digits", hidden=2)
    assert (p.n_samples, p.n_test, p.classes, p.d_in) == (898, 899, 10, 64)
    # the constant pixels (always 0 in the training set) stay finite: centred, not scaled
    assert np.isfinite(p.inputs).all() and np.isfinite(p.test_inputs).all()


def test_label_corruption_makes_exactly_that_many_training_labels_wrong():
    clean = ClassifierMLP("digits", n=400, n_test=100, hidden=2, seed=1)
    q = ClassifierMLP("digits", n=400, n_test=100, hidden=2, seed=1, label_corruption=0.3)
    assert np.array_equal(q.labels, clean.labels)           # the true labels are kept
    assert np.array_equal(q.test_labels, clean.test_labels)
    wrong = q.corrupted()
    assert wrong.sum() == 120 and (q.train_labels[wrong] != q.labels[wrong]).all()
    assert np.array_equal(q.train_labels[~wrong], q.labels[~wrong])
    # the wrong classes spread over the others (10 classes, 120 draws: each seen)
    shift = (q.train_labels[wrong] - q.labels[wrong]) % 10
    assert set(shift) == set(range(1, 10))
    # the loss fits the corrupted labels: the energy differs from the clean net's
    x = q.default_init(np.random.default_rng(0).standard_normal((2, q.d)))
    assert not np.allclose(q.energy(x), clean.energy(x))
    assert ClassifierMLP("iris", n=50, n_test=10, hidden=2, label_corruption=1.0).corrupted().all()


def test_a_validation_set_leaves_the_training_and_test_sets_as_they_were():
    a = ClassifierMLP("digits", n=400, n_test=900, hidden=2, seed=2)
    b = ClassifierMLP("digits", n=400, n_test=900, hidden=2, seed=2, n_val=300)
    for k in ("inputs", "labels", "test_inputs", "test_labels"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    assert b.val_inputs.shape == (300, 64) and b.params()["n_val"] == 300
    assert "n_val" not in a.params() and "val_inputs" not in a.arrays()
    # the last 300 of the seed's order: none of them a training or test image
    rows = {r.tobytes() for r in np.vstack([b.inputs, b.test_inputs])}
    assert not any(r.tobytes() in rows for r in b.val_inputs)
    # without n_test, the test set is the rest less the validation set
    c = ClassifierMLP("digits", n=400, hidden=2, seed=2, n_val=300)
    assert c.n_test == 1797 - 400 - 300
    x = b.default_init(np.random.default_rng(0).standard_normal((3, b.d)))
    obs = b.observables(x)
    loss, acc = b.metrics(x, test="val")
    np.testing.assert_array_equal(obs["val_loss"], loss)
    np.testing.assert_array_equal(obs["val_accuracy"], acc)
    np.testing.assert_array_equal((b.predictions(x, "val") == b.val_labels).mean(axis=1), acc)
    with pytest.raises(ConfigError, match="n_val=5 but the arrays hold 300"):
        ClassifierMLP(**{**b.params(), "n_val": 5}, **b.arrays())
    assert np.array_equal(ClassifierMLP(**b.params(), **b.arrays()).val_labels, b.val_labels)


def test_given_arrays_are_used_as_they_are():
    rng = np.random.default_rng(0)
    A, T = rng.normal(size=(12, 3)), rng.normal(size=(5, 3))
    p = ClassifierMLP("mine", hidden=2, inputs=A, labels=np.arange(12) % 4, test_inputs=T,
                      test_labels=np.arange(5) % 4)
    assert np.array_equal(p.inputs, A) and p.classes == 4 and p.n_samples == 12
    assert p.params()["dataset"] == "mine"


def test_run_file_round_trip_needs_no_scikit_learn(tmp_path, monkeypatch):
    pot = ClassifierMLP("iris", n=60, n_test=30, hidden=3, seed=2, label_corruption=0.1)
    sim = Simulation(pot, SGD(0.1, 10), 3, backend="numpy", seed=1)
    sim.run(20, record_every=10, out=tmp_path / "c.h5")
    real_import = builtins.__import__

    def no_sklearn(name, *a, **k):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with open_run(tmp_path / "c.h5") as run:
        back = run.potential
    assert np.array_equal(back.train_labels, pot.train_labels)
    np.testing.assert_array_equal(back.energy(sim.state["x"]), pot.energy(sim.state["x"]))
    with pytest.raises(ConfigError, match=r"pip install -e \"\.\[datasets\]\""):
        ClassifierMLP("iris")


@pytest.mark.parametrize("kw, match", [
    (dict(dataset="mnist"), "unknown data set 'mnist'; choose one of"),
    (dict(dataset="iris", n=140, n_test=20), "has 150 samples"),
    (dict(dataset="iris", label_corruption=1.5), "label_corruption must be in"),
    (dict(dataset="x", inputs=np.ones((3, 2)), labels=[0, 1], test_inputs=np.ones((1, 2)),
          test_labels=[0]), r"labels must have shape \(3,\), one class per inputs row"),
    (dict(dataset="x", inputs=np.ones((3, 2)), labels=[0, 1, -1], test_inputs=np.ones((1, 2)),
          test_labels=[0]), "labels must be classes >= 0, got -1"),
    (dict(dataset="x", inputs=np.ones((3, 2)), labels=[0, 1.5, 1], test_inputs=np.ones((1, 2)),
          test_labels=[0]), r"labels must be integer classes 0 \.\. K-1, got float64 values such "
                            r"as \[0\.0, 1\.5, 1\.0\]"),
    (dict(dataset="x", inputs=np.ones((3, 2)), labels=[0, 0, 0], test_inputs=np.ones((1, 2)),
          test_labels=[0]), "one class"),
])
def test_errors_name_the_fix(kw, match):
    with pytest.raises(ConfigError, match=match):
        ClassifierMLP(**kw)


def test_predictions_are_what_the_accuracies_count():
    pot = ClassifierMLP("iris", n=60, n_test=30, hidden=3, seed=1, label_corruption=0.2)
    x = pot.default_init(np.random.default_rng(0).standard_normal((5, pot.d)))
    obs = pot.observables(x)
    train, test = pot.predictions(x), pot.predictions(x, test=True)
    assert train.shape == (5, 60) and test.shape == (5, 30)
    np.testing.assert_array_equal((train == pot.train_labels).mean(axis=1), obs["train_accuracy"])
    np.testing.assert_array_equal((test == pot.test_labels).mean(axis=1), obs["test_accuracy"])


def test_sgd_learns_the_digits():
    """Minibatch SGD (lr 0.1, batch 32, 1500 steps ~ 53 epochs) on 898 digits: the training
    and the held-out accuracy both far above chance (0.1), as a small net reaches on this data
    set (labels aligned with their images, features scaled).  NumPy (0.3 s; the numba kernel
    compiled for 10 s here, and its parity is tests/test_toynet_kernels.py's)."""
    pot = ClassifierMLP("digits", hidden=16, seed=0)
    sim = Simulation(pot, SGD(0.1, 32, momentum=0.5), 4, backend="numpy", seed=0)
    sim.advance(1500)
    obs = pot.observables(sim.state["x"])
    assert (obs["train_accuracy"] > 0.97).all(), obs
    assert (obs["test_accuracy"] > 0.9).all(), obs
    assert (obs["test_loss"] > obs["train_loss"]).all()
