"""Erasure on a real store: nothing of the person left in any table but a hash."""

from __future__ import annotations

import io
import json
import threading
from datetime import timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import JSON, LargeBinary, String, select

from connectors.email.file_outbox import FileOutbox
from leads import erasure, importer
from leads.encryption import SecretBox
from leads.errors import LeadNotFound
from leads.intake import submit
from leads.store import duplicates, imports
from leads.store.imports import add_rejects
from leads.store.imports import create as create_import
from leads.store.outbox import CRM_SYNC
from leads.store.tables import (
    AuditEvent,
    Base,
    EmailEvent,
    EmailSend,
    EmailSuppression,
    Lead,
    OutboxItem,
    SequenceStep,
    TimelineEvent,
    TriggerKey,
    WebhookDelivery,
    utcnow,
)
from leads.suppression import address_hash, blocked_reason, unsubscribe

BOX = SecretBox("test secret key")
EMAIL = "Augusta.Byron@Example.org"
MERGED_EMAIL = "augusta@analytical.example"
PHONE_E164 = "+14155550134"
PHONE_TYPED = "(415) 555-0134"
FIRST, LAST = "Augusta", "Byron-Kingsworth"
# Everything that would identify the person, in the spellings the rows use.
NEEDLES = (
    EMAIL.lower(),
    MERGED_EMAIL,
    PHONE_E164,
    PHONE_TYPED,
    "4155550134",
    FIRST.lower(),
    LAST.lower(),
)
OTHER_EMAIL = "grace.hopper@example.net"


def take(store, data, tenant="default") -> Lead:
    return submit(store, tenant, data, channel="api", region="US").lead


def erase(store, lead_id, tenant="default", **options) -> erasure.Erasure:
    with store.write(tenant) as scope:
        return erasure.erase(
            scope,
            lead_id,
            actor=options.pop("actor", "key-1"),
            seal=BOX.seal,
            trigger={"via": "test"},
            **options,
        )


def text_columns(table) -> list:
    return [
        column
        for column in table.columns
        if isinstance(column.type, String | JSON | LargeBinary)
        or isinstance(getattr(column.type, "impl", None), String | JSON)
    ]


def as_text(value) -> str:
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def traces(store, needles) -> list[tuple[str, str, str]]:
    """Every (table, column, needle) where a needle occurs, in any case."""
    found = []
    with store.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            columns = text_columns(table)
            if not columns:
                continue
            for row in connection.execute(select(*columns)):
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    text = as_text(value).lower()
                    found += [
                        (table.name, column.name, needle)
                        for needle in needles
                        if needle.lower() in text
                    ]
    return found


@pytest.fixture
def person(store) -> dict[str, str]:
    """A person the store knows from everywhere it keeps people."""
    lead = take(
        store,
        {
            "email": EMAIL,
            "first_name": FIRST,
            "last_name": LAST,
            "phone": PHONE_TYPED,
            "company": "Analytical Engines",
            "custom": {"referrer": "a friend"},
        },
    )
    # A second lead of the same person, merged into the first.
    merged = take(store, {"email": MERGED_EMAIL, "first_name": FIRST})
    with store.write("default") as scope:
        review = duplicates.pair(
            scope, scope.get(Lead, merged.id), scope.get(Lead, lead.id), "manual"
        )
        scope.session.flush()
        duplicates.merge(scope, review.id, channel="api")
    # A later lead flagged as a possible duplicate of it (another person).
    other = take(store, {"email": OTHER_EMAIL, "first_name": "Grace"})
    with store.write("default") as scope:
        duplicates.pair(
            scope, scope.get(Lead, other.id), scope.get(Lead, lead.id), "manual"
        )

    digest = address_hash(EMAIL)
    with store.write("default") as scope:
        row = scope.get(Lead, lead.id)
        unsubscribe(scope, row, source="unsubscribe_page")
        scope.add(
            SequenceStep(
                lead_id=lead.id,
                sequence="welcome",
                step=1,
                step_key="hello",
                template="welcome",
                recipient_hash=digest,
                status="sent",
                due_at=utcnow(),
                message_id="<m1@example.org>",
            )
        )
        for send in (
            EmailSend(lead_id=lead.id, category="transactional", subject=FIRST),
            EmailSend(recipient=EMAIL, category="transactional", body_text=LAST),
        ):
            scope.add(send)
        scope.add(
            EmailEvent(
                event_id="evt-1",
                kind="bounced",
                lead_id=lead.id,
                address_hash=digest,
                occurred_at=utcnow(),
                outcome="applied",
            )
        )
        scope.add(
            EmailEvent(
                event_id="evt-2",
                kind="bounced",
                address_hash=digest,
                occurred_at=utcnow(),
                outcome="no_such_recipient",
            )
        )
        scope.add(TriggerKey(key=f"signup-{FIRST}", holder="h", lead_id=lead.id,
                             held_until=utcnow()))  # fmt: skip
        deliveries = [
            (lead.id, "applied", {"email": EMAIL, "first_name": FIRST}),
            (merged.id, "applied", {"email": MERGED_EMAIL}),
            (None, "rejected", {"phone": PHONE_TYPED, "last_name": LAST}),
            (None, "pending", {"contact": {"mail": EMAIL.upper()}}),
            (None, "rejected", {"email": OTHER_EMAIL}),
        ]
        for number, (lead_id, status, body) in enumerate(deliveries):
            scope.add(
                WebhookDelivery(
                    source="forms",
                    delivery_id=f"d{number}",
                    body=json.dumps(body).encode(),
                    occurred_at=utcnow(),
                    status=status,
                    lead_id=lead_id,
                )
            )
        upload = create_import(
            scope,
            filename="list.csv",
            path="list.csv",
            size_bytes=1,
            mapping=None,
            dry_run=False,
            chunk_size=100,
        )
        scope.session.flush()
        add_rejects(
            scope,
            upload.id,
            [
                {"record": 1, "line": 2, "errors": [], "values": {"E": EMAIL}},
                {"record": 2, "line": 3, "errors": [], "values": {"Tel": PHONE_TYPED,
                                                                    "N": LAST}},
                {"record": 3, "line": 4, "errors": [], "values": {"E": OTHER_EMAIL}},
            ],
        )  # fmt: skip
    return {"lead": lead.id, "merged": merged.id, "other": other.id}


class TestErasure:
    def test_no_table_keeps_the_person_but_the_hashed_suppression(self, store, person):
        assert traces(store, NEEDLES), "the fixture must leave traces to look for"

        done = erase(store, person["lead"])

        assert traces(store, NEEDLES) == []
        digests = {address_hash(EMAIL), address_hash(MERGED_EMAIL)}
        kept = [
            (table, column)
            for table, column, _ in traces(store, sorted(digests))
            if (table, column) != ("email_suppressions", "address_hash")
        ]
        assert kept == []
        assert done.removed["leads"] == 1
        assert done.removed["webhook_deliveries"] == 4
        assert done.removed["import_rejects"] == 2
        assert done.removed["email_sends"] == 2
        assert done.removed["email_events"] == 2
        assert done.removed["duplicate_flags"] == 1
        assert done.suppressed == 2

    def test_what_other_people_own_stays(self, store, person):
        erase(store, person["lead"])

        assert traces(store, [OTHER_EMAIL, "grace"]) != []
        with store.read("default") as scope:
            other = scope.get(Lead, person["other"])
            rejected = scope.session.scalars(
                scope.select(WebhookDelivery).where(WebhookDelivery.delivery_id == "d4")
            ).one()
        assert other.flags == []
        assert OTHER_EMAIL.encode() in rejected.body

    def test_the_file_backend_s_copies_of_their_mail_are_deleted(
        self, store, person, tmp_path
    ):
        with store.write("default") as scope:
            scope.add(
                EmailSend(recipient=OTHER_EMAIL, category="marketing",
                          body_text="hi", message_id="<o1@example.org>")
            )  # fmt: skip
            bare = scope.session.scalars(
                scope.select(EmailSend).where(EmailSend.recipient == EMAIL)
            ).one()
            bare.message_id = "<s1@example.org>"
        outbox = FileOutbox(tmp_path / "outbox")
        for message_id in ("<m1@example.org>", "<s1@example.org>", "<o1@example.org>"):
            message = EmailMessage()
            message["Message-ID"] = message_id
            message.set_content("hello")
            outbox.send(message)

        done = erase(store, person["lead"], forget_messages=outbox.forget)

        assert done.removed["email_files"] == 2
        assert not outbox.delivered("<m1@example.org>"), "a sequence step's"
        assert not outbox.delivered("<s1@example.org>"), "a one-off to the address"
        assert outbox.delivered("<o1@example.org>"), "another person's"

    def test_without_a_backend_keeping_copies_no_file_is_touched(self, store, person):
        done = erase(store, person["lead"])

        assert done.removed["email_files"] == 0

    def test_deliveries_stay_as_empty_tombstones_and_a_waiting_one_is_settled(
        self, store, person
    ):
        erase(store, person["lead"])

        with store.read("default") as scope:
            rows = {
                row.delivery_id: row
                for row in scope.session.scalars(scope.select(WebhookDelivery))
            }
        assert {rows[d].body for d in ("d0", "d1", "d2", "d3")} == {b""}
        assert rows["d3"].status == "ignored"
        assert rows["d0"].reasons[0]["reason"] == "erased"
        assert rows["d0"].lead_id is None

    def test_the_audit_record_names_the_key_and_counts_only(self, store, person):
        erase(store, person["lead"], actor="key-7")

        with store.read("default") as scope:
            [record] = scope.session.scalars(
                scope.select(AuditEvent).where(AuditEvent.action == "lead.erased")
            ).all()
        assert (record.actor, record.target_id) == ("key-7", person["lead"])
        assert record.detail["removed"]["timeline_events"] > 0
        assert record.detail["merged_leads"] == 1

    def test_the_address_is_never_marketed_to_again_yet_may_sign_up_anew(
        self, store, person
    ):
        erase(store, person["lead"])

        again = take(store, {"email": EMAIL, "first_name": FIRST})

        assert again.id != person["lead"]
        with store.read("default") as scope:
            lead = scope.get(Lead, again.id)
            kinds = [
                e.kind
                for e in scope.session.scalars(
                    scope.select(TimelineEvent).where(TimelineEvent.lead_id == lead.id)
                )
            ]
            reason = blocked_reason(
                scope, lead=lead, address=None, category="marketing"
            )
            entries = scope.session.scalars(
                select(EmailSuppression.reason).where(
                    EmailSuppression.address_hash == address_hash(EMAIL)
                )
            ).all()
        assert kinds == ["lead.created"]
        assert reason is not None
        assert "erased" in entries

    def test_another_tenant_cannot_erase_it_and_a_second_erasure_finds_nothing(
        self, store, person
    ):
        with pytest.raises(LeadNotFound):
            erase(store, person["lead"], tenant="acme")
        erase(store, person["lead"])
        with pytest.raises(LeadNotFound):
            erase(store, person["lead"])


class TestCrmErasureOwed:
    def owed(self, store) -> list[OutboxItem]:
        with store.read("default") as scope:
            return list(
                scope.session.scalars(
                    scope.select(OutboxItem).where(OutboxItem.topic == CRM_SYNC)
                )
            )

    def test_a_lead_never_written_to_the_crm_owes_it_nothing(self, store):
        lead = take(store, {"email": EMAIL})

        done = erase(store, lead.id)

        assert done.crm_erasure_queued is False
        assert self.owed(store) == []

    def test_a_synced_lead_owes_a_deletion_by_crm_id_without_its_address(self, store):
        lead = take(store, {"email": EMAIL})
        with store.write("default") as scope:
            row = scope.get(Lead, lead.id)
            row.crm_id, row.crm_account = "901", "hubspot:abc"
            row.crm_sync_status = "synced"

        done = erase(store, lead.id)

        [item] = self.owed(store)
        assert done.crm_erasure_queued is True
        assert item.lead_id is None and item.key == f"erase:{lead.id}"
        assert item.payload["targets"] == [{"crm_id": "901", "account": "hubspot:abc"}]
        assert EMAIL.lower() not in json.dumps(item.payload).lower()

    def test_a_write_whose_id_never_came_back_keeps_only_the_sealed_address(
        self, store
    ):
        lead = take(store, {"email": EMAIL})
        with store.write("default") as scope:
            scope.get(Lead, lead.id).crm_sync_status = "retrying"

        erase(store, lead.id)

        [item] = self.owed(store)
        [target] = item.payload["targets"]
        assert target["lead_id"] == lead.id
        assert BOX.open(target["sealed"]) == {"email": EMAIL.lower()}
        assert EMAIL.lower() not in json.dumps(item.payload).lower()

    def test_a_sync_in_flight_is_let_finish_before_the_deletion_runs(self, store):
        lead = take(store, {"email": EMAIL})
        expires = utcnow() + timedelta(minutes=7)
        with store.write("default") as scope:
            sync = scope.session.scalars(
                scope.select(OutboxItem).where(
                    OutboxItem.lead_id == lead.id, OutboxItem.topic == CRM_SYNC
                )
            ).one()
            sync.status, sync.lease_owner = "claimed", "another-run"
            sync.lease_expires_at = expires

        erase(store, lead.id)

        [item] = self.owed(store)
        assert abs(item.available_at - expires) < timedelta(seconds=1)

    def test_a_contact_the_crm_deleted_itself_is_not_deleted_again(self, store):
        lead = take(store, {"email": EMAIL})
        with store.write("default") as scope:
            row = scope.get(Lead, lead.id)
            row.crm_id, row.crm_sync_status = "501", "synced"

        done = erase(store, lead.id, crm_gone={"501"})

        assert done.crm_erasure_queued is False
        assert self.owed(store) == []


def upload(store, folder, csv: str):
    return importer.accept(
        store,
        "default",
        io.BytesIO(csv.encode()),
        filename="leads.csv",
        folder=folder,
        max_bytes=10**6,
    )


class TestAnImportUploadedBeforeTheErasure:
    def test_does_not_take_the_person_in_again_nor_keep_their_cells(
        self, store, tmp_path
    ):
        lead = take(store, {"email": EMAIL, "first_name": FIRST})
        csv = (
            "email,first_name,last_name\n"
            f"{EMAIL},{FIRST},{LAST}\n"
            f"{OTHER_EMAIL},Grace,Hopper\n"
        )
        row = upload(store, tmp_path, csv)

        erase(store, lead.id)
        importer.run(store, row.id, owner="run", region="US")

        with store.read("default") as scope:
            emails = [lead.email for lead in scope.session.scalars(scope.select(Lead))]
            done = imports.get(scope, row.id)
            [reject] = imports.rejects(scope, row.id)
        assert emails == [OTHER_EMAIL]
        assert (done.status, done.counts["created"], done.counts["rejected"]) == (
            "finished",
            1,
            1,
        )
        assert reject.values == {}
        assert [e["reason"] for e in reject.errors] == ["erased"]
        assert traces(store, NEEDLES) == []

    def test_a_record_of_theirs_refused_for_another_field_keeps_no_cell(
        self, store, tmp_path
    ):
        lead = take(store, {"email": EMAIL})
        too_long = "N" * 5000
        row = upload(store, tmp_path, f"email,first_name\n{EMAIL},{too_long}\n")

        erase(store, lead.id)
        importer.run(store, row.id, owner="run", region="US")

        with store.read("default") as scope:
            [reject] = imports.rejects(scope, row.id)
        assert reject.values == {}
        assert [e["reason"] for e in reject.errors] == ["erased"]

    def test_an_import_uploaded_after_it_takes_the_person_in_as_a_new_sign_up(
        self, store, tmp_path
    ):
        lead = take(store, {"email": EMAIL})
        erase(store, lead.id)
        row = upload(store, tmp_path, f"email\n{EMAIL}\n")

        importer.run(store, row.id, owner="run", region="US")

        with store.read("default") as scope:
            [again] = scope.session.scalars(scope.select(Lead)).all()
        assert again.email == EMAIL.lower()

    def test_a_second_erasure_also_stops_a_file_uploaded_between_the_two(
        self, store, tmp_path
    ):
        erase(store, take(store, {"email": EMAIL}).id)
        row = upload(store, tmp_path, f"email\n{EMAIL}\n")
        erase(store, take(store, {"email": EMAIL}).id)

        importer.run(store, row.id, owner="run", region="US")

        with store.read("default") as scope:
            assert scope.session.scalars(scope.select(Lead)).all() == []

    def test_a_chunk_running_while_the_erasure_commits_waits_and_then_refuses(
        self, store, tmp_path
    ):
        if store.backend != "postgresql":
            pytest.skip("SQLite lets one writer at a time: the two cannot overlap")
        lead = take(store, {"email": EMAIL})
        row = upload(store, tmp_path, f"email,city\n{EMAIL},Oslo\n")
        job = importer.start(store, row.id, owner="run", region="US")
        [chunk] = importer.chunks(store, job)
        outcome: list[dict] = []

        with store.write("default") as scope:
            erasure.erase(
                scope, lead.id, actor="key-1", seal=BOX.seal, trigger={"via": "test"}
            )
            # The erasure holds the person's mailbox until it commits.
            chunk_run = threading.Thread(
                target=lambda: outcome.append(importer.run_chunk(store, job, chunk))
            )
            chunk_run.start()
            chunk_run.join(timeout=1)
            assert chunk_run.is_alive(), "the chunk did not wait for the erasure"
        chunk_run.join(timeout=30)

        assert outcome == [{"rejected": 1, "merged": 0}]
        with store.read("default") as scope:
            assert scope.session.scalars(scope.select(Lead)).all() == []
