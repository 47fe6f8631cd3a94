"""CPU priority: background work (flow runs, the Prefect server) yields to the API.

On a small machine an import, a CRM sync and an e-mail batch can keep every
core busy; a person posting a lead then waits behind them. The processes that
do that work run at a higher niceness (`ORCH_BACKGROUND_NICENESS`), so the
kernel gives the API the CPU whenever it wants it, and the background work
everything left over. Containers are scheduled by their own CPU weights
(`cpu_shares` in compose.yaml), which niceness within one does not change.

Linux with autogroup scheduling (`/proc/sys/kernel/sched_autogroup_enabled`)
first shares the CPU evenly between sessions, and a process's niceness only
weighs against processes of its own session. `orchestrator up` starts each
process in a session of its own, and Prefect's worker starts each flow run in
one, so a niced flow run would still get as much CPU as the API. A process
leading its session therefore also lowers its session's group: its weight,
and that of everything it starts, drops against the API's session. A process
started from a terminal shares the terminal's session and group; that group
is left as it is. Autogroups apply only to processes in the root CPU cgroup
(a bare host); in a container or a service with a CPU controller of its own,
the group's niceness is kept and the cgroup's weight decides.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# Without CAP_SYS_ADMIN the kernel takes one autogroup change a machine every
# 100 ms and refuses others meanwhile (EAGAIN): try again a few times.
GROUP_WRITE_ATTEMPTS = 5
GROUP_WRITE_PAUSE_S = 0.11


def lower_priority(niceness: int, pid: int = 0) -> int | None:
    """Raises the process's niceness to at least `niceness`; its children inherit it.

    A niceness already higher is kept: an operator's `nice -n 19` wins. Where
    the system has no niceness (Windows), nothing changes. A process leading
    its own session lowers its session's autogroup the same way (see above).

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
        current = niceness
    lower_session_group(niceness, pid)
    return current


def follow_own_niceness() -> None:
    """Lowers the session's group to this process's niceness, if it leads one.

    For a process started niced in a session of its own by someone else: a
    flow run Prefect's worker started. Elsewhere nothing changes.
    """
    if hasattr(os, "getpriority"):
        lower_session_group(os.getpriority(os.PRIO_PROCESS, 0))


def session_group_niceness(pid: int = 0) -> int | None:
    """The niceness of the process's autogroup, or None where there is none."""
    try:
        text = _autogroup(pid).read_text()
    except OSError:
        return None
    # "/autogroup-85 nice 0"
    _, _, niceness = text.rpartition(" nice ")
    try:
        return int(niceness)
    except ValueError:
        return None


def lower_session_group(niceness: int, pid: int = 0) -> None:
    """Raises the autogroup's niceness of a session the process leads.

    Nothing changes for a process that does not lead its session (its group
    holds the terminal's other processes), where the kernel has no
    autogroups, or where the group's niceness is already at least `niceness`.
    """
    if not hasattr(os, "getsid"):
        return  # Windows: no sessions, no autogroups
    target = pid or os.getpid()
    try:
        leads_session = os.getsid(target) == target
    except OSError:
        return
    current = session_group_niceness(target)
    if not leads_session or current is None or niceness <= current:
        return
    for attempt in range(1, GROUP_WRITE_ATTEMPTS + 1):
        try:
            _autogroup(target).write_text(str(niceness))
            return
        except OSError as exc:
            if exc.errno == errno.EAGAIN and attempt < GROUP_WRITE_ATTEMPTS:
                time.sleep(GROUP_WRITE_PAUSE_S)
                continue
            logger.warning("session group of process %d not lowered: %s", target, exc)
            return


def _autogroup(pid: int) -> Path:
    return Path("/proc", str(pid or os.getpid()), "autogroup")
