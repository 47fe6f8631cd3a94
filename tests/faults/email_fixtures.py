"""What an e-mail fault case runs on: a new store, a counting relay, dispatchers.

Import the `email_case` fixture into a test module to use it. Stores come from
`new_store_url`, so the scaled session puts them on PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.email.smtp import SmtpOutbox
from connectors.email.templates import TemplateRenderer
from leads.intake import submit_batch
from leads.sequences import load_sequences
from leads.settings import DEFAULT_TENANT, Settings
from leads.store import Store
from leads.store.outbox import SEQUENCE_ENROLMENT
from leads.store.schema import upgrade
from leads.unsubscribe import lead_link_maker
from tasks.drain import DrainLimits, drain
from tasks.sequence_steps import DispatchContext, dispatch_claims
from tests.faults.email_dispatcher import DispatcherProcess, start_dispatcher
from tests.faults.email_ledger import EmailLedger, StepKey, read_ledger
from tests.faults.email_relay import CountingRelay

WELCOME = "welcome_sequence"
FIRST_STEP = "welcome_1"
INTAKE_CHUNK = 500
# Longer than any case holds a message: a dispatcher waiting on a held message
# waits for the relay's answer rather than giving up on it.
SMTP_TIMEOUT_SECONDS = 300
SECRET_KEY = "fault-suite-" + "k" * 40


@dataclass
class EmailCase:
    """A store, a relay, and dispatcher processes started on them.

    `clock_offset` is the furthest any dispatcher's clock was set ahead: the
    ledger holds the store to everything due by then.
    """

    store: Store
    store_url: str
    relay: CountingRelay
    folder: Path
    # The Prefect server's API URL, asked for only when a process needs one.
    prefect_api_url: Callable[[], str]
    processes: list[DispatcherProcess] = field(default_factory=list)
    clock_offset: float = 0.0

    def take_in(self, count: int, *, channel: str = "import") -> list[str]:
        """`count` new leads through intake, each enrolled in the welcome sequence."""
        prefix = uuid.uuid4().hex[:8]
        lead_ids: list[str] = []
        for start in range(0, count, INTAKE_CHUNK):
            items = [
                {"email": f"p{number}.{prefix}@example.com"}
                for number in range(start, min(count, start + INTAKE_CHUNK))
            ]
            results = submit_batch(
                self.store, DEFAULT_TENANT, items, channel=channel, region="US"
            )
            assert {result.outcome for result in results} == {"created"}, results
            lead_ids.extend(str(result.lead_id) for result in results)
        return lead_ids

    def dispatcher(
        self,
        name: str,
        *,
        clock_offset: float = 0.0,
        batch_size: int = 50,
        idle_grace: float = 0.5,
    ) -> DispatcherProcess:
        """Starts a dispatcher process; its output goes to `<folder>/<name>.log`."""
        environment = dispatcher_environment(
            self.store_url, self.relay, self.prefect_api_url(), self.folder
        )
        process = start_dispatcher(
            environment,
            self.folder / f"{name}.log",
            clock_offset=clock_offset,
            batch_size=batch_size,
            idle_grace=idle_grace,
        )
        self.processes.append(process)
        self.clock_offset = max(self.clock_offset, clock_offset)
        return process

    def dispatch_here(self) -> dict[str, int]:
        """Drains every due enrolment in this process, as the flow's task does."""
        settings = Settings(data_dir=self.folder / "data", secret_key=SECRET_KEY)
        context = DispatchContext(
            sequences=load_sequences(settings.config_dir / "sequences.yaml"),
            renderer=TemplateRenderer(settings.config_dir / "templates"),
            outbox=SmtpOutbox.from_url(self.relay.url, timeout=SMTP_TIMEOUT_SECONDS),
            sender_address=settings.email_from,
            unsubscribe_link=lead_link_maker(settings),
        )
        return drain(
            self.store,
            SEQUENCE_ENROLMENT,
            owner=f"in-process-{uuid.uuid4().hex[:8]}",
            handle=lambda claims: dispatch_claims(
                self.store, claims, context
            ).as_counts(),
            limits=DrainLimits(idle_grace_seconds=0),
        )

    def ledger(self, due: list[StepKey]) -> EmailLedger:
        """The ledger now, holding the store to what is due by the latest clock."""
        now = datetime.now(UTC) + timedelta(seconds=self.clock_offset)
        return read_ledger(self.store, self.relay.received, due, now=now)


def first_steps(lead_ids: list[str]) -> list[StepKey]:
    """The welcome sequence's first step (due at once) of each lead."""
    return [(lead_id, WELCOME, FIRST_STEP) for lead_id in lead_ids]


def dispatcher_environment(
    store_url: str, relay: CountingRelay, prefect_api_url: str, folder: Path
) -> dict[str, str]:
    """The environment of a dispatcher process: this store, relay and Prefect."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ORCH_", "PREFECT_"))
    }
    return inherited | {
        "ORCH_DATA_DIR": str(folder / "data"),
        "ORCH_DATABASE_URL": store_url,
        "ORCH_EMAIL_BACKEND": "smtp",
        "ORCH_SMTP_URL": f"{relay.url}?timeout={SMTP_TIMEOUT_SECONDS}",
        "ORCH_SECRET_KEY": SECRET_KEY,
        "ORCH_CRM": "none",
        "PREFECT_API_URL": prefect_api_url,
        "PREFECT_HOME": str(folder / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


@pytest.fixture
def email_case(
    request: pytest.FixtureRequest, new_store_url, tmp_path: Path
) -> Iterator[Callable[..., EmailCase]]:
    """Makes an e-mail fault case: `email_case(overlap=2, pace_seconds=0.002)`.

    The options are the relay's (`CountingRelay`). Dispatcher processes run on
    the session's Prefect server, started only when a case starts one. Every
    relay is stopped and every dispatcher process killed when the test ends.
    """

    def prefect_api_url() -> str:
        return str(request.getfixturevalue("prefect_server").api_url)

    made: list[EmailCase] = []

    def make(*, overlap: int = 0, pace_seconds: float = 0.0) -> EmailCase:
        store_url = new_store_url()
        store = Store(store_url)
        upgrade(store.engine)
        relay = CountingRelay(overlap=overlap, pace_seconds=pace_seconds)
        relay.start()
        folder = tmp_path / f"case{len(made)}"
        folder.mkdir()
        case = EmailCase(store, store_url, relay, folder, prefect_api_url)
        made.append(case)
        return case

    yield make
    for case in made:
        for process in case.processes:
            process.kill()
        case.relay.release()
        case.relay.stop()
        case.store.dispose()
