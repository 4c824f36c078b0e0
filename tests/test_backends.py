"""Numba kernels against the NumPy reference; partition and resume invariance."""
import subprocess
import sys
import warnings

import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.backends import numba_backend
from langevin_sim.dynamics import (MALA, SGD, AdamW, Heun, LeimkuhlerMatthews, OverdampedLangevin, Schedule,
                                   UnderdampedLangevin)
from langevin_sim.potentials import DoubleWell, LinearRegression, Quadratic

from .conftest import assert_split_matches, both_backends


def pairs():
    return {
        "dw-overdamped": (DoubleWell(d=3, barrier=1.5, a=0.8, tilt=0.1),
                          OverdampedLangevin(Schedule("linear", 5e-3, 1e-3, 700), 0.6)),
        "dw1-overdamped": (DoubleWell(d=1, tilt=0.2),
                           OverdampedLangevin(0.01, Schedule("exponential", 1.0, 0.3, 500))),
        "dw-baoab": (DoubleWell(d=2), UnderdampedLangevin(0.02, 2.0, Schedule("cosine", 1.0, 0.2, 800))),
        "quadratic-overdamped": (Quadratic(spectrum=np.linspace(0.5, 3, 5), seed=2,
                                           center=np.arange(5) * 0.1),
                                 OverdampedLangevin(0.05, 0.3)),
        "quadratic-baoab": (Quadratic(spectrum=np.linspace(0.5, 3, 5), seed=2, center=np.arange(5) * 0.1),
                            UnderdampedLangevin(0.1, 1.5, Schedule("linear", 0.5, 0.2, 600))),
        "quadratic-heun": (Quadratic(spectrum=np.linspace(0.5, 3, 5), seed=2, center=np.arange(5) * 0.1),
                           Heun(Schedule("linear", 0.08, 0.02, 600), 0.3)),
        "quadratic-lm": (Quadratic(spectrum=np.linspace(0.5, 3, 5), seed=2, center=np.arange(5) * 0.1),
                         LeimkuhlerMatthews(0.1, Schedule("cosine", 0.5, 0.2, 600))),
        "linreg-sgd": (LinearRegression(n=50, d=5, seed=3),
                       SGD(0.05, 8, momentum=0.3, weight_decay=1e-3, temperature=1e-3)),
        "linreg-sgd-replacement": (LinearRegression(n=50, d=5, seed=3), SGD(0.05, 7, sampling="iid")),
        "linreg-gd": (LinearRegression(n=50, d=5, seed=3), SGD(0.05, None, momentum=0.5)),
        "linreg-sgd-subset": (LinearRegression(n=50, d=5, seed=3),
                              SGD(0.05, 7, momentum=0.3, sampling="subset")),
        "linreg-sgd-label-noise": (LinearRegression(n=50, d=5, seed=3),
                                   SGD(0.05, 8, label_noise=0.5, temperature=1e-3)),
        "linreg-gd-label-noise": (LinearRegression(n=50, d=5, seed=3),
                                  SGD(0.05, None, momentum=0.5, label_noise=0.3)),
        "linreg-adamw-subset": (LinearRegression(n=50, d=5, seed=3),
                                AdamW(0.05, 7, weight_decay=1e-2, sampling="subset")),
        "linreg-sgd-grad-noise": (LinearRegression(n=50, d=5, seed=3),
                                  SGD(0.05, 8, momentum=0.5, sampling="iid", grad_noise=0.3,
                                      temperature=1e-3)),
    }


PAIRS = pairs()


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_numba_matches_numpy_float64(name):
    pot, dyn = PAIRS[name]
    out = {b: sim.state for b, sim in both_backends(pot, dyn, 13, 1000, seed=42).items()}
    for k in out["numpy"]:
        np.testing.assert_allclose(out["numba"][k], out["numpy"][k], rtol=1e-9, atol=1e-11,
                                   err_msg=f"{name}: state {k}")


# every kernel in float32 too; LinearRegression x SGD compiles per sampling and set of noises,
# so float32 takes the two cases that between them turn on every noise (epoch and iid draws)
# by default, the others with -m slow
@pytest.mark.parametrize("name", ["dw-overdamped", "dw-baoab", "quadratic-overdamped", "quadratic-baoab",
                                  "quadratic-heun", "quadratic-lm", "linreg-sgd-label-noise",
                                  "linreg-sgd-grad-noise"]
                         + [pytest.param(n, marks=pytest.mark.slow)
                            for n in ("linreg-sgd", "linreg-sgd-subset")])
def test_numba_matches_numpy_float32(name):
    pot, dyn = PAIRS[name]
    out = both_backends(pot, dyn, 9, 200, seed=1, dtype="float32")
    np.testing.assert_allclose(out["numba"].state["x"], out["numpy"].state["x"], rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_partition_invariance(backend, name):
    pot, dyn = PAIRS[name]
    M = 10
    whole = Simulation(pot, dyn, M, backend=backend, seed=9)
    whole.advance(150)
    parts = [Simulation(pot, dyn, M // 2, backend=backend, seed=9, first_replica=r0) for r0 in (0, M // 2)]
    for p in parts:
        p.advance(150)
    assert_split_matches(parts, whole, pot, what=name)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_chunking_invariance(backend, name):
    """K steps in one call equal the same steps in uneven calls (resume within a process)."""
    pot, dyn = PAIRS[name]
    a = Simulation(pot, dyn, 6, backend=backend, seed=3)
    a.advance(120)
    b = Simulation(pot, dyn, 6, backend=backend, seed=3)
    for k in (1, 37, 2, 80):
        b.advance(k)
    for k in a.state:
        np.testing.assert_array_equal(a.state[k], b.state[k])


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("dyn", [OverdampedLangevin(1e-2, 0.4), UnderdampedLangevin(0.05, 1.0, 0.4)],
                         ids=["overdamped", "baoab"])
def test_numba_freezes_diverging_replicas_like_numpy(d, dyn):
    """Replicas started at different distances overflow at different steps, in several
    tiles of the vectorized DoubleWell kernel (TILE lanes each, the last one partial); a
    frozen replica keeps its whole state (positions, and momenta and gradients for BAOAB)."""
    M = 600
    init = np.random.default_rng(0).uniform(-1.5, 1.5, (M, d))
    far = np.arange(5, M, 67)
    init[far, -1] = np.linspace(20.0, 60.0, far.size)      # gradient ~ 4 x^3: blows up
    out = both_backends(DoubleWell(d=d), dyn, M, 300, seed=5, init=init)
    (dn, sn), (db, sb) = ((out[b].diverged_step, out[b].state) for b in ("numpy", "numba"))
    assert np.array_equal(np.flatnonzero(dn >= 0), far) and len(set(dn[far])) > 1
    np.testing.assert_array_equal(db, dn)
    for k in sn:
        np.testing.assert_allclose(sb[k], sn[k], rtol=1e-9, atol=1e-11, err_msg=k)


@pytest.mark.parametrize("dyn", [OverdampedLangevin(0.6, 0.1), UnderdampedLangevin(1.2, 0.5, 0.1),
                                 Heun(0.6, 0.1), LeimkuhlerMatthews(0.6, 0.1)],
                         ids=["overdamped", "baoab", "heun", "lm"])
def test_quadratic_kernels_freeze_diverging_replicas_like_numpy(dyn):
    """Beyond the stability limit (eta lam_max > 2 overdamped, Heun and LM, eta sqrt(lam_max) > 2 BAOAB)
    replicas started at amplitudes 1e-3 .. 1e3 overflow the bound at different steps; the
    GEMM-block kernels flag the same steps and keep the others' states."""
    M, d = 40, 4
    pot = Quadratic(spectrum=[0.1, 0.5, 1.0, 4.0], seed=7)
    init = np.random.default_rng(1).standard_normal((M, d)) * np.logspace(-3, 3, M)[:, None]
    out = both_backends(pot, dyn, M, 400, seed=3, init=init)
    (dn, sn), (db, sb) = ((out[b].diverged_step, out[b].state) for b in ("numpy", "numba"))
    assert (dn >= 0).all() and len(set(dn)) > 5
    np.testing.assert_array_equal(db, dn)
    for k in sn:
        np.testing.assert_allclose(sb[k], sn[k], rtol=1e-9, atol=1e-11, err_msg=k)


def test_tiled_kernel_partition_and_chunks_across_tiles():
    """The tiled DoubleWell kernel (d = 1: TILE = 256 replicas a tile, 256-step noise chunks):
    an uneven split of 600 replicas and uneven calls crossing chunk and block boundaries give
    the bits of one call over all replicas."""
    pot, dyn = PAIRS["dw1-overdamped"]
    whole = Simulation(pot, dyn, 600, backend="numba", seed=4)
    whole.advance(600)
    parts = [Simulation(pot, dyn, n, backend="numba", seed=4, first_replica=r0)
             for r0, n in ((0, 293), (293, 307))]
    for p in parts:
        for k in (3, 254, 1, 342):
            p.advance(k)
    np.testing.assert_array_equal(np.concatenate([p.state["x"] for p in parts]), whole.state["x"])
    ref = Simulation(pot, dyn, 600, backend="numpy", seed=4)
    ref.advance(600)
    np.testing.assert_allclose(whole.state["x"], ref.state["x"], rtol=1e-9, atol=1e-11)


def fallback_warnings(run) -> list[str]:
    """Messages of the numba fallback warnings emitted while calling `run()`."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        run()
    return [str(w.message) for w in rec if "no fused kernel" in str(w.message)]


def test_numba_fallback_warns_once_per_pair_and_runs_the_reference(monkeypatch):
    """A pair without a fused kernel (MALA on DoubleWell, its kernel removed here: every
    valid pair has one) warns once per process, naming the pair, however many Simulations and
    calls follow, and gives the reference's bits."""
    from langevin_sim.backends import registry

    monkeypatch.setattr(numba_backend, "_warned", set())
    monkeypatch.delitem(registry.KERNELS, (DoubleWell, MALA, "numba"))
    pot, dyn = DoubleWell(d=2, tilt=0.1), MALA(0.05, 0.5)
    assert not numba_backend.has_kernel(pot, dyn)
    sim = Simulation(pot, dyn, 7, backend="numba", seed=2)

    def run():
        sim.advance(30)
        sim.advance(20)
        Simulation(pot, dyn, 3, backend="numba", seed=2).advance(5)

    msgs = fallback_warnings(run)
    assert len(msgs) == 1 and "DoubleWell x MALA" in msgs[0] and "NumPy reference" in msgs[0], msgs
    ref = Simulation(pot, dyn, 7, backend="numpy", seed=2)
    ref.advance(50)
    assert sim.state["accepted"].sum() > 0
    for k in ref.state:
        np.testing.assert_array_equal(sim.state[k], ref.state[k], err_msg=k)


def test_numba_fused_pair_does_not_warn(monkeypatch):
    monkeypatch.setattr(numba_backend, "_warned", set())
    pot, dyn = DoubleWell(d=2), OverdampedLangevin(0.01, 0.5)
    assert numba_backend.has_kernel(pot, dyn)
    assert fallback_warnings(lambda: Simulation(pot, dyn, 5, backend="numba", seed=1).advance(20)) == []


def test_kernel_for_answers_in_a_fresh_process():
    """docs/extending.md's way to see which kernel a pair takes answered None ("the
    reference") for every pair until something had imported langevin_sim.kernels."""
    code = ("from langevin_sim.backends import registry\n"
            "from langevin_sim.dynamics import Heun, OverdampedLangevin\n"
            "from langevin_sim.potentials import DoubleWell\n"
            "print(registry.kernel_for(DoubleWell(), OverdampedLangevin(), 'numba').fn.__name__,"
            " registry.kernel_for(DoubleWell(), Heun(), 'numba').fn.__name__,"
            " len(registry.pairs('numba')) > 10)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.split() == ["_overdamped_double_well", "generic_heun_driver", "True"], out


def test_registry_holds_every_fused_pair_once_and_refuses_unknown_backends():
    """One registry maps (potential, dynamics, backend) to a kernel; the numba backend finds
    its kernels there, a second kernel for a registered pair and unknown backends are refused."""
    from langevin_sim.backends import NAMES, registry
    from langevin_sim.potentials import ModularArithmeticMLP, SphericalPSpin, TeacherStudentMLP

    numba_pairs = set(registry.pairs("numba"))
    for pot, dyn in [(DoubleWell, OverdampedLangevin), (DoubleWell, UnderdampedLangevin),
                     (Quadratic, OverdampedLangevin), (Quadratic, UnderdampedLangevin),
                     (Quadratic, Heun), (Quadratic, LeimkuhlerMatthews), (LinearRegression, SGD),
                     (SphericalPSpin, OverdampedLangevin), (TeacherStudentMLP, SGD)]:
        assert (pot, dyn) in numba_pairs, (pot, dyn)
    assert registry.kernel_for(DoubleWell(), OverdampedLangevin(), "numba").first_passage
    assert not registry.kernel_for(Quadratic(spectrum=[1.0]), OverdampedLangevin(), "numba").first_passage
    assert registry.kernel_for(SphericalPSpin(N=4), MALA(0.01), "cuda") is None   # none: the
    # pair is refused by MALA; a net with a learned embedding: registered, `accepts` declines
    assert registry.kernel_for(ModularArithmeticMLP(p=3, hidden=2, embed=2), MALA(0.01),
                               "cuda").accepts is not None
    with pytest.raises(ValueError, match="unknown backend"):
        registry.register(DoubleWell, MALA, "gpu")
    with pytest.raises(ValueError, match="two numba kernels for DoubleWell x OverdampedLangevin"):
        registry.register(DoubleWell, OverdampedLangevin, "numba")(lambda sim, t0, K, k0, k1: None)
    assert set(b for _, _, b in registry.KERNELS) <= set(NAMES)


def test_registry_imports_no_kernel_module():
    """The registry imports nothing from the family modules (no import cycle): importing it
    loads no kernel module; the numba backend imports them all."""
    import subprocess
    import sys

    code = ("import sys, langevin_sim.backends.registry\n"
            "assert not [m for m in sys.modules if m.startswith('langevin_sim.kernels')]\n"
            "import langevin_sim.backends.numba_backend\n"
            "assert 'langevin_sim.kernels.double_well' in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_backend_names_are_defined_once():
    """`backends.NAMES` is the list: the scenarios' `backend` type and the CLI choices use it."""
    import typing

    from langevin_sim.backends import NAMES
    from langevin_sim.cli import build_parser
    from langevin_sim.scenario import Backend

    assert typing.get_args(Backend) == NAMES
    sub = next(a for a in build_parser()._actions if a.dest == "cmd").choices
    for cmd in ("run", "resume", "scan"):
        if cmd in sub:
            assert tuple(next(a for a in sub[cmd]._actions if a.dest == "backend").choices) == NAMES
