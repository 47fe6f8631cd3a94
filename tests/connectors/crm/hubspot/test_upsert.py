"""Upserting contacts: batch upsert by e-mail, per-record results, conflicts, splits."""

from __future__ import annotations

from datetime import UTC, date, datetime

from connectors.crm.protocol import CrmRecord, SyncResult

UPSERT = "POST /crm/v3/objects/contacts/batch/upsert"
PATCH = "PATCH /crm/v3/objects/contacts/{contact_id}"
BATCH_REPLY = {
    "status": "COMPLETE",
    "startedAt": "2024-05-02T09:00:00Z",
    "completedAt": "2024-05-02T09:00:01Z",
}


def lead(ref: str, email: str, **fields) -> CrmRecord:
    return CrmRecord(ref=ref, key=email, fields=fields)


def without_email(row: dict) -> dict:
    return {name: value for name, value in row.items() if name != "email"}


def existing(contact_id: int, email: str, **properties: str) -> dict:
    return {"id": contact_id, "properties": {"email": email} | properties}


class TestHS01ExistingContact:
    def test_an_existing_contact_is_updated_by_one_upsert_not_created(
        self, sandbox, case
    ):
        given = case("HS-01")["input"]["lead"]
        sandbox.seed(contacts=[existing(90210, "priya.nair@example.com")])
        (result,) = sandbox.connector().upsert(
            [lead("l1", given["email"], **without_email(given))]
        )

        assert (result.outcome, result.crm_id, result.failure) == (
            "updated",
            "90210",
            None,
        )
        assert list(sandbox.contacts()) == ["priya.nair@example.com"]
        (sent,) = sandbox.bodies(UPSERT)
        assert sent["inputs"][0]["id"] == "priya.nair@example.com"
        assert sent["inputs"][0]["properties"]["email"] == "priya.nair@example.com"
        assert sandbox.count("POST /crm/v3/objects/contacts/search") == 0

    def test_a_409_on_the_write_is_resolved_to_an_update_of_the_named_contact(
        self, sandbox, case
    ):
        replies = case("HS-01")["input"]["hubspot_replies_in_order"]
        conflict = next(r for r in replies if r["status"] == 409)
        sandbox.seed(contacts=[existing(90210, "priya.nair@example.com")])
        sandbox.arm(path="batch/upsert", status=409, body=conflict["body"])

        (result,) = sandbox.connector().upsert(
            [lead("l1", "Priya.Nair@Example.com", firstname="Priya")]
        )

        assert (result.outcome, result.crm_id, result.note) == (
            "updated",
            "90210",
            "conflict",
        )
        assert sandbox.count(PATCH) == 1
        assert (
            sandbox.contacts()["priya.nair@example.com"]["properties"]["firstname"]
            == "Priya"
        )
        assert len(sandbox.contacts()) == 1

    def test_a_409_without_an_id_looks_the_contact_up_by_email(self, sandbox):
        sandbox.seed(contacts=[existing(4242, "x@example.com")])
        sandbox.arm(path="batch/upsert", status=409)

        (result,) = sandbox.connector().upsert(
            [lead("l1", "x@example.com", city="Oslo")]
        )

        assert (result.outcome, result.crm_id, result.note) == (
            "updated",
            "4242",
            "conflict",
        )
        assert sandbox.count("GET /crm/v3/objects/contacts/{contact_id}") == 1


class TestHS02EmailKeyedWrites:
    def test_email_keyed_writes_go_to_batch_upsert_by_email(self, sandbox, case):
        updates = case("HS-02")["input"]["updates"]
        expected = case("HS-02")["expected"]["body"]["inputs"]
        records = [
            lead(f"l{i}", u["email"], **u["properties"]) for i, u in enumerate(updates)
        ]

        results = sandbox.connector().upsert(records)

        assert [r.outcome for r in results] == ["created", "created"]
        (sent,) = sandbox.bodies(UPSERT)
        for want, got in zip(expected, sent["inputs"], strict=True):
            assert got["idProperty"] == want["idProperty"] == "email"
            assert got["id"] == want["id"]
            assert got["properties"].items() >= want["properties"].items()
        assert sandbox.count("POST /crm/v3/objects/contacts/batch/update") == 0

    def test_a_reply_with_fewer_results_marks_the_missing_ones_unknown(self, sandbox):
        only_one = {
            "id": "501",
            "properties": {"email": "omar.haddad@example.com"},
            "createdAt": "2024-05-02T09:00:00Z",
            "updatedAt": "2024-05-02T09:00:00Z",
            "archived": False,
            "new": False,
        }
        sandbox.arm(
            path="batch/upsert", status=200, body=BATCH_REPLY | {"results": [only_one]}
        )

        omar, lin = sandbox.connector().upsert(
            [
                lead("omar", "omar.haddad@example.com", lead_score=62),
                lead("lin", "lin.wu@example.com", lead_score=81),
            ]
        )

        assert (omar.outcome, omar.crm_id) == ("updated", "501")
        assert lin.outcome == "failed"
        assert lin.failure.code == "unknown"


class TestHS03MixedBatch:
    def test_each_lead_of_a_mixed_batch_gets_its_own_status(self, sandbox, case):
        given = case("HS-03")["input"]
        expected = case("HS-03")["expected"]["per_lead"]
        sandbox.seed(
            contacts=[
                existing(int(i), email)
                for email, i in given["existing_in_hubspot"].items()
            ]
        )
        records = [
            CrmRecord(row["email"], row["email"], without_email(row))
            for row in given["batch"]
        ]

        results = {r.ref: r for r in sandbox.connector().upsert(records)}

        for email, want in expected.items():
            assert results[email].outcome == want["status"]
            if "hubspot_id" in want:
                assert results[email].crm_id == want["hubspot_id"]
        assert len(sandbox.contacts()) == 3

    def test_a_whole_batch_409_is_split_until_every_lead_has_a_status(
        self, sandbox, case
    ):
        given = case("HS-03")["input"]
        sandbox.seed(
            contacts=[
                existing(int(i), email)
                for email, i in given["existing_in_hubspot"].items()
            ]
        )
        sandbox.arm(
            path="batch/upsert", status=409, body=given["reply_to_batch_create"]["body"]
        )
        records = [lead(row["email"], row["email"]) for row in given["batch"]]

        results = {r.ref: r for r in sandbox.connector().upsert(records)}

        assert results["ana.ruiz@example.com"].crm_id == "5101"
        assert results["ben.ott@example.com"].crm_id == "5102"
        assert results["cai.lopes@example.com"].outcome == "created"
        assert all(r.ok for r in results.values())


class TestDuplicatesInOneCall:
    def test_two_records_with_one_email_become_one_input_and_share_a_result(
        self, sandbox
    ):
        records = [
            lead("row1", "sam.ortiz@example.com", firstname="Sam", phone=""),
            lead("row2", "vera.kos@example.com", firstname="Vera"),
            lead("row3", "Sam.Ortiz@Example.com ", firstname="Samuel", phone="+1415"),
        ]

        row1, row2, row3 = sandbox.connector().upsert(records)

        (sent,) = sandbox.bodies(UPSERT)
        assert len(sent["inputs"]) == 2
        assert row1 == SyncResult("row1", row3.outcome, row3.crm_id)
        assert row1.outcome == "created" and row2.outcome == "created"
        sam = sandbox.contacts()["sam.ortiz@example.com"]["properties"]
        assert (sam["firstname"], sam["phone"]) == ("Samuel", "+1415")


class TestBatching:
    def test_250_records_go_in_calls_of_at_most_100(self, sandbox):
        records = [lead(f"l{i}", f"p{i}@example.com") for i in range(250)]

        results = sandbox.connector().upsert(records)

        assert [len(b["inputs"]) for b in sandbox.bodies(UPSERT)] == [100, 100, 50]
        assert [r.ref for r in results] == [r.ref for r in records]
        assert all(r.outcome == "created" for r in results)
        assert len(sandbox.contacts()) == 250

    def test_a_bad_record_is_isolated_by_splitting_so_the_others_are_written(
        self, sandbox
    ):
        records = [lead(f"l{i}", f"p{i}@example.com", firstname="P") for i in range(8)]
        records[5] = lead("l5", "p5@example.com", lifecyclestage="prospect")

        results = sandbox.connector().upsert(records)

        failed = [r for r in results if not r.ok]
        assert [r.ref for r in failed] == ["l5"]
        assert failed[0].failure.code == "INVALID_OPTION"
        assert failed[0].failure.fields == ("lifecyclestage",)
        assert not failed[0].failure.retryable
        assert len(sandbox.contacts()) == 7
        assert sandbox.count(UPSERT) <= 1 + 2 * 3

    def test_per_item_errors_in_a_207_fail_only_their_record(self, sandbox):
        created = {
            "id": "601",
            "properties": {"email": "ok@example.com"},
            "createdAt": "2024-05-02T09:00:00Z",
            "updatedAt": "2024-05-02T09:00:00Z",
            "archived": False,
            "new": True,
        }
        error = {
            "status": "error",
            "category": "VALIDATION_ERROR",
            "message": "Email address bad@example is invalid",
            "context": {"ids": ["bad@example"]},
            "links": {},
            "errors": [
                {
                    "message": "Email address bad@example is invalid",
                    "code": "INVALID_EMAIL",
                    "context": {"propertyName": ["email"]},
                }
            ],
        }
        sandbox.arm(
            path="batch/upsert",
            status=207,
            body=BATCH_REPLY
            | {"results": [created], "numErrors": 1, "errors": [error]},
        )

        bad, ok = sandbox.connector().upsert(
            [lead("bad", "bad@example"), lead("ok", "ok@example.com")]
        )

        assert (ok.outcome, ok.crm_id) == ("created", "601")
        assert bad.outcome == "failed"
        assert bad.failure.code == "INVALID_EMAIL"
        assert bad.failure.fields == ("email",)

    def test_a_207_error_is_pinned_only_on_the_address_it_names_whole(self, sandbox):
        error = {
            "status": "error",
            "category": "VALIDATION_ERROR",
            "message": "Contact 'Ann@x.com' could not be written: owner is archived",
            "context": {},
            "errors": [{"message": "owner is archived", "code": "INVALID_OWNER"}],
        }
        sandbox.arm(
            path="batch/upsert",
            status=207,
            body=BATCH_REPLY | {"results": [], "numErrors": 1, "errors": [error]},
        )

        ann, n = sandbox.connector().upsert(
            [lead("ann", "ann@x.com"), lead("n", "n@x.com")]
        )

        assert (ann.outcome, ann.failure.code, ann.failure.retryable) == (
            "failed",
            "INVALID_OWNER",
            False,
        )
        assert (n.outcome, n.failure.code, n.failure.retryable) == (
            "failed",
            "unknown",
            True,
        )


class TestValues:
    def test_values_are_sent_in_hubspot_formats(self, sandbox):
        sandbox.connector().upsert(
            [
                lead(
                    "l1",
                    "v@example.com",
                    lead_captured_date=date(2024, 5, 2),
                    lead_score=62.0,
                    orchestrator_lead_id=12,
                )
            ]
        )

        (sent,) = sandbox.bodies(UPSERT)
        properties = sent["inputs"][0]["properties"]
        assert properties["lead_captured_date"] == "1714608000000"
        assert properties["lead_score"] == "62"
        assert properties["orchestrator_lead_id"] == "12"
        stored = sandbox.contacts()["v@example.com"]["properties"]
        assert stored["lead_captured_date"] == "1714608000000"

    def test_an_absent_field_never_clears_while_an_empty_string_does(self, sandbox):
        sandbox.seed(
            contacts=[existing(7, "k@example.com", firstname="Kim", company="Acme")]
        )

        sandbox.connector().upsert([lead("l1", "k@example.com", firstname="")])

        stored = sandbox.contacts()["k@example.com"]["properties"]
        assert "firstname" not in stored
        assert stored["company"] == "Acme"

    def test_a_naive_datetime_fails_its_record_before_any_call(self, sandbox):
        at_nine = datetime(2024, 5, 2, 9, 0)
        naive, aware = sandbox.connector().upsert(
            [
                lead("naive", "n@example.com", message=at_nine),
                lead("aware", "a@example.com", message=at_nine.replace(tzinfo=UTC)),
            ]
        )

        assert naive.failure.code == "invalid_value"
        assert aware.outcome == "created"
        assert (
            sandbox.contacts()["a@example.com"]["properties"]["message"]
            == "1714640400000"
        )
