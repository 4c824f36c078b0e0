"""Every dynamics against every constrained potential, on every available backend: the state
stays on the constraint manifold and no replica diverges, or the pair is refused at
construction with a one-line ConfigError that names the fix.

Driven by the registries (`dynamics.REGISTRY`, `potentials.REGISTRY`, constrained classes
built by `test_potential_derivatives.small_potential`), so a new dynamics or constrained
potential is covered without a new test; DYNAMICS only picks parameters that exercise more
of a dynamics (a class without an entry runs with its defaults).
"""
import numpy as np
import pytest

from langevin_sim import Simulation
from langevin_sim.backends import NAMES, get_backend
from langevin_sim.dynamics import REGISTRY as DYNAMICS_REGISTRY
from langevin_sim.dynamics import SGD, OverdampedLangevin
from langevin_sim.errors import BackendUnavailableError, ConfigError
from langevin_sim.potentials import REGISTRY as POTENTIAL_REGISTRY
from langevin_sim.potentials import SphericalPSpin

from .test_potential_derivatives import registered, small_potential

DYNAMICS = {
    "OverdampedLangevin": [dict(step=0.02, temperature=0.5)],
    "Heun": [dict(step=0.02, temperature=0.5)],
    "LeimkuhlerMatthews": [dict(step=0.02, temperature=0.5)],
    "SGD": [dict(lr=0.05), dict(lr=0.02, momentum=0.9, temperature=0.1)],
    "AdamW": [dict(lr=0.05, weight_decay=0.0)],
}
TANGENT_STATE = {"SGD": ("v",), "AdamW": ("m",)}   # state arrays that are tangent vectors at x
TOL = {"float64": 1e-10, "float32": 1e-5}          # distance to the manifold, relative to |x|
FALLBACK = "ignore:numba backend has no fused kernel"


def available_backends() -> list[str]:
    out = []
    for name in NAMES:
        try:
            get_backend(name)
        except BackendUnavailableError:
            continue
        out.append(name)
    return out


def cases() -> list:
    dyn_names = sorted(n for n, c in DYNAMICS_REGISTRY.items() if c.__module__.startswith("langevin_sim."))
    constrained = [n for n in registered() if POTENTIAL_REGISTRY[n].constrained]
    return [pytest.param(p, d, kw, id=f"{p}-{d}-{i}")
            for p in constrained for d in dyn_names for i, kw in enumerate(DYNAMICS.get(d, [{}]))]


def assert_refusal_names_the_fix(err: ConfigError) -> None:
    msg = str(err)
    assert "\n" not in msg and "use " in msg, f"refusal should be one line naming the fix: {msg!r}"


def backend_dtypes() -> list:
    """(backend, dtype); numba in float32 is slow: each pair compiles a kernel per dtype and
    the constraint code does not depend on it (float64 covers it by default)."""
    return [pytest.param(b, dt, marks=(pytest.mark.slow,) if (b, dt) == ("numba", "float32") else ())
            for b in available_backends() for dt in ("float64", "float32")]


@pytest.mark.filterwarnings(FALLBACK)
@pytest.mark.parametrize("backend,dtype", backend_dtypes())
@pytest.mark.parametrize("pot_name,dyn_name,kw", cases())
def test_dynamics_respect_the_constraint(pot_name, dyn_name, kw, backend, dtype):
    """300 steps, 8 replicas: x is a fixed point of the retraction (|x|^2 = N on the sphere)
    to rounding, every replica is finite and undiverged, and momentum-like buffers are tangent."""
    pot = small_potential(pot_name)
    dyn = DYNAMICS_REGISTRY[dyn_name](**kw)
    try:
        sim = Simulation(pot, dyn, 8, backend=backend, dtype=dtype, seed=3)
    except ConfigError as err:
        assert_refusal_names_the_fix(err)
        return
    sim.advance(300)
    x = sim.state["x"].astype(np.float64)
    assert np.all(sim.diverged_step < 0), f"diverged replicas at steps {sim.diverged_step}"
    assert np.all(np.isfinite(x))
    off = np.abs(pot.retract(x) - x).max() / np.abs(x).max()
    assert off <= TOL[dtype], f"{dyn_name} left the manifold of {pot_name}: relative distance {off:.3g}"
    for k in TANGENT_STATE.get(dyn_name, ()):
        v = sim.state[k].astype(np.float64)
        normal = np.abs(pot.project(x, v) - v).max()
        assert normal <= TOL[dtype] * max(np.abs(v).max(), 1e-300), f"state {k} is not tangent: {normal:.3g}"


@pytest.mark.parametrize("pot_name", [n for n in registered() if POTENTIAL_REGISTRY[n].constrained])
@pytest.mark.parametrize("dyn_name", sorted(n for n, c in DYNAMICS_REGISTRY.items()
                                            if "weight_decay" in c.__dataclass_fields__))
def test_weight_decay_is_refused_on_constrained_potentials(dyn_name, pot_name):
    """The decay -wd x is radial on a sphere centred at 0 (no tangent component), so it
    would silently do nothing: refused at construction, naming weight_decay=0."""
    kw = {**DYNAMICS.get(dyn_name, [{}])[0], "weight_decay": 0.1}
    with pytest.raises(ConfigError, match="weight_decay=0") as err:
        Simulation(small_potential(pot_name), DYNAMICS_REGISTRY[dyn_name](**kw), 2, backend="numpy")
    assert_refusal_names_the_fix(err.value)


@pytest.mark.filterwarnings(FALLBACK)
@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("pot_name", [n for n in registered() if POTENTIAL_REGISTRY[n].constrained])
def test_sgd_without_momentum_is_overdamped_langevin(pot_name, backend):
    """On a constrained potential, SGD(lr, temperature T, momentum 0) takes the step of
    OverdampedLangevin(step=lr, T): same noise, same tangent step and retraction (to rounding)."""
    pot = small_potential(pot_name)
    out = {}
    for dyn in (SGD(lr=0.03, temperature=0.4), OverdampedLangevin(step=0.03, temperature=0.4)):
        sim = Simulation(pot, dyn, 5, backend=backend, seed=7)
        sim.advance(200)
        out[type(dyn).__name__] = sim.state["x"]
    np.testing.assert_allclose(out["SGD"], out["OverdampedLangevin"], rtol=0, atol=1e-12)


def test_gradient_descent_on_the_sphere_lowers_the_energy():
    """Full-batch SGD at T = 0 (the bug report's SGD(lr=0.05) on SphericalPSpin(N=8, p=3)):
    the energy per spin of every replica decreases monotonically from the random start
    (E/N ~ 0 +- 1/sqrt(2N)) into the low-energy region (the large-N threshold is
    -sqrt(2(p-1)/p) = -1.15 in the Crisanti-Sommers convention; at N = 8 descent ends near -1)."""
    pot = SphericalPSpin(N=8, p=3, seed=0)
    sim = Simulation(pot, SGD(lr=0.05), 16, backend="numpy", seed=0)
    e = [pot.energy(sim.state["x"]) / pot.N]
    for _ in range(30):
        sim.advance(10)
        e.append(pot.energy(sim.state["x"]) / pot.N)
    e = np.array(e)                                   # (31, M)
    assert np.all(np.diff(e, axis=0) <= 1e-12), "gradient descent raised the energy"
    assert np.all(e[-1] < e[0] - 0.3) and e[-1].mean() < -0.7, e[-1]
    np.testing.assert_allclose(np.sum(sim.state["x"] ** 2, axis=1) / pot.N, 1.0, rtol=0, atol=1e-12)
