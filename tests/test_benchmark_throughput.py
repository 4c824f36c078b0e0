"""benchmarks/throughput.py's bookkeeping: interleaving, step counts, criteria (no timing)."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load():
    sys.path.insert(0, str(BENCH))   # throughput imports its sibling peers.py
    try:
        spec = importlib.util.spec_from_file_location("benchmark_throughput", BENCH / "throughput.py")
        mod = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # for dataclasses
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


tp = _load()


def test_interleaved_rotates_the_order_and_warms_once():
    calls = []
    entries = {k: tp.Entry(lambda k=k: calls.append(k), 1.0, lambda k=k: calls.append("warm " + k))
               for k in "abc"}
    times = tp.interleaved(entries, 3)
    assert calls == ["warm a", "warm b", "warm c", *"abc", *"acb", *"cab"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_interleaved_puts_each_entry_behind_more_than_one_neighbour():
    """A row's six entries over the default five rounds: no entry always runs right after the
    same one (whose leftovers, spinning threads or a trimmed heap, it would always meet)."""
    calls = []
    tp.interleaved({k: tp.Entry(lambda k=k: calls.append(k), 1.0) for k in "abcdef"}, 5)
    behind = {k: {a for a, b in zip(calls, calls[1:]) if b == k} for k in "abcdef"}
    assert all(len(v) >= 2 for v in behind.values()), behind


def test_step_counts_respect_records_and_epochs():
    w4, w3b = tp.WORKLOADS["W4"], tp.WORKLOADS["W3b"]
    for quick in (False, True):
        assert tp.steps_of(w4, "jax", quick) % 32 == 0          # whole epochs of 1024 / 32
        assert tp.steps_of(w4, "numba_run", quick) == tp.steps_of(w4, "numba", quick)
        assert tp.steps_of(w3b, "numba_run", quick) % 10 == 0   # ten records per run
    assert tp.steps_of(w3b, "numba", True) == 20


def row(workload, **rates):
    return {"workload": workload, "dtype": "float32", "recording_cost": 0.2,
            **{f"{k}_chain_steps_per_s": v for k, v in rates.items()}}


def test_criteria_pass_fail_and_skip(tmp_path):
    info = {"cpu": "Some CPU", "cpu_id": "AuthenticAMD family 25 model 17", "cores": 2}
    path = tmp_path / "base.json"
    path.write_text(json.dumps({"machine": info, "rows": [
        {"workload": "W1", "dtype": "float32", "numba_chain_steps_per_s": 100.0}]}))
    rows = [dict(row("W1", numba=95.0, numpy=5.0), cold_start_s=4.0),
            dict(row("W4", numba=30.0, numpy=10.0, jax=10.0), cold_start_s=12.0),
            row("W5", numba=50.0, numpy=10.0)]
    # "ahead of JAX" takes JAX's fastest call: W4 numba 30 is 3x its median, 2x its fastest
    rows[1]["jax_fastest_chain_steps_per_s"] = 15.0
    limits = {"normals_per_s_d1_float32": 100.0}

    def verdicts(base_info):
        base, why = tp.baseline_of(path, base_info)
        return [tp.verdict(v, op, need) for _, v, op, need in tp.criteria(rows, limits, base, why)]

    # W1: 10x numpy, 0.5x normals, JAX (missing), recording cost, committed result, cold start;
    # W4: 2x numpy, 2.5x JAX (2x its fastest call), recording cost, cold start; W5: 1x JAX
    # (missing), 10x the reference, cold start (not measured)
    assert verdicts(info) == ["PASS", "PASS", "SKIP", "FAIL", "PASS", "PASS",
                              "PASS", "FAIL", "FAIL", "FAIL", "SKIP", "FAIL", "SKIP"]
    jax_w4 = [c for c in tp.criteria(rows, limits, None, "") if c[0].startswith("W4 float32: "
                                                                              "numba >= 2.5x JAX")]
    assert [c[1] for c in jax_w4] == [2.0]
    assert verdicts({"cpu": "Other CPU", "cores": 2})[4] == "SKIP"
    # the engine's NumPy reference is not a peer: no criterion reads as if it were plain NumPy
    texts = [t for t, *_ in tp.criteria(rows, limits, None, "")]
    assert not [t for t in texts if "numpy" in t.lower() and "NumPy reference" not in t]


def test_the_baseline_is_the_same_machine_only_when_family_and_model_match(tmp_path):
    """Both EPYC results read cpu "AMD EPYC", 2 cores: the Zen 5 run's "no slower than the
    committed result" rows compared it with the Zen 4's figures (its notes said so)."""
    zen4 = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n\n" \
           "processor\t: 1\ncpu family\t: 99\n"
    assert tp.cpu_id(zen4) == "AuthenticAMD family 25 model 17"
    assert tp.cpu_id("model name\t: AMD EPYC\n") is None
    path = tmp_path / "base.json"
    rows = [{"workload": "W1", "dtype": "float32", "numba_chain_steps_per_s": 1.0}]
    here = {"cpu": "AMD EPYC", "cpu_id": "AuthenticAMD family 26 model 2", "cores": 2}
    for base_id, same in [("AuthenticAMD family 26 model 2", True),
                          ("AuthenticAMD family 25 model 17", False), (None, False)]:
        m = {"cpu": "AMD EPYC", "cores": 2, **({"cpu_id": base_id} if base_id else {})}
        path.write_text(json.dumps({"machine": m, "rows": rows}))
        base, why = tp.baseline_of(path, here)
        assert (base is not None) == same, why
        assert same or "may not be this one" in why


def test_a_rerun_keeps_the_hand_written_notes_of_the_report_it_replaces(tmp_path):
    """--out rewrote the results file whole: the notes written by hand after a run (what the
    machine was, why a criterion fails there) were lost at every rerun."""
    old = tmp_path / "m.md"
    assert tp.kept_notes(str(old)) == [] and tp.kept_notes(None) == []
    old.write_text("# Throughput\n\n## Criteria\n\n- PASS: x\n\n## Notes (added by hand)\n\n"
                   "- W5 fails here: Xeon, not EPYC.\n- run at abc123.\n\n\n")
    kept = tp.kept_notes(str(old))
    assert kept[1] == "## Notes (added by hand)" and kept[3].startswith("*Kept from the report")
    assert kept[-2:] == ["- W5 fails here: Xeon, not EPYC.", "- run at abc123."]
    old.write_text("# Throughput\n" + "\n".join(kept) + "\n\n## Later section\n\nnot a note\n")
    assert tp.kept_notes(str(old)) == kept           # a second rerun: the same, once
    old.write_text("# Throughput\n\n## Notes on the method\n\nprinted by the script\n")
    assert tp.kept_notes(str(old)) == []             # only the hand-written section


def test_the_report_names_the_code_it_measured(tmp_path):
    """The results files said which commit they were made at only in hand-written notes (one
    file, epyc-2core-ci-class.md, not at all), though the rule is to regenerate them after
    kernel changes."""
    rev = tp.revision()
    if rev.startswith("unknown"):
        pytest.skip("not run from a git checkout")
    assert tp.revision(tmp_path) == "unknown (not a git checkout)"
    info = {"cpu": "Some CPU", "cpu_id": None, "cores": 2, "platform": "p", "python": "3",
            "numpy": "2", "numba": "0", "numba_threads": 2, "numba_threading_layer": "omp",
            "blas": [], "OPENBLAS_CORETYPE": "(unset)", "jax": None, "jax_devices": [],
            "XLA_FLAGS": "(unset)", "revision": rev, "date": "2026-12-06 05:00 UTC"}
    limits = {"memory_GBps": 1.0, **{f"normals_per_s_d{d}_{t}": 1.0 for d in (1, 256)
                                     for t in ("float32", "float64")}}

    settings = {"repeats": 5, "quick": False, "baseline": "base.json", "run_files_in": "/tmp"}
    text = tp.report(tp.result(info, settings, 1.0, limits, [], []))
    assert f"Code at {rev}, run 2026-12-06 05:00 UTC." in text
    assert "~2-6 s here" in text and "--quick" not in text
    settings["quick"] = True
    assert "an eighth of the full run's ~2-6 s (--quick" in tp.report(
        tp.result(info, settings, 1.0, limits, [], []))


def test_gemm_bound_rows_are_read_against_the_square_gemm_ceiling_too():
    """The GEMM rate at a workload's shape is no ceiling (W3's packed kernel beat BLAS there,
    103 %): the run measures a square product's FLOP/s per dtype, lists it with the limits,
    and each GEMM-bound row shows numba's share of both; rows of earlier runs without it
    show the shape's share alone."""
    rate = tp.gemm_ceiling("float64", 1)
    assert 1e8 < rate < 1e14
    info = {"cpu": "Some CPU", "cpu_id": None, "cores": 2, "platform": "p", "python": "3",
            "numpy": "2", "numba": "0", "numba_threads": 2, "numba_threading_layer": "omp",
            "blas": [], "OPENBLAS_CORETYPE": "(unset)", "jax": None, "jax_devices": [],
            "XLA_FLAGS": "(unset)", "revision": "abc", "date": "2026-12-07 05:00 UTC"}
    limits = {"memory_GBps": 1.0, "gemm_flops_per_s_float32": 2e11,
              "gemm_flops_per_s_float64": 1e11,
              **{f"normals_per_s_d{d}_{t}": 1.0 for d in (1, 256) for t in ("float32", "float64")}}
    row = {**fake_row("W3", "float64", 1.0), "gemm_flops_per_s": 8e10,
           "numba_gemm_fraction": 1.03, "numba_gemm_ceiling_fraction": 0.824}
    old = {**row, "dtype": "float32"}
    del old["numba_gemm_ceiling_fraction"]
    settings = {"repeats": 5, "quick": False, "baseline": "base.json", "run_files_in": "/tmp"}
    text = tp.report(tp.result(info, settings, 1.0, limits, [row, old], []))
    assert ("- GEMM ceiling (square 1024 x 1024 BLAS product, its threads above): float32 2e+11 "
            "FLOP/s, float64 1e+11 FLOP/s") in text
    assert "| 8e+10 | 103% / 82% |" in text and "| 8e+10 | 103% |" in text


def test_a_workload_whose_module_is_missing_is_refused_before_the_run(monkeypatch, capsys):
    """W6 builds scikit-learn's digits: without scikit-learn its row raised after W1-W5 had
    run (~10 minutes on 2 cores) and the benchmark ended with no report."""
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real(name, *a))
    assert tp.missing_modules(["W1", "W6"]) == {"sklearn": ["W6"]}
    assert tp.missing_modules(["W1", "W4"]) == {}
    try:
        tp.main(["--only", "W1,W6"])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("main ran without scikit-learn")
    assert "W6 need(s) sklearn" in capsys.readouterr().err


def test_out_must_name_the_markdown_report(capsys):
    """--out benchmarks/results/x (no .md) wrote a report file "x" beside "x.md", whose hand
    notes it neither kept nor replaced; refused before anything runs."""
    with pytest.raises(SystemExit) as e:
        tp.main(["--only", "W1", "--out", "results/x"])
    assert e.value.code == 2 and "name it results/x.md" in capsys.readouterr().err


# ------------------------------------------------------------------ --only into an existing report

HERE = {"cpu": "Some CPU", "cpu_id": "GenuineIntel family 6 model 207", "cores": 2, "platform": "p",
        "python": "3", "numpy": "2", "numba": "0", "numba_threads": 2,
        "numba_threading_layer": "omp", "blas": [], "OPENBLAS_CORETYPE": "(unset)", "jax": None,
        "jax_devices": [], "XLA_FLAGS": "(unset)"}
LIMITS = {"memory_GBps": 1.0, **{f"normals_per_s_d{d}_{t}": 1e9 for d in (1, 256)
                                 for t in ("float32", "float64")}}


def fake_row(name, dtype, rate):
    """A measured row of every implementation at `rate` chain-steps/s (numba 20x that)."""
    return {"workload": name, "title": f"{name} title", "dtype": dtype, "numba_fused": True,
            "steps_per_call": {"numba": 10}, "spread": {"numba": 0.01}, "recording_cost": 0.01,
            "seconds_per_record": 0.001, "cold_start_s": 1.0,
            **{f"{i}_chain_steps_per_s": rate * (20 if i == "numba" else 1)
               for i in ("numpy", "numba", "numba_run", "numpy_loop", "jax")}}


def fake_run(monkeypatch, rate, revision, info=HERE):
    """main() measures every row at `rate` (numba 20x) in no time, on the machine `info`."""
    monkeypatch.setattr(tp, "machine", lambda: dict(info))
    monkeypatch.setattr(tp, "revision", lambda: revision)
    monkeypatch.setattr(tp, "memory_bandwidth", lambda repeats: 1e9)
    monkeypatch.setattr(tp, "normal_rate", lambda *a: 1e9)
    monkeypatch.setattr(tp, "gemm_ceiling", lambda *a: 1e11)
    monkeypatch.setattr(tp.numba, "threading_layer", lambda: "omp")
    monkeypatch.setattr(tp, "measure_fresh", lambda name, dtype, *a: fake_row(name, dtype, rate))
    monkeypatch.setattr(tp, "cold_start", lambda name, dtype: 1.0)


def test_only_updates_its_workloads_rows_in_the_existing_report(tmp_path, monkeypatch, capsys):
    """`--only W4 --out existing.md` replaced the whole report with W4's rows: it now replaces
    only the named workloads' rows and criteria (in the .md and the .json), keeps the others
    and the hand notes, and says which run measured which rows."""
    out = tmp_path / "m.md"
    fake_run(monkeypatch, 100.0, "old1234 (2026-12-01)")
    tp.main(["--only", "W1,W4,W5", "--out", str(out)])
    with open(out, "a") as fh:
        fh.write("\n## Notes (added by hand)\n\n- W5 is slow here.\n")
    first = json.loads(out.with_suffix(".json").read_text())
    assert first["format"] == tp.FORMAT and first["earlier"] == []
    assert "Code at old1234 (2026-12-01), run" in out.read_text()

    fake_run(monkeypatch, 300.0, "new5678 (2026-12-07)")
    tp.main(["--only", "W5", "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    rates = {(r["workload"], r["dtype"]): r["numpy_chain_steps_per_s"] for r in data["rows"]}
    assert rates == {("W1", "float32"): 100.0, ("W1", "float64"): 100.0, ("W4", "float32"): 100.0,
                     ("W4", "float64"): 100.0, ("W5", "float32"): 300.0, ("W5", "float64"): 300.0}
    assert [c for c in data["criteria"] if not c["text"].startswith("W5")] \
        == [c for c in first["criteria"] if not c["text"].startswith("W5")]
    assert [c["text"].split()[0] for c in data["criteria"]] \
        == sorted((c["text"].split()[0] for c in data["criteria"]), key=list(tp.WORKLOADS).index)
    assert [r["workloads"] for r in tp.runs(data)] == [["W1", "W4"], ["W5"]]
    assert tp.runs(data)[0]["machine"]["revision"] == "old1234 (2026-12-01)"
    text = out.read_text()
    assert "Rows measured in 2 runs" in text and "W1, W4: code at old1234 (2026-12-01)" in text
    assert "W5: code at new5678 (2026-12-07)" in text
    assert "| W1 W1 title | float32 | 100 | 2e+03 |" in text
    assert "| W5 W5 title | float32 | 300 | 6e+03 |" in text
    assert text.count("## Notes (added by hand)") == 1 and "- W5 is slow here." in text
    assert "## Machine limits (measured in each run)" in text

    fake_run(monkeypatch, 500.0, "newer999 (2026-12-08)")     # a third run: W1 again
    tp.main(["--only", "W1", "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    assert [r["workloads"] for r in tp.runs(data)] == [["W4"], ["W5"], ["W1"]]
    assert [r["workload"] for r in data["rows"]] == ["W1", "W1", "W4", "W4", "W5", "W5"]
    assert data["rows"][0]["numpy_chain_steps_per_s"] == 500.0
    capsys.readouterr()


@pytest.mark.parametrize("case", ["other machine", "other format", "no json"])
def test_only_refuses_to_merge_into_another_machines_or_formats_report(case, tmp_path,
                                                                       monkeypatch, capsys):
    """A merge keeps rows measured elsewhere only where they are comparable: the same CPU
    family and model (as the baseline check) and the same results format; refused before
    anything is measured, in one line, the files untouched."""
    out = tmp_path / "m.md"
    fake_run(monkeypatch, 100.0, "old1234 (2026-12-01)")
    tp.main(["--only", "W1", "--out", str(out)])
    js = out.with_suffix(".json")
    if case == "other machine":
        fake_run(monkeypatch, 300.0, "new", dict(HERE, cpu_id="GenuineIntel family 6 model 143"))
        want = "may not be this one"
    elif case == "other format":
        js.write_text(json.dumps(dict(json.loads(js.read_text()), format=tp.FORMAT + 1)))
        want = f"format {tp.FORMAT + 1}"
    else:
        js.unlink()
        want = "no " + str(js)
    before = [f.read_text() for f in (out, js) if f.exists()]
    monkeypatch.setattr(tp, "measure_fresh", lambda *a: pytest.fail("measured before refusing"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        tp.main(["--only", "W5", "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and want in err, err
    assert [f.read_text() for f in (out, js) if f.exists()] == before


def _throughput_module(monkeypatch):
    """benchmarks/throughput.py imported by its own name, as a spawned process imports it."""
    monkeypatch.syspath_prepend(str(BENCH))
    import throughput
    return throughput


def test_the_jax_peer_runs_in_a_process_of_its_own_with_the_same_numbers(monkeypatch):
    """The JAX peer runs in its own process (JAX having run in a row's process sped the NumPy
    reference there 1.8x): its positions after two calls of 2 steps are an in-process
    JaxScan's after 4."""
    pytest.importorskip("jax")
    throughput = _throughput_module(monkeypatch)
    import peers
    proc = throughput.PeerProcess("W3b", "float64", 2)
    try:
        proc.call()
        proc.call()
        there = proc.positions()
    finally:
        proc.close()
    assert not proc.proc.is_alive()
    here = peers.JaxScan(throughput.WORKLOADS["W3b"].build("numba", "float64"), seed=1)
    here.advance(4)
    np.testing.assert_allclose(there, here.positions, rtol=1e-12, atol=1e-12)


def test_the_jax_peer_process_reports_its_failure_in_one_line(monkeypatch):
    throughput = _throughput_module(monkeypatch)
    with pytest.raises(RuntimeError, match="^the JAX peer's process failed: KeyError: 'W0'$"):
        throughput.PeerProcess("W0", "float64", 1)


@pytest.mark.parametrize("reference", [False, True])
def test_the_numpy_loop_peer_is_timed_again_with_freed_memory_kept(reference, monkeypatch,
                                                                   tmp_path):
    """Only W5's NumPy reference was timed again without this VM's first touches of fresh
    pages; the NumPy loop peer pays them too (W4 / W5 float64 ~1.7x), so every row times it
    again and the report prints numba against it."""
    from langevin_sim import Simulation
    from langevin_sim.dynamics import OverdampedLangevin
    from langevin_sim.potentials import DoubleWell
    sim = Simulation(DoubleWell(d=1), OverdampedLangevin(1e-3, 0.5), 4, backend="numpy", seed=1)
    calls = {k: 0 for k in ("numpy", "numba", "numba_run", "numpy_loop")}

    def entry(k):
        return tp.Entry(lambda: calls.__setitem__(k, calls[k] + 1), 100.0)
    monkeypatch.setattr(tp, "entries", lambda *a: ({k: entry(k) for k in calls}, {}, sim))
    monkeypatch.setattr(tp, "keep_freed_memory", lambda: True)    # (not this process's malloc)
    w = tp.Workload("T", "test", None, {}, kept_memory_reference=reference)
    r = tp.measure(w, "float64", True, 3, str(tmp_path), {})
    assert calls["numpy_loop"] == 3 + 4 and calls["numpy"] == 3 + 4 * reference
    assert r["numpy_loop_kept_memory_chain_steps_per_s"] > 0
    assert ("numpy_kept_memory_chain_steps_per_s" in r) == reference
    r.update(cold_start_s=1.0)
    info = {"cpu": "C", "cpu_id": None, "cores": 2, "platform": "p", "python": "3",
            "numpy": "2", "numba": "0", "numba_threads": 2, "numba_threading_layer": "omp",
            "blas": [], "OPENBLAS_CORETYPE": "(unset)", "jax": None, "jax_devices": [],
            "XLA_FLAGS": "(unset)"}
    limits = {"memory_GBps": 1.0, **{f"normals_per_s_d{d}_{t}": 1.0 for d in (1, 256)
                                     for t in ("float32", "float64")}}
    settings = {"repeats": 3, "quick": True, "baseline": "b.json", "run_files_in": "/tmp"}
    text = tp.report(tp.result(info, settings, 1.0, limits, [r], []))
    assert "The NumPy loop peer once more" in text
    assert ("The NumPy reference once more" in text) == reference
