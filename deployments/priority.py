"""CPU priority: background work (flow runs, the Prefect server) yields to the API.

On a small machine an import, a CRM sync and an e-mail batch can keep every
core busy; a person posting a lead then waits behind them. The processes that
do that work run at a higher niceness (`ORCH_BACKGROUND_NICENESS`), so the
kernel gives the API the CPU whenever it wants it, and the background work
everything left over. Containers are scheduled by their own CPU weights
(`cpu_shares` in compose.yaml), which niceness within one does not change.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def lower_priority(niceness: int, pid: int = 0) -> int | None:
    """Raises the process's niceness to at least `niceness`; its children inherit it.

    A niceness already higher is kept: an operator's `nice -n 19` wins. Where
    the system has no niceness (Windows), nothing changes.

    Args:
        niceness: 0 (no change) to 19 (the lowest priority).
        pid: the process; 0 for this one.

    Returns:
        The process's niceness afterwards, or None where there is none.
    """
    if not hasattr(os, "setpriority"):
        return None
    current = os.getpriority(os.PRIO_PROCESS, pid)
    if niceness > current:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
        except OSError as exc:
            # Raising niceness needs no privilege; a process gone is the one case.
            logger.warning("niceness of process %d not raised: %s", pid, exc)
            return current
        return niceness
    return current
