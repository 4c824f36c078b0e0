import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def tmp_run(tmp_path):
    """A fresh run-file path."""
    return tmp_path / "run.h5"


def assert_within_se(estimate, exact, se, k=4.0, what="estimate"):
    """Stochastic check: |estimate - exact| <= k standard errors."""
    estimate, exact, se = map(np.asarray, (estimate, exact, se))
    z = (estimate - exact) / se
    assert np.all(np.abs(z) <= k), (
        f"stochastic test: {what} = {estimate} vs exact {exact}, z = {z} (tolerance {k} SE)")
