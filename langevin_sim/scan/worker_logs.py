"""What the workers of a scan's own local cluster log (imports `distributed`: scans on Dask).

A worker's heartbeat that is in flight while the cluster closes fails against the closing
scheduler, and the worker logs it at ERROR with a traceback ("Failed to communicate with
scheduler during heartbeat."): a traceback on the user's terminal after a scan that ended
well or stopped as asked (SIGTERM, Ctrl-C).  The scheduler of a local cluster lives in the
scan's own process, so that message never says more than "the scan is closing"; the other
errors of the workers (QUIET lets ERROR through) still show.
"""
from __future__ import annotations

import logging

from distributed.diagnostics.plugin import WorkerPlugin

HEARTBEAT_LOST = "Failed to communicate with scheduler during heartbeat."


def not_heartbeat_lost(record: logging.LogRecord) -> bool:
    """A `logging` filter: False for the heartbeat-lost record, True for every other."""
    return record.msg != HEARTBEAT_LOST


class QuietHeartbeatLoss(WorkerPlugin):
    """Installs `not_heartbeat_lost` on each worker's `distributed.worker` logger (on the
    workers there at registration and on any the nannies start later)."""

    name = "langevin-sim-quiet-heartbeat-loss"

    def setup(self, worker) -> None:
        logger = logging.getLogger("distributed.worker")
        if not_heartbeat_lost not in logger.filters:
            logger.addFilter(not_heartbeat_lost)
