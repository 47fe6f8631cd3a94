"""The e-mail dispatcher as a process of its own, for fault tests that kill it.

`python -m tests.faults.email_dispatcher [--clock-offset S] [--batch-size N]
[--idle-grace S]` runs the `sequence-dispatcher` flow once, as the flow runner
would, on the store, SMTP relay and Prefect server its environment names, and
writes the run's counts as JSON on its last line of output. `--clock-offset`
sets the product's clock that many seconds ahead: a run "later", past leases
and retry delays, without waiting for them.

`start_dispatcher` starts one from a test and hands back the process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class OffsetClock:
    """The machine's clock, set a fixed amount ahead."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class DispatcherProcess:
    """A running dispatcher process and the files its output goes to."""

    process: subprocess.Popen[bytes]
    output: Path

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a pulled plug would: no handler runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def counts(self, timeout: float) -> dict[str, int]:
        """The run's counts once it ended; AssertionError if it failed or hung."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the dispatcher did not finish in {timeout:g} s:\n{self.tail()}"
            ) from None
        assert code == 0, f"the dispatcher exited with {code}:\n{self.tail()}"
        lines = self.output.read_text(errors="replace").strip().splitlines()
        return dict(json.loads(lines[-1]))

    def tail(self) -> str:
        return self.output.read_text(errors="replace")[-4000:]


def start_dispatcher(
    environment: dict[str, str],
    output: Path,
    *,
    clock_offset: float = 0.0,
    batch_size: int = 50,
    idle_grace: float = 0.5,
) -> DispatcherProcess:
    """Starts a dispatcher process in a process group of its own.

    Args:
        environment: the whole environment (ORCH_* and PREFECT_* settings).
        output: where its output (logs, then the counts) is written.
        clock_offset: seconds the product's clock runs ahead in it.
        batch_size: enrolments claimed per batch.
        idle_grace: seconds it keeps polling once nothing is due.
    """
    command = [
        sys.executable,
        "-m",
        "tests.faults.email_dispatcher",
        "--clock-offset",
        str(clock_offset),
        "--batch-size",
        str(batch_size),
        "--idle-grace",
        str(idle_grace),
    ]
    with output.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return DispatcherProcess(process, output)


def main(argv: list[str]) -> int:
    """Runs the dispatcher flow once and writes its counts; 0 when it completed."""
    parser = argparse.ArgumentParser(prog="python -m tests.faults.email_dispatcher")
    parser.add_argument("--clock-offset", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--idle-grace", type=float, default=0.5)
    options = parser.parse_args(argv)

    from flows.sequence_dispatch import dispatch_sequence
    from leads.clock import use_clock

    with use_clock(OffsetClock(timedelta(seconds=options.clock_offset))):
        counts = dispatch_sequence(
            batch_size=options.batch_size, idle_grace_seconds=options.idle_grace
        )
    sys.stdout.write(json.dumps(counts) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
