"""Parameter scans: one scenario run per point of a grid, on Dask workers or serially.

ids: point ids and seeds; plan: the points of a scan; manifest: a point's status from its
files, manifest.csv; lock: scan.lock; point: one point on a worker; cluster: Dask;
runner: `run_scan`; reader: `open_scan` / `Scan`; cli: ``langevin-sim scan`` (its help
text is the full description).  Dask, pandas and xarray are imported only when used.
"""
from .cli import add_scan_parser, cli_scan
from .ids import point_id, point_seed, splitmix64
from .manifest import FINISHED, MANIFEST_COLUMNS_TAIL, SCAN_FORMAT, rebuild_rows, write_manifest
from .plan import Point, plan_scan
from .point import run_point
from .reader import Scan, open_scan
from .runner import run_scan

__all__ = ["FINISHED", "MANIFEST_COLUMNS_TAIL", "SCAN_FORMAT", "Point", "Scan", "add_scan_parser",
           "cli_scan", "open_scan", "plan_scan", "point_id", "point_seed", "rebuild_rows",
           "run_point", "run_scan", "splitmix64", "write_manifest"]
