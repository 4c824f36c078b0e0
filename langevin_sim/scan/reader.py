"""Reading a scan directory: `open_scan(DIR)` -> `Scan`, its manifest rebuilt from the files."""
from __future__ import annotations

from pathlib import Path

from ..errors import RunFileError, require
from ..io import Run, open_run
from .manifest import MANIFEST_COLUMNS_TAIL, SCAN_FORMAT, axes_of, read_json, rebuild_rows


class Scan:
    """A scan directory: its plan (scan.json) and a manifest rebuilt from the files on disk.

    manifest: pandas DataFrame, one row per point (id, one column per scan key, repeat,
    seed, status, path, wall_s, error).  grid / zip: the scan keys; `open(id)` opens a
    point's Run; `summarize(fn)` gathers a scalar summary of every point into an
    xarray.Dataset indexed by the scan parameters (see langevin_sim.analysis.scan.gather).
    """

    def __init__(self, root, rows: list[dict] | None = None):
        """rows: the manifest rows when the caller has just read them from the files
        (`run_scan`: not each point's file opened again)."""
        pd = require("pandas", "scan", "reading a scan (open_scan)")

        self.root = Path(root)
        spec = read_json(self.root / "scan.json")
        if spec is None or spec.get("format") != SCAN_FORMAT:
            what = ("does not exist" if not self.root.exists() else
                    "is a file, not a scan directory" if self.root.is_file() else
                    "holds no scan (no readable scan.json)")
            raise RunFileError(f"{self.root} {what}; pass a directory written by `langevin-sim "
                               "scan --out DIR`")
        self.spec = spec
        self.rows = rows if rows is not None else rebuild_rows(self.root, spec["points"])
        axes = axes_of(self.rows)
        self.grid = [k for k in spec["grid"]]
        self.zip = [k for k in spec["zip"]]
        self.grid += [k for k in axes if k not in self.grid and k not in self.zip]
        table = [{"id": r["id"], **{k: (r["coords"] or {}).get(k) for k in axes},
                  **{k: r[k] for k in MANIFEST_COLUMNS_TAIL}} for r in self.rows]
        cols = ["id"] + axes + list(MANIFEST_COLUMNS_TAIL)
        self.manifest = pd.DataFrame(table, columns=cols)
        self.manifest["wall_s"] = pd.to_numeric(self.manifest["wall_s"], errors="coerce")

    @property
    def keys(self) -> list[str]:
        """All scan keys: grid axes, then zip keys."""
        return self.grid + self.zip

    def open(self, pid: str) -> Run:
        """The Run of point `pid` (a run file, open for reading)."""
        return open_run(self.root / "points" / f"{pid}.h5")

    def counts(self) -> dict:
        """{status: number of points}."""
        return self.manifest["status"].value_counts().to_dict()

    def summarize(self, fn=None, **kwargs):
        """xarray.Dataset of `fn(run, **kwargs)` (a float or {name: float}) over all points;
        default `langevin_sim.analysis.scan.energy_summary`."""
        from ..analysis.scan import gather  # here: langevin_sim.analysis imports SciPy

        return gather(self, fn, **kwargs)

    def describe(self) -> str:
        """Point counts by status, the manifest's path, and the points not done (first 20)."""
        c = self.counts()
        lines = [f"scan {self.root}: {len(self.manifest)} points: "
                 + ", ".join(f"{n} {s}" for s, n in sorted(c.items())),
                 f"manifest {self.root / 'manifest.csv'}"]
        for _, r in self.manifest[~self.manifest["status"].isin(["done"])].head(20).iterrows():
            coords = ", ".join(f"{k}={r[k]}" for k in self.keys)
            lines.append(f"  {r['id']} ({coords}, repeat {r['repeat']}): {r['status']}: {r['error']}")
        return "\n".join(lines)


def open_scan(root) -> Scan:
    """Open scan directory `root`; its manifest is rebuilt from the files on disk."""
    return Scan(root)
