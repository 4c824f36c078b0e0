import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def tmp_run(tmp_path):
    """A fresh run-file path."""
    return tmp_path / "run.h5"


def both_backends(potential, dynamics, replicas, *steps, **kw):
    """{"numpy": sim, "numba": sim}: the same Simulation(potential, dynamics, replicas, **kw)
    on each backend, advanced by each count in `steps` in turn; the state keeps its dtype."""
    from langevin_sim import Simulation

    out = {}
    for backend in ("numpy", "numba"):
        sim = Simulation(potential, dynamics, replicas, backend=backend, **kw)
        for n in steps:
            sim.advance(n)
        assert sim.state["x"].dtype == np.dtype(kw.get("dtype", "float64"))
        out[backend] = sim
    return out


def assert_within_se(estimate, exact, se, k=4.0, what="estimate"):
    """Stochastic check: |estimate - exact| <= k standard errors."""
    estimate, exact, se = map(np.asarray, (estimate, exact, se))
    z = (estimate - exact) / se
    assert np.all(np.abs(z) <= k), (
        f"stochastic test: {what} = {estimate} vs exact {exact}, z = {z} (tolerance {k} SE)")
