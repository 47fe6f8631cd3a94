"""Intake under faults: webhooks redelivered out of order, Prefect killed mid-intake.

Leads come in through the API over real HTTP; their welcome e-mails go to a
real SMTP relay on loopback and are held to the e-mail ledger: one welcome
per person, none twice, none owed and missing.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from connectors.crm.hubspot.webhooks import handlers_for
from leads import clock
from leads.encryption import secret_key
from leads.settings import Settings
from leads.store import Store
from leads.store import webhooks as deliveries
from leads.store.tables import Lead, TimelineEvent, WebhookDelivery
from leads.webhooks.processing import process
from leads.webhooks.signatures import sign_orchestrator
from leads.webhooks.sources import configured_sources
from tests.conftest import PrefectServer, free_port
from tests.faults import email_fixtures
from tests.faults.email_fixtures import SECRET_KEY, SMTP_TIMEOUT_SECONDS, first_steps
from tests.faults.email_ledger import read_ledger
from tests.faults.email_relay import CountingRelay

# The fixture, for this module's tests.
email_case = email_fixtures.email_case

ORCHESTRATOR = str(Path(sys.executable).with_name("orchestrator"))
PEOPLE = 25
EVENTS_EACH = 4
COPIES = 3


@dataclass(frozen=True)
class FormEvent:
    """One form submission the `forms` source signs and sends, by person and turn."""

    person: int
    turn: int
    email: str
    occurred_at: datetime
    event_id: str

    @property
    def company(self) -> str:
        return f"Company {self.person} as of turn {self.turn}"

    @property
    def body(self) -> bytes:
        return json.dumps(
            {
                "email": self.email,
                "company": self.company,
                "submitted_at": self.occurred_at.isoformat(),
            }
        ).encode()

    def copy(self, secret: str, number: int) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one delivery of it, signed as a retry would be."""
        stamp = int(time.time()) - number
        return self.body, {
            "Content-Type": "application/json",
            "X-Event-Id": self.event_id,
            "X-Orchestrator-Signature": sign_orchestrator(secret, stamp, self.body),
        }


def form_events(prefix: str) -> list[FormEvent]:
    """Each person's submissions, a minute apart, all within the last hour."""
    start = clock.now() - timedelta(hours=1)
    return [
        FormEvent(
            person,
            turn,
            f"person{person}.{prefix}@example.com",
            start + timedelta(minutes=turn, seconds=person),
            f"evt-{prefix}-{person}-{turn}",
        )
        for person in range(PEOPLE)
        for turn in range(EVENTS_EACH)
    ]


def deliver_shuffled(
    http: httpx.Client, events: list[FormEvent], secret: str
) -> list[httpx.Response]:
    """Sends every event three times: two copies racing, one on its own, shuffled.

    The racing pair leave together from two threads; the third copy goes at
    another point of the shuffled order, before or after them.
    """

    def send(event: FormEvent, number: int) -> httpx.Response:
        body, headers = event.copy(secret, number)
        return http.post("/api/webhooks/forms", content=body, headers=headers)

    def race(event: FormEvent) -> list[httpx.Response]:
        start = threading.Barrier(2)
        answers: list[httpx.Response] = []

        def racer(number: int) -> None:
            start.wait(timeout=30)
            answers.append(send(event, number))

        racers = [threading.Thread(target=racer, args=(n,)) for n in (0, 1)]
        for thread in racers:
            thread.start()
        for thread in racers:
            thread.join(timeout=60)
        return answers

    work: list[tuple[str, FormEvent]] = [("race", e) for e in events]
    work += [("alone", e) for e in events]
    random.Random(8).shuffle(work)

    def run(item: tuple[str, FormEvent]) -> list[httpx.Response]:
        kind, event = item
        return race(event) if kind == "race" else [send(event, 2)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        return [answer for answers in pool.map(run, work) for answer in answers]


def settle_deliveries(store: Store, settings: Settings, timeout: float) -> None:
    """Waits until no delivery is pending, processing leftovers as the drain does.

    The API processes each new delivery behind its answer; one it left (the
    store was busy) is the `webhook_drain` flow's, run here in its place after
    ten seconds, past any backoff as a later run would be.
    """
    sources = configured_sources(settings.config_dir)
    deadline = time.monotonic() + timeout
    drain_from = time.monotonic() + 10
    while time.monotonic() < deadline:
        with store.read_across_tenants() as session:
            pending = session.scalar(
                select(WebhookDelivery.id)
                .where(WebhookDelivery.status == deliveries.PENDING)
                .limit(1)
            )
        if pending is None:
            return
        if time.monotonic() > drain_from:
            later = clock.now() + timedelta(minutes=10)
            for tenant_id, delivery_id in deliveries.due(store, 500, later):
                handlers = handlers_for(store, settings, tenant_id)
                process(store, tenant_id, delivery_id, sources, handlers)
        time.sleep(0.5)
    raise AssertionError(f"webhook deliveries still pending after {timeout:g} s")


@pytest.mark.timeout(300)
def test_webhooks_sent_three_times_racing_and_shuffled_keep_one_lead_per_person(
    email_case, serve_api, tmp_path
):
    case = email_case()
    settings = Settings(
        data_dir=tmp_path / "api",
        database_url=case.store_url,
        crm="none",
        secret_key=SECRET_KEY,
        # A closed port: the API's signals to Prefect go nowhere.
        prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
    )
    api = serve_api(settings)
    secret = configured_sources(settings.config_dir)["forms"].secret(
        secret_key(settings)
    )
    assert secret is not None
    events = form_events(uuid.uuid4().hex[:8])

    with httpx.Client(base_url=api.url, timeout=60) as http:
        answers = deliver_shuffled(http, events, secret)

    assert len(answers) == len(events) * COPIES
    assert {answer.status_code for answer in answers} == {200}
    assert sum(answer.json()["new"] for answer in answers) == len(events)
    settle_deliveries(case.store, settings, timeout=120)
    with case.store.read_across_tenants() as session:
        kept = session.execute(
            select(
                WebhookDelivery.delivery_id,
                WebhookDelivery.status,
                WebhookDelivery.receipts,
                WebhookDelivery.lead_id,
                WebhookDelivery.occurred_at,
                WebhookDelivery.processed_at,
                WebhookDelivery.reasons,
            ).where(WebhookDelivery.source == "forms")
        ).all()
        leads = session.execute(select(Lead.id, Lead.email, Lead.company)).all()
        out_of_order = session.scalar(
            select(func.count())
            .select_from(TimelineEvent)
            .where(TimelineEvent.kind == "webhook.out_of_order")
        )

    assert sorted(row.receipts for row in kept) == [COPIES] * len(events)
    # One lead per person, whatever order the copies came in.
    assert sorted(lead.email for lead in leads) == sorted({e.email for e in events})
    lead_of = {lead.email: lead for lead in leads}
    by_id = {row.delivery_id: row for row in kept}
    stale = 0
    for person in range(PEOPLE):
        own = [e for e in events if e.person == person]
        lead = lead_of[own[0].email]
        rows = [by_id[e.event_id] for e in own]
        assert {row.lead_id for row in rows} == {lead.id}
        assert {row.status for row in rows} <= {"applied", "stale"}
        applied = sorted(
            (row for row in rows if row.status == "applied"),
            key=lambda row: row.processed_at,
        )
        # Applied in event order: each one applied is newer than the last.
        times = [row.occurred_at for row in applied]
        assert times == sorted(set(times)), f"person {person} applied out of order"
        newest = max(own, key=lambda e: e.occurred_at)
        assert by_id[newest.event_id].status == "applied"
        assert lead.company == newest.company
        for row in rows:
            if row.status == "stale":
                stale += 1
                assert [r["reason"] for r in row.reasons] == ["older_than_applied"]
                assert any(a.occurred_at > row.occurred_at for a in applied)
    # The shuffle made some events arrive after newer ones; each is on its
    # lead's timeline.
    assert stale > 0
    assert out_of_order == stale

    # One welcome e-mail per person.
    assert case.dispatch_here()["sent"] == PEOPLE
    ledger = case.ledger(first_steps([lead.id for lead in leads]))
    ledger.assert_clean()
    assert ledger.count("sent") == PEOPLE
    recipients = Counter(message.recipient for message in case.relay.received)
    assert recipients == Counter({lead.email: 1 for lead in leads})


@dataclass
class OwnStack:
    """`orchestrator up` on a Prefect server of the test's own."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    api: httpx.Client

    @property
    def log(self) -> str:
        return (self.data_dir / "up.log").read_text(errors="replace")


@contextmanager
def own_stack(
    prefect: PrefectServer, store_url: str, relay: CountingRelay, data_dir: Path
) -> Iterator[OwnStack]:
    """Runs the stack, with e-mail to `relay`, until the block ends; then stops it."""
    port = free_port()
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ORCH_", "PREFECT_"))
    } | {
        "ORCH_DATA_DIR": str(data_dir),
        "ORCH_API_PORT": str(port),
        "ORCH_SANDBOX_PORT": str(free_port()),
        "ORCH_PREFECT_API_URL": prefect.api_url,
        "ORCH_DATABASE_URL": store_url,
        "ORCH_CRM": "none",
        "ORCH_EMAIL_BACKEND": "smtp",
        "ORCH_SMTP_URL": f"{relay.url}?timeout={SMTP_TIMEOUT_SECONDS}",
        "ORCH_SECRET_KEY": SECRET_KEY,
    }
    with (data_dir / "up.log").open("wb") as log:
        process = subprocess.Popen(
            [ORCHESTRATOR, "up"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = OwnStack(
        process, data_dir, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    )
    try:
        wait_until(lambda: _ready(stack), 240, "the stack with every deployment READY")
        yield stack
    finally:
        stack.api.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def _ready(stack: OwnStack) -> bool:
    assert stack.process.poll() is None, stack.log
    key_file = stack.data_dir / "api-key"
    if "authorization" not in stack.api.headers and key_file.exists():
        stack.api.headers["Authorization"] = f"Bearer {key_file.read_text().strip()}"
    try:
        status = stack.api.get("/api/status").json()
    except (httpx.HTTPError, ValueError):
        return False
    runner = status.get("prefect", {}).get("flow_runner", {})
    return set(runner.get("deployments", {}).values()) == {"READY"}


def wait_until(check, timeout: float, what: str) -> None:
    """Polls `check` until it holds; fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def post_leads(
    api: httpx.Client, prefix: str, singles: int, batched: int
) -> tuple[list[str], float]:
    """Single posts from eight threads and one batch beside them, all at once.

    Returns:
        The accepted leads' ids and the slowest answer's seconds.
    """

    def one(number: int) -> tuple[list[str], float]:
        started = time.monotonic()
        lead = {"email": f"s{number}.{prefix}@example.com"}
        answer = api.post("/api/leads", json=lead)
        assert answer.status_code == 201, answer.text
        return [answer.json()["id"]], time.monotonic() - started

    def batch() -> tuple[list[str], float]:
        started = time.monotonic()
        items = [{"email": f"b{n}.{prefix}@example.com"} for n in range(batched)]
        answer = api.post("/api/leads/batch", json=items)
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert {r["outcome"] for r in results} == {"created"}, results
        return [r["lead_id"] for r in results], time.monotonic() - started

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(one, n) for n in range(singles)]
        if batched:
            futures.append(pool.submit(batch))
        done = [future.result() for future in futures]
    return [i for ids, _ in done for i in ids], max(s for _, s in done)


def wait_for_quiet(relay: CountingRelay, seconds: float, timeout: float) -> None:
    """Waits until the relay has received nothing for `seconds`."""
    deadline = time.monotonic() + timeout
    count, since = len(relay.received), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if len(relay.received) != count:
            count, since = len(relay.received), time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
    raise AssertionError(f"the relay was still receiving after {timeout:g} s")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_leads_posted_while_prefect_is_killed_are_accepted_and_greeted_once_back(
    new_prefect_server, new_store_url, tmp_path
):
    prefect = new_prefect_server()
    prefect.start()
    # Slow enough that the first leads' welcomes are still going out when
    # Prefect is killed.
    relay = CountingRelay(pace_seconds=0.02)
    relay.start()
    store_url = new_store_url()
    data_dir = tmp_path / "stack"
    data_dir.mkdir()
    try:
        with own_stack(prefect, store_url, relay, data_dir) as stack:
            before, _ = post_leads(stack.api, uuid.uuid4().hex[:8], 0, 200)
            wait_until(
                lambda: len(relay.received) >= 30, 120, "the first welcomes to go out"
            )

            os.killpg(prefect.process.pid, signal.SIGKILL)
            prefect.process.wait(timeout=30)
            sent_at_kill = len(relay.received)
            # The dispatcher run already going may take these in too.
            during, slowest = post_leads(stack.api, uuid.uuid4().hex[:8], 100, 100)
            status = stack.api.get("/api/status").json()
            # Once that run has stopped, no run can start until Prefect is
            # back: these wait for it.
            wait_for_quiet(relay, 8, timeout=120)
            prefix = uuid.uuid4().hex[:8]
            waiting, slowest_later = post_leads(stack.api, prefix, 60, 40)
            time.sleep(5)
            early = [m for m in relay.received if prefix in m.recipient]
            prefect.start()

            assert sent_at_kill < 200, "the first welcomes went out before the kill"
            assert (len(during), len(waiting)) == (200, 100)
            # Intake never waits for Prefect.
            assert max(slowest, slowest_later) < 15, "an answer took 15 s or more"
            assert status["prefect"]["reachable"] is False
            assert early == []
            everyone = before + during + waiting
            wait_until(
                lambda: len({m.recipient for m in relay.received}) >= len(everyone),
                300,
                "every lead's welcome once Prefect is back",
            )
            # Time for a straggling run to send one twice, if any would.
            time.sleep(5)
            store = Store(store_url)
            try:
                ledger = read_ledger(store, relay.received, first_steps(everyone))
            finally:
                store.dispose()
    finally:
        relay.stop()
        prefect.stop()

    ledger.assert_clean()
    assert ledger.count("sent") == len(everyone)
    assert len(relay.received) == len(everyone)
    assert Counter(m.recipient for m in relay.received).most_common(1)[0][1] == 1
