"""Log hygiene: the main paths log no address, phone, name, token or key at INFO+.

The live API (SQLite and PostgreSQL) serves in this process, so every record
any logger writes, ours, the libraries' and uvicorn's, is captured here: leads
created, updated, edited, merged, refused; a clash of e-mails on edit; a
batch; a filtered listing; webhooks signed, refused, rejected for their
content and sent with a token in the query; an import with rejects, run as the
flow runs it; provider e-mail events; a one-off e-mail; an unsubscribe click;
a workflow trigger while Prefect is down; an erasure.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote, quote_plus, urlsplit

import pytest
from sqlalchemy import select

from connectors.crm.sync import CrmSync
from leads import importer
from leads.encryption import secret_key
from leads.intake import submit
from leads.settings import Settings
from leads.store import webhooks as deliveries
from leads.store.outbox import CRM_SYNC
from leads.store.tables import WebhookDelivery
from leads.unsubscribe import unsubscribe_url
from leads.webhooks.processing import Handler, process
from leads.webhooks.signatures import sign_orchestrator
from leads.webhooks.sources import Payload, WebhookSource, derived_secret
from tasks.drain import DrainLimits, drain

# Distinctive values: none can turn up in a log by chance.
PEOPLE = [
    {
        "email": "Zq7Hygiene.Ada@Example.com",
        "first_name": "Xylophonia",
        "last_name": "Quendrithorpe",
        "phone": "+1 415 555 0142",
    },
    {
        "email": "zq7hygiene.bea@example.com",
        "first_name": "Brindlewicke",
        "last_name": "Tharkastle",
        "phone": "(415) 555-0143",
    },
    {"email": "zq7hygiene.cy@example.com", "first_name": "Ombrellinde"},
    {"email": "zq7hygiene.refused@@example.com", "first_name": "Corvellane"},
    {"email": "zq7hygiene.hook@example.com", "first_name": "Quillanthe"},
    {"email": "zq7hygiene.hook-bad@@example", "first_name": "Marrowynd"},
    {"email": "zq7hygiene.csv@example.com", "first_name": "Saffronel"},
    {"email": "zq7hygiene.csv-bad-at-example.com", "first_name": "Halcyndra"},
    {"email": "zq7hygiene.event@example.com"},
    {"email": "zq7hygiene.oneoff@example.com"},
    {"email": "zq7hygiene.trigger@example.com", "first_name": "Pellucida"},
]
E164 = ["+14155550142", "+14155550143", "14155550142", "14155550143"]


def needles(live_api, api_key: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for person in PEOPLE:
        address = person["email"]
        found[f"address {address}"] = address
        found[f"local part of {address}"] = address.partition("@")[0]
        found[f"URL-encoded {address}"] = quote(address, safe="")
        found[f"form-encoded {address}"] = quote_plus(address)
        for name in ("first_name", "last_name", "phone"):
            if name in person:
                found[f"{name} of {address}"] = person[name]
    for number in E164:
        found[f"phone {number}"] = number
    key = secret_key(live_api.settings)
    found |= {
        "the secret key": key,
        "the forms secret": derived_secret(key, "forms"),
        "the zapier token": derived_secret(key, "zapier"),
        "the API key": api_key,
    }
    return {label: value.lower() for label, value in found.items()}


@pytest.fixture
def records(caplog) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of every logger, uvicorn's (which do not propagate) too."""
    caplog.set_level(logging.DEBUG)
    own = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error")]
    for logger in own:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in own:
        logger.removeHandler(caplog.handler)


def leaks(caplog, wanted: dict[str, str]) -> tuple[list[str], list[str]]:
    """Needles found in records at INFO and above, and in DEBUG records."""
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    loud, quiet = [], []
    for record in caplog.records:
        if record.thread == threading.main_thread().ident and record.name.startswith(
            ("httpx", "httpcore")
        ):
            continue  # the test's own HTTP client, not the product
        text = formatter.format(record).lower()
        for label, needle in wanted.items():
            if needle in text:
                found = f"{record.levelname} {record.name}: {label}: {text[:300]}"
                (loud if record.levelno >= logging.INFO else quiet).append(found)
    return loud, quiet


def logged_by(caplog, name: str, starting: str = "") -> logging.LogRecord:
    """The first record of logger `name` starting so; some come after the answer."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for record in caplog.records:
            if record.name == name and record.getMessage().startswith(starting):
                return record
        time.sleep(0.05)
    pytest.fail(f"nothing was logged by {name} starting with {starting!r}")


def settled(store, expected: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store.engine.connect() as connection:
            done = connection.execute(
                select(WebhookDelivery.id).where(WebhookDelivery.status != "pending")
            ).all()
        if len(done) >= expected:
            return
        time.sleep(0.05)
    pytest.fail(f"fewer than {expected} webhook deliveries settled")


def signed(secret: str, body: bytes, event_id: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Event-Id": event_id,
        "X-Orchestrator-Signature": sign_orchestrator(secret, int(time.time()), body),
    }


def test_the_main_paths_log_no_personal_data_or_secret(live_api, store, records):
    ada, bea, cy, refused, hook, hook_bad, csv_ok, csv_bad, event, one_off, trig = (
        PEOPLE
    )
    api_key = live_api.key()
    key = secret_key(live_api.settings)
    client = live_api.client()
    client.headers["Authorization"] = f"Bearer {api_key}"
    with client:
        # Intake: created, updated, edited, merged or flagged, refused.
        created = client.post("/api/leads", json=ada | {"company": "Vexmoor"})
        assert created.status_code == 201, created.text
        ada_id = created.json()["id"]
        again = {"email": ada["email"].lower(), "phone": bea["phone"]}
        assert client.post("/api/leads", json=again).status_code == 200
        edited = client.patch(f"/api/leads/{ada_id}", json={"last_name": "Vashti"})
        assert edited.status_code == 200, edited.text
        twin = client.post("/api/leads", json=bea | {"last_name": ada["last_name"]})
        assert twin.status_code in (200, 201), twin.text
        other = client.post("/api/leads", json=cy)
        assert other.status_code == 201, other.text
        clash = client.patch(
            f"/api/leads/{other.json()['id']}", json={"email": ada["email"]}
        )
        assert clash.status_code == 409, clash.text
        assert client.post("/api/leads", json=refused).status_code == 422
        batch = client.post("/api/leads/batch", json=[cy, refused])
        assert batch.status_code == 200, batch.text
        listed = client.get("/api/leads", params={"email": ada["email"]})
        assert listed.status_code == 200, listed.text

        # Webhooks: signed, refused content, forged, token in the query.
        forms = derived_secret(key, "forms")
        good = json.dumps(hook).encode()
        bad = json.dumps(hook_bad).encode()
        answers = [
            client.post(
                "/api/webhooks/forms", content=good, headers=signed(forms, good, "e1")
            ),
            client.post(
                "/api/webhooks/forms", content=bad, headers=signed(forms, bad, "e2")
            ),
        ]
        assert [a.status_code for a in answers] == [200, 200]
        forged = client.post(
            "/api/webhooks/forms", content=good, headers=signed("guess", good, "e3")
        )
        assert forged.status_code == 401
        zapier = derived_secret(key, "zapier")
        assert (
            client.post(f"/api/webhooks/zapier?token={zapier}", json=hook).status_code
            == 200
        )
        wrong = client.post(f"/api/webhooks/zapier?token={zapier}x", json=hook)
        assert wrong.status_code == 401
        settled(store, 3)

        # An import with a reject, run as the flow runs it.
        csv = "email,first_name\r\n" + "".join(
            f"{p['email']},{p['first_name']}\r\n" for p in (csv_ok, csv_bad)
        )
        upload = client.post(
            "/api/imports", files={"file": ("people.csv", csv.encode(), "text/csv")}
        )
        assert upload.status_code == 202, upload.text
        counts = importer.run(store, upload.json()["id"], owner="test", region="US")
        assert counts["created"] == 1 and counts["rejected"] == 1, counts

        # Provider events, a one-off e-mail, an unsubscribe click.
        now = datetime.now(UTC).isoformat()
        events = client.post(
            "/api/email/events",
            json={
                "events": [
                    {"id": "h1", "type": "delivered", "occurred_at": now}
                    | {"email": csv_ok["email"]},
                    {"id": "h2", "type": "bounced", "occurred_at": now}
                    | {"email": event["email"], "bounce_type": "hard"},
                ]
            },
        )
        assert events.status_code == 200, events.text
        sent = client.post(
            "/api/email/send",
            json={
                "to": one_off["email"],
                "category": "transactional",
                "subject": "Your receipt",
                "text": "Thanks.",
            },
        )
        assert sent.status_code == 202, sent.text
        link = urlsplit(unsubscribe_url(live_api.settings, "default", lead_id=ada_id))
        assert client.get(link.path).status_code == 200
        clicked = client.post(link.path, data={"List-Unsubscribe": "One-Click"})
        assert clicked.status_code == 200

        # A trigger while Prefect is down, then the right to be forgotten.
        triggered = client.post(
            "/api/workflows/trigger",
            json={"workflow_id": "welcome_sequence", "lead_data": trig},
        )
        assert triggered.status_code == 503, triggered.text
        erased = client.delete(f"/api/leads/{ada_id}", params={"erase": "true"})
        assert erased.status_code == 200, erased.text
        # Access lines are written once the answer is out.
        client.get("/health")
    logged_by(records, "api.access", "GET /health ")

    loud, quiet = leaks(records, needles(live_api, api_key))
    # The capture saw the requests: a capture of nothing would pass as well.
    assert any(r.name == "api.access" for r in records.records)
    assert not loud, "\n".join(loud)
    assert not quiet, "\n".join(quiet)


def test_the_access_log_hides_unsubscribe_tokens_addresses_and_queries(
    live_api, store, records
):
    token_path = urlsplit(
        unsubscribe_url(live_api.settings, "default", lead_id="0" * 32)
    ).path
    with live_api.client() as client:
        client.get(token_path)
        client.get("/api/leads", params={"email": "zq7hygiene.q@example.com"})
        client.post("/api/webhooks/zapier?token=zq7hygiene-token", json={})
        client.get("/api/leads/zq7hygiene.path%40example.com")
        client.get("/api/leads/Zq7Hygiene.Path@Example.com/timeline")
        # The access line is written once the answer is out: one more request
        # and its line make sure the ones before are in.
        client.get("/health")
    logged_by(records, "api.access", "GET /health ")

    lines = [r.getMessage() for r in records.records if r.name == "api.access"]
    assert any(line.startswith("GET /u/… ") for line in lines), lines
    assert any(line.startswith("GET /api/leads ") for line in lines), lines
    assert any(line.startswith("POST /api/webhooks/zapier ") for line in lines)
    assert any(line.startswith("GET /api/leads/… ") for line in lines), lines
    assert any(line.startswith("GET /api/leads/…/timeline ") for line in lines)
    text = "\n".join(lines)
    assert token_path.removeprefix("/u/") not in text
    assert "zq7hygiene" not in text and "?" not in text


def test_an_unexpected_error_logs_no_value_of_the_request(
    live_api, store, records, monkeypatch
):
    address = "zq7hygiene.bug@example.com"

    def a_bug(store, tenant_id, prepared, **options):
        # As a database or validation error quotes what it was given.
        email = prepared[0]["email"]
        raise ValueError(f"Key (tenant_id, email)=(default, {email}) exists")

    monkeypatch.setattr("api.routes.leads.submit_together", a_bug)
    with live_api.client() as client:
        answer = client.post("/api/leads", json={"email": address})

    assert answer.status_code == 500
    assert address not in answer.text
    # Still logged (once the answer is out), with its type and where it happened.
    logged_by(records, "api.problems")
    logged_by(records, "uvicorn.error")
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    logged = "\n".join(formatter.format(record) for record in records.records)
    assert "ValueError" in logged and "a_bug" in logged
    assert "zq7hygiene" not in logged.lower(), logged


class TestUnexpectedErrorsInTheWorkers:
    """Each catch-all logs the error's traceback, without the message it carried."""

    ADDRESS = "zq7hygiene.worker@example.com"

    def written(self, caplog) -> str:
        formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
        return "\n".join(
            formatter.format(r) for r in caplog.records if r.levelno >= logging.INFO
        )

    def test_an_import_stopped_by_a_bug(self, store, records, tmp_path):
        row = importer.accept(
            store,
            "default",
            io.BytesIO(f"email\n{self.ADDRESS}\n".encode()),
            filename="leads.csv",
            folder=tmp_path,
            max_bytes=10**6,
        )

        def a_bug(store_, job, chunk):
            raise ValueError(f"cannot take {self.ADDRESS}")

        with pytest.raises(ValueError):
            importer.run(store, row.id, owner="run", region="US", run_chunk=a_bug)

        text = self.written(records)
        assert f"import {row.id} stopped" in text and "in a_bug" in text
        assert "zq7hygiene" not in text, text

    def test_a_webhook_delivery_a_handler_fails_on(self, store, records):
        with store.write("default") as scope:
            pk = deliveries.keep(
                scope,
                "partner",
                "d-1",
                body=json.dumps({"email": self.ADDRESS}).encode(),
                occurred_at=datetime.now(UTC),
            ).id

        def a_bug(scope, source, delivery, fetched):
            raise KeyError(self.ADDRESS)

        source = WebhookSource(name="partner", secret_env="X")
        verdict = process(
            store, "default", pk, {"partner": source}, {Payload.LEAD: Handler(a_bug)}
        )

        assert verdict is None
        text = self.written(records)
        assert f"webhook delivery {pk} could not be processed" in text
        assert "KeyError (message withheld" in text
        assert "zq7hygiene" not in text, text

    def test_a_crm_sync_whose_account_lookup_fails(self, store, records, tmp_path):
        taken = submit(
            store, "default", {"email": self.ADDRESS}, channel="api", region="US"
        )
        settings = Settings(data_dir=tmp_path, database_url=store.url, crm="none")

        def a_bug(tenant_id: str):
            raise RuntimeError(f"no account for {self.ADDRESS}")

        sync = CrmSync(store, settings, flow_run_id=None, accounts=a_bug)
        try:
            counts = drain(
                store,
                CRM_SYNC,
                owner="test",
                handle=sync.handle,
                limits=DrainLimits(idle_grace_seconds=0),
                lead_id=taken.lead.id,
            )
        finally:
            sync.close()

        assert counts.get("retrying") == 1, counts
        text = self.written(records)
        assert "CRM sync of tenant default failed" in text and "in a_bug" in text
        assert "zq7hygiene" not in text, text
