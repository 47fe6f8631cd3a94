"""E-mail under faults: dispatchers killed, stalled and doubled, the relay stopped.

Each case runs real dispatcher processes (the `sequence-dispatcher` flow on
the session's Prefect server) against a real SMTP relay on loopback, then
holds the outcome to the e-mail ledger: every due step sent exactly once or
settled with its reason, never two messages for one step, nothing left over.
A "later" run sets the product's clock ahead instead of waiting out leases
and retry delays.
"""

from __future__ import annotations

import smtplib
from collections import Counter
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from sqlalchemy import select, update

from leads.email_sends import SendRequest, accept
from leads.store import Store
from leads.store.outbox import SEQUENCE_ENROLMENT
from leads.store.tables import EmailSend, Lead, OutboxItem, SequenceStep
from tests.faults import email_fixtures
from tests.faults.email_fixtures import first_steps
from tests.faults.email_relay import CountingRelay

# The fixture, for this module's tests.
email_case = email_fixtures.email_case

# Past the dispatcher's 60-second claim lease.
AFTER_LEASE = 90.0
# Past the one-minute wait before a message the relay could not take is retried.
AFTER_RETRY = 120.0
# Seconds a dispatcher process may take, start-up included.
RUN_LIMIT = 120.0


def steps_by_status(store: Store) -> Counter[str]:
    with store.read_across_tenants() as session:
        return Counter(session.scalars(select(SequenceStep.status)))


def message_ids_in(store: Store, status: str) -> list[str | None]:
    with store.read_across_tenants() as session:
        return list(
            session.scalars(
                select(SequenceStep.message_id).where(SequenceStep.status == status)
            )
        )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_dispatcher_killed_mid_batch_leaves_the_step_in_flight_unknown(
    email_case,
):
    case = email_case()
    leads = case.take_in(300)
    case.relay.hold(120)
    killed = case.dispatcher("killed", batch_size=50)

    held = case.relay.wait_until_held(RUN_LIMIT)
    killed.kill()
    case.relay.release()

    # Killed with message 120 handed over and unanswered: 119 sent, that one
    # `sending`, the rest of its batch claimed by a dead run.
    assert steps_by_status(case.store) == {"sent": 119, "sending": 1}
    assert message_ids_in(case.store, "sending") == [held.message_id]

    later = case.dispatcher("later", clock_offset=AFTER_LEASE).counts(RUN_LIMIT)

    assert (later["sent"], later["unknown"]) == (180, 1)
    ledger = case.ledger(first_steps(leads))
    ledger.assert_clean()
    assert (ledger.count("sent"), ledger.count("unknown")) == (299, 1)
    # The relay had the message in flight: it may be delivered, and is never
    # sent again.
    assert message_ids_in(case.store, "unknown") == [held.message_id]
    assert len(case.relay.received) == 300


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_relay_stopped_mid_batch_sends_nothing_twice_and_the_rest_later(
    email_case,
):
    case = email_case()
    leads = case.take_in(300)
    case.relay.hold(120)
    during = case.dispatcher("during_outage", batch_size=50)

    held = case.relay.wait_until_held(RUN_LIMIT)
    case.relay.stop()
    counts = during.counts(RUN_LIMIT)

    # The message in flight when the relay went is `unknown`; every later
    # one found the relay gone, went nowhere, and waits for a retry.
    assert (counts["sent"], counts["unknown"], counts["requeued"]) == (119, 1, 180)
    assert steps_by_status(case.store) == {"sent": 119, "unknown": 1, "pending": 180}
    assert message_ids_in(case.store, "unknown") == [held.message_id]

    case.relay.release()
    case.relay.start()
    after = case.dispatcher("after_outage", clock_offset=AFTER_RETRY)

    assert after.counts(RUN_LIMIT)["sent"] == 180
    ledger = case.ledger(first_steps(leads))
    ledger.assert_clean()
    assert (ledger.count("sent"), ledger.count("unknown")) == (299, 1)
    assert len(case.relay.received) == 300


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_dispatchers_at_once_over_600_due_steps_send_each_once(
    email_case,
):
    # Every message waits until both dispatchers are connected to the relay.
    case = email_case(overlap=2, pace_seconds=0.002)
    leads = case.take_in(600)

    runs = [case.dispatcher(name, batch_size=25) for name in ("first", "second")]
    counts = [run.counts(RUN_LIMIT) for run in runs]

    assert case.relay.most_clients_at_once >= 2
    assert all(run["sent"] > 0 for run in counts), counts
    assert sum(run["sent"] for run in counts) == 600
    ledger = case.ledger(first_steps(leads))
    ledger.assert_clean()
    assert ledger.count("sent") == 600
    assert len(case.relay.received) == 600


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_dispatcher_stalled_past_its_lease_is_overtaken_without_a_double_send(
    email_case,
):
    case = email_case()
    leads = case.take_in(200)
    case.relay.hold(30)
    stalled = case.dispatcher("stalled", batch_size=50)
    held = case.relay.wait_until_held(RUN_LIMIT)

    # A second run whose clock says the stalled run's leases ran out takes its
    # batch over: the step stuck mid-send is parked, never sent again.
    overtaking = case.dispatcher("overtaking", clock_offset=AFTER_LEASE)
    taken_over = overtaking.counts(RUN_LIMIT)
    case.relay.release()
    finished_late = stalled.counts(RUN_LIMIT)

    assert (taken_over["sent"], taken_over["unknown"]) == (170, 1)
    # The stalled run records its message sent once the relay answers, and
    # leaves the claims it lost alone.
    assert (finished_late["sent"], finished_late["contended"]) == (30, 20)
    ledger = case.ledger(first_steps(leads))
    ledger.assert_clean()
    assert ledger.count("sent") == 200
    assert ledger.messages[held.message_id] == 1
    assert len(case.relay.received) == 200


def send_raw(relay: CountingRelay, recipient: str, message_id: str) -> None:
    """A message straight to the relay, as a buggy second send would arrive."""
    message = EmailMessage()
    message["From"] = "noreply@localhost"
    message["To"] = recipient
    message["Subject"] = "again"
    message["Message-ID"] = message_id
    message.set_content("again")
    with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="localhost") as smtp:
        smtp.send_message(message)


@pytest.mark.timeout(120)
def test_the_ledger_names_every_double_send_and_every_step_left_unexplained(
    email_case,
):
    case = email_case()
    leads = case.take_in(7)
    assert case.dispatch_here()["sent"] == 7
    clean = case.ledger(first_steps(leads))
    clean.assert_clean()
    assert clean.count("sent") == 7

    with case.store.read_across_tenants() as session:
        rows = session.execute(
            select(SequenceStep.lead_id, SequenceStep.message_id, Lead.email)
            .join(Lead, Lead.id == SequenceStep.lead_id)
            .order_by(SequenceStep.id)
        ).all()
    # A message received twice, and a step sent again under a new Message-ID.
    send_raw(case.relay, rows[0].email, rows[0].message_id)
    send_raw(case.relay, rows[1].email, make_msgid(domain="localhost"))
    with case.store.write_across_tenants() as session:

        def set_step(row: int, **values: object) -> None:
            session.execute(
                update(SequenceStep)
                .where(SequenceStep.lead_id == rows[row].lead_id)
                .values(**values)
            )

        set_step(2, status="sending")
        set_step(3, status="pending")
        set_step(4, status="unknown", error=None)
        set_step(5, status="skipped", error="unsubscribed")
        session.execute(
            update(OutboxItem)
            .where(
                OutboxItem.lead_id == rows[6].lead_id,
                OutboxItem.topic == SEQUENCE_ENROLMENT,
            )
            .values(status="claimed")
        )
    never = (leads[0], "welcome_sequence", "welcome_9")

    ledger = case.ledger([*first_steps(leads), never])

    problems = "\n".join(ledger.problems)

    def step(row: int) -> str:
        return f"step ({rows[row].lead_id!r}, 'welcome_sequence', 'welcome_1') is"

    expected = [
        f"message {rows[0].message_id} to {rows[0].email} arrived 2 times",
        f"{step(0)} sent; 2 messages",
        f"to {rows[1].email} ('again') is no step's",
        f"{step(2)} still sending",
        f"{step(3)} pending",
        f"{step(4)} unknown without a reason",
        f"{step(5)} skipped; 1 messages",
        f"{step(5)} skipped; email.sent",
        "is still claimed",
        f"step {never} was due and never handled",
    ]
    assert [line for line in expected if line not in problems] == [], problems
    assert len(ledger.problems) == len(expected) + 1  # lead 4's email.sent too
    with pytest.raises(AssertionError, match="does not add up"):
        ledger.assert_clean()


def queue_one_offs(
    store: Store, *, lead_ids: Sequence[str] = (), addresses: int = 0
) -> list[str]:
    """One-off e-mails accepted as `POST /api/email/send` accepts them: to each
    lead, and to `addresses` bare addresses; their send ids."""
    requests = [
        SendRequest(category="transactional", subject="Receipt", text="Hi", lead_id=i)
        for i in lead_ids
    ] + [
        SendRequest(
            category="transactional",
            subject="Receipt",
            text="Hi",
            recipient=f"bare{number}.{make_msgid()[1:9]}@example.org",
        )
        for number in range(addresses)
    ]
    return [
        accept(
            store, "default", request, message_id=make_msgid(domain="localhost")
        ).send.id
        for request in requests
    ]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_dispatchers_at_once_send_each_step_and_one_off_once(email_case):
    case = email_case(overlap=2, pace_seconds=0.002)
    leads = case.take_in(100)
    queue_one_offs(case.store, lead_ids=leads, addresses=100)

    runs = [case.dispatcher(name, batch_size=25) for name in ("first", "second")]
    counts = [run.counts(RUN_LIMIT) for run in runs]

    assert case.relay.most_clients_at_once >= 2
    assert sum(run["sent"] for run in counts) == 100
    assert sum(run.get("one_off_sent", 0) for run in counts) == 200
    ledger = case.ledger(first_steps(leads))
    ledger.assert_clean()
    assert (ledger.count("sent"), ledger.count_sends("sent")) == (100, 200)
    assert len(case.relay.received) == 300


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_relay_stopped_mid_batch_sends_no_one_off_twice_and_the_rest_later(
    email_case,
):
    case = email_case()
    queue_one_offs(case.store, addresses=200)
    case.relay.hold(120)
    during = case.dispatcher("during_outage", batch_size=50)

    held = case.relay.wait_until_held(RUN_LIMIT)
    case.relay.stop()
    counts = during.counts(RUN_LIMIT)

    assert (
        counts["one_off_sent"],
        counts["one_off_unknown"],
        counts["one_off_requeued"],
    ) == (119, 1, 80)

    case.relay.release()
    case.relay.start()
    after = case.dispatcher("after_outage", clock_offset=AFTER_RETRY)

    assert after.counts(RUN_LIMIT)["one_off_sent"] == 80
    ledger = case.ledger([])
    ledger.assert_clean()
    assert (ledger.count_sends("sent"), ledger.count_sends("unknown")) == (199, 1)
    with case.store.read_across_tenants() as session:
        unknown = session.scalars(
            select(EmailSend.message_id).where(EmailSend.status == "unknown")
        ).all()
    assert unknown == [held.message_id]
    assert len(case.relay.received) == 200


@pytest.mark.timeout(120)
def test_the_ledger_holds_one_offs_to_the_same(email_case):
    case = email_case()
    ids = queue_one_offs(case.store, addresses=5)
    with case.store.read_across_tenants() as session:
        sends = {
            send.id: send
            for send in session.scalars(select(EmailSend).where(EmailSend.id.in_(ids)))
        }
    first, second, third, fourth, fifth = (sends[i] for i in ids)
    # Arrived once, as it should; and a failed one that arrived anyway.
    send_raw(case.relay, first.recipient, first.message_id)
    send_raw(case.relay, third.recipient, third.message_id)
    with case.store.write_across_tenants() as session:

        def set_send(send: EmailSend, **values: object) -> None:
            session.execute(
                update(EmailSend).where(EmailSend.id == send.id).values(**values)
            )

        set_send(first, status="sent")
        set_send(second, status="sent")
        set_send(third, status="failed", error=None)
        set_send(fourth, status="sending")
        session.execute(
            update(OutboxItem)
            .where(OutboxItem.key == fifth.id)
            .values(status="claimed")
        )

    ledger = case.ledger([])

    problems = "\n".join(ledger.problems)
    expected = [
        f"one-off {second.id} is sent; 0 messages arrived",
        f"one-off {third.id} is failed without a reason",
        f"one-off {third.id} is failed; 1 messages arrived",
        f"one-off {fourth.id} is still sending",
        f"one-off's outbox row {fifth.id} is still claimed",
    ]
    assert [line for line in expected if line not in problems] == [], problems
    # The outbox rows of the first four are still pending and due (nothing
    # dispatched them): each is named too.
    assert len(ledger.problems) == len(expected) + 4
    assert f"one-off {first.id}" not in problems
