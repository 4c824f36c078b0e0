"""Claim 3: critical points of random landscapes, found by minimizing |grad L|^2 from random
starts (`langevin_sim.analysis.critical`), their Hessian index against energy as the
dimension grows; and the p-spin's minima counted outright against Kac-Rice.  Prints tables
and saves a PNG.

    python analysis/critical_points.py --N 8,16,24 --seeds 0,1 --widths 1,2,4 --starts 200 \
        --census 8:32:500,16:16:1000 --png fig.png

Families: the spherical p = 3 spin glass (Crisanti-Sommers, coupling seeds `--seeds`, pooled)
at N spins, against the semicircle law of the index (`semicircle_index_fraction`, threshold
e_th from `spinglass.landmarks`); the TeacherStudentMLP training loss (n = 64, d_in = 3,
teacher width 2, tanh, no label noise) at student widths `--widths` (d = 5 w + 1), starts
from its default initialization; "escaped": searches that ended far out (|x| > 10 x the
starts'), where tanh units turning into step functions make the gradient vanish only
asymptotically: not critical points, counted apart.  Census (`--census N:instances:starts,...`): the p-spin's
minima found by quenching the energy from `starts` uniform starts on each of `instances`
coupling instances (seeds 0 ..), their mean number against the Kac-Rice expectation
(`kac_rice`, exact at every N), which also gives the expected number of all critical points.
Descent census (`--descent-widths`): where L-BFGS on the MLP's training loss itself ends from
`--descent-starts` default initializations on each data/teacher instance `--descent-seeds`
(`descent_census`): at the bottom (zero loss at widths >= the teacher's), stuck above it at a
minimum, a saddle or not converged, or escaped to infinity, with the loss above the bottom
in units of the trivial predictor's, L_null = mean(y^2) / 2 (zero output) or ln K (uniform
over K classes); `--descent-net n:d_in:teacher` (default claim 3's 64:3:2; claim 6's is
256:8:4), or `DATASET:n`: the tanh ClassifierMLP of n training samples of a real data set
(e.g. digits:512; split by the instance seed; the rows add the training and test accuracy
of the end points).  `--descent-wd WD`: the census is of the loss + WD |x|^2 / 2 (the
objective SGD with that weight decay descends), whose minima are finite where a
classifier's cross-entropy on separable data has none.  `--descent-gd LR:STEPS[:BATCH[:MOMENTUM]]`:
where gradient descent (full batch, or minibatch SGD with momentum) ends instead (the engine
runs STEPS steps of step LR from every start, then L-BFGS with steps <= `--descent-max-step`
(0.01) finishes): L-BFGS's long steps jump between basins; `--descent-max-step` alone caps
L-BFGS's own steps.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from langevin_sim.analysis.critical import (CriticalPoints, abc_complexity, critical_points,
                                            descent_census, descent_summary,
                                            pspin_minima_census, semicircle_index_fraction)
from langevin_sim import LangevinSimError
from langevin_sim.analysis.scan import int_at_least, save_figure, script
from langevin_sim.analysis.spinglass import landmarks
from langevin_sim.dynamics import SGD
from langevin_sim.potentials import SphericalPSpin
from langevin_sim.potentials.toynets import ClassifierMLP, TeacherStudentMLP

P = 3


def pspin(N: int, starts: int, seed: int = 1, max_iter: int = 1000, couplings=(0,)):
    parts = []
    for c in couplings:
        pot = SphericalPSpin(N, P, seed=c)
        z = np.random.default_rng(seed + c).standard_normal((starts, N))
        parts.append(critical_points(pot, pot.default_init(z), tol=1e-6, max_iter=max_iter))
    return CriticalPoints.pooled(parts), N


NET = (64, 3, 2)   # claim 3's net: n samples, d_in, teacher width (tanh, no label noise)


def mlp_potential(width: int, seed: int = 0, net=NET):
    """The training loss of `net`: (n, d_in, teacher width) the tanh teacher-student loss, no
    label noise, data/teacher instance `seed`; (dataset, n) the tanh ClassifierMLP of n
    training samples of the data set (e.g. ("digits", 512)), split by `seed`; student
    `width`."""
    if isinstance(net[0], str):
        return ClassifierMLP(net[0], n=int(net[1]), hidden=width, seed=seed)
    n, d_in, teacher = (int(v) for v in net)
    return TeacherStudentMLP(n=n, d_in=d_in, hidden=width, teacher_hidden=teacher, noise=0.0,
                             seed=seed)


def null_loss(pot) -> float:
    """The loss of the trivial predictor (energy): mean(y^2) / 2 (zero output) for the
    teacher-student net, ln K (uniform over K classes) for a classifier."""
    if isinstance(pot, ClassifierMLP):
        return float(np.log(pot.classes))
    return float(np.mean(pot.labels ** 2) / 2)


def mlp(width: int, starts: int, seed: int = 1, max_iter: int = 1000):
    pot = mlp_potential(width)
    z = np.random.default_rng(seed).standard_normal((starts, pot.d))
    return critical_points(pot, pot.default_init(z), tol=1e-6, max_iter=max_iter,
                           rtol=1e-6), 1


def summary(name, size, cp, scale, e_th=None):
    e = cp.energy / scale
    row = {"family": name, "size": size, "dim": cp.dim, "starts": cp.starts, "found": cp.found,
           "escaped": cp.escaped,
           "distinct": cp.index.size, "f0": cp.fraction_minima, "f0_se": cp.fraction_minima_se,
           "f0_text": cp.fraction_minima_text(),
           "mean_index": float(np.mean(cp.index / cp.dim)) if cp.index.size else np.nan,
           "e_min0": float(e[cp.index == 0].max()) if np.any(cp.index == 0) else np.nan,
           "e_saddle": float(np.median(e[cp.index > 0])) if np.any(cp.index > 0) else np.nan}
    if e_th is not None and cp.index.size:
        row["dev"] = float(np.mean(cp.index / cp.dim - semicircle_index_fraction(e, e_th)))
        row["below_th"] = int(np.sum(e < e_th))
        row["min0_below"] = int(np.sum((cp.index == 0) & (e <= e_th + 0.02)))
    return row


def run(Ns, widths, starts, max_iter=1000, couplings=(0,)):
    lm = landmarks(P, 0.5)
    out = []
    for N in Ns:
        t = time.time()
        cp, s = pspin(N, starts, max_iter=max_iter, couplings=couplings)
        out.append((summary("pspin", N, cp, s, lm.e_th), cp, s))
        print(f"p-spin N={N}: {cp.table()} ({time.time() - t:.0f} s)")
    for w in widths:
        t = time.time()
        cp, s = mlp(w, starts, max_iter=max_iter)
        out.append((summary("mlp", w, cp, s), cp, s))
        print(f"MLP width={w}: {cp.table()} ({time.time() - t:.0f} s)")
    return lm, out


def table(out) -> str:
    lines = ["| family | N or width | dim | converged/starts | escaped | distinct | "
             "index 0 fraction | mean index/dim | max energy of a minimum | "
             "median energy of saddles | index/dim − semicircle |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r, _, _ in out:
        lines.append(f"| {r['family']} | {r['size']} | {r['dim']} | {r['found']}/{r['starts']} | "
                     f"{r['escaped']} | {r['distinct']} | {r['f0_text'].replace('+-', '±')} | "
                     f"{r['mean_index']:.3f} | "
                     f"{r['e_min0']:.4g} | {r['e_saddle']:.4g} | "
                     f"{r.get('dev', float('nan')):+.3f} |")
    return "\n".join(lines)


def census(spec, max_iter=2000):
    """Rows of `pspin_minima_census` for each "N:instances:starts" in spec."""
    rows = []
    for item in spec:
        N, inst, starts = (int(v) for v in item.split(":"))
        t = time.time()
        c = pspin_minima_census(N, P, seeds=range(inst), starts=starts, max_iter=max_iter)
        r = c.row()
        rows.append(r)
        print(f"census N={N}: {r['mean']:.2f} +- {r['se']:.2f} minima per instance "
              f"(Kac-Rice {r['kac']:.2f} +- {r['kac_se']:.2f}) ({time.time() - t:.0f} s)")
    return rows


def descent(widths, seeds, starts, max_iter=4000, net=NET, gd=None, max_step=None,
            backend="numba", weight_decay=0.0):
    """Rows of `descent_summary` per width over the data/teacher instances `seeds` of `net`
    (start seed 1 + instance), with the censuses.  gd = (lr, steps[, batch, momentum]):
    gradient descent first (the engine's SGD; batch 0 or absent: full batch), then L-BFGS
    with steps <= max_step (length; default 0.01) finishes, the engine's `backend` running
    it; None: L-BFGS alone, its steps capped at max_step where given.  weight_decay: the
    census is of the loss + wd |x|^2 / 2 (and the SGD
    carries that decay).  A classifier's rows add the training and test accuracy of the end
    points at the bottom and above it (medians)."""
    rows = []
    if gd is None:
        kw = {} if max_step is None else {"max_step": float(max_step)}
        method = "L-BFGS" + ("" if max_step is None else f" (steps <= {max_step:g})")
    else:
        lr, steps, batch, mom = (tuple(gd) + (0, 0))[:4]
        dyn = SGD(lr=float(lr), batch_size=int(batch) or None, momentum=float(mom),
                  weight_decay=weight_decay)
        kw = {"dynamics": dyn, "steps": int(steps),
              "max_step": 0.01 if max_step is None else float(max_step), "backend": backend}
        method = ("GD" if not batch else f"SGD (B = {int(batch)}, momentum {mom:g})") + \
            f" (lr {lr:g}, {int(steps)} steps)"
    if weight_decay:
        method += f" (+ {weight_decay:g} |x|^2 / 2)"
    for w in widths:
        t = time.time()
        cs, above, acc = [], [], {"bottom": [], "above": []}
        for s in seeds:
            pot = mlp_potential(w, s, net)
            z = np.random.default_rng(1 + s).standard_normal((starts, pot.d))
            c = descent_census(pot, pot.default_init(z), max_iter=max_iter,
                               weight_decay=weight_decay, **kw)
            cs.append(c)
            # loss above the bottom in units of the trivial predictor's loss
            above.append(c.excess() / null_loss(pot))
            if isinstance(pot, ClassifierMLP):
                for part, rows_ in (("bottom", c.at_bottom), ("above", c.stuck | c.escaped)):
                    if rows_.any():
                        acc[part].append(np.stack([pot.metrics(c.x[rows_], test=False)[1],
                                                   pot.metrics(c.x[rows_], test=True)[1]], 1))
        above = np.concatenate(above)
        r = {"width": w, "dim": pot.d, "net": ":".join(str(v) for v in net), "method": method,
             **descent_summary(cs),
             "above_null_median": float(np.median(above)) if above.size else np.nan,
             "above_null_max": float(above.max()) if above.size else np.nan,
             "null_loss": null_loss(pot)}
        if isinstance(pot, ClassifierMLP):
            for part, a in acc.items():
                a = np.concatenate(a) if a else np.full((0, 2), np.nan)
                r[f"train_acc_{part}"], r[f"test_acc_{part}"] = (
                    float(np.median(a[:, j])) if a.size else np.nan for j in (0, 1))
        rows.append((r, cs))
        print(f"descent ({method}) MLP width={w}: " + "; ".join(c.table() for c in cs)
              + f" ({time.time() - t:.0f} s)")
    return rows


def net_label(net: str) -> str:
    """The descent rows' "net" in words."""
    parts = net.split(":")
    if not parts[0].isdigit():
        return f"tanh ClassifierMLP of {parts[1]} {parts[0]} training samples"
    return f"teacher width {parts[2]}; n = {parts[0]}, d_in = {parts[1]}"


def descent_table(rows) -> str:
    r0 = rows[0][0]
    accs = "train_acc_bottom" in r0
    lines = [f"descent: {r0['method']}; {net_label(r0['net'])}; replicas diverged in it: "
             f"{sum(r['diverged'] for r, _ in rows)}",
             "| width | d | instances × starts | at the bottom | stuck: at minima | at saddles | "
             "not converged | escaped | bad-minimum losses per instance | loss above the bottom / "
             "trivial predictor's (median, max) | bottom |"
             + (" train / test accuracy at the bottom | above it |" if accs else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if accs else "")]
    if all(r["landscapes"] == 1 for r, _ in rows):
        lines[0] += " (one instance a width: fractions without an se)"
    for r, _ in rows:
        def f(k):       # (one instance: no spread to give an se)
            se = r[k + "_se"]
            return f"{r[k]:.3f}" + (f" ± {se:.3f}" if se == se else "") + f" ({r[k + '_n']})"
        lines.append(f"| {r['width']} | {r['dim']} | {r['landscapes']} × "
                     f"{r['starts'] // r['landscapes']} | {f('at_bottom')} | {f('minima')} | "
                     f"{f('saddles')} | {f('undecided')} | {f('escaped')} | {r['levels']:.2f} | "
                     + (f"{r['above_null_median']:.2g}, {r['above_null_max']:.2g} | "
                        if r["above_null_max"] == r["above_null_max"] else "— (none above) | ")
                     + f"{r['bottom']:.4g} |"
                     + (f" {r['train_acc_bottom']:.3f} / {r['test_acc_bottom']:.3f} | "
                        f"{r['train_acc_above']:.3f} / {r['test_acc_above']:.3f} |" if accs else ""))
    return "\n".join(lines)


def census_table(rows) -> str:
    tot, mins = abc_complexity(P)
    lines = ["| N | instances × starts | minima found per instance | Chao1 unseen | Kac-Rice "
             "E[minima] | z | mean energy found | Kac-Rice mean energy | mean energy descent reaches | "
             "Kac-Rice E[critical points] | minima / critical |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['N']} | {r['instances']} × {r['starts']} | {r['mean']:.2f} ± "
                     f"{r['se']:.2f} | {r['unseen']:.2f} | {r['kac']:.2f} ± {r['kac_se']:.2f} | "
                     f"{r['z']:+.1f} | {r['energy']:.4f} | {r['kac_energy']:.4f} | "
                     f"{r['energy_reached']:.4f} | "
                     f"{r['total']:.3g} | {r['fraction']:.3g} |")
    lines.append(f"(N -> infinity, ABC: (1/N) ln E[critical points] -> {tot:.4f}, "
                 f"minima -> {mins:.4f})")
    return "\n".join(lines)


def census_verdict(rows, cut: float = 3.0) -> str:
    """The census's verdict: the minima found per instance against Kac-Rice's E[minima] at
    every N (|z| <= cut; a count below it may be minima not found: see Chao1 unseen)."""
    zs = ", ".join(f"N = {r['N']}: z = {r['z']:+.1f}" for r in rows)
    off = [r for r in rows if not abs(r["z"]) <= cut]
    if not off:
        return f"verdict: minima per instance consistent with Kac-Rice at every N ({zs}; |z| <= {cut:g})"
    return (f"verdict: minima per instance DIFFER from Kac-Rice at N = "
            f"{', '.join(str(r['N']) for r in off)} ({zs}; |z| > {cut:g}"
            + ("; below it: minima the starts did not find?" if any(r["z"] < 0 for r in off)
               else "") + ")")


def figure(lm, out, png, rows=(), drows=()):
    """One panel per part that ran: p-spin and MLP critical points (index vs energy), the
    p-spin census against Kac-Rice, the MLP descent census."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    families = [f for f in ("pspin", "mlp") if any(r["family"] == f for r, _, _ in out)]
    spread = bool(drows) and any(r["levels"] or r["minima_n"] for r, _ in drows)
    n = len(families) + bool(rows) + bool(drows) + spread
    if n == 0:
        return
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    axes = list(axes[0])
    panel = dict(zip(families, axes))
    for r, cp, s in out:
        lab = f"N={r['size']}" if r["family"] == "pspin" else f"width {r['size']} (d={r['dim']})"
        panel[r["family"]].scatter(cp.energy / s, cp.index / cp.dim, s=8, alpha=0.6, label=lab)
    if "pspin" in panel:
        a = panel["pspin"]
        ee = np.linspace(-1.3, 1.3, 400)
        a.plot(ee, semicircle_index_fraction(ee, lm.e_th), "k-", lw=1, label="semicircle (ABC)")
        a.axvline(lm.e_th, color="r", ls="--", lw=1, label=f"e_th = {lm.e_th:.4f}")
        a.axvline(lm.e_gs, color="gray", ls=":", lw=1, label=f"E_gs = {lm.e_gs:.4f}")
        a.set(xlabel="energy per spin", ylabel="index / (N − 1)",
              title="p = 3 spherical spin glass")
        a.legend(fontsize=7)
    if "mlp" in panel:
        b = panel["mlp"]
        b.set(xscale="log", xlabel="training loss", ylabel="index / d",
              title="TeacherStudentMLP loss")
        b.legend(fontsize=7)
    if rows:
        c = axes[len(families)]
        Ns = [r["N"] for r in rows]
        c.errorbar(Ns, [r["mean"] for r in rows], [r["se"] for r in rows], fmt="o", ms=4,
                   label="minima found per instance")
        c.plot(Ns, [r["kac"] for r in rows], "k-", lw=1, label="Kac-Rice E[minima]")
        c.plot(Ns, [r["total"] for r in rows], "k--", lw=1, label="Kac-Rice E[critical points]")
        c.set(yscale="log", xlabel="N", ylabel="number per instance",
              title="p = 3: minima counted vs Kac-Rice")
        c.legend(fontsize=7)
    if spread:      # the losses of the end points above the lowest one found, per width
        ax = axes[-1]
        for i, (r, cs) in enumerate(drows):
            ex = np.concatenate([(c.loss - c.bottom)[np.isfinite(c.loss)] for c in cs])
            ex = ex / r["null_loss"]
            x = i + np.random.default_rng(i).uniform(-0.25, 0.25, ex.size)
            ax.scatter(x, np.maximum(ex, 1e-8), s=6, alpha=0.5, color="C0")
            ax.plot([i - 0.3, i + 0.3], [max(np.median(ex), 1e-8)] * 2, "k-", lw=1.5)
        ax.set(yscale="log", xticks=range(len(drows)),
               xticklabels=[str(r["width"]) for r, _ in drows],
               xlabel="width (at 1e-8: the lowest minimum found)",
               ylabel="(loss − lowest found) / trivial predictor's",
               title="where descent ends: loss above the best (bar: median)")
    if drows:
        ax = axes[-1 - spread]
        ws = [str(r["width"]) for r, _ in drows]
        base = np.zeros(len(drows))
        for k, lab in (("at_bottom", "at the bottom"), ("minima", "stuck at a minimum"),
                       ("saddles", "stuck at a saddle"), ("undecided", "not converged"),
                       ("escaped", "escaped to infinity")):
            v = np.array([r[k] for r, _ in drows])
            ax.bar(ws, v, bottom=base, label=lab)
            base += v
        r0 = drows[0][0]
        lo = min(0.8, np.floor(min(r["at_bottom"] for r, _ in drows) * 20) / 20 - 0.05)
        ax.set(ylim=(max(lo, 0.0), 1.0))      # the classes above the bottom are a few %
        ax.set(xlabel=f"width ({net_label(r0['net'])})",
               ylabel=f"fraction of descents (from {max(lo, 0):.2f})",
               title=f"MLP: where {r0['method']} on the loss ends")
        ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, png)


def _ints(low: int, what: str):
    """argparse type: comma-separated integers >= low (empty: none)."""
    def parse(text: str) -> list[int]:
        try:
            v = [int(x) for x in text.split(",") if x]
        except ValueError:
            v = None
        if v is None or any(x < low for x in v):
            raise argparse.ArgumentTypeError(f"expected {what}: comma-separated integers >= "
                                             f"{low}, got {text!r}")
        return v
    return parse


def _census_spec(text: str) -> list[str]:
    """argparse type of --census: N:instances:starts,... (N >= 2, the others >= 1)."""
    items = [v for v in text.split(",") if v]
    for item in items:
        try:
            N, inst, starts = (int(v) for v in item.split(":"))
        except ValueError:
            N = inst = starts = 0
        if N < 2 or inst < 1 or starts < 1:
            raise argparse.ArgumentTypeError(
                f"expected N:instances:starts,... (N >= 2, instances and starts >= 1), "
                f"got {item!r}")
    return items


def _net_spec(text: str) -> tuple:
    """argparse type of --descent-net: n:d_in:teacher (integers >= 1) or DATASET:n."""
    parts = text.split(":")
    if len(parts) == 3 and all(v.isdigit() and int(v) >= 1 for v in parts):
        return tuple(int(v) for v in parts)
    if len(parts) == 2 and not parts[0].isdigit() and parts[1].isdigit() and int(parts[1]) >= 1:
        return (parts[0], int(parts[1]))
    raise argparse.ArgumentTypeError(f"expected n:d_in:teacher_width (e.g. 64:3:2) or "
                                     f"DATASET:n (e.g. digits:512), got {text!r}")


def _gd_spec(text: str):
    """argparse type of --descent-gd: LR:STEPS[:BATCH[:MOMENTUM]] ('' : none)."""
    if not text:
        return None
    try:
        v = tuple(float(x) for x in text.split(":"))
    except ValueError:
        v = ()
    if not 2 <= len(v) <= 4 or not (v[0] > 0 and v[1] >= 1 and v[1] == int(v[1])) or \
            (len(v) > 2 and not (v[2] >= 0 and v[2] == int(v[2]))) or \
            (len(v) > 3 and not 0 <= v[3] < 1):
        raise argparse.ArgumentTypeError(
            "expected LR:STEPS[:BATCH[:MOMENTUM]] (lr > 0, steps >= 1, batch >= 0 with 0 the "
            f"full batch, 0 <= momentum < 1), got {text!r}")
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--N", default=[], type=_ints(2, "p-spin sizes"),
                    help="p-spin sizes, e.g. 8,16,24")
    ap.add_argument("--widths", default=[], type=_ints(1, "widths"),
                    help="MLP widths for the |grad L|^2 search")
    ap.add_argument("--starts", type=int_at_least(1), default=200)
    ap.add_argument("--max-iter", type=int_at_least(1), default=1000)
    ap.add_argument("--seeds", default=[0], type=_ints(0, "seeds"),
                    help="p-spin coupling seeds, pooled")
    ap.add_argument("--census", default=[], type=_census_spec,
                    help="N:instances:starts,... minima counted")
    ap.add_argument("--descent-widths", default=[], type=_ints(1, "widths"),
                    help="MLP widths for the descent census")
    ap.add_argument("--descent-seeds", default=[0], type=_ints(0, "seeds"),
                    help="data/teacher instances")
    ap.add_argument("--descent-starts", type=int_at_least(1), default=500)
    ap.add_argument("--descent-iter", type=int_at_least(1), default=4000)
    ap.add_argument("--descent-net", default=NET, type=_net_spec,
                    help="n:d_in:teacher width (TeacherStudentMLP), or DATASET:n (ClassifierMLP "
                         "of n training samples, e.g. digits:512)")
    ap.add_argument("--descent-wd", type=float, default=0.0,
                    help="weight decay wd: the census is of the loss + wd |x|^2 / 2 (finite "
                         "minima for a classifier's cross-entropy)")
    ap.add_argument("--descent-gd", default=None, type=_gd_spec,
                    help="LR:STEPS[:BATCH[:MOMENTUM]] of (minibatch) gradient descent before "
                         "the L-BFGS finish (default: L-BFGS alone)")
    ap.add_argument("--descent-max-step", type=float, default=None,
                    help="step cap (length) of L-BFGS: of its finish after gradient descent "
                         "(default 0.01), or of L-BFGS alone (default: none)")
    ap.add_argument("--descent-backend", default="numba", help="engine backend of the gradient "
                                                                "descent")
    ap.add_argument("--png", default="", help="save the figure to this file")
    a = ap.parse_args(argv)
    try:
        lm, out = run(a.N, a.widths, a.starts, a.max_iter, a.seeds)
        if out:
            print(table(out))
        rows = census(a.census)
        if rows:
            print(census_table(rows))
            print(census_verdict(rows))
        drows = descent(a.descent_widths, a.descent_seeds, a.descent_starts, a.descent_iter,
                        a.descent_net, a.descent_gd, a.descent_max_step, a.descent_backend,
                        a.descent_wd)
    except LangevinSimError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)
    if drows:
        print(descent_table(drows))
    if a.png:
        figure(lm, out, a.png, rows, drows)
    return lm, out, rows, drows


if __name__ == "__main__":
    script(main)
