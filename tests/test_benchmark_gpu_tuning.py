"""benchmarks/gpu_throughput.py's choice of the settings its table runs with (no device)."""
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
_spec = importlib.util.spec_from_file_location("benchmark_gpu_throughput",
                                               BENCH / "gpu_throughput.py")
gt = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)   # for dataclasses
_spec.loader.exec_module(gt)


@pytest.fixture(autouse=True)
def library_default_of_one_lane(monkeypatch):
    """The choices below are worked out from a library default of one thread per replica (the
    library's own default is whatever the last GPU run chose)."""
    from langevin_sim.backends import cuda_kernels as ck

    monkeypatch.setattr(ck, "GEMM_LANES", 1)


def lanes_rows(*rates, arrays=1.0):
    """lanes_gain's rows: one dict per (workload, dtype), rates at LANES = 1, 4, 8, 16, and at
    16 with per-thread arrays (`arrays` times the streamed rate)."""
    return {f"W{i} float32": dict(zip(map(str, gt.LANES), r), replicas=64,
                                  **{f"{gt.LANES[-1]} arrays": arrays * r[-1]})
            for i, r in enumerate(rates, 2)}


def test_lanes_take_the_best_geometric_mean_and_say_each_rows_best():
    from langevin_sim.backends import cuda_kernels as ck

    # L = 8 best on W2, L = 16 on W3; geometric means over L = 1: 4: 1.5, 8: 2, 16: 1.73
    got = gt.tuned(lanes_rows((1.0, 1.5, 2.0, 1.0), (1.0, 1.5, 2.0, 3.0)), None)["GEMM_LANES"]
    assert got["value"] == 8 and got["default"] == ck.GEMM_LANES == 1
    assert got["gain"] == pytest.approx(2.0)
    assert got["best_per_row"] == {"W2 float32": 8, "W3 float32": 16}


def test_a_default_stays_unless_another_setting_beats_it_by_the_margin():
    got = gt.tuned(lanes_rows((1.0, 1.01, 0.5, 0.5)), {"float64": {"default": 1.0,
                                                                    "capped": 1.01}})
    assert got["GEMM_LANES"]["value"] == 1 and got["GEMM_LANES"]["gain"] == pytest.approx(1.0)
    assert got["MAX_REGISTERS"] == {"value": 0, "default": 0, "gain": 1.0}


def test_the_register_cap_is_chosen_from_every_dtype_and_applied_then_undone(monkeypatch):
    from langevin_sim.backends import cuda_kernels as ck
    from langevin_sim.kernels import rows

    caps = {"float32": {"default": 1.0, "capped": 1.0}, "float64": {"default": 1.0,
                                                                   "capped": 1.21}}
    settings = gt.tuned(lanes_rows((1.0, 3.0, 2.0, 1.0)), caps)
    assert settings["MAX_REGISTERS"]["value"] == gt.REGCAP
    assert settings["MAX_REGISTERS"]["gain"] == pytest.approx(1.1)
    with gt.applied(settings):
        assert (ck.GEMM_LANES, rows.MAX_REGISTERS) == (4, gt.REGCAP)
    assert (ck.GEMM_LANES, rows.MAX_REGISTERS) == (1, 0)
    text = "\n".join(gt.settings_lines(settings))
    assert "cuda_kernels.GEMM_LANES = 4" in text and "3.00x" in text
    assert f"**Set cuda_kernels.GEMM_LANES = 4 and rows.MAX_REGISTERS = {gt.REGCAP} as the " \
           "library's default**" in text
    # where the library's default caps already, the A/B's uncapped run is the alternative
    monkeypatch.setattr(rows, "MAX_REGISTERS", gt.REGCAP)
    assert gt.tuned(None, caps)["MAX_REGISTERS"]["value"] == gt.REGCAP
    slower = {dt: {"default": 1.0, "capped": 0.8} for dt in caps}
    assert gt.tuned(None, slower)["MAX_REGISTERS"] == {"value": 0, "default": gt.REGCAP,
                                                       "gain": pytest.approx(1.25)}
    assert "defaults won" in "\n".join(gt.settings_lines(gt.tuned(lanes_rows((1, 1, 1, 1)),
                                                                  None)))


def test_the_per_thread_arrays_replace_streaming_only_by_the_margin(monkeypatch):
    """`cuda_kernels.GEMM_STREAM`: streamed by default; the sliced kernel's per-thread arrays
    where they were TUNE_MARGIN faster at L = 16 (geometric mean over the rows), and back."""
    from langevin_sim.backends import cuda_kernels as ck

    assert ck.GEMM_STREAM is True
    rates = ((1.0, 1.5, 2.0, 3.0), (1.0, 1.5, 2.0, 3.0))
    assert gt.tuned(lanes_rows(*rates, arrays=1.01), None)["GEMM_STREAM"] == {
        "value": True, "default": True, "gain": 1.0}
    got = gt.tuned(lanes_rows(*rates, arrays=1.1), None)
    assert got["GEMM_STREAM"] == {"value": False, "default": True, "gain": pytest.approx(1.1)}
    with gt.applied(got):
        assert ck.GEMM_STREAM is False and ck.GEMM_LANES == 16
    assert ck.GEMM_STREAM is True and ck.GEMM_LANES == 1
    assert "cuda_kernels.GEMM_STREAM = False" in "\n".join(gt.settings_lines(got))
    monkeypatch.setattr(ck, "GEMM_STREAM", False)    # a default of arrays: streaming must win
    got = gt.tuned(lanes_rows(*rates, arrays=0.5), None)["GEMM_STREAM"]
    assert got == {"value": True, "default": False, "gain": pytest.approx(2.0)}


def test_jax_peer_allocates_as_it_goes_beside_cupy(monkeypatch):
    """The benchmark's JAX peers (peers.JaxScan, through `peers.jax_module`) switch off XLA's
    preallocation (75 % of the GPU at the first JAX array, which would leave the workloads
    after the first peer a quarter of the device) before JAX is imported; a value already
    set stays."""
    import types

    imported = []
    fake = types.ModuleType("jax")
    fake.config = types.SimpleNamespace(update=lambda *a: imported.append(
        gt.os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")))      # at JAX's first use
    monkeypatch.setitem(sys.modules, "jax", fake)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    assert gt.peers.jax_module() is fake and imported == ["false"]
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")
    gt.peers.jax_module()
    assert imported == ["false", "true"]


def test_gpu_report_keeps_the_hand_written_notes_of_the_file_it_replaces(tmp_path):
    """gpu_throughput --out (and gpu_check.sh through it) rewrote the results file whole: the
    notes written by hand after run 2 (why the four tests failed, what the FAILs mean) would
    go at the next run.  The notes sit before the test summary gpu_check.sh appends."""
    sys.path.insert(0, str(BENCH))
    try:
        from notes import kept_notes
    finally:
        sys.path.remove(str(BENCH))
    old = tmp_path / "gpu-X.md"
    old.write_text("# GPU throughput\n\n## Targets\n\n- FAIL: W2\n\n## Notes (written by hand "
                   "after the run)\n\n- W2 float64 fails: the step kernel.\n\n"
                   "## GPU tests (pytest -m gpu): exit status 1\n\n```\nlog\n```\n")
    kept = kept_notes(str(old))
    assert kept[1].startswith("## Notes") and kept[-1] == "- W2 float64 fails: the step kernel."
    src = (BENCH / "gpu_throughput.py").read_text()
    assert "kept_notes(out)" in src     # main() appends them to the report it writes


def test_median_rate_does_not_time_the_first_call_at_its_step_count(monkeypatch):
    """A run whose first call at each step count costs 10 s more (JAX compiling a scan of
    that length, a CUDA graph captured for it) is timed at its steady rate, 1000 steps/s."""
    clock, seen = [0.0], set()

    def run(k):
        clock[0] += 1e-3 * k + (10.0 if k not in seen else 0.0)
        seen.add(k)
    monkeypatch.setattr(gt.time, "perf_counter", lambda: clock[0])
    assert gt.median_rate(run, 1.0, seconds=0.4, sync=lambda: None, repeats=1) == \
        pytest.approx(1000.0)
