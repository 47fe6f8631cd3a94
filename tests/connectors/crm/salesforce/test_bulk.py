"""Upserts above the bulk threshold go through Bulk API 2.0 jobs."""

from __future__ import annotations

import time
import unicodedata
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.crm.protocol import CrmRecord

EXTERNAL_ID = "Web_Lead_Id__c"
# The job-state PATCH (`UploadComplete`, `Aborted`), not the upload's PUT.
JOB_STATE = r"/jobs/ingest/[^/]+$"


class TestNonLatinLeads:
    """SF-07: the CSV goes out as UTF-8 bytes and comes back unchanged."""

    def sf07_records(self, cases: Any) -> list[CrmRecord]:
        return [
            CrmRecord(
                ref=lead[EXTERNAL_ID],
                key=lead[EXTERNAL_ID],
                fields={k: v for k, v in lead.items() if k != EXTERNAL_ID},
            )
            for lead in cases("SF-07")["input"]["leads"]
        ]

    def test_every_row_succeeds_and_reads_back_equal(
        self, sandbox: Any, cases: Any
    ) -> None:
        connector = sandbox.connector(external_id_field=EXTERNAL_ID, bulk_threshold=2)
        records = self.sf07_records(cases)

        results = connector.upsert(records)

        assert [r.outcome for r in results] == ["created"] * 3
        assert sandbox.requests()["bulk_create"] == 1
        [job] = sandbox.state.salesforce.jobs.values()
        assert "Café Zoë™ GmbH (fake)" in job.data.decode("utf-8")
        found = connector.read(
            [r.key for r in records], ["FirstName", "LastName", "Company"]
        )
        for record in records:
            for name, value in record.fields.items():
                stored = found[record.key].fields[name]
                assert unicodedata.normalize("NFC", stored) == value
        ids = {r.ref: r.crm_id for r in results}
        assert ids == {key: snapshot.crm_id for key, snapshot in found.items()}


class TestResults:
    def test_result_files_are_read_as_utf8_to_match_non_ascii_keys(
        self, sandbox: Any
    ) -> None:
        connector = sandbox.connector(external_id_field=EXTERNAL_ID, bulk_threshold=2)
        keys = ["ключ-1", "鍵-2", "clé-3"]
        records = [CrmRecord(k, k, {"LastName": "L", "Company": "C"}) for k in keys]

        results = connector.upsert(records)

        assert [r.outcome for r in results] == ["created"] * 3
        assert {r.crm_id for r in results} == {lead["Id"] for lead in sandbox.leads()}

    def test_failed_rows_are_matched_to_records_by_key(self, sandbox: Any) -> None:
        connector = sandbox.connector(external_id_field=EXTERNAL_ID, bulk_threshold=2)
        records = [
            CrmRecord(f"w-{n}", f"w-{n}", {"LastName": f"L{n}", "Company": "C"})
            for n in range(5)
        ]
        records[1] = CrmRecord("w-1", "w-1", {"LastName": "", "Company": "C"})
        records[3] = CrmRecord("w-3", "w-3", {"LastName": "L", "Email": "not-an-email"})

        results = connector.upsert(records)

        outcomes = [(r.ref, r.outcome) for r in results]
        assert outcomes == [
            ("w-0", "created"),
            ("w-1", "failed"),
            ("w-2", "created"),
            ("w-3", "failed"),
            ("w-4", "created"),
        ]
        assert results[1].failure is not None
        assert (results[1].failure.code, results[1].failure.fields) == (
            "REQUIRED_FIELD_MISSING",
            ("LastName",),
        )
        assert results[3].failure is not None
        assert results[3].failure.code in (
            "REQUIRED_FIELD_MISSING",
            "INVALID_EMAIL_ADDRESS",
        )

    def test_by_email_inserts_new_and_updates_known_leads(self, sandbox: Any) -> None:
        [known] = sandbox.seed(
            {"Email": "p1@example.com", "LastName": "Old", "Company": "C"}
        )
        connector = sandbox.connector(bulk_threshold=2)
        records = [
            CrmRecord(
                f"lead-{n}", f"p{n}@example.com", {"LastName": f"L{n}", "Company": "C"}
            )
            for n in range(3)
        ]

        results = connector.upsert(records)

        assert [r.outcome for r in results] == ["created", "updated", "created"]
        assert results[1].crm_id == known
        assert sandbox.lead(Id=known)["LastName"] == "L1"
        counts = sandbox.requests()
        assert (counts["query"], counts["bulk_create"]) == (1, 2)

    def test_a_job_that_stopped_fails_every_row_as_retryable(
        self, sandbox: Any
    ) -> None:
        sandbox.settings(bulk_fail_after=1)
        connector = sandbox.connector(external_id_field=EXTERNAL_ID, bulk_threshold=2)
        records = [
            CrmRecord(f"w-{n}", f"w-{n}", {"LastName": "L", "Company": "C"})
            for n in range(3)
        ]

        results = connector.upsert(records)

        assert [r.outcome for r in results] == ["failed"] * 3
        assert all(r.failure and r.failure.retryable for r in results)
        sandbox.settings(bulk_fail_after=None)
        again = connector.upsert(records)
        assert [r.outcome for r in again] == ["updated", "created", "created"]

    def test_duplicate_rule_refusals_in_a_job_are_merged(self, sandbox: Any) -> None:
        [known] = sandbox.seed(
            {"Email": "p0@example.com", "LastName": "Old", "Company": "C"}
        )
        sandbox.settings(duplicate_rule=True)
        connector = sandbox.connector(external_id_field=EXTERNAL_ID, bulk_threshold=1)
        records = [
            CrmRecord(
                f"w-{n}",
                f"w-{n}",
                {"LastName": "New", "Company": "C", "Email": f"p{n}@example.com"},
            )
            for n in range(2)
        ]

        merged, created = connector.upsert(records)

        assert (merged.outcome, merged.crm_id, merged.note) == (
            "updated",
            known,
            "duplicate_rule",
        )
        assert created.outcome == "created"


class TestDeadline:
    """A job still running at `bulk_timeout_seconds` is given up, not waited on."""

    def stall_next_job(self, sandbox: Any) -> None:
        # Salesforce accepts the upload but has not run the job by the
        # deadline: the sandbox answers the close and leaves the job Open.
        sandbox.arm(
            method="PATCH",
            path=JOB_STATE,
            status=200,
            body={"state": "UploadComplete"},
        )

    def test_a_job_past_the_deadline_is_aborted_and_its_rows_retryable(
        self, sandbox: Any
    ) -> None:
        self.stall_next_job(sandbox)
        connector = sandbox.connector(
            external_id_field=EXTERNAL_ID, bulk_threshold=2, bulk_timeout_seconds=1
        )
        records = [
            CrmRecord(f"w-{n}", f"w-{n}", {"LastName": "L", "Company": "C"})
            for n in range(3)
        ]

        started = time.monotonic()
        results = connector.upsert(records)
        waited = time.monotonic() - started

        assert 1 <= waited < 10
        assert [r.outcome for r in results] == ["failed"] * 3
        assert {
            (r.failure.code, r.failure.retryable) for r in results if r.failure
        } == {("bulk_timeout", True)}
        [job] = sandbox.state.salesforce.jobs.values()
        assert job.state == "Aborted"
        assert sandbox.leads() == []

    def test_the_jobs_of_one_upsert_share_the_deadline(self, sandbox: Any) -> None:
        [known] = sandbox.seed(
            {"Email": "p1@example.com", "LastName": "Old", "Company": "C"}
        )
        self.stall_next_job(sandbox)
        connector = sandbox.connector(bulk_threshold=2, bulk_timeout_seconds=1)
        records = [
            CrmRecord(
                f"lead-{n}", f"p{n}@example.com", {"LastName": f"L{n}", "Company": "C"}
            )
            for n in range(3)
        ]

        results = connector.upsert(records)

        assert [r.failure.code for r in results if r.failure] == ["bulk_timeout"] * 3
        # The insert job used the time up; the update job was never started.
        assert sandbox.requests()["bulk_create"] == 1
        assert sandbox.lead(Id=known)["LastName"] == "Old"

    def test_the_deadline_stays_well_inside_the_ten_minute_claim_lease(
        self, sandbox: Any
    ) -> None:
        assert sandbox.credentials().bulk_timeout_seconds == 240
        with pytest.raises(ValidationError, match="bulk_timeout_seconds"):
            sandbox.credentials(bulk_timeout_seconds=600)
