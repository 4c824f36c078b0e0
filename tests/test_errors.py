"""Bad input gets one clear error that names the fix."""
import numpy as np
import pytest

from langevin_sim import BackendUnavailableError, ConfigError, Simulation
from langevin_sim.dynamics import MALA, SGD, OverdampedLangevin, Schedule, UnderdampedLangevin
from langevin_sim.potentials import DoubleWell, LinearRegression, Quadratic


def test_unknown_backend():
    with pytest.raises(ConfigError, match="unknown backend 'gpu'.*numpy, numba, cuda"):
        Simulation(DoubleWell(), OverdampedLangevin(), 4, backend="gpu")


def test_cuda_without_cupy_names_the_install():
    pytest.importorskip("numpy")
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailableError, match=r"pip install 'langevin_sim\[gpu\]'"):
        Simulation(DoubleWell(), OverdampedLangevin(), 4, backend="cuda")


@pytest.mark.parametrize("make", [
    lambda: OverdampedLangevin(0.1, -1.0),
    lambda: UnderdampedLangevin(0.1, 1.0, -0.5),
    lambda: SGD(0.1, temperature=-1),
    lambda: OverdampedLangevin(0.1, Schedule("linear", 1.0, -1.0, 10)),
])
def test_negative_temperature(make):
    with pytest.raises(ConfigError, match="temperature must be >= 0"):
        make()


@pytest.mark.parametrize("make", [
    lambda: OverdampedLangevin(0.0, 1.0), lambda: UnderdampedLangevin(-0.1), lambda: MALA(0),
    lambda: SGD(lr=-1.0),
])
def test_non_positive_step(make):
    with pytest.raises(ConfigError, match="must be > 0"):
        make()


def test_init_shape_mismatch():
    with pytest.raises(ConfigError, match=r"init has shape \(4, 2\).*\(5, 3\)"):
        Simulation(DoubleWell(d=3), OverdampedLangevin(), 5, init=np.zeros((4, 2)))


@pytest.mark.parametrize("H,msg", [
    (np.array([[1.0, 0.5], [0.0, 1.0]]), "not symmetric"),
    (np.array([[1.0, 2.0], [2.0, 1.0]]), "not positive-definite"),
    (np.ones(3), "square"),
])
def test_quadratic_needs_spd(H, msg):
    with pytest.raises(ConfigError, match=msg):
        Quadratic(H)


def test_sgd_batch_checks():
    with pytest.raises(ConfigError, match="exceeds the 10 samples"):
        Simulation(LinearRegression(n=10, d=2), SGD(0.1, 32), 2)
    with pytest.raises(ConfigError, match="finite-sum"):
        Simulation(DoubleWell(), SGD(0.1, 4), 2)


def test_other_inputs():
    with pytest.raises(ConfigError, match="dtype"):
        Simulation(DoubleWell(), OverdampedLangevin(), 2, dtype="float16")
    with pytest.raises(ConfigError, match="replicas"):
        Simulation(DoubleWell(), OverdampedLangevin(), 0)
    with pytest.raises(ConfigError, match="seed"):
        Simulation(DoubleWell(), OverdampedLangevin(), 2, seed=-3)


def test_output_exists(tmp_run):
    sim = Simulation(DoubleWell(), OverdampedLangevin(), 2)
    sim.run(10, 5, out=tmp_run, progress=False).close()
    with pytest.raises(ConfigError, match="exists.*overwrite"):
        sim.run(10, 5, out=tmp_run, progress=False)
    sim.run(10, 5, out=tmp_run, progress=False, overwrite=True).close()
