"""Flatness against generalization: sharpness against test loss, within and across points.

usage: python analysis/flatness.py RUN.h5 | SCAN_DIR
       [--measure sharpness|hessian_trace|weight_norm] [--matched LEVEL,... | auto | none]
       [--pick first|last] [--target test_loss|test_error] [--png PATH]
Reads runs that record a flatness measure and the test loss (scenarios/teacher_student.py
or scenarios/classifier.py with sharpness_every > 0; a scan of either over lr and batch
size).  Prints per point the
rank correlation of the measure (at the last record that has it) with the test loss over
the replicas, also given the train loss (`langevin_sim.analysis.flatness`), then the same
across points on the points' medians, and a verdict; then the same at each replica's record
of lowest validation loss (early stopped; runs with n_val > 0 record it) or, without one, of
lowest test loss (an oracle stop), and the points compared at equal train loss (`--matched`;
auto: the highest of the points' final median train losses, a level every point has
reached; `--pick last`: each replica at its last record in the band instead of its first);
saves a figure (test loss against the measure, one point per replica, coloured by point;
the points' medians).  --target test_error: the test error 1 - test_accuracy instead of the
test loss (runs of a classifier, scenarios/classifier.py).
"""
import argparse
import contextlib
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from langevin_sim import LangevinSimError, open_run  # noqa: E402
from langevin_sim.errors import ConfigError  # noqa: E402
from langevin_sim.analysis.flatness import (EXACT_MAX, MEASURES, TARGETS,  # noqa: E402
                                            PooledCorrelation, early_stopped,
                                            flatness_vs_generalization, matched_fit, pooled,
                                            run_flatness)
from langevin_sim.analysis.scan import run_files, save_figure, script  # noqa: E402

KEYS = ("lr", "batch_size", "momentum", "hidden", "n", "noise", "label_corruption",
        "weight_decay", "temperature")


def labelled(path) -> list[tuple[dict, Path]]:
    """[(params, run file)] for every run of `path`, sorted by the KEYS; params holds the KEYS
    that differ between the runs (lr and batch_size for a single run; the file's name for a
    run made without a scenario)."""
    out = []
    for f in run_files(path):
        with open_run(f) as run:
            p = run.config.get("meta", {}).get("params", {})
        out.append(({k: p[k] for k in KEYS if k in p}, f))
    vary = [k for k in KEYS if len({str(p.get(k)) for p, _ in out}) > 1] or ["lr", "batch_size"]
    out = [({k: p[k] for k in vary if k in p} or {"run": f.stem}, f) for p, f in out]

    def key(t):
        return tuple((0, float(v), "") if isinstance(v, (int, float)) else (1, 0.0, str(v))
                     for v in (t[0].get(k) for k in vary))

    return sorted(out, key=key)


def points(path, measure: str = "sharpness", at=run_flatness,
           target: str = "test_loss") -> list[tuple[dict, object]]:
    """[(params, FlatnessGeneralization)] for every run of `path` (`labelled`), each at the
    records `at(run, measure=..., target=...)` picks (default: the last with the measure)."""
    out = []
    for p, f in labelled(path):
        with open_run(f) as run:
            out.append((p, at(run, measure=measure, target=target)))
    return out


def label(p: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in p.items())


def said(c, partial: bool = False) -> str:
    """Whether a correlation's 95 % interval lies above 0 (yes), below (reversed) or holds 0
    (not established: the claim is neither shown nor refuted at 95 %); of a pooled one, the
    interval it quotes (random effects where the points disagree); over at most EXACT_MAX
    values (the points' medians) the exact p decides, at 5 % (the Fisher interval of 5
    values covered 0 in 92 % of null data sets)."""
    if isinstance(c, PooledCorrelation):
        lo, hi = c.quoted()[1]
    elif not partial and c.n <= EXACT_MAX:
        if c.p >= 0.05:
            return f"not established (exact p = {c.p:.2g})"
        return "yes" if c.rho > 0 else "reversed"
    else:
        lo, hi = c.partial_ci if partial else c.ci
    return "yes" if lo > 0 else "reversed" if hi < 0 else "not established (0 inside)"


def across(pts):
    """The points' medians correlated (None for fewer than 5 points)."""
    if len(pts) < 5:
        return None
    med = np.array([[np.median(fg.sharpness), np.median(fg.test_loss),
                     np.median(fg.train_loss) if fg.train_loss is not None else np.nan]
                    for _, fg in pts])
    return flatness_vs_generalization(med[:, 0], med[:, 1],
                                      med[:, 2] if np.all(np.isfinite(med[:, 2])) else None,
                                      target=pts[0][1].target)


def matched(path, levels, measure: str = "sharpness", pick: str = "first",
            target: str = "test_loss"):
    """([MatchedFit or the reason there is none (str)] at each train-loss level ("auto": the
    highest of the points' final median train losses), the points' labels) for the runs of
    `path`; `pick`: `matched_fit`'s record in the band."""
    runs = labelled(path)
    out = []
    with contextlib.ExitStack() as stack:
        opened = [stack.enter_context(open_run(f)) for _, f in runs]
        if levels == "auto":
            final = [run_flatness(r, measure=measure).train_loss for r in opened]
            if any(t is None for t in final):
                return ["at equal fit: the runs record no train_loss"], []
            levels = [max(float(np.median(t)) for t in final)]
        for lv in levels:
            try:
                out.append(matched_fit(opened, lv, measure=measure, pick=pick, target=target))
            except ConfigError as e:
                out.append(f"at equal fit (train loss {lv:.4g}): {e}")
    return out, [label(p) for p, _ in runs]


def matched_levels(text: str):
    """argparse type of --matched: 'auto', 'none' or comma-separated train losses > 0."""
    if text in ("auto", "none"):
        return text
    try:
        levels = [float(v) for v in text.split(",")]
    except ValueError:
        levels = []
    if not levels or not all(np.isfinite(v) and v > 0 for v in levels):
        raise argparse.ArgumentTypeError(f"expected 'auto', 'none' or train losses > 0, "
                                         f"comma-separated, got {text!r}")
    return levels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", help="a run file or a scan directory")
    ap.add_argument("--measure", choices=list(MEASURES), default="sharpness")
    ap.add_argument("--matched", default="auto", type=matched_levels,
                    help="train-loss levels to compare the points at, comma-separated; auto: "
                         "the highest final median train loss of the points; none: skip")
    ap.add_argument("--pick", choices=["first", "last"], default="first",
                    help="at equal fit, each replica at its first record in the train-loss band "
                         "or at the last one before it leaves the band for good")
    ap.add_argument("--target", choices=list(TARGETS), default="test_loss",
                    help="the generalization measure: test loss, or test error = 1 - "
                         "test_accuracy (classifiers)")
    ap.add_argument("--png", help="figure path (default: next to the run or in the scan dir)")
    a = ap.parse_args(argv)
    what = TARGETS[a.target]
    try:
        pts = points(a.path, a.measure, target=a.target)
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    for p, fg in pts:
        print(f"{label(p)} ({a.measure}): {fg.table()}")
    pos = sum(fg.ci[0] > 0 for _, fg in pts)
    neg = sum(fg.ci[1] < 0 for _, fg in pts)
    ppos = sum(fg.partial_ci[0] > 0 for _, fg in pts)
    print(f"within points: rho > 0 (95 % interval above 0) at {pos} of {len(pts)}, < 0 at {neg}; "
          f"given the train loss > 0 at {ppos}")
    within = pooled([fg for _, fg in pts])
    print(within.table())
    if all(fg.train_loss is not None for _, fg in pts):
        print(pooled([fg for _, fg in pts], partial=True).table())
    acr = across(pts)
    if acr is not None:
        print(f"across points (medians): {acr.table(unit='points')}")
    print(f"verdict: flatter ({a.measure}) end points have lower {what} at 95 %: within points "
          f"(pooled) {said(within)}" + ("" if acr is None else f"; across points {said(acr)}"))
    early = points(a.path, a.measure, at=early_stopped, target=a.target)
    by = {fg.stopped_by for _, fg in early}
    print(f"early stopped (each replica at its record of lowest {' or '.join(sorted(by))}"
          + ("; the test set chose it: an oracle" if by & set(TARGETS) else "") + "):")
    for p, fg in early:
        print(f"  {label(p)}: step median {np.median(fg.step):.0f}; {fg.table()}")
    print(f"  {pooled([fg for _, fg in early]).table()}")
    e_acr = across(early)
    if e_acr is not None:
        print(f"  across points (medians): {e_acr.table(unit='points')}")
    fits = []
    if a.matched != "none":
        try:
            fits, labels = matched(a.path, a.matched, a.measure, a.pick, a.target)
        except LangevinSimError as e:
            print(f"{ap.prog}: error: --matched: {e}", file=sys.stderr)
            sys.exit(2)
        for mf in fits:
            if isinstance(mf, str):
                print(mf)
                continue
            print("at equal fit, " + mf.table(labels))
            settings = ("fewer than 5 points" if mf.settings is None else said(mf.settings))
            print(f"  verdict at train loss {mf.level:.4g}: flatter settings test better across "
                  f"points (their medians) {settings}; all replicas across points {said(mf.fg)}, "
                  f"given the train loss {said(mf.fg, partial=True)}"
                  + ("" if mf.within is None else f"; within points {said(mf.within)}"))
    fits = [mf for mf in fits if not isinstance(mf, str)]
    fig, ax = plt.subplots(1, 3 if fits else 2, figsize=(16 if fits else 11, 4))
    for k, (p, fg) in enumerate(pts):
        fg.plot(ax[0], label=label(p), alpha=0.6, color=f"C{k % 10}")
    ax[0].set_xlabel(a.measure)
    ax[0].legend(fontsize="xx-small")
    for k, (p, fg) in enumerate(pts):
        ax[1].errorbar(np.median(fg.sharpness), np.median(fg.test_loss),
                       xerr=np.abs(np.quantile(fg.sharpness, [0.25, 0.75])[:, None]
                                   - np.median(fg.sharpness)),
                       yerr=np.abs(np.quantile(fg.test_loss, [0.25, 0.75])[:, None]
                                   - np.median(fg.test_loss)), fmt="o", capsize=2,
                       label=label(p), color=f"C{k % 10}")
    ax[1].set(xscale="log", yscale="log", xlabel=f"{a.measure} (median, quartiles)",
              ylabel=f"{what} (median, quartiles)", title="per point")
    ax[1].legend(fontsize="xx-small")
    if fits:
        mf = fits[0]
        for k, lab in enumerate(labels):
            on = mf.point == k
            if on.any():
                ax[2].scatter(mf.fg.sharpness[on], mf.fg.test_loss[on], s=8, alpha=0.6, label=lab,
                              color=f"C{k % 10}")
        ax[2].set(xscale="log", yscale="log", xlabel=a.measure, ylabel=what,
                  title=f"at equal train loss ({mf.level:.3g}, factor {mf.factor:g})")
        ax[2].legend(fontsize="xx-small")
    for axis in ax:
        plain_within_a_decade(axis)
    save_figure(fig, a.png, a.path, "flatness")
    return pts, within, acr, early, fits


def plain_within_a_decade(ax) -> None:
    """A log axis spanning less than a decade labels its minor ticks as 1.7x10^0,
    1.75x10^0, ..., which overlap: plain numbers there."""
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:.3g}")
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() == "log" and 0 < lo < hi < 10 * lo:
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(plain)


if __name__ == "__main__":
    script(main)
