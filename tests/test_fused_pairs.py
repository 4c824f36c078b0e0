"""Every valid (potential, dynamics) pair on the numba backend: fused (no fallback warning),
equal to the NumPy reference (float64 to rounding, float32 to float32 rounding), invariant
under replica partition and step chunking, with the reference's divergence flags; and the
compiled recording energies.  Pairs come from the potential and dynamics registries with the
small constructors below; a few cover every generic driver by default, the rest are slow
(each pair compiles its driver per dtype: seconds on a cold cache)."""
import warnings

import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.backends import numba_backend, registry
from langevin_sim.dynamics import REGISTRY as DYNAMICS
from langevin_sim.errors import ConfigError
from langevin_sim.kernels import drivers
from langevin_sim.potentials import REGISTRY as POTENTIALS

from .conftest import assert_split_matches

POTS = {
    "DoubleWell": lambda: POTENTIALS["DoubleWell"](d=3, barrier=1.5, a=0.8, tilt=0.1),
    "Quadratic": lambda: POTENTIALS["Quadratic"](spectrum=[0.5, 1.0, 3.0], seed=2,
                                                 center=[0.1, -0.2, 0.3]),
    "LinearRegression": lambda: POTENTIALS["LinearRegression"](n=12, d=3, seed=3),
    "MultiWell": lambda: POTENTIALS["MultiWell"](centers=[[-1.0, 0.0], [1.0, 0.5]],
                                                 spectra=[[1.0, 2.0], [4.0, 3.0]],
                                                 depths=[0.0, 0.2], softness=0.3, seed=1),
    "ScaleSymmetric": lambda: POTENTIALS["ScaleSymmetric"](depth=3, n=5, noise=0.3, l2=0.01,
                                                           seed=1),
    "Valley": lambda: POTENTIALS["Valley"](d=3, curve="circle", profile="cos", alpha=0.5),
    "SphericalPSpin": lambda: POTENTIALS["SphericalPSpin"](6, 3, seed=1),
    "TeacherStudentMLP": lambda: POTENTIALS["TeacherStudentMLP"](n=10, d_in=3, hidden=4, seed=1,
                                                                 n_val=5),
    "ModularArithmeticMLP": lambda: POTENTIALS["ModularArithmeticMLP"](p=5, hidden=4, seed=1),
    "ClassifierMLP": lambda: POTENTIALS["ClassifierMLP"]("iris", n=12, n_test=6, hidden=4,
                                                         seed=1, label_corruption=0.25, n_val=5),
    "ShiftedMultiWell": lambda: POTENTIALS["ShiftedMultiWell"](
        centers=[[-1.0, 0.0], [1.0, 0.5]], shifts=[[0.1, 0.2], [-0.2, 0.1], [0.1, -0.3]],
        spectra=[[1.0, 2.0], [2.0, 4.0]], softness=0.3),
}


def _small_dynamics(pot) -> dict:
    """name -> a maker of a small instance of that dynamics for `pot` (minibatches where it is
    a finite sum); `test_every_registered_class_has_a_small_constructor` names a dynamics
    class without one."""
    batch = None if pot.n_samples is None else max(1, pot.n_samples // 3)
    return {
        "OverdampedLangevin": lambda: DYNAMICS["OverdampedLangevin"](2e-2, 0.4),
        "UnderdampedLangevin": lambda: DYNAMICS["UnderdampedLangevin"](5e-2, 1.5, 0.4),
        "OBABO": lambda: DYNAMICS["OBABO"](5e-2, 1.5, 0.4),
        "Heun": lambda: DYNAMICS["Heun"](2e-2, 0.4),
        "LeimkuhlerMatthews": lambda: DYNAMICS["LeimkuhlerMatthews"](2e-2, 0.4),
        "MALA": lambda: DYNAMICS["MALA"](5e-2, 0.4),
        "SGD": lambda: DYNAMICS["SGD"](2e-2, batch, momentum=0.5, temperature=1e-2,
                                      grad_noise=0.1),
        "AdamW": lambda: DYNAMICS["AdamW"](1e-2, batch,
                                           weight_decay=0.0 if pot.constrained else 0.01),
    }


def dynamics(name: str, pot):
    """A small instance of dynamics `name` for `pot` (`_small_dynamics`)."""
    return _small_dynamics(pot)[name]()


SMALL_DYNAMICS = set(_small_dynamics(POTS["DoubleWell"]()))


def valid_pairs() -> dict:
    out = {}
    for pn in sorted(set(POTENTIALS) & set(POTS)):  # (a class without: the test below says so)
        for dn in sorted(set(DYNAMICS) & SMALL_DYNAMICS):   # (the same)
            pot = POTS[pn]()
            try:
                dyn = dynamics(dn, pot)
                Simulation(pot, dyn, 2, backend="numpy", seed=0)
            except ConfigError:
                continue
            out[f"{pn}-{dn}"] = (pn, dn)
    return out


PAIRS = valid_pairs()
GENERIC = {f"{p.__name__}-{d.__name__}" for p, d, b in registry.KERNELS
           if b == "numba" and registry.KERNELS[p, d, b].fn.__module__ == drivers.__name__}
# one pair per generic driver (and the sphere) by default; every pair with -m slow
DEFAULT = {"DoubleWell-MALA", "SphericalPSpin-Heun", "LinearRegression-AdamW",
           "LinearRegression-UnderdampedLangevin", "DoubleWell-OBABO"}
FLOAT32_DEFAULT = {"DoubleWell-MALA"}


def params(names, default):
    return [pytest.param(n, marks=() if n in default else (pytest.mark.slow,))
            for n in sorted(names)]


def test_every_registered_class_has_a_small_constructor():
    assert set(POTENTIALS) <= set(POTS), ("add a small instance of each to this file's POTS: "
                                          f"{sorted(set(POTENTIALS) - set(POTS))}")
    assert set(DYNAMICS) <= SMALL_DYNAMICS, ("add a small instance of each to this file's "
                                             "_small_dynamics: "
                                             f"{sorted(set(DYNAMICS) - SMALL_DYNAMICS)}")
    assert {"DoubleWell-MALA", "Quadratic-SGD", "SphericalPSpin-AdamW"} <= set(PAIRS)


def test_every_pair_has_a_numba_kernel():
    """No valid pair falls back to the NumPy reference on "numba" (a new potential without its
    family's hooks in langevin_sim/kernels/ would, silently but for one warning): by default,
    without compiling anything; the slow tests below run every pair."""
    missing = [name for name, (pn, dn) in PAIRS.items()
               if registry.kernel_for(POTS[pn](), dynamics(dn, POTS[pn]()), "numba") is None]
    assert not missing, ("no numba kernel (a new potential: its family's hooks in a module of "
                         "langevin_sim/kernels/; a new dynamics: its driver and adapter in "
                         f"kernels/drivers.py; docs/extending.md): {missing}")


def simulate(pn, dn, M, steps, **kw):
    """{backend: Simulation} after `steps` (a list of advance counts) on each backend."""
    out = {}
    for backend in ("numpy", "numba"):
        pot = POTS[pn]()
        sim = Simulation(pot, dynamics(dn, pot), M, backend=backend, **kw)
        for n in steps:
            sim.advance(n)
        out[backend] = sim
    return out


def fallback_messages(run) -> list[str]:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        run()
    return [str(w.message) for w in rec if "no fused kernel" in str(w.message)
            or "does not cover" in str(w.message)]


@pytest.mark.parametrize("name", params(PAIRS, DEFAULT))
def test_pair_float64(name, monkeypatch):
    """Fused without a warning; the reference's states to rounding; the bits of one call
    under a replica split and uneven calls; the reference's divergence flags and frozen states
    with a bound that freezes some replicas."""
    pn, dn = PAIRS[name]
    monkeypatch.setattr(numba_backend, "_warned", set())
    monkeypatch.setattr(drivers, "_warned", set())
    out = {}
    assert fallback_messages(lambda: out.update(simulate(pn, dn, 7, [40], seed=5))) == []
    for k in out["numpy"].state:
        np.testing.assert_allclose(out["numba"].state[k], out["numpy"].state[k], rtol=1e-9,
                                   atol=1e-11, err_msg=f"{name}: {k}")
    assert (out["numpy"].diverged_step < 0).all()
    whole = out["numba"]
    pot = POTS[pn]()
    parts = [Simulation(pot, dynamics(dn, pot), n, backend="numba", seed=5, first_replica=r0)
             for r0, n in ((0, 3), (3, 4))]
    for p, chunks in zip(parts, ([40], [13, 1, 26])):
        for n in chunks:
            p.advance(n)
    # dedicated kernels may block GEMMs by M
    assert_split_matches(parts, whole, pot, 0 if name in GENERIC else 1e-12, name)
    # a bound that the larger half of the final states exceed: they freeze on the way
    ref = out["numpy"]
    rowmax = np.max([np.abs(v.reshape(7, -1)).max(axis=1) for v in ref.dynamics.bounded(ref.state)],
                    axis=0)
    bound = 0.95 * float(np.median(rowmax))
    div = simulate(pn, dn, 7, [40], seed=5, divergence_bound=bound)
    dn_, db = div["numpy"].diverged_step, div["numba"].diverged_step
    assert (dn_ >= 0).any(), dn_
    np.testing.assert_array_equal(db, dn_)
    for k in div["numpy"].state:
        np.testing.assert_allclose(div["numba"].state[k], div["numpy"].state[k], rtol=1e-9,
                                   atol=1e-11, err_msg=f"{name} (bound {bound}): {k}")


@pytest.mark.parametrize("name", params(PAIRS, FLOAT32_DEFAULT))
def test_pair_float32(name, monkeypatch):
    """float32 states, fused: the reference's to float32 rounding.  MALA's accept decisions
    can flip within rounding of the boundary: replicas with equal accept counts must agree,
    and nearly all do."""
    pn, dn = PAIRS[name]
    monkeypatch.setattr(numba_backend, "_warned", set())
    monkeypatch.setattr(drivers, "_warned", set())
    out = {}
    assert fallback_messages(lambda: out.update(simulate(pn, dn, 8, [25], seed=2,
                                                         dtype="float32"))) == []
    a, r = out["numba"].state, out["numpy"].state
    same = np.ones(8, bool)
    if "accepted" in r:
        same = a["accepted"] == r["accepted"]
        assert same.sum() >= 7 and r["accepted"].sum() > 0, (a["accepted"], r["accepted"])
    for k in r:
        assert a[k].dtype == r[k].dtype, k
        np.testing.assert_allclose(a[k][same], r[k][same], rtol=3e-4, atol=3e-4, err_msg=k)


@pytest.mark.parametrize("pn", params([c.__name__ for c in drivers.FAMILIES],
                                      {"DoubleWell", "SphericalPSpin"}))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_energy_kernel_matches_the_potential(pn, dtype):
    """`energy_kernel` gives U (float64) of float64 and float32 states, as the potential's
    energy of the float64 copy, over several blocks."""
    pot = POTS[pn]()
    sim = Simulation(pot, dynamics("OverdampedLangevin", pot), 150, backend="numpy", seed=1,
                     dtype=dtype)
    sim.advance(3)
    x = sim.state["x"]
    u = drivers.energy_kernel(pot)(x)
    assert u.dtype == np.float64 and u.shape == (150,)
    np.testing.assert_allclose(u, pot.energy(x.astype(np.float64)), rtol=1e-12, atol=1e-12)


def test_records_use_the_compiled_energy_from_its_size_on(monkeypatch):
    """A record of a state with >= COMPILED_ENERGY_SIZE numbers takes the compiled energy
    (equal to the potential's), a smaller one the potential's own."""
    pot = POTS["DoubleWell"]()                           # d = 3
    calls = []
    real = drivers.energy_kernel
    monkeypatch.setattr(drivers, "energy_kernel", lambda p: calls.append(p) or real(p))
    for M in (100, numba_backend.COMPILED_ENERGY_SIZE // 3 + 1):
        run = Simulation(pot, dynamics("OverdampedLangevin", pot), M, backend="numba", seed=2,
                         dtype="float32").run(4, record_every=2)
        x = np.asarray(run.positions[-1], np.float64)
        np.testing.assert_allclose(np.asarray(run.energy[-1]), pot.energy(x), rtol=1e-12)
        assert len(calls) == (M > 100) * 3, (M, len(calls))   # three records


def test_generic_pairs_are_registered_after_the_dedicated_kernels():
    """The generic drivers take only the pairs without a dedicated kernel."""
    from langevin_sim.potentials import DoubleWell, Quadratic
    from langevin_sim.dynamics import OverdampedLangevin, UnderdampedLangevin

    assert "DoubleWell-Heun" in GENERIC and "Quadratic-MALA" in GENERIC
    for p, d in ((DoubleWell, OverdampedLangevin), (Quadratic, UnderdampedLangevin)):
        assert registry.KERNELS[p, d, "numba"].fn.__module__ != drivers.__name__


# the toy nets' hooks compile a net's forward and backward pass (4-6 s each, cold)
NET_HOOKS = {"TeacherStudentMLP", "ModularArithmeticMLP", "ClassifierMLP"}


@pytest.mark.parametrize("pn", [pytest.param(c.__name__, marks=(pytest.mark.slow,)
                                             if c.__name__ in NET_HOOKS else ())
                                for c in sorted(drivers.FAMILIES, key=lambda c: c.__name__)])
def test_family_hooks_match_the_potential(pn):
    """Each family's compiled `grad_block` and `energy_block` (`drivers.Hooks`) give the
    potential's grad and energy (float64) at a few points: a wrong hook of a new family (a
    factor 2 in its gradient) fails here, in the default suite (~1 s a family cold), and not
    only in the slow pair tests above."""
    pot = POTS[pn]()
    hooks = drivers.FAMILIES[type(pot)]
    z = np.random.default_rng(0).standard_normal((5, pot.d))
    x = np.ascontiguousarray(pot.default_init(z), dtype=np.float64)
    args = hooks.args_of(pot, np.float64)
    np.testing.assert_allclose(hooks.grad_block(x, args), pot.grad(x), rtol=1e-10, atol=1e-12,
                               err_msg=f"{pn}'s grad_block")
    if hooks.energy_block is not None:
        np.testing.assert_allclose(hooks.energy_block(x, args), pot.energy(x), rtol=1e-10,
                                   atol=1e-12, err_msg=f"{pn}'s energy_block")
