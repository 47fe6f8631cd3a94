"""Upserting, reading and listing changed Leads through sObject Collections and SOQL."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from connectors.crm.budget import Unlimited
from connectors.crm.errors import CrmRequestError
from connectors.crm.protocol import CrmRecord
from connectors.crm.salesforce import soql
from connectors.crm.salesforce.client import SalesforceClient

EXTERNAL_ID = "Web_Lead_Id__c"


def leads(count: int, **fields: Any) -> list[CrmRecord]:
    return [
        CrmRecord(
            ref=f"lead-{n}",
            key=f"lead-{n}",
            fields={"LastName": f"Last{n}", "Company": "Acme (fake)"} | fields,
        )
        for n in range(count)
    ]


def email_leads(count: int) -> list[CrmRecord]:
    return [
        CrmRecord(
            ref=f"lead-{n}",
            key=f"person{n}@example.com",
            fields={"LastName": f"Last{n}", "Company": "Acme (fake)"},
        )
        for n in range(count)
    ]


class TestUpsertByExternalId:
    def test_takes_one_call_per_200_records(self, sandbox: Any) -> None:
        connector = sandbox.connector(external_id_field=EXTERNAL_ID)

        results = connector.upsert(leads(450))

        assert all(result.outcome == "created" for result in results)
        assert sandbox.requests()["composite_upsert"] == 3
        assert len(sandbox.leads()) == 450

    def test_a_second_run_updates_the_same_leads(self, sandbox: Any) -> None:
        connector = sandbox.connector(external_id_field=EXTERNAL_ID)
        first = connector.upsert(leads(3))

        second = connector.upsert(leads(3, Title="CTO"))

        assert [r.outcome for r in second] == ["updated"] * 3
        assert [r.crm_id for r in second] == [r.crm_id for r in first]
        assert {lead["Title"] for lead in sandbox.leads()} == {"CTO"}

    @pytest.mark.parametrize("key", ["a/b", "100% sure", "x y+z", "ü/%2F?#"])
    def test_percent_encodes_the_external_id_in_the_url(
        self, sandbox: Any, key: str
    ) -> None:
        connector = sandbox.connector(external_id_field=EXTERNAL_ID)
        record = CrmRecord("lead-1", key, {"LastName": "Slash", "Company": "C"})

        [created] = connector.upsert([record])
        [updated] = connector.upsert([record])

        assert (created.outcome, updated.outcome) == ("created", "updated")
        assert sandbox.lead(Web_Lead_Id__c=key)["Id"] == created.crm_id
        assert sandbox.requests()["upsert"] == 2

    def test_a_too_long_value_fails_that_record_with_its_field(
        self, sandbox: Any
    ) -> None:
        connector = sandbox.connector(external_id_field=EXTERNAL_ID)
        records = leads(2)
        records[1] = CrmRecord(
            "lead-1", "lead-1", {"LastName": "x" * 81, "Company": "C"}
        )

        ok, too_long = connector.upsert(records)

        assert ok.outcome == "created"
        assert too_long.outcome == "failed"
        assert too_long.failure is not None
        assert too_long.failure.code == "STRING_TOO_LONG"
        assert too_long.failure.fields == ("LastName",)
        assert not too_long.failure.retryable

    def test_an_empty_string_clears_the_field_and_absent_fields_stay(
        self, sandbox: Any
    ) -> None:
        connector = sandbox.connector(external_id_field=EXTERNAL_ID)
        connector.upsert(leads(1, Title="CTO", Phone="+44 20 7946 0000"))

        connector.upsert([CrmRecord("lead-0", "lead-0", {"Title": ""})])

        lead = sandbox.lead(Web_Lead_Id__c="lead-0")
        assert lead["Title"] is None
        assert lead["Phone"] == "+44 20 7946 0000"

    def test_writes_dates_and_utc_datetimes_as_salesforce_wants(
        self, sandbox: Any
    ) -> None:
        connector = sandbox.connector(external_id_field=EXTERNAL_ID)
        captured = date(2024, 2, 29)
        [result] = connector.upsert(
            leads(
                1,
                Captured_Date__c=captured,
                Lead_Score__c=71.5,
                HasOptedOutOfEmail=True,
            )
        )
        assert result.outcome == "created"
        lead = sandbox.lead(Web_Lead_Id__c="lead-0")
        assert lead["Captured_Date__c"] == "2024-02-29"
        assert (lead["Lead_Score__c"], lead["HasOptedOutOfEmail"]) == (71.5, True)

    def test_refuses_a_naive_datetime_before_sending(self, sandbox: Any) -> None:
        connector = sandbox.connector(external_id_field=EXTERNAL_ID)
        [result] = connector.upsert(leads(1, Description=datetime(2024, 1, 1, 9, 0)))
        assert result.failure is not None
        assert result.failure.code == "invalid_value"
        assert sandbox.requests().get("upsert", 0) == 0


class TestUpsertByEmail:
    def test_all_new_leads_take_two_calls_per_200(self, sandbox: Any) -> None:
        connector = sandbox.connector()

        results = connector.upsert(email_leads(250))

        assert all(result.outcome == "created" for result in results)
        counts = sandbox.requests()
        assert (counts["query"], counts["composite_create"]) == (2, 2)

    def test_known_emails_are_updated_by_id_whatever_their_case(
        self, sandbox: Any
    ) -> None:
        [known] = sandbox.seed(
            {"LastName": "Old", "Company": "C", "Email": "Person0@Example.com"}
        )
        connector = sandbox.connector()

        first, second = connector.upsert(email_leads(2))

        assert (first.outcome, first.crm_id) == ("updated", known)
        assert second.outcome == "created"
        counts = sandbox.requests()
        assert (counts["query"], counts["update"], counts["create"]) == (1, 1, 1)
        assert sandbox.lead(Id=known)["Email"] == "Person0@Example.com"

    @pytest.mark.parametrize("count", [1, 2])
    def test_a_known_email_updates_its_oldest_lead(
        self, sandbox: Any, count: int
    ) -> None:
        # Seeded newest first, so the org's own order would give the newer one.
        newer, older = sandbox.seed(
            {
                "Email": "person0@example.com",
                "LastName": "Newer",
                "Company": "C",
                "CreatedDate": "2024-06-01T09:00:00.000+0000",
            },
            {
                "Email": "person0@example.com",
                "LastName": "Older",
                "Company": "C",
                "CreatedDate": "2024-01-01T09:00:00.000+0000",
            },
        )
        connector = sandbox.connector()

        results = connector.upsert(email_leads(count))

        assert (results[0].outcome, results[0].crm_id) == ("updated", older)
        assert sandbox.lead(Id=newer)["LastName"] == "Newer"

    def test_the_same_key_twice_in_one_call_updates_the_first(
        self, sandbox: Any
    ) -> None:
        connector = sandbox.connector()
        record = email_leads(1)[0]
        again = CrmRecord("lead-again", record.key, {"Title": "CEO"})

        first, second = connector.upsert([record, again])

        assert (first.outcome, second.outcome) == ("created", "updated")
        assert first.crm_id == second.crm_id
        assert len(sandbox.leads()) == 1


class TestPartialFailures:
    """SF-04: results are zipped to inputs by position, failed rows keep their codes."""

    def sf04_records(self, cases: Any) -> list[CrmRecord]:
        return [
            CrmRecord(
                ref=f"row-{lead['row']}",
                key=lead["Email"],
                fields={
                    name: value
                    for name, value in lead.items()
                    if name not in ("row", "Email")
                },
            )
            for lead in cases("SF-04")["input"]["leads"]
        ]

    def test_rows_two_and_three_fail_with_their_codes(
        self, sandbox: Any, cases: Any
    ) -> None:
        connector = sandbox.connector()

        results = connector.upsert(self.sf04_records(cases))

        assert [r.outcome for r in results] == [
            "created",
            "failed",
            "failed",
            "created",
        ]
        ids = {lead["Email"]: lead["Id"] for lead in sandbox.leads()}
        assert results[0].crm_id == ids["k.abara@example.com"]
        assert results[3].crm_id == ids["t.dube@example.com"]
        picklist, required = results[1].failure, results[2].failure
        assert picklist is not None and required is not None
        assert (picklist.code, picklist.fields) == (
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            ("LeadSource",),
        )
        assert (required.code, required.fields) == (
            "REQUIRED_FIELD_MISSING",
            ("LastName",),
        )

    def test_a_rerun_sends_only_the_failed_rows(self, sandbox: Any, cases: Any) -> None:
        connector = sandbox.connector()
        records = self.sf04_records(cases)
        results = connector.upsert(records)
        before = {lead["Id"]: lead["LastModifiedDate"] for lead in sandbox.leads()}
        sandbox.http.delete("/_sandbox/salesforce/requests")

        retry = [
            CrmRecord(r.ref, r.key, dict(r.fields) | fixes)
            for r, result, fixes in zip(
                records,
                results,
                [{}, {"LeadSource": "Webinar"}, {"LastName": "Cole"}, {}],
                strict=True,
            )
            if not result.ok
        ]
        rerun = connector.upsert(retry)

        assert [r.ref for r in retry] == ["row-2", "row-3"]
        assert [r.outcome for r in rerun] == ["created", "created"]
        after = {lead["Id"]: lead["LastModifiedDate"] for lead in sandbox.leads()}
        assert len(after) == 4
        assert all(after[lead_id] == stamp for lead_id, stamp in before.items())
        assert sandbox.requests()["composite_create"] == 1

    def test_fewer_results_than_records_marks_the_whole_batch_unknown(
        self, sandbox: Any, cases: Any
    ) -> None:
        connector = sandbox.connector()
        short_reply = cases("SF-04")["input"]["bulk_results_in_order"][:1]
        sandbox.arm(
            method="POST", path="/composite/sobjects$", status=200, body=short_reply
        )

        results = connector.upsert(self.sf04_records(cases))

        assert [r.outcome for r in results] == ["failed"] * 4
        assert {r.failure.code for r in results if r.failure} == {"unknown"}
        assert all(r.failure and r.failure.retryable for r in results)


class TestDuplicateRule:
    """SF-06: a duplicate-rule refusal updates the Lead it matched instead."""

    def test_merges_into_the_matched_lead_with_one_update(
        self, sandbox: Any, cases: Any
    ) -> None:
        case = cases("SF-06")
        reply = case["input"]["salesforce_reply_to_create"]["body"][0]
        [match] = reply["duplicateResult"]["matchResults"][0]["matchRecords"]
        existing = match["record"]
        sandbox.seed(
            {
                "Id": existing["Id"],
                "Email": existing["Email"],
                "LastName": "Ilves",
                "Company": "Ilves OÜ (fake)",
            }
        )
        sandbox.settings(duplicate_rule=True)
        connector = sandbox.connector(external_id_field=EXTERNAL_ID)
        lead = case["input"]["lead"]

        [result] = connector.upsert([CrmRecord("web-77", "web-77", lead)])

        assert result.outcome == "updated"
        assert result.note == "duplicate_rule"
        assert result.crm_id == case["expected"]["salesforce_id"]
        assert len(sandbox.leads()) == 1
        assert sandbox.requests()["update"] == 1
        merged = sandbox.lead(Id=existing["Id"])
        assert (merged["Description"], merged["Web_Lead_Id__c"]) == (
            "Asked for pricing",
            "web-77",
        )

    def test_many_refusals_are_merged_in_one_collection_update(
        self, sandbox: Any
    ) -> None:
        ids = sandbox.seed(
            *(
                {"Email": f"Person{n}@example.com", "LastName": "Old", "Company": "C"}
                for n in range(3)
            )
        )
        sandbox.settings(duplicate_rule=True)
        connector = sandbox.connector(external_id_field=EXTERNAL_ID)
        records = [
            CrmRecord(
                f"lead-{n}",
                f"lead-{n}",
                {"Email": f"person{n}@example.com", "LastName": "New", "Company": "C"},
            )
            for n in range(3)
        ]

        results = connector.upsert(records)

        assert [r.crm_id for r in results] == ids
        assert {r.note for r in results} == {"duplicate_rule"}
        assert sandbox.requests()["composite_update"] == 1


class TestDuplicateRuleMatchingOtherObjects:
    """SF-06: only a Lead the rule matched takes the update, whatever comes first."""

    def refusal(self, *matches: tuple[str, str]) -> list[dict[str, Any]]:
        """A DUPLICATES_DETECTED reply whose rule matched `(entityType, Id)`s."""
        return [
            {
                "errorCode": "DUPLICATES_DETECTED",
                "message": "Use one of these records?",
                "fields": [],
                "duplicateResult": {
                    "duplicateRule": "Lead_And_Contact_Rule",
                    "allowSave": False,
                    "matchResults": [
                        {
                            "entityType": entity,
                            "matchRecords": [
                                {"record": {"Id": record_id, "Email": "r@example.com"}}
                            ],
                        }
                        for entity, record_id in matches
                    ],
                },
            }
        ]

    def test_a_rule_matching_only_a_contact_fails_the_record_for_good(
        self, sandbox: Any
    ) -> None:
        contact_id = "003000000000042AAA"
        sandbox.arm(
            method="POST",
            path=r"/sobjects/Lead/$",
            status=400,
            body=self.refusal(("Contact", contact_id)),
        )
        connector = sandbox.connector()

        [result] = connector.upsert(
            [CrmRecord("r", "r@example.com", {"LastName": "R", "Company": "C"})]
        )

        assert result.outcome == "failed"
        assert result.failure is not None
        assert (result.failure.code, result.failure.retryable) == (
            "DUPLICATES_DETECTED",
            False,
        )
        assert f"Contact {contact_id}" in result.failure.message
        counts = sandbox.requests()
        assert counts.get("update", 0) == counts.get("composite_update", 0) == 0
        assert sandbox.leads() == []

    def test_the_matched_lead_is_updated_even_when_a_contact_is_listed_first(
        self, sandbox: Any
    ) -> None:
        [lead_id] = sandbox.seed(
            {"Email": "rosa@old.example.com", "LastName": "Old", "Company": "C"}
        )
        sandbox.arm(
            method="POST",
            path=r"/sobjects/Lead/$",
            status=400,
            body=self.refusal(("Contact", "003000000000042AAA"), ("Lead", lead_id)),
        )
        connector = sandbox.connector()

        [result] = connector.upsert(
            [CrmRecord("r", "r@example.com", {"LastName": "New", "Company": "C"})]
        )

        assert (result.outcome, result.crm_id, result.note) == (
            "updated",
            lead_id,
            "duplicate_rule",
        )
        assert sandbox.lead(Id=lead_id)["LastName"] == "New"
        assert sandbox.requests()["update"] == 1


class TestReading:
    def test_reads_by_email_with_lower_cased_keys(self, sandbox: Any) -> None:
        [lead_id] = sandbox.seed(
            {"Email": "Rosa.Ilves@example.com", "LastName": "Ilves", "Company": "C"}
        )
        connector = sandbox.connector()

        found = connector.read(
            ["rosa.ilves@example.com", "nobody@example.com"], ["LastName"]
        )

        assert list(found) == ["rosa.ilves@example.com"]
        snapshot = found["rosa.ilves@example.com"]
        assert (snapshot.crm_id, snapshot.fields) == (lead_id, {"LastName": "Ilves"})
        assert snapshot.updated_at is not None and snapshot.updated_at.tzinfo

    def test_reads_by_external_id_one_query_per_200(self, sandbox: Any) -> None:
        connector = sandbox.connector(external_id_field=EXTERNAL_ID)
        connector.upsert(leads(250))
        sandbox.http.delete("/_sandbox/salesforce/requests")

        found = connector.read([f"lead-{n}" for n in range(250)], ["Company"])

        assert len(found) == 250
        assert sandbox.requests()["query"] == 2

    def test_changed_pages_through_every_lead_once(self, sandbox: Any) -> None:
        start = datetime(2024, 3, 1, tzinfo=UTC)
        sandbox.seed(
            *(
                {
                    "LastName": f"L{n}",
                    "Company": "C",
                    "Email": f"p{n}@example.com",
                    "LastModifiedDate": (start + timedelta(hours=n)).strftime(
                        "%Y-%m-%dT%H:%M:%S.000+0000"
                    ),
                }
                for n in range(7)
            )
        )
        sandbox.settings(page_size=2)
        connector = sandbox.connector()

        changed = list(
            connector.changed(start, start + timedelta(hours=6), ["LastName"])
        )

        assert [s.fields["LastName"] for s in changed] == [f"L{n}" for n in range(6)]
        assert [s.key for s in changed][0] == "p0@example.com"
        counts = sandbox.requests()
        assert (counts["query"], counts["query_more"]) == (1, 2)

    def test_changed_refuses_naive_datetimes(self, sandbox: Any) -> None:
        connector = sandbox.connector()
        with pytest.raises(CrmRequestError):
            list(connector.changed(datetime(2024, 1, 1), datetime(2024, 2, 1), []))


class TestSoql:
    """SF-02: values reach SOQL escaped with backslashes, never with doubled quotes."""

    def test_builds_the_expected_queries(self, cases: Any) -> None:
        case = cases("SF-02")
        lead = case["input"]["lead"]
        prefix = case["input"]["lookups"][2]["prefix"]

        built = {
            "by_email": soql.lead_ids_by_email(lead["Email"]),
            "by_company": soql.account_ids_by_name(lead["Company"]),
            "company_prefix": soql.account_ids_by_name_prefix(prefix),
        }

        expected = case["expected"]["soql"]
        # The e-mail lookup also orders by age, so "its oldest Lead" holds (SF-06).
        assert built["by_email"] == expected["by_email"] + " ORDER BY CreatedDate, Id"
        assert built["by_company"] == expected["by_company"]
        assert built["company_prefix"] == expected["company_prefix"]
        for query in built.values():
            for fragment in case["expected"]["must_not_contain"]:
                assert fragment not in query

    def test_the_queries_find_the_seeded_records(
        self, sandbox: Any, cases: Any
    ) -> None:
        case = cases("SF-02")
        lead = case["input"]["lead"]
        [lead_id] = sandbox.seed(lead)
        [company_id, growth_id, _] = sandbox.seed(
            {"Name": lead["Company"]},
            {"Name": "100%_Growth Partners"},
            {"Name": "1000 Growth"},
            sobject="Account",
        )
        connector = sandbox.connector()
        client = SalesforceClient(sandbox.credentials(), budget=Unlimited())

        def account_ids(query: str) -> list[str]:
            reply = client.call("find accounts", lambda sf: sf.query_all(query))
            return [str(record["Id"]) for record in reply["records"]]

        with closing(client):
            [result] = connector.upsert(
                [CrmRecord("dan", lead["Email"], {"Title": "Owner"})]
            )
            by_name = account_ids(soql.account_ids_by_name(lead["Company"]))
            by_prefix = account_ids(soql.account_ids_by_name_prefix("100%_Growth"))

        assert (result.outcome, result.crm_id) == ("updated", lead_id)
        assert (by_name, by_prefix) == ([company_id], [growth_id])

    def test_field_names_must_be_api_names(self) -> None:
        with pytest.raises(CrmRequestError):
            soql.leads_by_keys("Email", ["a@example.com"], ["Name FROM Lead --"])
