"""E-mail benchmark: sequence e-mails a second over SMTP, and each sent at most once.

`python -m bench.email_sending [--leads N] [--runs K] [--postgres]`

Part 1 (throughput): N leads enrolled in a one-step marketing sequence are
dispatched as the `sequence_dispatcher` flow does (claims of 50, each rendered
from the shipped `welcome_1` templates with a signed unsubscribe link, built,
marked `sending`, sent, recorded) through `SmtpOutbox` to a local SMTP server
running as its own process (`orchestrator mailbox`), one connection per batch.

Part 2 (at most once): 1,000 leads in a three-step sequence, two dispatchers
draining at once on a moved clock: step 1, then a one-hour outage (the clock
jumps, nothing runs), then both catch up, then step 3. Every message the SMTP
server received is counted by recipient and subject.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

from bench import headline, machine
from bench.lead_api import lead
from bench.server import (
    free_port,
    orchestrator_command,
    postgresql_backend,
    stop,
    tail,
)
from connectors.email.smtp import SmtpOutbox
from connectors.email.templates import TemplateRenderer
from leads.clock import ManualClock, use_clock
from leads.intake import submit_batch
from leads.sequences import load_sequences
from leads.settings import Settings
from leads.store import Store
from leads.store.outbox import SEQUENCE_ENROLMENT
from leads.store.schema import upgrade
from leads.unsubscribe import lead_link_maker
from tasks.drain import DrainLimits, drain
from tasks.sequence_steps import DispatchContext, dispatch_claims

RESULTS = machine.REPO_ROOT / "bench" / "results" / "email_sending-latest.md"
CONFIG = machine.REPO_ROOT / "config"
SENDER = "Automation Orchestrator <noreply@localhost>"
TARGET_PER_SECOND = 200
BATCH = 50
INTAKE_CHUNK = 500
DUPLICATE_LEADS = 1_000
ONE_STEP = """
sequences:
  welcome_sequence:
    steps:
      - {id: welcome_1, template: welcome_1, subject: "Welcome {{ lead.first_name }}"}
"""
THREE_STEPS = """
sequences:
  welcome_sequence:
    steps:
      - {id: s1, template: welcome_1, subject: "One"}
      - {id: s2, template: welcome_2, subject: "Two", delay: 10m}
      - {id: s3, template: welcome_3, subject: "Three", delay: 30m}
"""


def _progress(message: str) -> None:
    print(f"[bench.email_sending] {message}", file=sys.stderr, flush=True)


@dataclass
class Mailbox:
    url: str
    folder: Path

    def messages(self) -> list[tuple[str, str]]:
        """(recipient, subject) of every message received, read from its file."""
        found = []
        for path in sorted(self.folder.glob("*.eml")):
            parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
            found.append((str(parsed["X-Mailbox-Rcpt-To"]), str(parsed["Subject"])))
        return found


@contextmanager
def mailbox_process(folder: Path) -> Iterator[Mailbox]:
    """`orchestrator mailbox` on a free loopback port, as its own process."""
    port = free_port()
    log = folder.parent / "mailbox.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                *shlex.split(orchestrator_command()),
                "mailbox",
                "--port",
                str(port),
                "--folder",
                str(folder),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ORCH_DATA_DIR": str(folder.parent)},
        )
    try:
        _wait_for_port(port, process, log)
        yield Mailbox(f"smtp://127.0.0.1:{port}", folder)
    finally:
        stop(process)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the mailbox exited: {tail(log)}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the mailbox did not answer in 30 s: {tail(log)}")


def sequences_from(text: str, folder: Path) -> dict:
    path = folder / "sequences.yaml"
    path.write_text(text, encoding="utf-8")
    return load_sequences(path)


def fill(store: Store, count: int, prefix: str) -> None:
    """`count` new leads, each enrolled in `welcome_sequence` as intake does."""
    for start in range(0, count, INTAKE_CHUNK):
        items = [
            lead(prefix, n) for n in range(start, min(count, start + INTAKE_CHUNK))
        ]
        submit_batch(store, "default", items, channel="import", region="US")


def context_for(
    sequences: dict, outbox: SmtpOutbox, settings: Settings
) -> DispatchContext:
    return DispatchContext(
        sequences=sequences,
        renderer=TemplateRenderer(CONFIG / "templates"),
        outbox=outbox,
        sender_address=SENDER,
        flow_run_id=None,
        unsubscribe_link=lead_link_maker(settings),
    )


def drain_all(store: Store, context: DispatchContext, owner: str) -> Counter[str]:
    totals = drain(
        store,
        SEQUENCE_ENROLMENT,
        owner=owner,
        handle=lambda claims: dispatch_claims(store, claims, context).as_counts(),
        limits=DrainLimits(batch_size=BATCH, idle_grace_seconds=0),
    )
    return Counter(totals)


@dataclass
class ThroughputRun:
    sent: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.sent / self.seconds


def measure_throughput(
    store_url: str, folder: Path, leads: int, settings: Settings
) -> ThroughputRun:
    store = Store(store_url)
    upgrade(store.engine)
    try:
        _progress(f"taking in {leads:,} leads")
        fill(store, leads, f"tp{time.monotonic_ns()}")
        sequences = sequences_from(ONE_STEP, folder)
        with mailbox_process(folder / "mailbox") as box:
            outbox = SmtpOutbox.from_url(box.url)
            context = context_for(sequences, outbox, settings)
            _progress("dispatching")
            started = time.perf_counter()
            totals = drain_all(store, context, "bench")
            seconds = time.perf_counter() - started
            received = len(box.messages())
        if totals["sent"] != leads or received != leads:
            raise RuntimeError(
                f"expected {leads} sent and received; got {totals['sent']} sent, "
                f"{received} received ({dict(totals)})"
            )
        return ThroughputRun(totals["sent"], seconds)
    finally:
        store.dispose()


@dataclass
class DuplicateRun:
    messages: int
    distinct: int
    expected: int
    per_dispatcher: list[dict[str, int]]

    @property
    def duplicates(self) -> int:
        return self.messages - self.distinct


def measure_duplicates(
    store_url: str, folder: Path, settings: Settings
) -> DuplicateRun:
    store = Store(store_url)
    upgrade(store.engine)
    start = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    try:
        with use_clock(ManualClock(start)) as clock:
            _progress(f"taking in {DUPLICATE_LEADS:,} leads for the overlap run")
            fill(store, DUPLICATE_LEADS, f"dup{time.monotonic_ns()}")
            sequences = sequences_from(THREE_STEPS, folder)
            totals = [Counter[str](), Counter[str]()]
            with mailbox_process(folder / "dup-mailbox") as box:

                def both() -> None:
                    barrier = threading.Barrier(2)

                    def dispatcher(number: int) -> None:
                        outbox = SmtpOutbox.from_url(box.url)
                        context = context_for(sequences, outbox, settings)
                        barrier.wait()
                        totals[number] += drain_all(store, context, f"d{number}")

                    threads = [
                        threading.Thread(target=dispatcher, args=(n,)) for n in (0, 1)
                    ]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        thread.join()

                _progress("step 1 with two dispatchers")
                both()
                _progress("a one-hour outage, then both catch up")
                clock.advance(hours=1)
                both()
                clock.advance(minutes=30)
                _progress("step 3")
                both()
                received = box.messages()
        return DuplicateRun(
            messages=len(received),
            distinct=len(set(received)),
            expected=3 * DUPLICATE_LEADS,
            per_dispatcher=[dict(t) for t in totals],
        )
    finally:
        store.dispose()


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:,.0f}"
    return (
        f"{statistics.median(values):,.0f} (min {min(values):,.0f}, "
        f"max {max(values):,.0f}, {len(values)} runs)"
    )


def report(
    argv: list[str], backend: str, runs: list[ThroughputRun], overlap: DuplicateRun
) -> list[str]:
    command = shlex.join([machine.shown_python(), "-m", "bench.email_sending", *argv])
    rates = [run.per_second for run in runs]
    median = statistics.median(rates)
    met = median >= TARGET_PER_SECOND
    clean = overlap.duplicates == 0 and overlap.distinct == overlap.expected
    return [
        "# E-mail benchmark",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Command: `{command}`",
        f"- Store: {backend}",
        "- SMTP: `orchestrator mailbox` (aiosmtpd) as its own process on "
        "127.0.0.1, writing every message to a file; `SmtpOutbox`, one "
        "connection per claimed batch. Nothing left the machine.",
        "- Data: invented new people (`bench.lead_api.lead`), taken in with "
        "`submit_batch`, each enrolled once in the sequence.",
        "- Note: the dispatcher, the SMTP server and the store share the "
        "machine's two cores.",
        "",
        "## Throughput",
        "",
        f"Sequence e-mails rendered (text and HTML from `config/templates/"
        f"welcome_1`, with a signed unsubscribe link), built, marked, delivered "
        f"and recorded, claims of {BATCH}:",
        "",
        "| Leads per run | E-mails/s | Target | |",
        "|---|---|---|---|",
        f"| {runs[0].sent:,} | {spread(rates)} | ≥ {TARGET_PER_SECOND} | "
        f"{'met' if met else 'missed'} |",
        "",
        "## At most once",
        "",
        f"{DUPLICATE_LEADS:,} leads, a three-step sequence (now, +10 min, +30 "
        "min), two dispatchers draining at once in threads of one process on a "
        "moved clock: step 1; a one-hour outage; both catch up; step 3.",
        "",
        f"- Messages received: {overlap.messages:,}; distinct (recipient, "
        f"subject): {overlap.distinct:,}; expected {overlap.expected:,}.",
        f"- Duplicates: {overlap.duplicates} — {'met' if clean else 'MISSED'}.",
        "- Per dispatcher: "
        + "; ".join(
            ", ".join(f"{k} {v}" for k, v in sorted(t.items()) if k != "batches")
            for t in overlap.per_dispatcher
        ),
    ]


def headlines(
    runs: list[ThroughputRun], overlap: DuplicateRun
) -> list[headline.Figure]:
    """E-mails per second over the runs, and the duplicates of the overlap run."""
    rates = [run.per_second for run in runs]
    clean = overlap.duplicates == 0 and overlap.distinct == overlap.expected
    return [
        headline.measured(
            f"Sequence e-mails rendered, built, sent over SMTP to a local server "
            f"and recorded, {runs[0].sent:,} a run",
            "e-mails/s",
            rates,
            target=f"≥ {TARGET_PER_SECOND} e-mails/s",
            met=statistics.median(rates) >= TARGET_PER_SECOND,
        ),
        headline.measured(
            f"Duplicate sends, {overlap.expected:,} e-mails by two dispatchers at "
            "once, a one-hour outage, catch-up",
            "",
            [overlap.duplicates],
            target="0",
            met=clean,
            note=f"{overlap.distinct:,} distinct of {overlap.expected:,} expected",
        ),
    ]


def main(argv: list[str]) -> int:
    """Runs both parts and writes `bench/results/email_sending-latest.md`."""
    parser = argparse.ArgumentParser(prog="python -m bench.email_sending")
    parser.add_argument("--leads", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="Keep the store on the PostgreSQL named by ORCH_TEST_POSTGRES_URL.",
    )
    options = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="orch_bench_email_"))
    settings = Settings(data_dir=folder)
    runs = []
    for number in range(options.runs):
        run_folder = folder / f"run{number}"
        run_folder.mkdir()
        with store_url(options.postgres, run_folder) as url:
            runs.append(measure_throughput(url, run_folder, options.leads, settings))
        _progress(f"run {number + 1}: {runs[-1].per_second:,.0f} e-mails/s")
    overlap_folder = folder / "overlap"
    overlap_folder.mkdir()
    with store_url(options.postgres, overlap_folder) as url:
        overlap = measure_duplicates(url, overlap_folder, settings)
    backend = (
        "PostgreSQL (a fresh database on ORCH_TEST_POSTGRES_URL)"
        if options.postgres
        else "SQLite (WAL) file in a fresh temporary folder"
    )
    machine.publish(RESULTS, report(argv, backend, runs, overlap))
    headline.record("email_sending", argv, headlines(runs, overlap), report=RESULTS)
    return 0 if overlap.duplicates == 0 else 1


@contextmanager
def store_url(postgres: bool, folder: Path) -> Iterator[str]:
    """A fresh store: a SQLite file in `folder`, or a new PostgreSQL database."""
    if not postgres:
        yield f"sqlite:///{folder / 'leads.db'}"
        return
    with postgresql_backend(Settings().test_postgres_url) as backend:
        yield backend.settings["ORCH_DATABASE_URL"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
