"""CPU seconds by role from /proc: who used the machine's cores during a window.

Linux only; elsewhere nothing is read and the ledger stays empty, which the
report says. A process's command line and CPU counters are readable to every
user; its environment only to its own user.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Process:
    """One process as /proc showed it: parent, command line, CPU seconds so far."""

    pid: int
    parent: int
    command: str
    cpu_s: float


Table = dict[int, Process]
INTERRUPTS = "kernel: interrupts and softirqs (loopback networking among them)"
# Names the role of a process (given every process, for its ancestry), or None.
RoleOf = Callable[[Process, Table], str | None]


def _read_process(pid: int) -> Process | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        command = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    user, system = int(fields[11]), int(fields[12])
    return Process(
        pid,
        int(fields[1]),
        command.replace(b"\0", b" ").decode(errors="replace").strip(),
        (user + system) / TICKS_PER_SECOND,
    )


def processes() -> Table:
    """Every process /proc lists now; those that end while it is read are left out."""
    try:
        pids = [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]
    except OSError:
        return {}
    found = {}
    for pid in pids:
        process = _read_process(pid)
        if process is not None:
            found[pid] = process
    return found


def machine_cpu_s() -> tuple[float, float]:
    """CPU seconds all cores together spent busy since boot (not idle, not
    iowait), and of those the seconds spent on interrupts and softirqs (the
    kernel's side of networking, loopback included), which no process is
    charged with."""
    try:
        first = (PROC / "stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return 0.0, 0.0
    # user nice system idle iowait irq softirq steal
    ticks = [int(value) for value in first[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / TICKS_PER_SECOND, (ticks[5] + ticks[6]) / TICKS_PER_SECOND


def ancestors(table: Table, pid: int) -> list[int]:
    """`pid`, its parent, its parent's parent … as far as `table` knows them."""
    chain: list[int] = []
    while pid in table and pid not in chain:
        chain.append(pid)
        pid = table[pid].parent
    return chain


def environment_value(pid: int, name: str) -> str | None:
    """One variable of a process's environment, when this user may read it."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for entry in raw.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


class Ledger:
    """CPU seconds each role used between `start()` and the last `sample()`.

    Sampled every second or so, a process that ends in the window keeps the
    seconds it had at its last sample; one that lives less than a sample
    interval is missed, its seconds left in the machine's total. A process's
    role is decided when it is first seen.
    """

    def __init__(self, role_of: RoleOf) -> None:
        self._role_of = role_of
        self._lock = threading.Lock()
        self._base: dict[int, float] = {}
        self._last: dict[int, Process] = {}
        self._roles: dict[int, str | None] = {}
        self._machine = ((0.0, 0.0), (0.0, 0.0))
        self._wall = (0.0, 0.0)
        self._open = False

    def start(self) -> None:
        """Begins the window: CPU seconds so far do not count."""
        table, machine = processes(), machine_cpu_s()
        with self._lock:
            self._base = {pid: process.cpu_s for pid, process in table.items()}
            self._last, self._roles = {}, {}
            self._machine = (machine, machine)
            now = time.monotonic()
            self._wall = (now, now)
            self._open = True
            self._note(table)

    def sample(self) -> None:
        """Reads /proc once more, if the window is open."""
        if not self._open:
            return
        table, machine = processes(), machine_cpu_s()
        with self._lock:
            if self._open:
                self._machine = (self._machine[0], machine)
                self._wall = (self._wall[0], time.monotonic())
                self._note(table)

    def stop(self) -> None:
        """Ends the window with one last sample."""
        self.sample()
        with self._lock:
            self._open = False

    def _note(self, table: Table) -> None:
        for pid, process in table.items():
            if pid not in self._roles:
                self._roles[pid] = self._role_of(process, table)
            self._last[pid] = process

    def used(self) -> tuple[Counter[str], float, float]:
        """CPU seconds by role, what all cores spent busy, and the window's length.

        The machine's interrupts and softirqs are the role `INTERRUPTS`.
        """
        used: Counter[str] = Counter()
        with self._lock:
            for pid, process in self._last.items():
                role = self._roles.get(pid)
                if role is not None:
                    used[role] += process.cpu_s - self._base.get(pid, 0.0)
            (busy_start, irq_start), (busy_end, irq_end) = self._machine
            began, ended = self._wall
        used[INTERRUPTS] = irq_end - irq_start
        return used, busy_end - busy_start, ended - began
