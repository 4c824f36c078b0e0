"""benchmarks/throughput.py's bookkeeping: interleaving, step counts, criteria (no timing)."""
import importlib.util
import json
import sys
from pathlib import Path

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
    assert calls == ["warm a", "warm b", "warm c", *"abc", *"bca", *"cab"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


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
    limits = {"normals_per_s_d1_float32": 100.0}

    def verdicts(base_info):
        base, why = tp.baseline_of(path, base_info)
        return [tp.verdict(v, op, need) for _, v, op, need in tp.criteria(rows, limits, base, why)]

    # W1: 10x numpy, 0.5x normals, JAX (missing), recording cost, committed result, cold start;
    # W4: 2x numpy, 2.5x JAX, recording cost, cold start; W5: 10x the reference, cold start
    # (not measured)
    assert verdicts(info) == ["PASS", "PASS", "SKIP", "FAIL", "PASS", "PASS",
                              "PASS", "PASS", "FAIL", "FAIL", "FAIL", "SKIP"]
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

    class Args:
        repeats, quick, baseline = 5, False, "base.json"
    text = tp.report(info, limits, [], [], Args, 1.0)
    assert f"Code at {rev}, run 2026-12-06 05:00 UTC." in text
    assert "~2-6 s here" in text and "--quick" not in text
    Args.quick = True
    assert "an eighth of the full run's ~2-6 s (--quick" in tp.report(info, limits, [], [], Args, 1.0)


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
