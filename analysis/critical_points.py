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
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from langevin_sim.analysis.critical import (CriticalPoints, abc_complexity, critical_points,
                                            pspin_minima_census, semicircle_index_fraction)
from langevin_sim.analysis.spinglass import landmarks
from langevin_sim.potentials import SphericalPSpin
from langevin_sim.potentials.toynets import TeacherStudentMLP

P = 3


def pspin(N: int, starts: int, seed: int = 1, max_iter: int = 1000, couplings=(0,)):
    parts = []
    for c in couplings:
        pot = SphericalPSpin(N, P, seed=c)
        z = np.random.default_rng(seed + c).standard_normal((starts, N))
        parts.append(critical_points(pot, pot.default_init(z), tol=1e-6, max_iter=max_iter))
    return CriticalPoints.pooled(parts), N


def mlp(width: int, starts: int, seed: int = 1, max_iter: int = 1000):
    pot = TeacherStudentMLP(n=64, d_in=3, hidden=width, teacher_hidden=2, noise=0.0, seed=0)
    z = np.random.default_rng(seed).standard_normal((starts, pot.d))
    return critical_points(pot, pot.default_init(z), tol=1e-6, max_iter=max_iter,
                           rtol=1e-6), 1


def summary(name, size, cp, scale, e_th=None):
    e = cp.energy / scale
    row = {"family": name, "size": size, "dim": cp.dim, "starts": cp.starts, "found": cp.found,
           "escaped": cp.escaped,
           "distinct": cp.index.size, "f0": cp.fraction_minima, "f0_se": cp.fraction_minima_se,
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
                     f"{r['escaped']} | {r['distinct']} | {r['f0']:.3f} ± {r['f0_se']:.3f} | "
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


def figure(lm, out, png, rows=()):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3 if rows else 2, figsize=(15 if rows else 10, 4))
    a, b = axes[:2]
    for r, cp, s in out:
        e = cp.energy / s
        ax = a if r["family"] == "pspin" else b
        lab = f"N={r['size']}" if r["family"] == "pspin" else f"width {r['size']} (d={r['dim']})"
        ax.scatter(e, cp.index / cp.dim, s=8, alpha=0.6, label=lab)
    ee = np.linspace(-1.3, 1.3, 400)
    a.plot(ee, semicircle_index_fraction(ee, lm.e_th), "k-", lw=1, label="semicircle (ABC)")
    a.axvline(lm.e_th, color="r", ls="--", lw=1, label=f"e_th = {lm.e_th:.4f}")
    a.axvline(lm.e_gs, color="gray", ls=":", lw=1, label=f"E_gs = {lm.e_gs:.4f}")
    a.set(xlabel="energy per spin", ylabel="index / (N − 1)", title="p = 3 spherical spin glass")
    b.set(xscale="log", xlabel="training loss", ylabel="index / d",
          title="TeacherStudentMLP loss")
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    if rows:
        c = axes[2]
        Ns = [r["N"] for r in rows]
        c.errorbar(Ns, [r["mean"] for r in rows], [r["se"] for r in rows], fmt="o", ms=4,
                   label="minima found per instance")
        c.plot(Ns, [r["kac"] for r in rows], "k-", lw=1, label="Kac-Rice E[minima]")
        c.plot(Ns, [r["total"] for r in rows], "k--", lw=1, label="Kac-Rice E[critical points]")
        c.set(yscale="log", xlabel="N", ylabel="number per instance",
              title="p = 3: minima counted vs Kac-Rice")
        c.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", default="8,16,24")
    ap.add_argument("--widths", default="1,2,4")
    ap.add_argument("--starts", type=int, default=200)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--seeds", default="0", help="p-spin coupling seeds, pooled")
    ap.add_argument("--census", default="", help="N:instances:starts,... minima counted")
    ap.add_argument("--png", default="critical_points.png")
    a = ap.parse_args(argv)
    Ns = [int(v) for v in a.N.split(",") if v]
    widths = [int(v) for v in a.widths.split(",") if v]
    seeds = [int(v) for v in a.seeds.split(",") if v]
    lm, out = run(Ns, widths, a.starts, a.max_iter, seeds)
    print(table(out))
    rows = census([v for v in a.census.split(",") if v])
    if rows:
        print(census_table(rows))
    figure(lm, out, a.png, rows)
    return lm, out, rows


if __name__ == "__main__":
    main()
