"""Bad input gets one clear error that names the fix."""
import os
import runpy
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from langevin_sim import BackendUnavailableError, ConfigError, Simulation
from langevin_sim.cli import main as cli
from langevin_sim.dynamics import MALA, SGD, OverdampedLangevin, Schedule, UnderdampedLangevin
from langevin_sim.potentials import DoubleWell, LinearRegression, Quadratic
from langevin_sim.scenario import RunParams, field_help, load_scenario, run_scenario
from langevin_sim.scenario import main as scenario_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOUBLE_WELL = os.path.join(ROOT, "scenarios", "double_well.py")


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
    with pytest.raises(BackendUnavailableError, match=r'pip install -e "\.\[cuda12\]"'):
        Simulation(DoubleWell(), OverdampedLangevin(), 4, backend="cuda")


def test_backends_command_says_what_runs_here_and_the_fix_for_what_does_not(capsys):
    """`langevin-sim backends`: a line per backend; where CuPy is missing the cuda line is
    the backend's own error naming the install; exit status 1 only when a backend named on
    the command line cannot run (tests/test_cuda_backend.py: the simulator's line)."""
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    import numba

    assert cli(["backends"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["numpy", "numba", "cuda"]
    assert f"numba {numba.__version__}" in lines[1] and f"on {numba.get_num_threads()} threads" in lines[1]
    assert lines[2].startswith("cuda   unavailable: backend 'cuda' needs CuPy: pip install "
                               '-e ".[cuda12]" (CUDA 12 driver) or -e ".[cuda13]"')
    assert cli(["backends", "numpy", "numba"]) == 0
    assert cli(["backends", "cuda"]) == 1
    assert cli(["backends", "gpu"]) == 1
    assert "unknown backend 'gpu'" in capsys.readouterr().out


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


@pytest.mark.parametrize("kw, match", [
    (dict(replicas=10.5), "replicas must be an integer >= 1, got 10.5"),
    (dict(replicas=True), "replicas must be an integer >= 1, got True"),
    (dict(replicas="3"), "replicas must be an integer >= 1, got '3'"),
    (dict(replicas=2, seed=1.5), "seed must be an integer, got 1.5"),
    (dict(replicas=2, first_replica=-1), "first_replica must be an integer >= 0"),
])
def test_counts_and_seeds_must_be_integers(kw, match):
    """No silent truncation: 10.5 replicas is an error, not 10."""
    with pytest.raises(ConfigError, match=match):
        Simulation(DoubleWell(), OverdampedLangevin(), backend="numpy", **kw)


def test_replica_ids_and_steps_stay_within_their_counter_words():
    """Replica ids are the Philox counter's 32-bit replica word: ids from 2**32 on were taken
    silently (outside the documented layout; 2**64 an OverflowError), and a run's end step
    past int64 an OverflowError after its first record."""
    last = Simulation(DoubleWell(), OverdampedLangevin(), 3, backend="numpy",
                      first_replica=2**32 - 3)
    assert last.replica_ids[-1] == 2**32 - 1
    for first in (2**32 - 2, 2**64):
        with pytest.raises(ConfigError, match=r"replica ids must be below 2\*\*32 .* got "
                                              rf"{first} \+ 3; pass first_replica <= "
                                              f"{2**32 - 3}"):
            Simulation(DoubleWell(), OverdampedLangevin(), 3, backend="numpy",
                       first_replica=first)
    last.step = 2**63 - 5
    with pytest.raises(ConfigError, match=r"steps=5 ends the run at step 9223372036854775808, "
                                          r"past int64 .* end it by step 9223372036854775807"):
        last.run(5, 1, progress=False)


def test_step_counts_are_integers_within_the_int64_stream_positions():
    """The kernels count stream positions n = step * lanes in int64: at d = 4 the numba
    kernel's step 2**62 drew step 0's noise (the reference's n = 2**64 is exact).  Step
    counts are integers >= 0 in advance and in the ladder's run, as in run."""
    sim = Simulation(DoubleWell(d=4), OverdampedLangevin(), 2, backend="numba", init="zeros")
    sim.step = np.int64(2**61 - 1)                      # as NumPy int64: no wrap in the check
    sim.run(1, 1, progress=False)                       # the last position is 2**63 - 1
    with pytest.raises(ConfigError, match=r"steps=1 ends the run at step 2305843009213693953, "
                                          r"past int64 .*4 stream positions a step.* end it by "
                                          r"step 2305843009213693952"):
        sim.run(1, 1, progress=False)
    # OBABO draws 2 d normals a step (numba wrapped from step 2**62 at d = 1), LM's step t
    # reads step t + 1's (its last allowed step read 2**63 ... at end * d = 2**63)
    from langevin_sim.dynamics import OBABO, LeimkuhlerMatthews
    from langevin_sim.potentials.sharpness import SharpnessObserver

    for dyn, d, last, says in ((OBABO(), 1, 2**62, "2 stream positions a step"),
                               (LeimkuhlerMatthews(), 4, 2**61 - 1,
                                "4 stream positions a step, 1 step ahead")):
        edge = Simulation(DoubleWell(d=d), dyn, 2, backend="numpy", init="zeros")
        edge.step = last - 1
        edge.run(1, 1, progress=False)
        with pytest.raises(ConfigError, match=rf"ends the run at step {last + 1}, past int64 "
                                              rf"\(.*{says}\); end it by step {last}"):
            edge.run(1, 1, progress=False)
    # a sharpness observer's probes sit at step * 2**32: an OverflowError from step 2**34 on
    sharp = Simulation(Quadratic(spectrum=[1.0, 3.0]), OverdampedLangevin(), 2,
                       backend="numpy", observers=[SharpnessObserver(1, iters=5, probes=2)])
    sharp.step = 2**34 - 2
    sharp.run(1, 1, progress=False)
    with pytest.raises(ConfigError, match=r"sharpness observer ends by step 17179869183"):
        sharp.run(1, 1, progress=False)
    sgd = Simulation(LinearRegression(n=12, d=3, seed=1), SGD(0.01, 6), 1, backend="numpy")
    sgd.step = 2**63 // 12 - 1
    with pytest.raises(ConfigError, match=r"12 stream positions a step"):
        sgd.run(2, 1, progress=False)
    for bad, match in ((-3, "steps must be an integer >= 0, got -3"),
                       (2.5, "steps must be an integer >= 0, got 2.5"),
                       (2**61, "steps=2305843009213693952 ends the run")):
        with pytest.raises(ConfigError, match=match):    # -3 set the step back, 2.5 ran 2
            sim.advance(bad)
    assert sim.step == 2**61
    from langevin_sim.exchange import ReplicaExchange

    ladder = ReplicaExchange(DoubleWell(d=4), OverdampedLangevin(), [0.5, 1.0], 1,
                             backend="numpy")
    for bad, match in ((10.5, "steps must be an integer >= 0, got 10.5"),     # ran 10
                       (-1, "steps must be an integer >= 0, got -1")):
        with pytest.raises(ConfigError, match=match):
            ladder.run(bad, 1, progress=False)
    with pytest.raises(ConfigError, match="record_every must be an integer >= 1, got 2.5"):
        ladder.run(10, 2.5, progress=False)
    ladder.step = 2**61
    with pytest.raises(ConfigError, match=r"steps=1 ends the run .*4 stream positions a step"):
        ladder.run(1, 1, progress=False)


def test_schedule_steps_are_an_integer_that_survives_the_run_file():
    """steps=2.7 was taken and stored as int(2.7) = 2: a resumed run annealed on another
    schedule than the run it continued; steps=inf was an OverflowError."""
    for bad in (2.7, "10", True, float("inf"), 0):
        with pytest.raises(ConfigError, match=rf"schedule steps must be an integer >= 1, got "
                                              rf"{bad!r}"):
            Schedule("linear", 0.1, 0.2, bad)
    s = Schedule("linear", 0.1, 0.2, 1e4)
    assert s.steps == 10_000 and Schedule(**s.to_dict()) == s


def test_schedule_values_are_finite_numbers_and_its_keys_known():
    """Schedule("linear", 0.01, nan, 100) was accepted (bounds() takes min/max, which drop a
    NaN in second place): as a step it ended in a ValueError inside Simulation.time, as a
    temperature every replica 'diverged' at step 1 with nothing naming the cause; a None or
    a text start and a misspelt dict key were TypeErrors."""
    nan = float("nan")
    for args, match in ((("linear", 0.01, nan, 100), "the schedule's end must be finite"),
                        (("linear", 1.0, float("inf"), 100), "the schedule's end must be finite"),
                        (("linear", None, 2.0, 5), "the schedule's start must be a number"),
                        (("linear", "x", 2.0, 5), "the schedule's start must be a number")):
        with pytest.raises(ConfigError, match=match):
            Schedule(*args)
    with pytest.raises(ConfigError, match=r"step: unknown schedule key\(s\) \['stop'\]"):
        OverdampedLangevin(step={"kind": "linear", "start": 0.1, "stop": 0.01, "steps": 10})
    with pytest.raises(ConfigError, match="end / start is beyond float64"):
        Schedule("exponential", 1e-10, 1e300, 100)     # inf from step 1 on
    assert Schedule("linear", "0.1", 1, 5).to_dict() == {"kind": "linear", "start": 0.1,
                                                         "end": 1.0, "steps": 5}


@pytest.mark.parametrize("make, match", [
    (lambda: SGD(weight_decay=float("inf")), "weight_decay must be finite"),
    (lambda: SGD(grad_noise=float("inf")), "grad_noise must be finite"),
    (lambda: UnderdampedLangevin(mass=float("inf")), "mass must be finite"),
    (lambda: Simulation(DoubleWell(tilt=float("nan")), OverdampedLangevin(0.1), 4,
                        backend="numpy"), "DoubleWell: tilt must be finite, got nan"),
    (lambda: Simulation(LinearRegression(noise=float("nan")), SGD(0.1), 4, backend="numpy"),
     "LinearRegression: noise must be finite"),
    (lambda: Simulation(Quadratic(spectrum=[1.0, 2.0], center=[0.0, float("inf")]),
                        OverdampedLangevin(0.1), 4, backend="numpy"),
     "Quadratic: the array 'center' holds inf or NaN"),
    (lambda: OverdampedLangevin(0.1, temperature=True),
     "temperature must be a number or a Schedule, got True"),
    (lambda: SGD(0.1, momentum=np.True_), "momentum must be a number, got "),
])
def test_non_finite_parameters_are_refused(make, match):
    """SGD(weight_decay=inf) or mass=inf froze or diverged every replica at step 1 (NaN was
    refused, inf not); a potential's NaN tilt or label noise likewise; a bool was taken as
    1.0 or 0.0 (temperature=True ran at T = 1)."""
    with pytest.raises(ConfigError, match=match):
        make()


def test_run_arguments_and_the_record_grid(tmp_path):
    """steps and record_every are integers; a run that ends between records warns that its
    last steps are only in the checkpoint (the records end at the last multiple of
    record_every); one that ends on the grid does not; a sharpness observer off the record
    grid is refused, naming the spacing it would really have."""
    import warnings

    from langevin_sim import resume
    from langevin_sim.errors import UnrecordedStepsWarning
    from langevin_sim.potentials.sharpness import SharpnessObserver

    sim = Simulation(DoubleWell(), OverdampedLangevin(), 2, backend="numpy")
    with pytest.raises(ConfigError, match="steps must be an integer >= 0, got 'abc'"):
        sim.run("abc", 5)
    with pytest.raises(ConfigError, match="record_every must be an integer >= 1, got 0"):
        sim.run(10, 0)
    with pytest.warns(UnrecordedStepsWarning, match="ends at step 12, between records "
                                                    r"\(record_every=5\): its last 2 steps"):
        run = sim.run(12, 5, progress=False)
    assert run.step.tolist() == [0, 5, 10]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim.run(3, 5, progress=False)           # 12 -> 15: ends on a record
    Simulation(DoubleWell(), OverdampedLangevin(), 2, backend="numpy").run(
        10, 5, out=tmp_path / "r.h5", progress=False).close()
    with pytest.warns(UnrecordedStepsWarning, match="ends at step 17, .* resume to a multiple"):
        resume(tmp_path / "r.h5", steps=17, progress=False).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resume(tmp_path / "r.h5", steps=20, progress=False).close()
    (tmp_path / "r.h5").unlink()
    obs = Simulation(Quadratic(spectrum=[1.0, 2.0]), OverdampedLangevin(), 2, backend="numpy",
                     observers=[SharpnessObserver(every=75)])
    with pytest.raises(ConfigError, match="every 150; make sharpness_every .* a multiple of 50"):
        obs.run(150, 50, progress=False)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kw, match", [
    (dict(compression="zstdx"), "compression 'zstdx' is not available here; give one of "
                                "gzip, lzf"),
    (dict(compression=60000), "compression 60000 is not available here"),
    (dict(compression=2**40), "compression 1099511627776 is not available here"),
    (dict(checkpoint_every=0), "checkpoint_every must be an integer >= 1, got 0"),
    (dict(checkpoint_every=2.5), "checkpoint_every must be an integer >= 1, got 2.5"),
    (dict(flush_seconds=-1), "flush_seconds must be a number of seconds >= 0 .*, got -1"),
    (dict(flush_seconds=float("nan")), "flush_seconds must be .*, got nan"),
    (dict(flush_seconds="1"), "flush_seconds must be .*, got '1'"),
])
def test_write_options_are_one_line_errors_before_any_file(tmp_path, kw, match):
    """A compression filter HDF5 lacks was h5py's ValueError from inside the file's layout
    (naming no alternative); checkpoint_every=0 and flush_seconds=-1 were taken silently."""
    from langevin_sim import resume
    from langevin_sim.exchange import ReplicaExchange

    sim = Simulation(DoubleWell(), OverdampedLangevin(), 2, backend="numpy")
    with pytest.raises(ConfigError, match=match):
        sim.run(10, 5, out=tmp_path / "run.h5", progress=False, **kw)
    if "checkpoint_every" not in kw:
        ladder = ReplicaExchange(DoubleWell(), OverdampedLangevin(), [0.5, 1.0], 2,
                                 backend="numpy")
        with pytest.raises(ConfigError, match=match):
            ladder.run(10, 5, out=tmp_path / "ladder.h5", progress=False, **kw)
    if "flush_seconds" in kw:
        with pytest.raises(ConfigError, match=match):
            resume(tmp_path / "run.h5", progress=False, **kw)
    assert not list(tmp_path.iterdir())


def test_output_path_that_cannot_be_a_file(tmp_path):
    sim = Simulation(DoubleWell(), OverdampedLangevin(), 2, backend="numpy")
    with pytest.raises(ConfigError, match="is a directory; give a file path"):
        sim.run(10, 5, out=tmp_path, overwrite=True, progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is not a writable folder"):
        sim.run(10, 5, out=tmp_path / "file" / "run.h5", progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_a_missing_extra_is_named(monkeypatch, tmp_path):
    """An optional package missing: one error naming the extra, before a scan writes files
    (None in sys.modules makes an import fail, whether or not another test imported it)."""
    from langevin_sim.errors import MissingExtraError, require
    from langevin_sim.scan import run_scan

    with pytest.raises(MissingExtraError, match=r"X needs no_such_module, which is not "
                                                r"installed: pip install -e \"\.\[analysis\]\""):
        require("no_such_module", "analysis", "X")
    for name in ("distributed", "dask"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r"needs distributed.*\.\[scan\]"):
        run_scan(DOUBLE_WELL, grid={"temperature": [0.5, 1.0]}, out=tmp_path / "s", workers=2)
    assert not (tmp_path / "s").exists()


def test_info_on_a_scan_directory_points_to_the_scan_tools(tmp_path, capsys):
    (tmp_path / "scan.json").write_text("{}")
    assert cli(["info", str(tmp_path)]) == 2
    line = one_error_line(capsys.readouterr().err, "langevin-sim")
    assert "is a scan directory, not a run file" in line and "scan_summary.py" in line


def test_classifier_train_set_too_large_says_so():
    from langevin_sim.potentials import ClassifierMLP

    pytest.importorskip("sklearn")
    with pytest.raises(ConfigError, match="n=2000 and n_val=0 leave no test samples: the "
                                          "'digits' data set has 1797; choose n"):
        ClassifierMLP("digits", n=2000)


def test_output_exists(tmp_run):
    sim = Simulation(DoubleWell(), OverdampedLangevin(), 2)
    sim.run(10, 5, out=tmp_run, progress=False).close()
    with pytest.raises(ConfigError, match="exists.*overwrite"):
        sim.run(10, 5, out=tmp_run, progress=False)
    sim.run(10, 5, out=tmp_run, progress=False, overwrite=True).close()


# ------------------------------------------------------------- command-line errors: one line

def one_error_line(err: str, prog: str) -> str:
    """The only line of a command's stderr: `prog: error: ...`, no traceback (besides the
    one-line notice of a first compilation, which a cold Numba cache prints)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines()
             if not ln.startswith("langevin-sim: compiling numba kernels for ")]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case", ["toml syntax", "toml missing", "readme", "no Params",
                                  "missing scenario", "toml type", "toml int", "bad choice"])
def test_cli_errors_are_one_line(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    syntax, typed, integer = (tmp_path / f"{name}.toml" for name in ("syntax", "type", "int"))
    argv, expect = {
        "toml syntax": ([DOUBLE_WELL, "--config", write(syntax, "replicas = 64\ntemperature = \n")],
                        [f"--config {syntax}: invalid TOML at line 2, column 15"]),
        "toml missing": ([DOUBLE_WELL, "--config", "nope.toml"],
                         ["--config nope.toml: no such file"]),
        "readme": ([os.path.join(ROOT, "README.md")],
                   ["README.md is not a scenario", "Python script (*.py)"]),
        "no Params": ([write(tmp_path / "x.py", "x = 1\n")],
                      ["x.py is not a scenario", "no `Params`",
                       "no `build(params) -> Simulation`"]),
        "missing scenario": (["nope.py"], ["scenario nope.py: no such file"]),
        "toml type": ([DOUBLE_WELL, "--config", write(typed, 'temperature = "hot"\n')],
                      [f"temperature = 'hot' in --config {typed}: expected float"]),
        "toml int": ([DOUBLE_WELL, "--config", write(integer, "steps = 1.5\n")],
                     [f"steps = 1.5 in --config {integer}: expected int"]),
        "bad choice": ([DOUBLE_WELL, "--set", "dtype=float16"],
                       ["--set dtype=float16: expected one of float64, float32"]),
    }[case]
    assert cli(["run", *argv, "--out", str(tmp_path / "o.h5"), "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err, "langevin-sim")
    assert all(e in line for e in expect), line
    assert case != "toml type" or "--set" not in line
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("case", ["grid type", "grid empty", "out a file", "out under a file"])
def test_scan_cli_errors_are_one_line(case, tmp_path, capsys):
    """A scan's bad axis value names its --grid; an --out that is a file (or under one) is
    one line, not a traceback from mkdir."""
    (tmp_path / "afile").write_text("")
    out = str(tmp_path / "scan")
    argv, expect = {
        "grid type": (["--grid", "temperature=0.5,hot"],
                      ["--grid temperature=0.5,hot: 'hot': expected float"]),
        "grid empty": (["--grid", "temperature="],
                       ["--grid temperature=: give a comma-separated list of values"]),
        "out a file": (["--grid", "temperature=0.5"],
                       [f"--out {tmp_path / 'afile'} is a file; a scan writes a directory"]),
        "out under a file": (["--grid", "temperature=0.5"],
                             [f"cannot make the scan directory --out {tmp_path / 'afile' / 's'}"]),
    }[case]
    if case.startswith("out"):
        out = str(tmp_path / "afile") if case == "out a file" else str(tmp_path / "afile" / "s")
    assert cli(["scan", DOUBLE_WELL, *argv, "--set", "steps=20", "--workers", "1",
                "--out", out]) == 2
    line = one_error_line(capsys.readouterr().err, "langevin-sim")
    assert all(e in line for e in expect), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_scenario_script_error_is_one_line(tmp_path):
    bad = write(tmp_path / "bad.toml", "temperature = \n")
    r = subprocess.run([sys.executable, DOUBLE_WELL, "--config", bad, "--out",
                        str(tmp_path / "o.h5")], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    line = one_error_line(r.stderr, "double_well.py")
    assert f"--config {bad}: invalid TOML at line 1, column 15" in line


def test_stationary_analysis_needs_separable_potential_and_positions(tmp_path, monkeypatch,
                                                                    capsys):
    """analysis/stationary.py on a p-spin run and on a non-diagonal Quadratic run: one line
    naming the potential and what to compare instead; on a run without positions: one line
    saying how to record them."""
    pspin = tmp_path / "pspin.h5"
    run_scenario(os.path.join(ROOT, "scenarios", "pspin_threshold.py"),
                 ["N=8", "replicas=2", "steps=4", "record_every=2", "record_positions=true"],
                 out=pspin, progress=False).close()
    quad = tmp_path / "quad.h5"
    Simulation(Quadratic(np.array([[2.0, 0.5], [0.5, 1.0]])), OverdampedLangevin(0.1), 2,
               backend="numpy").run(4, 2, out=quad, progress=False).close()
    blind = tmp_path / "blind.h5"
    run_scenario(DOUBLE_WELL, ["replicas=2", "steps=4", "record_every=2",
                               "record_positions=false"], out=blind, progress=False).close()
    separable = ["needs a separable potential", "analysis/covariance.py", "energies and observables"]
    for path, expect in ((pspin, separable + ["this run's SphericalPSpin is not"]),
                         (quad, separable + ["this run's Quadratic is not"]),
                         (blind, ["recorded no positions", "--set record_positions=true"])):
        monkeypatch.setattr(sys, "argv", ["stationary.py", str(path)])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(os.path.join(ROOT, "analysis", "stationary.py"), run_name="__main__")
        assert e.value.code == 2
        line = one_error_line(capsys.readouterr().err, "stationary.py")
        assert all(s in line for s in expect), line
    assert not list(tmp_path.glob("*.png"))


def test_scenario_help_needs_every_meaning(tmp_path, capsys):
    """--help of a scenario with a field lacking help text fails, naming the field; an
    override of a RunParams field inherits its meaning."""
    path = write(tmp_path / "bare.py", textwrap.dedent("""
        from dataclasses import dataclass
        from langevin_sim.scenario import RunParams, param

        @dataclass(frozen=True)
        class Params(RunParams):
            replicas: int = 8
            gain: float = param(1.0, "gain")
            bare: float = 0.5

        def build(p): ...
    """))
    with pytest.raises(SystemExit) as e:
        scenario_main(path, ["--help"])
    assert e.value.code == 2
    line = one_error_line(capsys.readouterr().err, "bare.py")
    assert "parameter 'bare' has no help text" in line and "param(default" in line
    P = load_scenario(path).Params
    assert field_help(P, "replicas") == field_help(RunParams, "replicas")
    assert field_help(P, "gain") == "gain"


@pytest.mark.parametrize("command", [["-m", "langevin_sim.cli", "backends"],
                                     ["-m", "langevin_sim.cli", "--help"],
                                     ["analysis/stationary.py", "--help"]])
def test_a_closed_stdout_ends_a_command_quietly(command):
    """`... | head`: a reader that closed stdout before the command wrote (here before it
    started) ends it with exit status 141 and nothing on stderr (it was a BrokenPipeError
    traceback, or 'Exception ignored' at exit)."""
    import subprocess

    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, *command], stdout=w, stderr=subprocess.PIPE,
                           text=True, cwd=ROOT, timeout=120)
    finally:
        os.close(w)
    assert p.returncode in (0, 141) and p.stderr == "", (p.returncode, p.stderr[-2000:])
