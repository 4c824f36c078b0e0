"""Record-time observables by a family's compiled code (`Hooks.observables`): equal to the
potential's own `observables` on float64 rows (accuracies exactly, losses to rounding), in both
state dtypes, and used by the numba backend's records from `COMPILED_ENERGY_SIZE` numbers on
(a run's records equal the NumPy backend's).  Families come from the drivers' registry."""
import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.backends import numba_backend
from langevin_sim.dynamics import SGD, AdamW
from langevin_sim.kernels import drivers

from .test_fused_pairs import POTS

OBSERVED = sorted(c.__name__ for c, h in drivers.FAMILIES.items() if h.observables is not None)


def test_the_toy_nets_have_compiled_observables():
    assert {"TeacherStudentMLP", "ModularArithmeticMLP", "ClassifierMLP"} <= set(OBSERVED)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", OBSERVED)
def test_compiled_observables_equal_the_potentials(name, dtype):
    pot = POTS[name]()
    rng = np.random.default_rng(3)
    x = (pot.default_init(rng.normal(size=(7, pot.d))) + 0.3 * rng.normal(size=(7, pot.d))).astype(dtype)
    x64 = x.astype(np.float64)
    energy = pot.energy(x64)
    got = drivers.observables_kernel(pot)(x, energy)
    want = pot.observables(x64)
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k].dtype == np.float64 and got[k].shape == v.shape, k
        if k.endswith("accuracy"):
            np.testing.assert_array_equal(got[k], v, err_msg=k)
        else:
            np.testing.assert_allclose(got[k], v, rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.parametrize("name", OBSERVED)
def test_a_records_observables_reuse_its_energys_training_pass(monkeypatch, name):
    """A record's observables take the training set's losses and accuracies from the energy
    pass over the same x that returned the energy array they get (a classifier's training set
    is evaluated once a record, not twice); the same values bit for bit as their own pass,
    which they make for any other array of energies."""
    from langevin_sim.kernels import toynets
    pot = POTS[name]()
    x = pot.default_init(np.random.default_rng(5).normal(size=(6, pot.d))).astype(np.float32)
    passes = []
    real = toynets.metrics
    monkeypatch.setattr(toynets, "metrics", lambda *a: passes.append(1) or real(*a))
    energy = drivers.energy_kernel(pot)(x)
    reused = drivers.observables_kernel(pot)(x, energy)
    n_reused = len(passes) - 1
    passes.clear()
    own = drivers.observables_kernel(pot)(x, energy.copy())
    assert len(passes) == n_reused + ("train_accuracy" in own)
    assert sorted(reused) == sorted(own)
    for k in own:
        np.testing.assert_array_equal(reused[k], own[k], err_msg=k)
    passes.clear()
    energy[0] += 1.0            # no longer the pass's values: the observables make their own
    drivers.observables_kernel(pot)(x, energy)
    assert len(passes) == n_reused + ("train_accuracy" in own)


# the dynamics whose records are compared: options (sampling, noises) whose fused kernels the
# toy nets' own tests compile too (test_toynets, test_toynet_kernels), ~3 s of compilation each
RECORDED_DYNAMICS = {"TeacherStudentMLP": SGD(2e-2, 4, momentum=0.5),
                     "ClassifierMLP": SGD(2e-2, 4, momentum=0.5),
                     "ModularArithmeticMLP": AdamW(1e-2, 4)}


# the wiring is one code path for every net (`drivers.observables_kernel`), each net's
# compiled numbers are `test_compiled_observables_equal_the_potentials`'; the default suite
# runs it on the cheapest net (the others: 6 s of compilation each, slow)
@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "TeacherStudentMLP" else
                                               pytest.mark.slow) for n in OBSERVED])
def test_numba_records_take_the_compiled_observables(monkeypatch, name):
    """With the size threshold at 1 every numba record takes the compiled observables; the
    records equal a NumPy-backend run's (float64)."""
    pot = POTS[name]()
    calls = []
    real = drivers.observables_kernel
    monkeypatch.setattr(drivers, "observables_kernel", lambda p: calls.append(p) or real(p))
    monkeypatch.setattr(numba_backend, "COMPILED_ENERGY_SIZE", 1)
    runs = [Simulation(pot, RECORDED_DYNAMICS[name], 5, backend=be, seed=4).run(6, record_every=3)
            for be in ("numba", "numpy")]
    assert len(calls) == 3       # the probe record and two more
    names = [k for k in runs[1].names if k not in ("energy", "positions", "diverged_step")]
    assert "test_loss" in names
    for k in names:
        a, b = np.asarray(runs[0][k][:]), np.asarray(runs[1][k][:])
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=k)


ENERGY_HOOKED = sorted(c.__name__ for c, h in drivers.FAMILIES.items() if h.energy is not None)


@pytest.mark.slow     # compiles the energy driver beside the records' function
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ENERGY_HOOKED)
def test_a_familys_record_energy_equals_its_energy_driver(name, dtype):
    """A family's own record energy (`Hooks.energy`) gives, bit for bit, what the energy
    driver over its `energy_block` gives (MALA's energies)."""
    pot = POTS[name]()
    rng = np.random.default_rng(4)
    x = (pot.default_init(rng.normal(size=(9, pot.d))) + 0.3 * rng.normal(size=(9, pot.d))).astype(dtype)
    hooks = drivers.FAMILIES[type(pot)]
    want = np.empty(9)
    drivers.run_blocks(drivers.compiled(type(pot)).energy_driver, 9, hooks, x, want,
                       hooks.args_of(pot, np.dtype(np.float64)), rows=4)
    out = np.full(9, np.nan)
    got = drivers.energy_kernel(pot)(x, out)
    assert got is out and got.tobytes() == want.tobytes()
    assert {"TeacherStudentMLP", "ModularArithmeticMLP", "ClassifierMLP"} <= set(ENERGY_HOOKED)
