"""The sandbox's contacts endpoints, driven by HubSpot's official client."""

from __future__ import annotations

import json

import pytest
from hubspot.crm.contacts import (
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchReadInputSimplePublicObjectId,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.contacts.exceptions import ApiException, NotFoundException


def upsert_input(email: str, **properties: str | None) -> dict:
    return {"idProperty": "email", "id": email, "properties": properties}


def error_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


class TestObjects:
    def test_a_created_contact_has_the_api_shape_and_system_properties(self, sandbox):
        api = sandbox.client().crm.contacts.basic_api

        created = api.create(
            SimplePublicObjectInputForCreate(
                properties={"email": "Ada@Example.com", "firstname": "Ada"}
            )
        )

        assert created.properties["email"] == "ada@example.com"
        assert created.properties["hs_object_id"] == created.id
        assert created.properties["createdate"].endswith("Z")
        assert created.archived is False
        (stored,) = sandbox.contacts()
        assert set(stored) == {"id", "properties", "createdAt", "updatedAt", "archived"}
        assert all(isinstance(v, str) for v in stored["properties"].values())

    def test_reads_a_contact_by_its_email_percent_encoded(self, sandbox):
        sandbox.seed(contacts=[{"id": 77, "properties": {"email": "a+b@example.com"}}])

        contact = sandbox.client().crm.contacts.basic_api.get_by_id(
            "A+B@example.com", id_property="email", properties=["email"]
        )

        assert contact.id == "77"

    def test_an_unknown_contact_is_a_404(self, sandbox):
        with pytest.raises(NotFoundException):
            sandbox.client().crm.contacts.basic_api.get_by_id("999999")


class TestCreate:
    def test_creating_an_existing_email_is_a_409_naming_the_contact(self, sandbox):
        sandbox.seed(contacts=[{"id": 90210, "properties": {"email": "p@example.com"}}])
        api = sandbox.client().crm.contacts.basic_api

        with pytest.raises(ApiException) as caught:
            api.create(
                SimplePublicObjectInputForCreate(properties={"email": "P@example.com"})
            )

        assert caught.value.status == 409
        body = error_of(caught.value)
        assert body["category"] == "CONFLICT"
        assert body["message"] == "Contact already exists. Existing ID: 90210"

    def test_a_batch_create_with_existing_emails_fails_whole_naming_the_first(
        self, sandbox
    ):
        sandbox.seed(
            contacts=[
                {"id": 5101, "properties": {"email": "ana@example.com"}},
                {"id": 5102, "properties": {"email": "ben@example.com"}},
            ]
        )
        batch = BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[
                {"properties": {"email": e}}
                for e in ("ana@example.com", "ben@example.com", "cai@example.com")
            ]
        )

        with pytest.raises(ApiException) as caught:
            sandbox.client().crm.contacts.batch_api.create(batch)

        assert caught.value.status == 409
        assert error_of(caught.value)["message"].endswith("Existing ID: 5101")
        assert len(sandbox.contacts()) == 2


class TestBatchUpdate:
    def test_emails_as_ids_change_nothing_and_return_no_results(self, sandbox):
        sandbox.seed(contacts=[{"id": 3, "properties": {"email": "omar@example.com"}}])
        batch = BatchInputSimplePublicObjectBatchInput(
            inputs=[
                {"id": "omar@example.com", "properties": {"lifecyclestage": "lead"}}
            ]
        )

        answer = sandbox.client().crm.contacts.batch_api.update(batch)

        assert answer.status == "COMPLETE"
        assert answer.results == []
        assert "lifecyclestage" not in sandbox.contacts()[0]["properties"]

    def test_id_property_email_is_refused(self, sandbox):
        batch = BatchInputSimplePublicObjectBatchInput(
            inputs=[{"id": "omar@example.com", "idProperty": "email", "properties": {}}]
        )

        with pytest.raises(ApiException) as caught:
            sandbox.client().crm.contacts.batch_api.update(batch)

        assert caught.value.status == 400
        assert "non-unique" in error_of(caught.value)["message"]

    def test_record_ids_are_updated(self, sandbox):
        sandbox.seed(contacts=[{"id": 3, "properties": {"email": "omar@example.com"}}])
        batch = BatchInputSimplePublicObjectBatchInput(
            inputs=[{"id": "3", "properties": {"lifecyclestage": "lead"}}]
        )

        answer = sandbox.client().crm.contacts.batch_api.update(batch)

        assert [r.id for r in answer.results] == ["3"]
        assert sandbox.contacts()[0]["properties"]["lifecyclestage"] == "lead"


class TestBatchUpsert:
    def test_creates_and_updates_by_email_with_new_flags(self, sandbox):
        sandbox.seed(contacts=[{"id": 8, "properties": {"email": "old@example.com"}}])
        batch = BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[
                upsert_input("OLD@example.com", firstname="Olga"),
                upsert_input("new@example.com", firstname="Nia"),
            ]
        )

        answer = sandbox.client().crm.contacts.batch_api.upsert(batch)

        flags = {r.properties["email"]: (r.id, r.new) for r in answer.results}
        assert flags["old@example.com"] == ("8", False)
        assert flags["new@example.com"][1] is True
        assert len(sandbox.contacts()) == 2

    def test_the_same_email_twice_fails_the_whole_batch(self, sandbox):
        batch = BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[upsert_input("sam@example.com"), upsert_input("Sam@Example.com")]
        )

        with pytest.raises(ApiException) as caught:
            sandbox.client().crm.contacts.batch_api.upsert(batch)

        assert caught.value.status == 400
        assert "Duplicate IDs found in batch input" in error_of(caught.value)["message"]
        assert sandbox.contacts() == []

    def test_more_than_100_inputs_are_refused(self, sandbox):
        batch = BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[upsert_input(f"p{i}@example.com") for i in range(101)]
        )

        with pytest.raises(ApiException) as caught:
            sandbox.client().crm.contacts.batch_api.upsert(batch)

        assert caught.value.status == 400
        assert sandbox.contacts() == []

    def test_an_empty_string_clears_and_null_leaves_the_value(self, sandbox):
        sandbox.seed(
            contacts=[
                {
                    "id": 4,
                    "properties": {
                        "email": "kim@example.com",
                        "firstname": "Kim",
                        "company": "Acme",
                    },
                }
            ]
        )
        batch = BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[upsert_input("kim@example.com", firstname="", company=None)]
        )

        sandbox.client().crm.contacts.batch_api.upsert(batch)

        properties = sandbox.contacts()[0]["properties"]
        assert "firstname" not in properties
        assert properties["company"] == "Acme"


class TestValidation:
    @pytest.mark.parametrize(
        ("properties", "code"),
        [
            ({"favourite_colour": "blue"}, "PROPERTY_DOESNT_EXIST"),
            ({"lead_score": "sixty"}, "INVALID_NUMBER"),
            ({"lead_captured_date": "1714611600000"}, "INVALID_DATE"),
            ({"lifecyclestage": "prospect"}, "INVALID_OPTION"),
            ({"hs_lead_status": "new"}, "INVALID_OPTION"),
            ({"hs_email_optout": "true"}, "READ_ONLY_VALUE"),
            ({"createdate": "1714608000000"}, "READ_ONLY_VALUE"),
        ],
    )
    def test_a_bad_value_fails_the_batch_naming_code_and_property(
        self, sandbox, properties, code
    ):
        batch = BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[
                upsert_input("good@example.com", firstname="Gus"),
                upsert_input("bad@example.com", **properties),
            ]
        )

        with pytest.raises(ApiException) as caught:
            sandbox.client().crm.contacts.batch_api.upsert(batch)

        assert caught.value.status == 400
        body = error_of(caught.value)
        assert body["category"] == "VALIDATION_ERROR"
        listed = json.loads(body["message"].split(": ", 1)[1])
        assert listed[0]["error"] == code
        assert listed[0]["name"] == next(iter(properties))
        assert sandbox.contacts() == []

    def test_an_invalid_email_is_refused(self, sandbox):
        with pytest.raises(ApiException) as caught:
            sandbox.client().crm.contacts.basic_api.create(
                SimplePublicObjectInputForCreate(properties={"email": "not an email"})
            )

        assert '"error":"INVALID_EMAIL"' in error_of(caught.value)["message"]

    def test_a_midnight_utc_date_and_valid_options_are_stored(self, sandbox):
        api = sandbox.client().crm.contacts.basic_api

        created = api.create(
            SimplePublicObjectInputForCreate(
                properties={
                    "email": "d@example.com",
                    "lead_captured_date": "1714608000000",
                    "lifecyclestage": "marketingqualifiedlead",
                    "lead_score": "62.5",
                }
            )
        )
        api.update(created.id, SimplePublicObjectInput(properties={"lead_score": "7"}))

        properties = sandbox.contacts()[0]["properties"]
        assert properties["lead_captured_date"] == "1714608000000"
        assert properties["lead_score"] == "7"


class TestBatchRead:
    def test_missing_ids_come_back_as_a_207_error(self, sandbox):
        sandbox.seed(contacts=[{"id": 9, "properties": {"email": "x@example.com"}}])

        answer = sandbox.client().crm.contacts.batch_api.read(
            BatchReadInputSimplePublicObjectId(
                inputs=[{"id": "X@example.com"}, {"id": "nobody@example.com"}],
                id_property="email",
                properties=["email"],
                properties_with_history=[],
            )
        )

        assert [r.id for r in answer.results] == ["9"]
        assert answer.num_errors == 1
        assert answer.errors[0].category == "OBJECT_NOT_FOUND"
        assert answer.errors[0].context == {"ids": ["nobody@example.com"]}


class TestProperties:
    def test_lists_types_options_and_read_only_flags(self, sandbox):
        answer = sandbox.client().crm.properties.core_api.get_all("contacts")

        by_name = {p.name: p for p in answer.results}
        assert by_name["lead_captured_date"].type == "date"
        assert by_name["lead_score"].type == "number"
        assert [o.value for o in by_name["hs_lead_status"].options][:2] == [
            "NEW",
            "OPEN",
        ]
        assert by_name["hs_email_optout"].modification_metadata.read_only_value
        assert not by_name["email"].modification_metadata.read_only_value


class TestDirectChanges:
    """`PATCH /_sandbox/hubspot/contacts/{id}`: what HubSpot itself changes."""

    def test_sets_a_read_only_property_and_moves_lastmodifieddate(self, sandbox):
        sandbox.seed(
            contacts=[
                {
                    "id": 42,
                    "properties": {"email": "out@example.com", "firstname": "Out"},
                    "createdate": "2024-01-01T00:00:00Z",
                }
            ]
        )

        answer = sandbox.http.patch(
            "/_sandbox/hubspot/contacts/42",
            json={"properties": {"hs_email_optout": "true"}},
        )

        assert answer.status_code == 200, answer.text
        contact = sandbox.client().crm.contacts.basic_api.get_by_id(
            "42", properties=["hs_email_optout", "firstname", "lastmodifieddate"]
        )
        assert contact.properties["hs_email_optout"] == "true"
        assert contact.properties["firstname"] == "Out"
        assert contact.properties["lastmodifieddate"] > "2024-01-02"
        assert contact.created_at.year == 2024

    def test_computed_and_unknown_properties_are_refused(self, sandbox):
        sandbox.seed(contacts=[{"id": 42, "properties": {"email": "x@example.com"}}])

        answer = sandbox.http.patch(
            "/_sandbox/hubspot/contacts/42",
            json={"properties": {"createdate": "1", "shoe_size": "44"}},
        )

        assert answer.status_code == 422
        assert "createdate, shoe_size" in answer.json()["detail"]

    def test_an_unknown_contact_is_a_404(self, sandbox):
        answer = sandbox.http.patch(
            "/_sandbox/hubspot/contacts/9999",
            json={"properties": {"hs_email_optout": "true"}},
        )

        assert answer.status_code == 404
