"""Sending one-off e-mails on a real store into real `.eml` files and a real relay.

Every test runs on a `ManualClock`; leases and retry delays are crossed by
moving it, never by sleeping.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from sqlalchemy import delete, select

from connectors.email.errors import (
    EmailAuthenticationError,
    EmailDeliveryError,
    EmailOutcomeUnknownError,
)
from connectors.email.file_outbox import FileOutbox
from connectors.email.smtp import SmtpOutbox
from connectors.email.templates import TemplateRenderer
from leads.clock import ManualClock, use_clock
from leads.email_sends import EMAIL_SEND, SendRequest, accept
from leads.intake import submit
from leads.settings import Settings
from leads.store.claims import claim
from leads.store.tables import EmailSend, Lead, OutboxItem, TimelineEvent
from leads.suppression import (
    address_hash,
    blocked_reason,
    record_bounce,
    unsubscribe,
)
from leads.unsubscribe import UnsubscribeTarget, read_token, signing_key
from tasks.one_off_sends import dispatch_one_offs

CONFIG = Path(__file__).parents[2] / "config"
SENDER = "Automation Orchestrator <noreply@example.com>"
MONDAY = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
SETTINGS = Settings(
    secret_key=SecretStr("a passphrase for the tests"),
    public_base_url="https://crm.example.com",
)


class ProcessKilled(BaseException):
    """Stands in for the worker being killed: nothing below it runs, no handler."""


class KilledWhileSending:
    """An outbox whose process dies as the message is handed over."""

    def send(self, message):
        raise ProcessKilled


class KilledAfterWriting:
    """An outbox that writes the message, then its process dies."""

    def __init__(self, folder):
        self.files = FileOutbox(folder)

    def send(self, message):
        self.files.send(message)
        raise ProcessKilled


class Blind:
    """An outbox that cannot say whether a message arrived (like SMTP)."""

    def __init__(self, folder):
        self.files = FileOutbox(folder)

    def send(self, message):
        return self.files.send(message)

    def delivered(self, message_id):
        return None


class Refusing:
    """An outbox whose every hand-over fails with the given error."""

    def __init__(self, error: Exception):
        self.error = error

    def send(self, message):
        raise self.error


@pytest.fixture
def clock():
    with use_clock(ManualClock(MONDAY)) as manual:
        yield manual


@pytest.fixture
def folder(tmp_path) -> Path:
    return tmp_path / "outbox"


@pytest.fixture
def files(folder) -> FileOutbox:
    return FileOutbox(folder)


def take(store, data, tenant="default"):
    return submit(store, tenant, data, channel="api", region="US").lead


def queue(store, **given) -> EmailSend:
    fields = {"category": "marketing", "subject": "News", "text": "Hello there"}
    request = SendRequest(**(fields | given))
    message_id = make_msgid(domain="example.com")
    return accept(store, "default", request, message_id=message_id).send


def run(store, outbox, owner="run-1", renderer=None, **options) -> dict[str, int]:
    claims = claim(
        store,
        EMAIL_SEND,
        owner,
        limit=options.pop("limit", 100),
        lease=options.pop("lease", LEASE),
    )
    return dispatch_one_offs(
        store,
        claims,
        renderer=renderer or TemplateRenderer(CONFIG / "templates"),
        outbox=outbox,
        sender_address=SENDER,
        flow_run_id=owner,
        settings=SETTINGS,
        **options,
    )


def outcome(**counts: int) -> dict[str, int]:
    names = ("sent", "refused", "failed", "unknown", "requeued", "settled", "contended")
    return dict.fromkeys(names, 0) | counts


def messages(folder: Path):
    found = sorted(folder.glob("*.eml")) if folder.exists() else []
    return [message_from_bytes(f.read_bytes(), policy=policy.default) for f in found]


def send_row(store, send) -> EmailSend:
    with store.read("default") as scope:
        return scope.get(EmailSend, send.id)


def outbox_row(store, send) -> OutboxItem:
    with store.engine.connect() as connection:
        return connection.execute(
            select(OutboxItem).where(OutboxItem.key == send.id)
        ).one()


def kinds(store, lead) -> list[str]:
    with store.read("default") as scope:
        rows = scope.session.scalars(
            scope.select(TimelineEvent)
            .where(
                TimelineEvent.lead_id == lead.id,
                TimelineEvent.kind.startswith("email."),
            )
            .order_by(TimelineEvent.id)
        )
        return [row.kind for row in rows]


def token_of(message) -> UnsubscribeTarget:
    url = str(message["List-Unsubscribe"]).strip("<>")
    return read_token(signing_key(SETTINGS), urlsplit(url).path.removeprefix("/u/"))


class TestSending:
    def test_a_marketing_send_goes_once_with_its_one_click_link(
        self, store, clock, files, folder
    ):
        lead = take(store, {"email": "Ada@Example.com", "first_name": "Ada"})
        send = queue(store, lead_id=lead.id, template="welcome_1", text=None)

        assert run(store, files) == outcome(sent=1)
        assert run(store, files) == outcome()

        (message,) = messages(folder)
        assert message["To"] == "Ada@example.com"
        assert message["Subject"] == "News"
        assert message["Message-ID"] == send.message_id
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert token_of(message) == UnsubscribeTarget("default", lead_id=lead.id)
        link = str(message["List-Unsubscribe"]).strip("<>")
        assert link in message.get_body(("plain",)).get_content()
        assert link in message.get_body(("html",)).get_content()
        found = send_row(store, send)
        assert (found.status, found.sent_at, found.flow_run_id) == (
            "sent",
            MONDAY,
            "run-1",
        )
        assert outbox_row(store, send).status == "done"
        assert kinds(store, lead) == ["email.queued", "email.sent"]

    def test_a_transactional_template_carries_no_unsubscribe_link(
        self, store, clock, files, folder
    ):
        lead = take(
            store,
            {"email": "ada@example.com", "meeting_at": "Tuesday 8 December, 10:00"},
        )
        queue(
            store,
            lead_id=lead.id,
            category="transactional",
            template="meeting_confirmation",
            subject="Your meeting is confirmed",
            text=None,
        )

        assert run(store, files) == outcome(sent=1)

        (message,) = messages(folder)
        assert message["List-Unsubscribe"] is None
        text = message.get_body(("plain",)).get_content()
        assert "When: Tuesday 8 December, 10:00" in text
        assert "/u/" not in text

    def test_a_bare_address_gets_a_link_naming_its_hash(
        self, store, clock, files, folder
    ):
        queue(store, recipient="Zoe@Example.com")

        assert run(store, files) == outcome(sent=1)

        (message,) = messages(folder)
        assert message["To"] == "Zoe@example.com"
        assert token_of(message) == UnsubscribeTarget(
            "default", address_hash=address_hash("zoe@example.com")
        )

    def test_given_text_is_escaped_into_html_and_given_html_kept(
        self, store, clock, files, folder
    ):
        queue(store, recipient="a@example.com", text="<b>Hi</b> & bye\n\nNext")
        queue(
            store,
            recipient="b@example.com",
            text="Hi",
            html="<html><body><p>Hi <b>there</b></p></body></html>",
        )

        run(store, files)

        by_recipient = {str(m["To"]): m for m in messages(folder)}
        made = by_recipient["a@example.com"].get_body(("html",)).get_content()
        assert "<p>&lt;b&gt;Hi&lt;/b&gt; &amp; bye</p>" in made
        given = by_recipient["b@example.com"].get_body(("html",)).get_content()
        assert given.startswith("<html><body><p>Hi <b>there</b></p>")
        assert given.index("unsubscribe</a>") < given.index("</body>")

    def test_a_send_whose_lead_was_deleted_is_settled(self, store, clock, files):
        lead = take(store, {"email": "ada@example.com"})
        send = queue(store, lead_id=lead.id)
        claims = claim(store, EMAIL_SEND, "run-1", limit=10, lease=LEASE)
        with store.write("default") as scope:
            scope.session.execute(delete(Lead).where(Lead.id == lead.id))

        counts = dispatch_one_offs(
            store,
            claims,
            renderer=TemplateRenderer(CONFIG / "templates"),
            outbox=files,
            sender_address=SENDER,
            flow_run_id="run-1",
            settings=SETTINGS,
        )

        assert counts == outcome(settled=1)
        assert send_row(store, send) is None


class TestSuppressionAtSendTime:
    def test_an_unsubscribe_after_queueing_refuses_marketing_not_transactional(
        self, store, clock, files, folder
    ):
        lead = take(store, {"email": "ada@example.com"})
        news = queue(store, lead_id=lead.id)
        receipt = queue(store, lead_id=lead.id, category="transactional")
        with store.write("default") as scope:
            unsubscribe(scope, scope.get(Lead, lead.id), source="test")

        assert run(store, files) == outcome(sent=1, refused=1)

        refused = send_row(store, news)
        assert (refused.status, refused.error) == ("refused", "unsubscribed")
        assert send_row(store, receipt).status == "sent"
        assert [str(m["To"]) for m in messages(folder)] == ["ada@example.com"]
        assert kinds(store, lead) == [
            "email.queued",
            "email.queued",
            "email.unsubscribed",
            "email.refused",
            "email.sent",
        ]

    def test_a_hard_bounce_after_queueing_refuses_even_transactional(
        self, store, clock, files, folder
    ):
        lead = take(store, {"email": "ada@example.com"})
        receipt = queue(store, lead_id=lead.id, category="transactional")
        with store.write("default") as scope:
            record_bounce(scope, scope.get(Lead, lead.id), source="test")

        assert run(store, files) == outcome(refused=1)
        assert send_row(store, receipt).error == "bounced"
        assert messages(folder) == []


class TestAtMostOnce:
    def test_two_runs_at_once_send_each_email_once(self, store, clock, files, folder):
        for n in range(30):
            queue(store, recipient=f"p{n}@example.com")
        start = threading.Barrier(2)

        def dispatcher(owner: str) -> Counter[str]:
            start.wait()
            totals: Counter[str] = Counter()
            for _ in range(6):
                totals.update(run(store, files, owner=owner, limit=4))
            return totals

        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(dispatcher, ["run-a", "run-b"])

        sent = Counter(str(m["To"]) for m in messages(folder))
        assert len(sent) == 30 and set(sent.values()) == {1}
        assert a["sent"] + b["sent"] == 30

    def test_a_run_whose_lease_was_taken_over_sends_nothing(
        self, store, clock, files, folder
    ):
        send = queue(store, recipient="zoe@example.com")
        stale = claim(store, EMAIL_SEND, "slow-run", limit=1, lease=LEASE)
        clock.advance(LEASE + timedelta(seconds=1))
        taken = claim(store, EMAIL_SEND, "new-run", limit=1, lease=LEASE)
        context = {
            "renderer": TemplateRenderer(CONFIG / "templates"),
            "outbox": files,
            "sender_address": SENDER,
            "settings": SETTINGS,
        }
        start = threading.Barrier(2)

        def dispatch(claims, owner):
            start.wait()
            return dispatch_one_offs(store, claims, flow_run_id=owner, **context)

        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(dispatch, stale, "slow-run")
            new = pool.submit(dispatch, taken, "new-run")
            results = (slow.result(), new.result())

        assert results == (outcome(contended=1), outcome(sent=1))
        assert len(messages(folder)) == 1
        assert send_row(store, send).flow_run_id == "new-run"

    def test_a_send_found_sending_where_the_outbox_cannot_tell_is_unknown(
        self, store, clock, folder
    ):
        lead = take(store, {"email": "ada@example.com"})
        send = queue(store, lead_id=lead.id)
        with pytest.raises(ProcessKilled):
            run(store, KilledWhileSending())
        assert send_row(store, send).status == "sending"

        clock.advance(LEASE + timedelta(minutes=1))
        blind = Blind(folder)
        assert run(store, blind) == outcome(unknown=1)
        assert run(store, blind) == outcome()

        assert send_row(store, send).status == "unknown"
        assert messages(folder) == []
        assert outbox_row(store, send).status == "done"
        assert kinds(store, lead) == ["email.queued", "email.unknown"]

    def test_a_crash_after_the_file_was_written_is_recorded_sent_not_resent(
        self, store, clock, files, folder
    ):
        send = queue(store, recipient="zoe@example.com")
        with pytest.raises(ProcessKilled):
            run(store, KilledAfterWriting(folder))

        clock.advance(LEASE + timedelta(minutes=1))
        assert run(store, files) == outcome(sent=1)

        assert len(messages(folder)) == 1
        assert send_row(store, send).status == "sent"

    def test_a_send_whose_message_never_arrived_is_unknown_not_sent_again(
        self, store, clock, files, folder
    ):
        # Its sender may be dead or only slow: a missing file proves nothing.
        queue(store, recipient="zoe@example.com")
        with pytest.raises(ProcessKilled):
            run(store, KilledWhileSending())

        clock.advance(LEASE + timedelta(minutes=1))
        assert run(store, files) == outcome(unknown=1)
        assert messages(folder) == []


class TestFailures:
    def test_an_outbox_that_is_down_requeues_for_a_minute_later(
        self, store, clock, files, folder
    ):
        send = queue(store, recipient="zoe@example.com")

        down = Refusing(EmailDeliveryError("connection refused"))
        assert run(store, down) == outcome(requeued=1)
        row = outbox_row(store, send)
        assert (row.status, row.available_at) == (
            "pending",
            MONDAY + timedelta(minutes=1),
        )
        assert send_row(store, send).status == "pending"

        clock.advance(minutes=1)
        assert run(store, files) == outcome(sent=1)

    def test_an_outcome_the_relay_left_unknown_is_never_sent_again(
        self, store, clock, files, folder
    ):
        send = queue(store, recipient="zoe@example.com")

        broke = Refusing(EmailOutcomeUnknownError("the connection broke"))
        assert run(store, broke) == outcome(unknown=1)
        clock.advance(hours=1)
        assert run(store, files) == outcome()

        found = send_row(store, send)
        assert (found.status, found.error) == ("unknown", "the connection broke")
        assert messages(folder) == []

    def test_a_refused_login_stops_the_run_and_fails_nothing(self, store, clock):
        send = queue(store, recipient="zoe@example.com")

        with pytest.raises(EmailAuthenticationError):
            run(store, Refusing(EmailAuthenticationError("535 bad login", code=535)))

        assert send_row(store, send).status == "pending"
        row = outbox_row(store, send)
        assert (row.status, row.attempts) == ("pending", 0)

    def test_a_template_failing_for_the_lead_fails_and_parks_only_its_send(
        self, store, clock, files, folder, tmp_path
    ):
        templates = tmp_path / "templates"
        templates.mkdir()
        (templates / "plan.txt.j2").write_text("Your plan: {{ lead.custom.plan }}\n")
        (templates / "plan.html.j2").write_text("<p>{{ lead.custom.plan }}</p>\n")
        lead = take(store, {"email": "ada@example.com"})
        broken = queue(store, lead_id=lead.id, template="plan", text=None)
        fine = queue(store, recipient="zoe@example.com")

        counts = run(store, files, renderer=TemplateRenderer(templates))

        assert counts == outcome(failed=1, sent=1)
        found = send_row(store, broken)
        assert found.status == "failed"
        assert "plan.txt.j2 does not render" in found.error
        assert outbox_row(store, broken).status == "parked"
        assert send_row(store, fine).status == "sent"


@pytest.fixture
def relay():
    """An aiosmtpd relay on loopback; `refuse` maps addresses to RCPT replies."""
    received: list[bytes] = []
    refuse: dict[str, str] = {}

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, options):
            if address in refuse:
                return refuse[address]
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            received.append(envelope.original_content)
            return "250 2.0.0 queued"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Named, so aiosmtpd does not look this machine's name up.
    controller = Controller(
        Handler(), hostname="127.0.0.1", port=port, server_hostname="relay.test"
    )
    controller.start()
    try:
        yield SmtpOutbox("127.0.0.1", port, tls="none", timeout=5), received, refuse
    finally:
        controller.stop()


class TestThroughSmtp:
    def test_a_relay_takes_the_message_with_its_one_click_headers(
        self, store, clock, relay
    ):
        outbox, received, _ = relay
        send = queue(store, recipient="zoe@example.com")

        assert run(store, outbox) == outcome(sent=1)

        (data,) = received
        message = message_from_bytes(data, policy=policy.default)
        assert message["Message-ID"] == send.message_id
        assert token_of(message).address_hash == address_hash("zoe@example.com")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    def test_a_550_for_the_mailbox_fails_the_send_and_suppresses_the_address(
        self, store, clock, relay
    ):
        outbox, received, refuse = relay
        refuse["gone@example.com"] = "550 5.1.1 <gone@example.com>: no such user"
        lead = take(store, {"email": "gone@example.com"})
        send = queue(store, lead_id=lead.id, category="transactional")

        assert run(store, outbox) == outcome(failed=1)

        found = send_row(store, send)
        assert found.status == "failed"
        assert "550" in found.error and "gone@" not in found.error
        assert outbox_row(store, send).status == "parked"
        assert received == []
        with store.read("default") as scope:
            reason = blocked_reason(
                scope,
                lead=scope.get(Lead, lead.id),
                address=None,
                category="transactional",
            )
            assert "bounced_at" in scope.get(Lead, lead.id).email_state
        assert reason == "bounced"
        assert kinds(store, lead) == ["email.queued", "email.failed", "email.bounced"]
