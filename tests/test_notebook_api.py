"""The Python API as a notebook uses it: a mistake gets one clear error naming the fix, never a
deep NumPy/h5py traceback or a silently wrong array."""
import numpy as np
import pytest

from langevin_sim import ConfigError, RunFileError, Simulation, open_run, resume
from langevin_sim.dynamics import SGD, AdamW, OverdampedLangevin, UnderdampedLangevin
from langevin_sim.potentials import DoubleWell, LinearRegression, SphericalPSpin, Valley


def small_run(out=None, steps=100, replicas=4):
    return Simulation(DoubleWell(), OverdampedLangevin(0.01, 0.5), replicas,
                      backend="numpy", seed=1).run(steps, 10, out=out)


def test_indexing_a_run_by_a_non_series_name_is_refused():
    """`run["diverged_step"]` (M,) used to come back as a Series of n_records rows: its
    `shape` said (11,) while the array held the 4 replicas."""
    run = small_run()
    with pytest.raises(KeyError, match=r"run\.diverged_step"):
        run["diverged_step"]
    with pytest.raises(KeyError, match="no record series 'replica'"):
        run["replica"]
    assert run["step"].shape == (11,)
    assert np.asarray(run["step"]).shape == (11,)


def test_membership_test_on_a_run():
    run = small_run()
    assert "energy" in run and "positions" in run
    assert "sharpness" not in run and "diverged_step" not in run


def test_a_series_read_as_an_attribute_names_the_indexing():
    """run.basin was a bare AttributeError; energy and positions are the only attributes."""
    from langevin_sim.potentials import MultiWell

    run = Simulation(MultiWell([[-1.0, 0.0], [1.0, 0.0]], spectra=[[1, 1], [8, 8]]),
                     OverdampedLangevin(0.01, 0.5), 4, backend="numpy").run(20, 10)
    with pytest.raises(AttributeError, match=r"no attribute 'basin'; the record series is "
                                             r"run\['basin'\]"):
        run.basin
    with pytest.raises(AttributeError, match=r"no attribute 'nothing'$"):
        run.nothing
    assert not hasattr(run, "basin") and run["basin"].shape == (3, 4)


def test_a_closed_run_says_so(tmp_path):
    run = small_run(out=tmp_path / "r.h5")
    run.close()
    with pytest.raises(RunFileError, match=r"closed.*open_run"):
        run.n_records
    with pytest.raises(RunFileError, match="closed"):
        run.positions
    assert "closed" in repr(run)
    mem = small_run()
    mem.close()
    with pytest.raises(RunFileError, match="in memory"):
        mem.energy

def test_resume_while_this_process_reads_the_file(tmp_path):
    path = tmp_path / "r.h5"
    Simulation(DoubleWell(), OverdampedLangevin(0.01, 0.5), 4, backend="numpy",
               seed=1).run(50, 10, out=path).close()
    reader = open_run(path)
    with pytest.raises(RunFileError, match=r"this process.*close\(\)"):
        resume(path, steps=100)
    reader.close()
    assert resume(path, steps=100).steps_done == 100


def test_series_reversed_and_unsorted_record_indices():
    run = small_run()
    x = np.asarray(run.positions)
    assert np.array_equal(run.positions[::-1], x[::-1])
    assert np.array_equal(run.positions[::-3, :, 0], x[::-3, :, 0])
    assert np.array_equal(run.positions[[3, 1, 3]], x[[3, 1, 3]])
    assert np.array_equal(run.energy[np.array([-1, 0])], np.asarray(run.energy)[[-1, 0]])


_MASK = np.array([True, False, True, False])
_KEYS = [..., (..., 0), (..., -1), (..., slice(0, 1)), (..., [0, 0]), (0, ...), (-1, ...),
         (2, ..., 0), (..., slice(None, None, -1)), (slice(1, 8, 3), ..., [0, 0]),
         ([3, 1, 3], ..., 0), (..., _MASK, slice(None)), (..., _MASK, 0), (slice(None), _MASK),
         (None, ...), (..., None), (slice(None), None, 1), ([1, 2], [0, 3]),
         ([[1], [2]], [0, 3]), (3, slice(None), [0, -1]), (slice(5, 2), ...), ([],), (..., []),
         (np.int64(-2), ...), (slice(None, None, -2), _MASK), ([0, 9], [3, 0], [0, 0])]


@pytest.mark.parametrize("name", ["energy", "positions"])
def test_series_indexing_is_numpys(name):
    """`run.positions[..., 0]` was (n_records, d): a leading Ellipsis read all records and the
    next index fell on the replica axis.  Every key is now NumPy's, on every series shape."""
    series = small_run()[name]
    x = np.asarray(series)
    for key in _KEYS:
        try:
            want = x[key]
        except IndexError:
            with pytest.raises(IndexError):
                series[key]
            continue
        got = series[key]
        assert got.shape == want.shape and np.array_equal(got, want), key
    for key in [(..., ...), (11,), (..., 4), (np.ones(3, bool),), (0, 0, 0, 0)]:
        with pytest.raises(IndexError):
            series[key]

def test_reprs_say_what_a_notebook_holds(tmp_path):
    run = small_run(out=tmp_path / "r.h5")
    text = repr(run)
    assert "r.h5" in text and "11 records" in text and "complete" in text
    assert "positions(11, 4, 1)" in text
    assert repr(run.energy) == "Series('energy', shape=(11, 4), dtype=float64)"
    assert run.energy.ndim == 2


@pytest.mark.parametrize("make, name", [
    (lambda: DoubleWell(d=1.5), "d"),
    (lambda: SphericalPSpin(N=8.5), "N"),
    (lambda: SphericalPSpin(N=8, p=3.5), "p"),
    (lambda: Valley(d=2.5), "d"),
    (lambda: LinearRegression(n=10.5, d=2), "n"),
    (lambda: LinearRegression(n=10, d="2"), "d"),
    (lambda: SGD(lr=0.1, batch_size=2.5), "batch_size"),
    (lambda: SGD(lr=0.1, batch_size="4"), "batch_size"),
    (lambda: AdamW(lr=0.1, batch_size=2.5), "batch_size"),
])
def test_a_non_integer_size_is_refused_not_truncated(make, name):
    """DoubleWell(d=1.5) was a d = 1 well, SphericalPSpin(N=8.5) an N = 8 one; SGD's
    batch_size=2.5 ran on numba and crashed inside the NumPy reference's slicing."""
    with pytest.raises(ConfigError, match=rf"{name} must be an integer"):
        make()


def test_integral_floats_still_work():
    assert DoubleWell(d=2.0).d == 2 and SphericalPSpin(N=8.0).N == 8
    assert SGD(lr=0.1, batch_size=4.0).batch_size == 4
    pot = LinearRegression(n=8.0, d=2.0)
    run = Simulation(pot, SGD(lr=0.1, batch_size=4.0), 4, backend="numpy").run(20, 10)
    assert run.n_records == 3


def test_linear_regression_data_must_match_n_and_d():
    """A (20, 5) data set with n=10 ran silently: the energy averaged all 20 rows while SGD
    drew its batches from the first 10.  Without n and d it failed inside a matmul."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((20, 5))
    w = rng.standard_normal(5)
    with pytest.raises(ConfigError, match=r"A has shape \(20, 5\).*n=20, d=5"):
        LinearRegression(n=10, d=5, A=A, y=A @ w, w_star=w)
    with pytest.raises(ConfigError, match=r"A has shape \(20, 5\).*n=20, d=5"):
        LinearRegression(A=A, y=A @ w, w_star=w)
    with pytest.raises(ConfigError, match=r"y.*w_star"):
        LinearRegression(n=20, d=5, A=A)
    with pytest.raises(ConfigError, match=r"y has shape \(19,\)"):
        LinearRegression(n=20, d=5, A=A, y=(A @ w)[:19], w_star=w)
    pot = LinearRegression(n=20, d=5, A=A, y=A @ w, w_star=w)
    assert pot.n_samples == 20 and pot.d == 5


def test_numpy_scalars_and_arrays_in_parameters_reach_the_run_file(tmp_path):
    """A parameter swept with np.float32 / np.int64 values, or a NumPy array in `meta`, made
    Simulation.run fail with json's "Object of type float32 is not JSON serializable"."""
    dyn = UnderdampedLangevin(0.01, friction=np.float32(0.5), temperature=0.5,
                              mass=np.int64(2))
    meta = {"T": np.float32(0.5), "grid": np.arange(3), "n": np.int64(7)}
    run = Simulation(DoubleWell(), dyn, 4, backend="numpy", meta=meta).run(
        20, 10, out=tmp_path / "np.h5")
    cfg = run.config
    assert cfg["dynamics"]["friction"] == 0.5 and cfg["dynamics"]["mass"] == 2
    assert cfg["meta"] == {"T": 0.5, "grid": [0, 1, 2], "n": 7}
    run.close()
    assert resume(tmp_path / "np.h5", steps=40).steps_done == 40
    sgd = SGD(lr=0.05, momentum=np.float32(0.5), weight_decay=np.float64(0.01))
    Simulation(LinearRegression(n=8, d=2), sgd, 4, backend="numpy").run(20, 10).close()


def test_a_meta_value_json_cannot_hold_is_named():
    with pytest.raises(ConfigError, match=r"meta\['f'\].*function"):
        Simulation(DoubleWell(), OverdampedLangevin(0.01, 0.5), 4, backend="numpy",
                   meta={"f": len}).run(10, 10)


def test_an_init_off_the_sphere_is_refused():
    """SphericalPSpin(N=8) started from an array with |x|^2 = 72 recorded that state (and its
    energy, -2.4 per spin) as record 0; only the first step retracted it onto |x|^2 = N."""
    pot = SphericalPSpin(N=8, seed=0)
    with pytest.raises(ConfigError, match=r"\|x\|\^2 = 72.*retract"):
        Simulation(pot, OverdampedLangevin(0.01, 0.5), 4, backend="numpy",
                   init=np.full((4, 8), 3.0))
    x = pot.retract(np.random.default_rng(0).standard_normal((4, 8)))
    run = Simulation(pot, OverdampedLangevin(0.01, 0.5), 4, backend="numpy", init=x).run(10, 10)
    np.testing.assert_allclose((np.asarray(run.positions) ** 2).sum(-1), 8.0)


def test_an_analysis_handed_a_path_names_open_run(tmp_path):
    """run_marginal_fit("x.h5") raised AttributeError ('str' object has no attribute
    'potential'), diagnose / compare_covariance ValueError ('could not convert string to
    float')."""
    from langevin_sim.analysis import basins, covariance, diagnostics, escape, stationary

    path = tmp_path / "r.h5"
    small_run(out=path, replicas=64).close()
    for call in (lambda p: stationary.run_marginal_fit(p),
                 lambda p: diagnostics.diagnose(p, "energy"),
                 lambda p: diagnostics.burn_in(p, "energy"),
                 lambda p: covariance.sample_moments(p),
                 lambda p: covariance.predicted_laws(p),
                 lambda p: basins.run_occupancy(p),
                 lambda p: escape.analyze_run(p)):
        for p in (str(path), path):
            with pytest.raises(ConfigError, match=r"takes an open Run.*open_run\("):
                call(p)
    with open_run(path) as run:
        assert stationary.run_marginal_fit(run).n == 64


@pytest.mark.parametrize("x, got", [
    (np.zeros((3, 5)), r"shape \(3, 5\)"),
    (np.zeros(2), r"shape \(2,\)"),
    (np.zeros((1, 1, 2)), r"shape \(1, 1, 2\)"),
    (0.5, "float"),
])
@pytest.mark.parametrize("method", ["energy", "grad"])
def test_potential_methods_check_the_shape_of_x(x, got, method):
    """DoubleWell(d=2).energy(np.zeros((3, 5))) returned the energies of 5-d points; a 1-D x
    failed in NumPy (AxisError, an einsum subscripts error, a broadcast error)."""
    from langevin_sim.potentials import MultiWell, Quadratic

    for pot in (DoubleWell(d=2), Quadratic(spectrum=[1.0, 2.0]), SphericalPSpin(N=2, p=2),
                LinearRegression(n=8, d=2), MultiWell(centers=[[-1.0, 0.0], [1.0, 0.0]], spectra=[[1.0, 1.0], [2.0, 2.0]])):
        with pytest.raises(ConfigError, match=rf"\(M, 2\) for {type(pot).__name__}, got {got}"):
            getattr(pot, method)(x)


def test_potential_methods_take_a_list_and_keep_arrays_as_they_are():
    pot = DoubleWell(d=2)
    assert pot.energy([[0, 0], [1, 1]]).tolist() == [2.0, 0.0]
    x = np.zeros((3, 2), np.float32)
    assert pot.check_x(x) is x
    assert pot.grad(x).dtype == np.float32


@pytest.mark.parametrize("kw, match", [
    (dict(spectrum=[1.0, 2.0], d=5), r"d=5 but its spectrum has d = 2"),
    (dict(H=np.eye(2), d=3), r"d=3 but its H has d = 2"),
    (dict(H=np.eye(2), spectrum=[1.0, 2.0, 3.0]), "H or spectrum, not both"),
    (dict(spectrum=[[1.0, 2.0], [3.0, 4.0]]), r"1-D.*shape \(2, 2\)"),
    (dict(spectrum=[1.0, 2.0], d=2.5), "d must be an integer"),
])
def test_quadratic_refuses_conflicting_arguments(kw, match):
    """Quadratic(spectrum=[1, 2], d=5) was 2-d, Quadratic(H=eye(2), spectrum=[1, 2, 3]) dropped
    the spectrum, and a 2-D spectrum was raveled into 4 eigenvalues."""
    from langevin_sim.potentials import Quadratic

    with pytest.raises(ConfigError, match=match):
        Quadratic(**kw)


def test_quadratic_takes_a_matching_d():
    from langevin_sim.potentials import Quadratic

    assert Quadratic(spectrum=[1.0, 2.0], d=2).d == 2 and Quadratic(H=np.eye(3), d=3.0).d == 3


def test_collection_analyses_handed_paths_name_open_run(tmp_path):
    """compare_runs, matched_fit, escape_summary and energy_summary failed on paths with an
    AttributeError (or iterated over the path's characters)."""
    from langevin_sim.analysis import drift, escape, flatness, scan

    path = tmp_path / "r.h5"
    small_run(out=path).close()
    for call in (lambda p: drift.compare_runs(p), lambda p: drift.compare_runs({"a": p}),
                 lambda p: flatness.matched_fit(p, 0.1), lambda p: flatness.matched_fit([p], 0.1),
                 lambda p: escape.escape_summary(p), lambda p: escape.escape_summary([p]),
                 lambda p: scan.energy_summary(p)):
        for p in (str(path), path):
            with pytest.raises(ConfigError, match=r"takes an open Run.*open_run\("):
                call(p)
    with open_run(path) as run:
        assert scan.energy_summary(run)["alive"] == 1.0


def test_drift_names_the_expected_containers():
    """compare_runs([a, b]) raised "'list' object has no attribute 'values'", and
    run_time_to_target(run, 3.0) "'float' object is not iterable" (drift.py, in the loop)."""
    from langevin_sim.analysis import drift

    a, b = small_run(), small_run()
    with pytest.raises(ConfigError, match=r"mapping \{name: Run\}.*dict\(sgd=run_a"):
        drift.compare_runs([a, b])
    for call in (lambda: drift.run_time_to_target(a, 3.0),
                 lambda: drift.compare_runs({"a": a}, target=3.0),
                 lambda: drift.time_to_target(np.arange(3.0), np.zeros((3, 2)), (1, 2, 3))):
        with pytest.raises(ConfigError, match=r"target must be an interval \(lo, hi\).*np\.inf"):
            call()
    assert drift.time_to_target(np.arange(3.0), np.arange(6.0).reshape(3, 2), (2.0, np.inf)
                                ).observed.all()


def test_basins_keyword_typos_are_named_where_made():
    """run_occupancy(run, tails=3) raised "quench() got an unexpected keyword argument
    'tails'" from a function the user never called."""
    from langevin_sim.analysis import basins

    run = small_run()
    pot = DoubleWell(d=1)
    for call, where, bad, hint in (
            (lambda: basins.run_occupancy(run, tails=3), "run_occupancy", "tails", "tail"),
            (lambda: basins.run_occupancy(run, T=0.7), "run_occupancy", "T", None),
            (lambda: basins.find_basins(pot, np.zeros((2, 1)), gtoll=1e-6), "find_basins",
             "gtoll", "gtol"),
            (lambda: basins.default_basins(pot, 0.5, start=10), "default_basins", "start",
             "starts")):
        with pytest.raises(ConfigError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(f"{where} got an unexpected keyword {bad!r}"), msg
        assert "temperature" in msg and "max_step" in msg
        if hint:
            assert f"did you mean {hint!r}" in msg
    b = basins.default_basins(pot, 0.5, starts=20, max_step=0.5, tol=1e-3)
    assert b.points.shape == (2, 1)


def test_ess_of_a_single_chain_says_which_shape():
    """diagnostics.ess(x) on a 1-D array raised numpy's AxisError ('destination: axis -2 is
    out of bounds')."""
    from langevin_sim.analysis import diagnostics

    x = np.random.default_rng(0).standard_normal(100)
    for fn in (diagnostics.ess, diagnostics.integrated_autocorrelation_time):
        with pytest.raises(ConfigError, match=r"\(n_records, replicas, \.\.\.\), got \(100,\); "
                                              r"one chain x is x\[:, None\]"):
            fn(x)
    pytest.importorskip("arviz_stats")
    assert diagnostics.ess(x[:, None]).shape == ()


def test_mfpt_1d_with_a_d_dimensional_energy_names_marginal_energy():
    """escape.mfpt_1d(pot.energy, ...) raised numpy's AxisError ('axis 1 is out of bounds')."""
    from langevin_sim.analysis import escape

    pot = DoubleWell(d=1)
    with pytest.raises(ConfigError, match=r"1-D grid \(n,\) to \(n,\).*marginal_energy"):
        escape.mfpt_1d(pot.energy, 0.3, -1.0, 0.0)
    with pytest.raises(ConfigError, match=r"returned shape \(1,\)"):
        escape.mfpt_1d(lambda y: np.zeros(1), 0.3, -1.0, 0.0, lower=-3.0)
    assert escape.mfpt_1d(pot.marginal_energy, 0.3, -1.0, 0.0) > 0


def test_open_run_and_resume_take_a_run(tmp_path):
    """open_run(run) and resume(run) raised "expected str, bytes or os.PathLike object, not
    Run"; resume(run) on the open Run now says to close that Run."""
    path = tmp_path / "r.h5"
    run = small_run(out=path, steps=50)
    again = open_run(run)
    assert again.path == run.path and again.n_records == run.n_records
    again.close()
    with pytest.raises(RunFileError, match=r"resume\(run\) writes to .*r\.h5.*call run\.close\(\) "
                                           r"first, then resume\(run\)"):
        resume(run, steps=100)
    run.close()
    longer = resume(run, steps=100)
    assert longer.steps_done == 100 and longer.resumed_from == 50
    longer.close()


def test_resume_messages_for_python_callers(tmp_path):
    """resume(path, steps=...) below the checkpoint said '--steps 10 is before ...';
    resume of an in-memory run said 'no run file at <memory>'."""
    path = tmp_path / "r.h5"
    small_run(out=path, steps=50).close()
    with pytest.raises(ConfigError, match=r"steps=10 \(--steps 10\) is before the checkpoint at "
                                          r"step 50; give a total step count >= 50"):
        resume(path, steps=10)
    mem = small_run()
    for source in (mem, mem.path):
        with pytest.raises(ConfigError, match="in-memory run cannot be resumed"):
            resume(source, steps=200)
    with pytest.raises(ConfigError, match=r"open_run: this run was held in memory"):
        open_run(mem)


@pytest.mark.parametrize("dtype", [np.float32, "f4", np.dtype("float32"), "float32"])
def test_simulation_takes_numpy_spellings_of_float32(dtype):
    """Simulation(..., dtype=np.float32) said "dtype must be one of ('float64', 'float32'),
    got <class 'numpy.float32'>"; "f4" was refused too."""
    sim = Simulation(DoubleWell(), OverdampedLangevin(0.01, 0.5), 4, backend="numpy", dtype=dtype)
    assert sim.dtype == np.float32 and sim.config()["dtype"] == "float32"


@pytest.mark.parametrize("dtype", [np.float16, "int64", "float", None, "nope"])
def test_simulation_refuses_other_dtypes(dtype):
    if dtype == "float":        # np.dtype("float") is float64: accepted
        assert Simulation(DoubleWell(), OverdampedLangevin(0.01, 0.5), 4, backend="numpy",
                          dtype=dtype).dtype == np.float64
        return
    with pytest.raises(ConfigError, match=r"dtype must be one of \('float64', 'float32'\)"):
        Simulation(DoubleWell(), OverdampedLangevin(0.01, 0.5), 4, backend="numpy", dtype=dtype)


def test_numeric_strings_in_dynamics_parameters_are_read_as_numbers():
    """OverdampedLangevin("0.01", 0.5) was accepted (as_schedule reads the string), while
    UnderdampedLangevin(friction="1") and SGD(momentum="0.9") failed with a str/int
    comparison: every scalar parameter now reads a number the way as_schedule does."""
    assert OverdampedLangevin("0.01", "0.5").step(0) == 0.01
    dyn = UnderdampedLangevin(0.01, friction="1", mass="2")
    assert dyn.friction == 1.0 and dyn.mass == 2.0
    assert SGD(lr="0.1", momentum="0.9", weight_decay="0.01").momentum == 0.9
    assert AdamW(beta1="0.8", eps="1e-6").beta1 == 0.8
    for make, name in ((lambda: UnderdampedLangevin(friction="fast"), "friction"),
                       (lambda: SGD(momentum=[0.9]), "momentum"),
                       (lambda: AdamW(weight_decay=None), "weight_decay"),
                       (lambda: OverdampedLangevin("small"), "step")):
        with pytest.raises(ConfigError, match=rf"^{name} must be a number"):
            make()


def test_adamw_takes_sampling_like_sgd():
    """AdamW(sampling="iid") raised TypeError (only the deprecated replacement= existed), and
    replacement= gave no DeprecationWarning."""
    import warnings

    from langevin_sim.dynamics.base import Dynamics

    assert AdamW(0.01, 2).sampling == "epoch" and AdamW(0.01, 2).replacement is False
    iid = AdamW(0.01, 2, sampling="iid")
    assert iid.replacement is True and Dynamics.from_dict(iid.to_dict()) == iid
    assert AdamW(0.01, 2, sampling="subset").sampling == "subset"
    with pytest.raises(ConfigError, match=r"AdamW sampling must be one of .*got 'random'"):
        AdamW(0.01, 2, sampling="random")
    with pytest.raises(ConfigError, match="contradicts"):
        AdamW(0.01, 2, replacement=False, sampling="iid")
    for make in (lambda: AdamW(0.01, 2, replacement=True), lambda: SGD(0.1, 2, replacement=True)):
        with pytest.warns(DeprecationWarning, match="sampling='iid'"):
            assert make().sampling == "iid"
    old = {"class": "AdamW", "lr": 0.01, "batch_size": 2, "beta1": 0.9, "beta2": 0.999,
           "eps": 1e-8, "weight_decay": 0.0, "replacement": True}   # a run written before sampling
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Dynamics.from_dict(old).sampling == "iid"
    pot = LinearRegression(n=8, d=2)
    runs = [Simulation(pot, AdamW(0.01, 2, weight_decay=0.0, **kw), 4, backend="numpy",
                       seed=3).run(20, 10) for kw in (dict(sampling="iid"), dict(sampling="epoch"))]
    with pytest.warns(DeprecationWarning):
        legacy = Simulation(pot, AdamW(0.01, 2, weight_decay=0.0, replacement=True), 4,
                            backend="numpy", seed=3).run(20, 10)
    assert np.array_equal(np.asarray(legacy.positions), np.asarray(runs[0].positions))
    assert not np.array_equal(np.asarray(runs[1].positions), np.asarray(runs[0].positions))


def test_run_rebuilds_its_dynamics(tmp_path):
    """Run had .potential but no .dynamics: the temperature was only at
    run.config["dynamics"]["temperature"]["start"]."""
    from langevin_sim.dynamics import Schedule

    dyn = UnderdampedLangevin(0.01, friction=2.0, temperature=Schedule("linear", 1.0, 0.5, 100))
    run = Simulation(DoubleWell(), dyn, 4, backend="numpy").run(20, 10, out=tmp_path / "u.h5")
    assert run.dynamics == dyn and run.dynamics.temperature(100) == 0.5
    run.close()
    with open_run(tmp_path / "u.h5") as again:
        assert again.dynamics == dyn
    assert small_run().dynamics == OverdampedLangevin(0.01, 0.5)


def test_marginal_fit_is_frozen_and_plots(tmp_path):
    """docs/analysis.md promises every result is a frozen dataclass with .table() and
    .plot(ax); MarginalFit was mutable and had no plot."""
    import dataclasses

    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from langevin_sim.analysis import stationary

    pot = DoubleWell(d=1)
    x = Simulation(pot, OverdampedLangevin(0.01, 0.5), 400, backend="numpy", seed=2).run(
        400, 400).positions[-1]
    fit = stationary.fit_marginal(x, pot.marginal_energy, 0.5, bins=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.p_threshold = 0.5
    fig, (a, b) = plt.subplots(1, 2)
    assert fit.plot(a) is a and len(a.patches) == 2 and "chi2/dof" in a.get_title()
    fit.plot(b, x, pot.marginal_energy, 0.5)
    assert len(b.lines) == 1 and len(b.patches) == 40
    plt.close(fig)


def test_potential_reprs_rebuild_the_instance():
    """Quadratic(spectrum=[0.5, 2.0], seed=1) printed Quadratic(seed=1), which raises
    "Quadratic needs H or spectrum"; MultiWell printed only softness and seed."""
    from numpy import array  # noqa: F401  (what a repr of a large array would need)

    from langevin_sim.potentials import MultiWell, Quadratic, ShiftedMultiWell

    q = Quadratic(spectrum=[0.5, 2.0], seed=1)
    assert repr(q) == "Quadratic(d=2, spectrum=[0.5, 2.0], seed=1)"
    h = Quadratic(H=np.diag([1.0, 3.0]), center=[1.0, 0.0])
    assert repr(h) == "Quadratic(d=2, H=[[1.0, 0.0], [0.0, 3.0]], center=[1.0, 0.0])"
    assert repr(Quadratic(H=np.eye(9))) == "Quadratic(d=9, H=<(9, 9) array>)"
    mw = MultiWell(centers=[[-1.0, 0.0], [1.0, 0.0]], spectra=[[1.0, 1.0], [4.0, 4.0]],
                   depths=[0.0, 0.2])
    assert repr(mw) == ("MultiWell(centers=[[-1.0, 0.0], [1.0, 0.0]], spectra=[[1.0, 1.0], "
                        "[4.0, 4.0]], depths=[0.0, 0.2], softness=0.05, seed=0)")
    assert "shifts=<(40, 1) array>" in repr(ShiftedMultiWell(
        centers=[[-1.0], [1.0]], shifts=np.zeros((40, 1)), spectra=[[1.0], [2.0]]))
    for pot in (q, h, mw, DoubleWell(d=2, tilt=0.1)):
        again = eval(repr(pot))
        assert repr(again) == repr(pot)
        for k, v in pot.arrays().items():
            np.testing.assert_array_equal(again.arrays()[k], v)
    A = np.eye(2)
    mine = LinearRegression(n=2, d=2, A=A, y=[1.0, 2.0], w_star=[1.0, 2.0])
    assert "A=[[1.0, 0.0], [0.0, 1.0]], y=[1.0, 2.0], w_star=[1.0, 2.0]" in repr(mine)
    assert repr(LinearRegression(n=4, d=2)) == "LinearRegression(n=4, d=2, noise=0.1, seed=0)"


def test_simulation_and_dynamics_reprs():
    """Simulation printed as <langevin_sim.simulation.Simulation object at 0x...>, and a
    constant step as Schedule(kind='constant', start=0.1, end=0.1, steps=1)."""
    from langevin_sim.dynamics import Schedule

    dyn = OverdampedLangevin(0.1, 0.5)
    assert repr(dyn) == "OverdampedLangevin(step=0.1, temperature=0.5)"
    assert eval(repr(dyn)) == dyn
    sgd = SGD(Schedule("linear", 0.1, 0.01, 100), 4, momentum=0.9)
    assert "lr=Schedule(kind='linear'" in repr(sgd) and eval(repr(sgd)) == sgd
    sim = Simulation(DoubleWell(d=2), dyn, 4, backend="numpy", seed=3, dtype="float32")
    text = ("Simulation(DoubleWell(d=2, barrier=1.0, a=1.0, center=0.0, tilt=0.0), "
            "OverdampedLangevin(step=0.1, temperature=0.5), replicas=4, backend='numpy', "
            "dtype='float32', seed=3; {} steps done)")
    assert repr(sim) == text.format(0)
    sim.run(20, 10)
    assert repr(sim) == text.format(20)


def test_a_notebook_shows_a_result_as_its_table():
    """A result in a notebook cell showed the dataclass repr (raw arrays); IPython now prints
    its table(), and repr / == stay the dataclass's."""
    pretty = pytest.importorskip("IPython.lib.pretty").pretty
    from langevin_sim.analysis import stationary, tails

    x = np.random.default_rng(0).pareto(3.0, 2000) + 1.0
    h = tails.hill(x)
    assert pretty(h) == h.table() and repr(h).startswith("HillEstimate(alpha=")
    assert h == tails.hill(x)
    pot = DoubleWell(d=1)
    y = np.random.default_rng(1).choice([-1.0, 1.0], 500) + 0.1 * np.random.default_rng(2).standard_normal(500)
    fit = stationary.fit_marginal(y, pot.marginal_energy, 0.5, bins=8)
    assert pretty(fit) == fit.table() and repr(fit).startswith("MarginalFit(edges=")


def test_results_compare_by_their_numbers():
    """`fit_a == fit_b` on two results holding arrays raised NumPy's "truth value of an array
    is ambiguous" (the dataclass `==` compares field tuples); it answers one bool now, arrays
    element by element, NaN equal to NaN, nested results and tuples of them too."""
    import dataclasses

    from langevin_sim.analysis import diagnostics, stationary

    pot = DoubleWell(d=1)
    x = Simulation(pot, OverdampedLangevin(0.01, 0.5), 200, backend="numpy", seed=2).run(
        200, 200).positions[-1]
    fit = stationary.fit_marginal(x, pot.marginal_energy, 0.5, bins=8)
    again = stationary.fit_marginal(x.copy(), pot.marginal_energy, 0.5, bins=8)
    assert fit == again and not fit != again and fit is not again
    assert fit != dataclasses.replace(fit, counts=fit.counts[::-1].copy())
    assert fit != dataclasses.replace(fit, counts=fit.counts[:-1])      # shapes differ
    assert fit != stationary.fit_marginal(x[1:], pot.marginal_energy, 0.5, bins=8)
    assert (fit == "fit") is False
    run = small_run(steps=200, replicas=8)
    first, second = diagnostics.diagnose(run, "energy"), diagnostics.diagnose(run, "energy")
    assert first == second                  # tuples of results with arrays and dicts
    nan = dataclasses.replace(first[0], acf=np.full_like(first[0].acf, np.nan))
    assert nan == dataclasses.replace(first[0], acf=np.full_like(first[0].acf, np.nan))
    assert nan != first[0]


def _user_potential(name: str, **methods):
    """A Potential subclass defined here (outside the package), a 2-D bowl unless `methods`
    replace its __init__, params, energy or grad (None: leave it out)."""
    from langevin_sim.potentials.base import Potential

    def init(self, k=1.0):
        self.k, self.d = float(k), 2

    body = {"__init__": init, "params": lambda self: {"k": self.k},
            "energy": lambda self, x: 0.5 * self.k * (x ** 2).sum(axis=1),
            "grad": lambda self, x, batch=None: self.k * x}
    body.update(methods)
    return type(name, (Potential,), {k: f for k, f in body.items() if f is not None})


@pytest.mark.parametrize("case, error, says", [
    ("grad (M, 1)", ConfigError, r"grad\(x\) returned shape \(2, 1\) for x of shape \(2, 2\); "
                                 r"it must return \(2, 2\)"),
    ("grad scalar", ConfigError, r"grad\(x\) returned shape \(\) for x"),
    ("energy (M, d)", ConfigError, r"energy\(x\) returned shape \(2, 2\) for x of shape \(2, 2\); "
                                   r"it must return \(2,\)"),
    ("no d", ConfigError, r"has no dimension d \(got None\): a Potential sets self\.d"),
    ("params not __init__'s", ConfigError, r"\(\*\*params\(\), \*\*arrays\(\)\) fails .*"
                                           r"unexpected keyword argument 'kappa'"),
    ("no energy", NotImplementedError, r"defines no energy\(x\) -> \(M,\)"),
])
def test_a_users_potential_that_breaks_the_contract_is_one_error_at_construction(case, error,
                                                                                   says):
    """A careful user's custom potentials: a grad of (M, 1) or a scalar broadcast silently into
    wrong trajectories; an (M, d) energy failed in h5py at the first record; no `d` was an
    AttributeError; params() keys __init__ does not take wrote a file that open_run could not
    rebuild; a missing energy was an empty NotImplementedError.  Each is now one error naming
    the class and the contract, when the Simulation is built."""
    methods = {
        "grad (M, 1)": {"grad": lambda self, x, batch=None: x[:, :1]},
        "grad scalar": {"grad": lambda self, x, batch=None: 1.0},
        "energy (M, d)": {"energy": lambda self, x: x ** 2},
        "no d": {"__init__": lambda self, k=1.0: setattr(self, "k", k)},
        "params not __init__'s": {"params": lambda self: {"kappa": self.k}},
        "no energy": {"energy": None},
    }[case]
    cls = _user_potential("Broken", **methods)
    with pytest.raises(error, match=says):
        Simulation(cls(), OverdampedLangevin(0.01), 4, backend="numpy")
    good = _user_potential("Bowl2")
    assert Simulation(good(), OverdampedLangevin(0.01), 4, backend="numpy").run(2, 1).n_records == 3


def test_numba_hooks_of_a_users_family_register_its_generic_drivers(monkeypatch):
    """`drivers.family(Cls, Hooks(...))` from a user's module (after the package registered its
    own) left `kernel_for` None, so the run took the NumPy reference with a warning, unless
    the user also called the undocumented `register_generic()`."""
    from langevin_sim.backends import registry
    from langevin_sim.kernels import drivers

    monkeypatch.setattr(registry, "KERNELS", dict(registry.KERNELS))
    monkeypatch.setattr(drivers, "FAMILIES", dict(drivers.FAMILIES))
    cls = _user_potential("HookedBowl")
    drivers.family(cls, drivers.Hooks(None, None, lambda pot, dtype: ()))
    kernel = registry.kernel_for(cls(), OverdampedLangevin(0.01), "numba")
    assert kernel is not None and kernel.fn.__name__ == "generic_overdamped_driver"
