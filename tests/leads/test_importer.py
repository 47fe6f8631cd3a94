"""Lead imports as a whole, on SQLite and PostgreSQL: files in, leads and counts out.

The CSV reader has its own tests (`tests/leads/imports/`); these go through
`accept` and `run` and look at what the store holds afterwards.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from leads import importer
from leads.importer import ImportBusy, ImportFileError, ImportTooLarge
from leads.intake import submit
from leads.store import Store
from leads.store import imports as stored
from leads.store.schema import upgrade
from leads.store.tables import (
    AuditEvent,
    DuplicateReview,
    ImportReject,
    Lead,
    LeadImport,
    OutboxItem,
    TimelineEvent,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "csv"
CASES = Path(__file__).parents[1] / "cases"
SALESFORCE_LEADS = FIXTURES / "salesforce_trailhead" / "Lead_Data.csv"
ORCHESTRATOR = str(Path(sys.executable).with_name("orchestrator"))

TENANT = "default"
MAX_BYTES = 10 * 1024 * 1024
OUTCOMES = ("created", "updated", "unchanged", "merged", "possible_duplicate")
# Short enough to wait out in a test, long enough to outlive a chunk.
SHORT_LEASE = timedelta(milliseconds=300)


def outcomes(**given: int) -> dict[str, int]:
    """Counts as an import reports them: every outcome, zero unless given."""
    return {name: given.get(name, 0) for name in (*OUTCOMES, "rejected")}


def csv_bytes(*lines: str) -> bytes:
    """A CSV file as Excel writes it: CRLF after every line."""
    return ("\r\n".join(lines) + "\r\n").encode()


def accept(store: Store, folder: Path, content: bytes | Path, **options) -> LeadImport:
    data = content.read_bytes() if isinstance(content, Path) else content
    name = content.name if isinstance(content, Path) else "leads.csv"
    return importer.accept(
        store,
        TENANT,
        io.BytesIO(data),
        filename=name,
        folder=folder,
        max_bytes=MAX_BYTES,
        **options,
    )


def run_import(
    store: Store, folder: Path, content: bytes | Path, **options
) -> tuple[str, dict[str, int]]:
    """Accepts the file and runs its import to the end; its id and counts."""
    row = accept(store, folder, content, **options)
    counts = importer.run(store, row.id, owner=f"test-{row.id}", region="US")
    return row.id, counts


def the_import(store: Store, import_id: str) -> LeadImport:
    with store.read(TENANT) as scope:
        return stored.get(scope, import_id)


def rejects_of(store: Store, import_id: str) -> list[ImportReject]:
    with store.read(TENANT) as scope:
        return list(stored.rejects(scope, import_id))


def leads_by_email(store: Store) -> dict[str | None, Lead]:
    with store.read(TENANT) as scope:
        return {lead.email: lead for lead in scope.session.scalars(select(Lead))}


def count(store: Store, model: type) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(model)).scalar_one()


def totals(store: Store) -> tuple[int, int, int]:
    """How many leads, timeline events and outbox rows the store holds."""
    return count(store, Lead), count(store, TimelineEvent), count(store, OutboxItem)


def owed(store: Store, lead_id: str) -> list[OutboxItem]:
    with store.read(TENANT) as scope:
        query = scope.select(OutboxItem).where(OutboxItem.lead_id == lead_id)
        return sorted(scope.session.scalars(query), key=lambda row: row.topic)


def events_of(store: Store, lead_id: str) -> list[TimelineEvent]:
    with store.read(TENANT) as scope:
        query = (
            scope.select(TimelineEvent)
            .where(TimelineEvent.lead_id == lead_id)
            .order_by(TimelineEvent.id)
        )
        return list(scope.session.scalars(query))


def fresh_store(new_store_url, backend: str) -> Store:
    """A new, migrated, empty store of the backend (the caller disposes it)."""
    fresh = Store(new_store_url(backend))
    upgrade(fresh.engine)
    return fresh


class TestSalesforceSample:
    def test_every_lead_is_created_with_salesforce_words_mapped_to_ours(
        self, store, tmp_path
    ):
        import_id, counts = run_import(store, tmp_path / "imports", SALESFORCE_LEADS)

        assert counts == outcomes(created=11)
        leads = leads_by_email(store)
        assert len(leads) == 11
        assert {lead.status for lead in leads.values()} == {"new"}, (
            "`Open - Not Contacted` is Salesforce's word for a new lead"
        )
        serena = leads["fpatterfield0@engadget.com"]
        assert (serena.first_name, serena.last_name) == ("Serena", "Patterfield")
        assert serena.company == "Hettinger and Sons"
        assert serena.job_title == "VP New Markets"
        assert serena.phone == "+16193077599", "MobilePhone stands in for Phone"
        assert (serena.street, serena.city, serena.state, serena.country) == (
            "446 Glendale Place",
            "San Diego",
            "CA",
            "US",
        )
        assert serena.custom == {"Industry": "Major Banks"}
        assert serena.source == "import"
        assert leads["ewestover@gmrmail.com"].company == (
            "Greenholt, Mosciski and Reilly"
        )
        assert leads["knoyes9@gh.com"].job_title == "CEO, Founder"
        done = the_import(store, import_id)
        assert done.status == "finished"
        assert done.records_done == 11
        assert done.bytes_done == done.size_bytes == SALESFORCE_LEADS.stat().st_size

    def test_each_lead_has_one_created_event_naming_its_record(self, store, tmp_path):
        import_id, _ = run_import(store, tmp_path / "imports", SALESFORCE_LEADS)

        with SALESFORCE_LEADS.open(newline="") as file:
            record_of = {
                row["Email"]: number
                for number, row in enumerate(csv.DictReader(file), start=1)
            }
        for email, lead in leads_by_email(store).items():
            events = events_of(store, lead.id)
            assert [event.kind for event in events] == ["lead.created"]
            assert events[0].source == "import"
            detail = events[0].detail
            assert detail["reference"] == f"import:{import_id}#{record_of[email]}"
            assert detail["channel"] == "import"
            assert detail["received"]["email"] == email

    def test_each_lead_is_owed_a_crm_sync_and_a_welcome_enrolment(
        self, store, tmp_path
    ):
        run_import(store, tmp_path / "imports", SALESFORCE_LEADS)

        for lead in leads_by_email(store).values():
            rows = owed(store, lead.id)
            assert [row.topic for row in rows] == ["crm_sync", "sequence_enrolment"]
            assert rows[1].payload["sequence"] == "welcome_sequence"
            assert {row.status for row in rows} == {"pending"}
        assert count(store, OutboxItem) == 22


class TestAcceptanceCases:
    def test_csv01_a_byte_order_mark_hides_no_column(self, store, tmp_path):
        import_id, counts = run_import(
            store, tmp_path / "imports", FIXTURES / "CSV-01.csv"
        )

        assert counts == outcomes(created=2)
        done = the_import(store, import_id)
        assert [header for header, _ in done.columns] == [
            "email",
            "first_name",
            "last_name",
        ]
        assert done.encoding == "utf-8-sig"
        leads = leads_by_email(store)
        assert sorted(leads) == ["noor.haddad@example.com", "ravi.menon@example.com"]
        noor = leads["noor.haddad@example.com"]
        assert (noor.first_name, noor.last_name) == ("Noor", "Haddad")
        assert noor.email_display == "noor.haddad@example.com", "no invisible prefix"
        assert all("\ufeff" not in str(lead.email_display) for lead in leads.values())

    def test_csv02_a_cp1252_file_is_read_and_its_encoding_reported(
        self, store, tmp_path
    ):
        import_id, counts = run_import(
            store, tmp_path / "imports", FIXTURES / "CSV-02.csv"
        )

        assert counts == outcomes(created=2)
        assert the_import(store, import_id).encoding == "cp1252"
        leads = leads_by_email(store)
        zoe = leads["zoe.oneil@example.com"]
        assert (zoe.first_name, zoe.last_name) == ("Zoë", "O’Neil")
        assert zoe.company == "Café Rémy (fake)"
        jurgen = leads["j.mueller@example.com"]
        assert (jurgen.first_name, jurgen.last_name) == ("Jürgen", "Müller")
        assert jurgen.company == "Bäckerei Süd (fake)"

    def test_csv03_semicolons_keep_commas_and_decimal_commas_whole(
        self, store, tmp_path
    ):
        import_id, counts = run_import(
            store, tmp_path / "imports", FIXTURES / "CSV-03.csv"
        )

        assert counts == outcomes(created=3)
        done = the_import(store, import_id)
        assert done.delimiter == ";"
        assert len(done.columns) == 6
        leads = leads_by_email(store)
        assert {email: (lead.street, lead.custom) for email, lead in leads.items()} == {
            "claire.dubois@example.com": (
                "Rue de l'Église, 12",
                {"deal_value": "1.234,50"},
            ),
            "k.schmidt@example.com": ("Hauptstraße 5", {"deal_value": "980,00"}),
            "l.rossi@example.com": ("Via Roma, 3", {"deal_value": "12.000,00"}),
        }

    def test_csv03_a_column_the_mapping_declares_a_number_is_stored_as_one(
        self, store, tmp_path
    ):
        mapping = {"deal_value": {"field": "deal_value", "type": "number"}}

        _, counts = run_import(
            store, tmp_path / "imports", FIXTURES / "CSV-03.csv", mapping=mapping
        )

        assert counts == outcomes(created=3)
        deals = {
            e: lead.custom["deal_value"] for e, lead in leads_by_email(store).items()
        }
        assert deals == {
            "claire.dubois@example.com": 1234.5,
            "k.schmidt@example.com": 980,
            "l.rossi@example.com": 12000,
        }

    def test_a_declared_number_column_holding_text_rejects_the_record(
        self, store, tmp_path
    ):
        content = csv_bytes("email,deal", 'a@example.com,"12,5"', "b@example.com,soon")
        mapping = {"deal": {"field": "deal", "type": "number", "decimal_mark": ","}}

        import_id, counts = run_import(
            store, tmp_path / "imports", content, mapping=mapping
        )

        assert counts == outcomes(created=1, rejected=1)
        [reject] = rejects_of(store, import_id)
        assert (reject.record, reject.errors[0]["field"]) == (2, "deal")
        assert reject.errors[0]["reason"] == "not_a_number"

    def test_csv05_postal_codes_stay_text_and_short_zips_are_padded(
        self, store, tmp_path
    ):
        expected = json.loads((CASES / "CSV-05.expected.json").read_text())
        expected = expected["expected"]

        _, counts = run_import(store, tmp_path / "imports", FIXTURES / "CSV-05.csv")

        assert counts == outcomes(created=5)
        leads = leads_by_email(store)
        assert {email: lead.postal_code for email, lead in leads.items()} == (
            expected["zip"]
        )
        warned = {
            email: lead.warnings for email, lead in leads.items() if lead.warnings
        }
        assert warned == {
            email: [warning] for email, warning in expected["warnings"].items()
        }

    def test_csv06_line_breaks_inside_quotes_stay_inside_three_leads(
        self, store, tmp_path
    ):
        _, counts = run_import(store, tmp_path / "imports", FIXTURES / "CSV-06.csv")

        assert counts == outcomes(created=3)
        leads = leads_by_email(store)

        def unified(text: str | None) -> str | None:
            # The case allows an embedded CRLF to come out as LF.
            return None if text is None else text.replace("\r\n", "\n")

        assert {
            email: (unified(lead.street), unified(lead.notes))
            for email, lead in leads.items()
        } == {
            "hana.sato@example.com": ("Unit 4\n18 Harbour Rd", "Wants a demo"),
            "ola.nordin@example.com": (
                "12 Birch Ln",
                'Called twice.\nSaid "call after 3pm".\nBudget Q3',
            ),
            "p.afolabi@example.com": ("9 Elm St", None),
        }

    def test_csv06_rejects_are_numbered_by_record_with_the_line_beside(
        self, store, tmp_path
    ):
        # Two records without a contact after the case's three, the first of
        # them spread over two lines: records 4 and 5 start on lines 8 and 10.
        content = (FIXTURES / "CSV-06.csv").read_bytes() + (
            b',Nobody,"1 Lost Rd\r\nNowhere",no contact\r\n,Nemo,2 Sea Rd,\r\n'
        )

        import_id, counts = run_import(store, tmp_path / "imports", content)

        assert counts == outcomes(created=3, rejected=2)
        rejects = rejects_of(store, import_id)
        assert [(reject.record, reject.line) for reject in rejects] == [(4, 8), (5, 10)]
        assert rejects[0].values["street"] == "1 Lost Rd\r\nNowhere"

    def test_csv08_placeholders_are_emptied_and_a_na_email_keeps_the_phone(
        self, store, tmp_path
    ):
        expected = json.loads((CASES / "CSV-08.expected.json").read_text())
        expected = expected["expected"]

        _, counts = run_import(store, tmp_path / "imports", FIXTURES / "CSV-08.csv")

        assert counts == outcomes(created=4)
        leads = leads_by_email(store)
        assert len(leads) == len(expected["leads"])
        for wanted in expected["leads"]:
            lead = leads[wanted["email"]]
            for name in ("first_name", "last_name", "phone", "company", "website"):
                assert getattr(lead, name) == wanted[name], (wanted["email"], name)
        hugo = leads[None]
        assert hugo.warnings == ["missing_email"]
        assert [row.topic for row in owed(store, hugo.id)] == ["crm_sync"], (
            "a phone-only lead is never enrolled in e-mail sequences"
        )
        assert leads["g.null@example.com"].last_name == "Null"

    def test_hs04_two_rows_of_one_person_become_one_lead_newest_values_win(
        self, store, tmp_path
    ):
        expected = json.loads((CASES / "HS-04.expected.json").read_text())
        merged = expected["expected"]["merged"]

        _, counts = run_import(store, tmp_path / "imports", FIXTURES / "HS-04.csv")

        assert counts == outcomes(created=3, merged=1)
        leads = leads_by_email(store)
        assert len(leads) == expected["expected"]["inputs_sent_to_hubspot"]
        sam = leads[merged["email"]]
        assert (sam.first_name, sam.last_name, sam.phone) == (
            merged["firstname"],
            merged["lastname"],
            merged["phone"],
        )
        assert sam.custom == {"submitted_at": "2024-05-02T09:05:00Z"}

    def test_val01_surrounding_white_space_is_one_lead_an_inner_space_is_rejected(
        self, store, tmp_path
    ):
        case = json.loads((CASES / "VAL-01.json").read_text())
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(["email", "first_name"])
        for submission in case["input"]["submissions"]:
            writer.writerow([submission["email"], submission["first_name"]])

        import_id, counts = run_import(
            store, tmp_path / "imports", buffer.getvalue().encode()
        )

        assert counts == outcomes(created=1, merged=3, rejected=1)
        leads = leads_by_email(store)
        assert list(leads) == ["tara.bose@example.com"]
        assert leads["tara.bose@example.com"].first_name == "Tara"
        [reject] = rejects_of(store, import_id)
        assert reject.record == 5
        assert [error["reason"] for error in reject.errors] == ["invalid_email"]

    def test_val02_plus_addresses_are_kept_and_the_bare_one_is_flagged(
        self, store, tmp_path
    ):
        case = json.loads((CASES / "VAL-02.json").read_text())
        lines = ["email,first_name"] + [
            f"{lead['email']},{lead['first_name']}" for lead in case["input"]["leads"]
        ]

        import_id, counts = run_import(store, tmp_path / "imports", csv_bytes(*lines))

        assert counts == outcomes(created=3, possible_duplicate=1, rejected=1)
        leads = leads_by_email(store)
        assert sorted(leads) == sorted(case["expected"]["valid"])
        tagged = leads["jane.roe+webinar@example.com"]
        assert leads["jane.roe@example.com"].flags == [
            f"possible_duplicate_of:{tagged.id}"
        ]
        with store.read(TENANT) as scope:
            reviews = list(scope.session.scalars(scope.select(DuplicateReview)))
        assert [(r.lead_id, r.duplicate_of_id) for r in reviews] == [
            (leads["jane.roe@example.com"].id, tagged.id)
        ]
        [reject] = rejects_of(store, import_id)
        assert reject.values["email"] == "jane.roe+@example"


class TestInFileDuplicates:
    def test_a_person_again_in_a_later_chunk_counts_merged(self, store, tmp_path):
        # Chunks of two: HS-04's rows 1 and 3 (the same person) fall apart.
        _, counts = run_import(
            store, tmp_path / "imports", FIXTURES / "HS-04.csv", chunk_size=2
        )

        assert counts == outcomes(created=3, merged=1)
        sam = leads_by_email(store)["sam.ortiz@example.com"]
        assert (sam.first_name, sam.phone) == ("Samuel", "+14155550142")

    def test_the_one_write_of_a_person_twice_in_a_chunk_names_both_records(
        self, store, tmp_path
    ):
        import_id, _ = run_import(store, tmp_path / "imports", FIXTURES / "HS-04.csv")

        sam = leads_by_email(store)["sam.ortiz@example.com"]
        [created] = events_of(store, sam.id)
        assert created.kind == "lead.created"
        assert created.detail["reference"] == f"import:{import_id}#1,3"
        vera = leads_by_email(store)["vera.kos@example.com"]
        assert events_of(store, vera.id)[0].detail["reference"] == (
            f"import:{import_id}#2"
        )

    def test_a_person_again_in_a_later_chunk_is_updated_naming_that_record(
        self, store, tmp_path
    ):
        import_id, _ = run_import(
            store, tmp_path / "imports", FIXTURES / "HS-04.csv", chunk_size=2
        )

        sam = leads_by_email(store)["sam.ortiz@example.com"]
        assert [
            (event.kind, event.detail["reference"])
            for event in events_of(store, sam.id)
        ] == [
            ("lead.created", f"import:{import_id}#1"),
            ("lead.updated", f"import:{import_id}#3"),
        ]

    def test_every_repeat_counts_merged_whichever_chunk_it_falls_in(
        self, store, tmp_path
    ):
        content = csv_bytes(
            "email,first_name",
            "a@example.com,Ann",
            "b@example.com,Bob",
            "c@example.com,Cy",
            "A@Example.com,Anne",
            "d@example.com,Di",
            "a@example.com,Annie",
        )

        _, counts = run_import(store, tmp_path / "imports", content, chunk_size=2)

        assert counts == outcomes(created=4, merged=2)
        assert leads_by_email(store)["a@example.com"].first_name == "Annie"

    def test_records_folded_into_one_write_are_audited_as_merges(self, store, tmp_path):
        content = csv_bytes(
            "email,first_name",
            "a@example.com,Ann",
            "b@example.com,Bob",
            "A@Example.com,Anne",
            "a@example.com,Annie",
        )

        import_id, counts = run_import(store, tmp_path / "imports", content)

        assert counts == outcomes(created=2, merged=2)
        ann = leads_by_email(store)["a@example.com"]
        with store.read_across_tenants() as session:
            decisions = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "lead.merged")
            ).all()
        assert [(d.target_id, d.actor, d.detail) for d in decisions] == [
            (
                ann.id,
                "system",
                {
                    "match": "email_key",
                    "channel": "import",
                    "import_id": import_id,
                    "records": [3, 4],
                },
            )
        ]

    def test_a_dry_run_audits_no_merge(self, store, tmp_path):
        content = csv_bytes("email", "a@example.com", "a@example.com")

        run_import(store, tmp_path / "imports", content, dry_run=True)

        with store.read_across_tenants() as session:
            assert session.scalars(select(AuditEvent)).all() == []


class TestImportingAgain:
    def test_the_same_file_again_counts_every_record_unchanged(self, store, tmp_path):
        run_import(store, tmp_path / "imports", SALESFORCE_LEADS)
        before = totals(store)[0], count(store, OutboxItem)

        _, counts = run_import(store, tmp_path / "imports", SALESFORCE_LEADS)

        assert counts == outcomes(unchanged=11)
        assert (count(store, Lead), count(store, OutboxItem)) == before
        assert {lead.version for lead in leads_by_email(store).values()} == {1}

    def test_a_changed_field_counts_updated(self, store, tmp_path):
        run_import(store, tmp_path / "imports", SALESFORCE_LEADS)
        changed = SALESFORCE_LEADS.read_bytes().replace(
            b"VP New Markets", b"SVP New Markets"
        )

        _, counts = run_import(store, tmp_path / "imports", changed)

        assert counts == outcomes(updated=1, unchanged=10)
        serena = leads_by_email(store)["fpatterfield0@engadget.com"]
        assert serena.job_title == "SVP New Markets"
        assert serena.version == 2
        updated = [e for e in events_of(store, serena.id) if e.kind == "lead.updated"]
        assert [event.detail["changes"]["job_title"] for event in updated] == [
            {"from": "VP New Markets", "to": "SVP New Markets"}
        ]


class TestDryRun:
    CONTENT = csv_bytes(
        "email,first_name,city",
        "kept@example.com,Kept,",
        "moved@example.com,,York",
        "new1@example.com,New,Paris",
        ",Nobody,",
        "new1@example.com,Newer,Lyon",
        "new2@example.com,Two,",
    )

    def seed(self, store: Store) -> None:
        for lead in (
            {"email": "kept@example.com", "first_name": "Kept"},
            {"email": "moved@example.com", "city": "Leeds"},
        ):
            submit(store, TENANT, lead, channel="api", region="US")

    def test_counts_what_the_real_import_then_reports(self, store, tmp_path):
        self.seed(store)

        _, dry = run_import(
            store, tmp_path / "imports", self.CONTENT, chunk_size=2, dry_run=True
        )
        _, real = run_import(store, tmp_path / "imports", self.CONTENT, chunk_size=2)

        assert (
            dry
            == real
            == outcomes(created=2, updated=1, unchanged=1, merged=1, rejected=1)
        )

    def test_writes_no_lead_event_or_outbox_row_and_still_lists_rejects(
        self, store, tmp_path
    ):
        self.seed(store)
        before = totals(store)

        import_id, _ = run_import(
            store, tmp_path / "imports", self.CONTENT, chunk_size=2, dry_run=True
        )

        assert totals(store) == before
        assert leads_by_email(store)["moved@example.com"].city == "Leeds"
        done = the_import(store, import_id)
        assert (done.dry_run, done.status) == (True, "finished")
        assert [(r.record, r.line) for r in rejects_of(store, import_id)] == [(4, 5)]

    def test_counts_a_possible_duplicate_in_a_later_chunk_as_the_real_import_does(
        self, store, tmp_path
    ):
        # The bare address's lead is rolled back with its chunk, yet a real
        # import flags the plus address in the next chunk against it.
        content = csv_bytes(
            "email,first_name",
            "jane.roe@example.com,Jane",
            "ops@example.com,Ops",
            "jane.roe+webinar@example.com,Jane",
        )

        _, dry = run_import(
            store, tmp_path / "imports", content, chunk_size=2, dry_run=True
        )
        _, real = run_import(store, tmp_path / "imports", content, chunk_size=2)

        assert real == outcomes(created=2, possible_duplicate=1)
        assert dry == real


class TestRejects:
    CONTENT = csv_bytes(
        "E-Mail Address,First Name,Phone,Favourite Colour",
        'ada@example.com,Ada,,"blue,\r\ngreen"',
        ",Nobody,,green",
        "N/A,Pat,12,red",
        "x@example.com,Too,,many,cells",
        "bob@example.com,Bob,,",
    )

    def test_a_record_without_email_or_phone_names_both_by_record_and_line(
        self, store, tmp_path
    ):
        import_id, counts = run_import(store, tmp_path / "imports", self.CONTENT)

        assert counts == outcomes(created=2, rejected=3)
        rejects = {reject.record: reject for reject in rejects_of(store, import_id)}
        assert sorted(rejects) == [2, 3, 4]
        nobody, pat, wide = rejects[2], rejects[3], rejects[4]
        assert (nobody.line, pat.line, wide.line) == (4, 5, 6)
        assert [(e["field"], e["reason"]) for e in nobody.errors] == [
            ("email", "missing_contact"),
            ("phone", "missing_contact"),
        ]
        assert [(e["field"], e["reason"]) for e in pat.errors] == [
            ("email", "missing_contact"),
            ("phone", "invalid_phone"),
        ]
        assert [(e["field"], e["reason"]) for e in wide.errors] == [
            ("record", "too_many_cells")
        ]
        assert "record 4 (line 6)" in wide.errors[0]["message"]

    def test_reject_rows_give_reasons_then_the_cells_under_the_files_headers(
        self, store, tmp_path
    ):
        import_id, _ = run_import(store, tmp_path / "imports", self.CONTENT)

        with store.read(TENANT) as scope:
            rows = list(importer.reject_rows(scope, stored.get(scope, import_id)))

        header, *body = rows
        assert header == [
            "record",
            "line",
            "field",
            "reason",
            "message",
            "E-Mail Address",
            "First Name",
            "Phone",
            "Favourite Colour",
        ]
        assert [row[:4] for row in body] == [
            [2, 4, "email, phone", "missing_contact"],
            [3, 5, "email; phone", "missing_contact; invalid_phone"],
            [4, 6, "record", "too_many_cells"],
        ]
        assert [row[5:] for row in body[:2]] == [
            ["", "Nobody", "", "green"],
            ["N/A", "Pat", "12", "red"],
        ]
        assert "'12' is not a valid phone number" in body[1][4]
        assert all(row[4] for row in body), "every reject says why"

    def test_one_error_on_two_fields_is_said_once_naming_both(self, store, tmp_path):
        import_id, _ = run_import(store, tmp_path / "imports", self.CONTENT)

        with store.read(TENANT) as scope:
            _, nobody, pat, _ = importer.reject_rows(
                scope, stored.get(scope, import_id)
            )

        assert nobody[2:5] == [
            "email, phone",
            "missing_contact",
            "an e-mail or a phone is needed",
        ]
        # Different errors stay one entry each, the cells still lined up.
        assert pat[2:5] == [
            "email; phone",
            "missing_contact; invalid_phone",
            "an e-mail or a phone is needed; '12' is not a valid phone number",
        ]


class TestRefusedFiles:
    @pytest.mark.parametrize(
        ("header", "mapping", "named"),
        [
            pytest.param("email,,last_name", None, "column 2", id="empty header"),
            pytest.param(
                "email,E-Mail,last_name", None, "'E-Mail'", id="colliding headers"
            ),
            pytest.param("email,,Email", None, "column 2", id="empty and colliding"),
            pytest.param(
                "email,first_name,last_name",
                {"Surname": "last_name"},
                "'Surname'",
                id="mapping names a missing column",
            ),
        ],
    )
    def test_an_unusable_header_is_refused_before_anything_is_queued(
        self, store, tmp_path, header, mapping, named
    ):
        folder = tmp_path / "imports"
        content = csv_bytes(header, "ada@example.com,Ada,Lovelace")

        with pytest.raises(ImportFileError) as refused:
            accept(store, folder, content, mapping=mapping)

        assert named in str(refused.value)
        assert list(folder.iterdir()) == [], "the uploaded copy is removed"
        assert count(store, LeadImport) == 0

    def test_a_file_over_the_limit_is_too_large_and_leaves_nothing(
        self, store, tmp_path
    ):
        folder = tmp_path / "imports"
        content = csv_bytes("email", *(f"p{n}@example.com" for n in range(100)))

        with pytest.raises(ImportTooLarge) as refused:
            importer.accept(
                store,
                TENANT,
                io.BytesIO(content),
                filename="big.csv",
                folder=folder,
                max_bytes=len(content) - 1,
            )

        assert f"{len(content) - 1:,} bytes" in str(refused.value)
        assert list(folder.iterdir()) == []
        assert count(store, LeadImport) == 0

    def test_a_file_of_exactly_the_limit_is_taken(self, store, tmp_path):
        content = csv_bytes("email", "ada@example.com")

        row = importer.accept(
            store,
            TENANT,
            io.BytesIO(content),
            filename="leads.csv",
            folder=tmp_path / "imports",
            max_bytes=len(content),
        )

        assert row.status == "queued"
        assert Path(row.path).read_bytes() == content


class TestMapping:
    def test_a_mapping_sends_columns_where_it_says_the_rest_to_custom(
        self, store, tmp_path
    ):
        content = csv_bytes("Mail,Given,Colour", "ada@example.com,Ada,teal")

        import_id, counts = run_import(
            store,
            tmp_path / "imports",
            content,
            mapping={"Mail": "email", "Given": "first_name"},
        )

        assert counts == outcomes(created=1)
        assert the_import(store, import_id).columns == [
            ["Mail", "email"],
            ["Given", "first_name"],
            ["Colour", "Colour"],
        ]
        ada = leads_by_email(store)["ada@example.com"]
        assert (ada.first_name, ada.custom) == ("Ada", {"Colour": "teal"})


class TestFilesThatBreakOffMidWay:
    def test_the_import_is_marked_failed_with_the_reason(self, store, tmp_path):
        # A physical line over the reader's 1 MiB limit, after a good chunk.
        content = csv_bytes(
            "email,notes",
            "ada@example.com,fine",
            "bob@example.com,fine",
            "cy@example.com," + "x" * (1024 * 1024 + 10),
        )
        row = accept(store, tmp_path / "imports", content, chunk_size=2)

        with pytest.raises(ImportFileError):
            importer.run(store, row.id, owner="only", region="US")

        broken = the_import(store, row.id)
        assert broken.status == "failed"
        assert "line 4 is longer than" in (broken.error or "")
        assert broken.lease_owner is None
        assert row.id not in stored.resumable(store)


class TestLeases:
    def test_a_second_start_of_a_running_import_is_busy(self, store, tmp_path):
        row = accept(store, tmp_path / "imports", SALESFORCE_LEADS)
        importer.start(store, row.id, owner="first", region="US")

        with pytest.raises(ImportBusy):
            importer.start(store, row.id, owner="second", region="US")

    def test_after_the_lease_runs_out_another_run_takes_over(self, store, tmp_path):
        row = accept(store, tmp_path / "imports", SALESFORCE_LEADS, chunk_size=4)
        stale = importer.start(
            store, row.id, owner="stale", region="US", lease=SHORT_LEASE
        )
        reading = importer.chunks(store, stale)
        first_chunk = next(reading)
        reading.close()

        time.sleep(SHORT_LEASE.total_seconds() + 0.1)
        assert row.id in stored.resumable(store)
        counts = importer.run(store, row.id, owner="fresh", region="US")

        assert counts == outcomes(created=11)
        with pytest.raises(ImportBusy):
            importer.run_chunk(store, stale, first_chunk)
        assert count(store, Lead) == 11
        assert the_import(store, row.id).counts == outcomes(created=11)

    def test_a_run_that_lost_its_lease_writes_nothing_of_its_chunk(
        self, store, tmp_path
    ):
        row = accept(store, tmp_path / "imports", SALESFORCE_LEADS, chunk_size=4)
        stale = importer.start(
            store, row.id, owner="stale", region="US", lease=SHORT_LEASE
        )
        reading = importer.chunks(store, stale)
        chunk = next(reading)
        reading.close()
        time.sleep(SHORT_LEASE.total_seconds() + 0.1)
        importer.start(store, row.id, owner="fresh", region="US")

        with pytest.raises(ImportBusy):
            importer.run_chunk(store, stale, chunk)

        assert count(store, Lead) == 0
        assert the_import(store, row.id).records_done == 0

    def test_finish_deletes_the_upload_and_the_import_cannot_run_again(
        self, store, tmp_path
    ):
        row = accept(store, tmp_path / "imports", SALESFORCE_LEADS)
        assert Path(row.path).exists()

        importer.run(store, row.id, owner="only", region="US")

        assert not Path(row.path).exists()
        assert list((tmp_path / "imports").iterdir()) == []
        done = the_import(store, row.id)
        assert done.status == "finished"
        assert done.finished_at is not None
        assert (done.lease_owner, done.lease_expires_at) == (None, None)
        with pytest.raises(ImportBusy):
            importer.start(store, row.id, owner="later", region="US")

    def test_an_unknown_import_is_not_found(self, store):
        with pytest.raises(stored.ImportNotFound):
            importer.start(store, "no-such-import", owner="x", region="US")


class TestResume:
    CONTENT = csv_bytes(
        "email,first_name",
        "r1@example.com,One",
        "r2@example.com,Two",
        ",Nobody",
        "r4@example.com,Four",
        "r1@example.com,Uno",
        "r6@example.com,Six",
        "r6@example.com,Seis",
        "r2+tag@example.com,Two",
        "r9@example.com,Nine",
    )
    WHOLE = outcomes(created=5, merged=2, possible_duplicate=1, rejected=1)

    def abandon_after_one_chunk(self, store: Store, import_id: str) -> None:
        """A run that commits its first chunk and dies; waits out its lease."""
        dying = importer.start(
            store, import_id, owner="dying", region="US", lease=SHORT_LEASE
        )
        reading = importer.chunks(store, dying)
        importer.run_chunk(store, dying, next(reading))
        reading.close()
        time.sleep(SHORT_LEASE.total_seconds() + 0.1)

    def test_a_resumed_run_ends_with_the_counts_of_an_uninterrupted_one(
        self, store, tmp_path
    ):
        row = accept(store, tmp_path / "imports", self.CONTENT, chunk_size=3)
        self.abandon_after_one_chunk(store, row.id)
        assert the_import(store, row.id).records_done == 3

        counts = importer.run(store, row.id, owner="resumer", region="US")

        assert counts == self.WHOLE
        assert leads_by_email(store)["r1@example.com"].first_name == "Uno"
        assert totals(store) == (6, 8, 12)
        assert len(rejects_of(store, import_id=row.id)) == 1

    def test_a_rejected_records_email_before_the_break_does_not_make_a_later_merge(
        self, store, tmp_path
    ):
        # Record 1 is refused (no such status), so record 2 creates Ann; a
        # resumed run must not count her merged into the refused record.
        content = csv_bytes(
            "email,status", "ann@example.com,hot", "ann@example.com,new"
        )
        row = accept(store, tmp_path / "imports", content, chunk_size=1)
        self.abandon_after_one_chunk(store, row.id)

        counts = importer.run(store, row.id, owner="resumer", region="US")

        assert counts == outcomes(created=1, rejected=1)


def invented(n: int, salt: int) -> str:
    """A name of its own for each n: unlike its neighbours, as people's names are."""
    value = (n * 2654435761 + salt) % 26**6
    letters = []
    for _ in range(6):
        value, letter = divmod(value, 26)
        letters.append(chr(ord("a") + letter))
    return "".join(letters).capitalize()


def many_leads(total: int) -> bytes:
    """A generated file: mostly new leads, with repeats, plus addresses and rejects."""
    lines = ["email,first_name,last_name,phone,company"]
    for n in range(1, total + 1):
        if n % 97 == 0:
            lines.append(f",Nobody{n},,,No Contact Ltd")
        elif n % 89 == 0:
            lines.append(f"not-an-address-{n},Typo{n},,,Typo Ltd")
        elif n % 31 == 0 and n > 200:
            lines.append(f"lead{n - 200}@example.com,Again{n},,,Repeat Ltd")
        elif n % 53 == 0 and n > 200:
            lines.append(f"lead{n - 150}+news@example.com,Tagged{n},,,Plus Ltd")
        else:
            lines.append(
                f"lead{n}@example.com,{invented(n, 1)},{invented(n, 2)},"
                f"+1 415 {n // 1000 % 1000:03d} {n * 37 % 10000:04d},Company {n}"
            )
    return csv_bytes(*lines)


# Accepts the file in chunks of 100 (the CLI has no such option), prints the
# import's id, then runs it under a one-second lease until it is killed.
KILLED_RUN = """
import sys
from datetime import timedelta
from pathlib import Path

from leads import importer
from leads.settings import get_settings
from leads.store import Store

settings = get_settings()
store = Store(settings.store_url)
with Path(sys.argv[1]).open("rb") as source:
    row = importer.accept(
        store,
        "default",
        source,
        filename="many.csv",
        folder=settings.import_dir,
        chunk_size=100,
        max_bytes=settings.max_import_bytes,
    )
print(row.id, flush=True)
importer.run(store, row.id, owner="doomed", region="US", lease=timedelta(seconds=1))
"""


class TestResumeAfterKill:
    RECORDS = 1500

    def test_a_killed_import_resumes_to_the_counts_of_an_uninterrupted_one(
        self, backend, new_store_url, tmp_path
    ):
        content = many_leads(self.RECORDS)
        (tmp_path / "many.csv").write_bytes(content)
        (tmp_path / "killed_run.py").write_text(KILLED_RUN)
        killed_url = new_store_url(backend)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
        env |= {
            "ORCH_DATA_DIR": str(tmp_path / "data"),
            "ORCH_DATABASE_URL": killed_url,
        }
        upgraded = subprocess.run(
            [ORCHESTRATOR, "db", "upgrade"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert upgraded.returncode == 0, upgraded.stderr
        killed = Store(killed_url)
        whole = fresh_store(new_store_url, backend)
        try:
            process = subprocess.Popen(
                [sys.executable, str(tmp_path / "killed_run.py"), "many.csv"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                import_id = process.stdout.readline().strip()
                assert import_id, process.stderr.read()
                deadline = time.monotonic() + 120
                while the_import(killed, import_id).records_done < 300:
                    assert process.poll() is None, process.stderr.read()
                    assert time.monotonic() < deadline, "the import never got going"
                    time.sleep(0.01)
                os.kill(process.pid, signal.SIGKILL)
            finally:
                process.kill()
                process.communicate(timeout=30)
            assert process.returncode == -signal.SIGKILL

            cut = the_import(killed, import_id)
            assert cut.status == "running", "killed mid-way, not finished"
            assert 300 <= cut.records_done < self.RECORDS
            deadline = time.monotonic() + 30
            while import_id not in stored.resumable(killed):
                assert time.monotonic() < deadline, "the lease never ran out"
                time.sleep(0.1)
            resumed = importer.run(killed, import_id, owner="resumer", region="US")
            _, uninterrupted = run_import(
                whole, tmp_path / "whole", content, chunk_size=100
            )

            assert resumed == uninterrupted
            assert uninterrupted["merged"] and uninterrupted["possible_duplicate"]
            assert uninterrupted["rejected"] and uninterrupted["created"]
            assert sum(uninterrupted.values()) == self.RECORDS
            assert totals(killed) == totals(whole)
            assert count(killed, ImportReject) == count(whole, ImportReject)
            assert sorted(leads_by_email(killed)) == sorted(leads_by_email(whole))
            done = the_import(killed, import_id)
            assert (done.status, done.records_done) == ("finished", self.RECORDS)
        finally:
            killed.dispose()
            whole.dispose()
