"""The first run after install: the compile notice, and `langevin-sim warmup`."""
import os
import shutil
import subprocess
import sys
import tempfile

import numba
import numpy as np
import pytest

from langevin_sim import Simulation, warmup
from langevin_sim.backends import registry
from langevin_sim.cli import main as cli
from langevin_sim.dynamics import OverdampedLangevin
from langevin_sim.errors import ConfigError
from langevin_sim.potentials import DoubleWell

from .conftest import early_result, starts_early

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTICE = "langevin-sim: compiling numba kernels for"
RUN = ("from langevin_sim import Simulation; from langevin_sim.potentials import DoubleWell; "
       "from langevin_sim.dynamics import OverdampedLangevin; "
       "Simulation(DoubleWell(d=1), OverdampedLangevin(1e-2, 0.5), 5, dtype='float64').advance(3)")


def python(*args, env=None):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=600)


def test_warmup_one_pair_prints_its_time_then_a_run_loads_silently():
    """`warmup --only` compiles (or loads) one pair and prints its seconds; a later process
    finds the kernel in Numba's cache and prints no notice."""
    r = python("-m", "langevin_sim.cli", "warmup", "--only", "DoubleWell,OverdampedLangevin",
               "--dtype", "float64")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("DoubleWell x OverdampedLangevin (float64): ") and lines[0].endswith(" s")
    assert lines[-1].startswith("1 kernels ready in ") and NOTICE not in r.stderr
    r = python("-c", RUN)
    assert r.returncode == 0, r.stderr
    assert NOTICE not in r.stderr


TWO_PAIRS = ("DoubleWell,OverdampedLangevin", "Quadratic,OverdampedLangevin")


def warmup_in_two_processes():
    """`starts_early` spec: `warmup --jobs 2` of two pairs in float64."""
    argv = [sys.executable, "-m", "langevin_sim.cli", "warmup", "--dtype", "float64", "--jobs", "2"]
    for pair in TWO_PAIRS:
        argv += ["--only", pair]
    return argv, dict(os.environ)


@starts_early(warmup_in_two_processes, timeout=300)
def test_warmup_compiles_pairs_in_processes_at_once():
    """`warmup --jobs 2` warms each pair in a spawned process of its own and prints each
    pair's line as it is done, then the summary; no compile notice.  (The other process
    starts with the session.)"""
    r = early_result(test_warmup_compiles_pairs_in_processes_at_once)
    assert r.returncode == 0, r.stderr[-3000:]
    *pairs, last = r.stdout.splitlines()
    want = {p.replace(",", " x ") + " (float64)" for p in TWO_PAIRS}
    assert {line.split(": ")[0] for line in pairs} == want and len(pairs) == 2, r.stdout
    assert all(line.endswith(" s") for line in pairs), r.stdout
    assert last.startswith("2 kernels ready in ") and NOTICE not in r.stderr


def test_warmup_rejects_unknown_pairs_and_dtypes(capsys):
    assert cli(["warmup", "--only", "DoubleWell,Nothing"]) == 2
    err = capsys.readouterr().err
    assert "no numba kernel for 'DoubleWell,Nothing'; DoubleWell's pairs: " in err
    assert "DoubleWell,OverdampedLangevin" in err and "Quadratic," not in err
    assert cli(["warmup", "--only", "Nothing,Else"]) == 2
    assert "the pairs are: " in capsys.readouterr().err
    assert cli(["warmup", "--only", "DoubleWell"]) == 2      # a potential alone: say the form
    err = capsys.readouterr().err
    assert "--only takes POTENTIAL,DYNAMICS pairs" in err and "DoubleWell,OBABO" in err
    assert cli(["warmup", "--dtype", "float16", "--only", "DoubleWell,OverdampedLangevin"]) == 2
    assert "unknown dtype 'float16'" in capsys.readouterr().err
    assert cli(["warmup", "--jobs", "0", "--only", "DoubleWell,OverdampedLangevin"]) == 2
    assert "jobs must be an integer >= 1, got 0" in capsys.readouterr().err


def test_warmup_interrupted_says_one_line(monkeypatch, capsys):
    """Ctrl-C during `warmup` (its processes are then terminated: a compilation does not stop
    at SIGINT) ends with one line and status 130, not a traceback."""
    def interrupted(**kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(warmup, "warmup", interrupted)
    assert cli(["warmup", "--only", "DoubleWell,OverdampedLangevin"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == ("langevin-sim: warmup interrupted: the pairs said above are in the "
                           "cache, the others compile at their first run")


def test_every_numba_pair_has_a_small_instance():
    """warmup builds every registered pair (new kernels included) small, without compiling;
    where the dynamics refuses the potential altogether it skips the pair."""
    for pcls, dcls in registry.pairs("numba"):
        variants, why = warmup._variants(pcls, dcls)
        assert variants or isinstance(why, ConfigError), f"{pcls.__name__} x {dcls.__name__}: {why}"
        for pot, _ in variants:
            assert pot.d <= 64, f"{pcls.__name__}: not small (d = {pot.d})"
    # DoubleWell's kernel compiles its d = 1 and d > 1 noise paths separately: both warmed
    variants, _ = warmup._variants(DoubleWell, OverdampedLangevin)
    assert sorted(pot.d for pot, _ in variants) == [1, 2]


def test_notice_printed_once_when_a_kernel_compiles(monkeypatch, capsys):
    """A kernel whose call compiles something prints one line naming the pair and dtype;
    the next calls (nothing left to compile) print nothing.  A fresh jit function inside
    the registered kernel stands in for an empty on-disk cache."""
    key = (DoubleWell, OverdampedLangevin, "numba")
    real = registry.KERNELS[key]
    fresh = numba.njit(cache=False)(lambda a: a * 2.0)

    def kernel(sim, t0, K, k0, k1):
        fresh(np.float64(sim.step))
        real.fn(sim, t0, K, k0, k1)

    monkeypatch.setitem(registry.KERNELS, key, registry.Kernel(kernel, real.first_passage))
    monkeypatch.setattr(warmup, "_said", set())
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(1e-2, 0.5), 5, dtype="float32")
    sim.advance(3)
    err = capsys.readouterr().err
    assert err.count(NOTICE) == 1
    assert "DoubleWell x OverdampedLangevin (float32), first run only; cached afterwards" in err
    sim.advance(3)
    Simulation(DoubleWell(d=1), OverdampedLangevin(1e-2, 0.5), 4, dtype="float32").advance(2)
    assert capsys.readouterr().err == ""


def test_no_notice_when_nothing_compiles(monkeypatch, capsys):
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(1e-2, 0.5), 5, dtype="float64")
    sim.advance(2)                           # compiled or loaded by now
    monkeypatch.setattr(warmup, "_said", set())
    sim.advance(2)
    assert NOTICE not in capsys.readouterr().err


@pytest.mark.slow
def test_notice_with_an_empty_numba_cache(tmp_path):
    """A process with an empty NUMBA_CACHE_DIR compiles and says so once; the next one loads
    from that cache silently (about a minute of compilation)."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path)}
    r = python("-c", RUN, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count(NOTICE) == 1
    assert "DoubleWell x OverdampedLangevin (float64), first run only" in r.stderr
    r = python("-c", RUN, env=env)
    assert r.returncode == 0 and NOTICE not in r.stderr, r.stderr


ASIDE = """
import numpy as np
from numba.core import event
from langevin_sim import warmup
from langevin_sim.kernels import drivers
from langevin_sim.potentials import DoubleWell
pot = DoubleWell(d=2)
x = np.random.default_rng(0).normal(size=(8, 2))
warmup.compile_aside(pot, x.astype(np.float32), True, ("noise1",))
warmup.await_records_aside(pot, np.float32)
for dt in (np.float32, np.float64):   # float64: not compiled aside, compiled here
    with event.install_recorder("numba:compile") as rec:
        u = drivers.energy_kernel(pot)(x.astype(dt))
    with event.install_recorder("numba:compile") as shared:
        drivers.compile_shared(dt, ("noise1",))
    print(len(rec.buffer), len(shared.buffer),
          np.abs(u - pot.energy(x.astype(dt).astype(np.float64))).max())
"""


_CACHES: dict = {}   # code -> the empty Numba cache of its subprocess, removed by its test


def in_empty_cache(code: str, aside: str):
    """`starts_early` spec: `python -c code` with an empty Numba cache of its own, and
    `compile_aside` on ("1") or off ("0")."""
    def spec():
        _CACHES[code] = tempfile.mkdtemp()
        return [sys.executable, "-c", code], dict(os.environ, NUMBA_CACHE_DIR=_CACHES[code],
                                                  **{warmup.ASIDE_ENV: aside})
    return spec


def result_in_empty_cache(fn, code: str) -> subprocess.CompletedProcess:
    r = early_result(fn)
    shutil.rmtree(_CACHES.pop(code), ignore_errors=True)
    return r


@starts_early(in_empty_cache(ASIDE, "1"), timeout=600)
def test_kernels_compiled_aside_load_from_the_cache():
    """`compile_aside` compiles a family's record energy and the drivers' shared callees in a
    helper process into an empty Numba cache: in that dtype they then load (no compilation
    in this process) and the energy equals the potential's; in the other dtype, not compiled
    aside, they compile here."""
    r = result_in_empty_cache(test_kernels_compiled_aside_load_from_the_cache, ASIDE)
    assert r.returncode == 0, r.stderr
    (n32, s32, err32), (n64, s64, err64) = (line.split() for line in r.stdout.splitlines())
    assert int(n32) == 0 and int(s32) == 0 and int(n64) > 0 and int(s64) > 0
    assert float(err32) < 1e-12 and float(err64) < 1e-12


SHARED = """
import numpy as np
from langevin_sim import Simulation
from langevin_sim.backends import registry
from langevin_sim.dynamics import MALA, AdamW, LeimkuhlerMatthews
from langevin_sim.kernels import drivers
from langevin_sim.potentials import DoubleWell, ModularArithmeticMLP
net = ModularArithmeticMLP(p=5, hidden=8)
for pot, dyn in ((DoubleWell(d=2), MALA(1e-2, 0.5)), (DoubleWell(d=2), LeimkuhlerMatthews(1e-2, 0.5)),
                 (net, AdamW(1e-3))):
    sim = Simulation(pot, dyn, 8, backend="numba", seed=0, dtype="float32")
    sim.advance(1)
    jobs = drivers.shared_callees(sim, registry.kernel_for(pot, dyn, "numba").fn)
    for fn, sig in drivers.shared_signatures(np.float32, jobs):
        print(type(dyn).__name__, fn.py_func.__name__, tuple(sig) in [tuple(s) for s in fn.signatures])
"""


@starts_early(in_empty_cache(SHARED, "0"), timeout=600)
def test_drivers_call_their_shared_callees_with_the_signatures_compiled_aside():
    """What `compile_aside` compiles for a generic driver (`drivers.shared_signatures` of its
    `shared_callees`) is what the driver calls: drivers compiled cold in a fresh process
    (nothing aside) call them with exactly those signatures, so on a cold run with the
    helper they load from the cache instead of compiling again.  MALA: one step's normals
    per call and the accept word; Leimkuhler-Matthews: two steps' normals; the grokking net's
    own kernel (AdamW): nothing."""
    r = result_in_empty_cache(
        test_drivers_call_their_shared_callees_with_the_signatures_compiled_aside, SHARED)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:-1] == ["MALA block_noise True", "MALA accept_word True",
                                          "LeimkuhlerMatthews block_noise True"], r.stdout
