"""Cleaning and validation through the API: cases EM-01 and VAL-02, and each rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from leads.store.tables import Lead

CASES = Path(__file__).parents[1] / "cases"


def case(name: str) -> dict:
    return json.loads((CASES / f"{name}.json").read_text())


def lead_count(store) -> int:
    with store.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(Lead)).scalar_one()


def created(client, body: dict) -> dict:
    response = client.post("/api/leads", json=body)
    assert response.status_code == 201, response.text
    return response.json()


class TestCaseEm01:
    """EM-01: a line break in a name would inject e-mail headers."""

    def test_a_line_break_in_the_first_name_is_422_naming_it(self, client, store):
        em01 = case("EM-01")

        want = em01["expected"]["api_status_when_posted_to_api_leads"]

        response = client.post("/api/leads", json=em01["input"]["webhook_body"])

        assert response.status_code == want
        assert [(e["field"], e["reason"]) for e in response.json()["errors"]] == [
            ("first_name", "control_characters")
        ]
        assert lead_count(store) == 0

    def test_the_line_break_in_the_company_is_collapsed_to_a_space(self, client):
        em01 = case("EM-01")
        body = {**em01["input"]["webhook_body"], "first_name": "Ola"}

        lead = created(client, body)

        assert lead["company"] == em01["expected"]["if_sanitised_instead"]["company"]


class TestCaseVal02:
    """VAL-02: plus addresses are real sign-ups; a domain without a dot is not."""

    def test_plus_addresses_are_stored_verbatim_and_the_malformed_one_refused(
        self, client, store
    ):
        val02 = case("VAL-02")

        answers = {
            lead["email"]: client.post("/api/leads", json=lead)
            for lead in val02["input"]["leads"]
        }

        for address in val02["expected"]["valid"]:
            assert answers[address].status_code == 201, answers[address].text
            body = answers[address].json()
            assert (body["email"], body["email_display"]) == (address, address)
        for invalid in val02["expected"]["invalid"]:
            answer = answers[invalid["email"]]
            assert answer.status_code == 422
            assert answer.json()["errors"][0]["reason"] == "invalid_email"
        assert lead_count(store) == val02["expected"]["leads_created"]


class TestPlaceholders:
    def test_an_na_email_beside_a_valid_phone_is_a_phone_only_lead(self, client):
        lead = created(
            client, {"email": "N/A", "phone": "+14155550177", "company": "none"}
        )

        assert (lead["email"], lead["phone"], lead["company"]) == (
            None,
            "+14155550177",
            None,
        )
        assert lead["warnings"] == ["missing_email"]

    def test_placeholders_in_every_contact_field_are_stored_empty(self, client):
        placeholders = {
            "company": "TBD",
            "website": "-",
            "job_title": "unknown",
            "street": "N/A",
            "city": "null",
            "state": "Select",
            "postal_code": "#N/A",
            "country": "?",
        }

        lead = created(client, {"email": "e@example.com", **placeholders})

        assert {field: lead[field] for field in placeholders} == dict.fromkeys(
            placeholders
        )

    def test_a_surname_null_is_a_surname(self, client):
        lead = created(client, {"email": "g@example.com", "last_name": "Null"})

        assert lead["last_name"] == "Null"


class TestControlCharacters:
    def test_a_tab_in_the_last_name_is_422_beside_other_bad_fields(self, client):
        response = client.post(
            "/api/leads", json={"email": "bad", "last_name": "Berg\tX"}
        )

        assert response.status_code == 422
        assert {(e["field"], e["reason"]) for e in response.json()["errors"]} == {
            ("email", "invalid_email"),
            ("last_name", "control_characters"),
        }

    def test_street_and_notes_keep_their_lines_with_lf_ends(self, client):
        lead = created(
            client,
            {
                "email": "s@example.com",
                "street": "1 Main St\r\nApt 2",
                "notes": "first\rsecond\x07",
            },
        )

        assert (lead["street"], lead["notes"]) == ("1 Main St\nApt 2", "first\nsecond")

    def test_a_batch_item_with_a_line_break_in_a_name_is_rejected_alone(self, client):
        response = client.post(
            "/api/leads/batch",
            json=[
                {"email": "one@example.com", "first_name": "Ola\nBcc: x"},
                {"email": "two@example.com", "company": "Two\nLines"},
            ],
        )

        one, two = response.json()["results"]
        assert one["outcome"] == "rejected"
        assert one["errors"][0]["reason"] == "control_characters"
        assert two["outcome"] == "created"


class TestNames:
    @pytest.mark.parametrize(
        ("first", "last"),
        [("Siobhan", "O'Neil"), ("Ronald", "McDonald"), ("DeAndre", "van der Berg")],
    )
    def test_names_are_stored_as_typed_with_single_spaces(self, client, first, last):
        lead = created(
            client, {"email": "n@example.com", "first_name": first, "last_name": last}
        )

        assert (lead["first_name"], lead["last_name"]) == (first, last)

    def test_inner_runs_of_white_space_collapse(self, client):
        lead = created(
            client,
            {"email": "n@example.com", "first_name": "Mary  Ann", "company": "A  B"},
        )

        assert (lead["first_name"], lead["company"]) == ("Mary Ann", "A B")


class TestCountryAndPostalCode:
    @pytest.mark.parametrize(
        ("given", "code"),
        [("USA", "US"), ("U.S.", "US"), ("Great Britain", "GB"), ("DEU", "DE")],
    )
    def test_countries_are_stored_as_alpha_2(self, client, given, code):
        lead = created(client, {"email": "c@example.com", "country": given})

        assert lead["country"] == code

    def test_an_unknown_country_is_kept_and_warned_until_it_is_fixed(self, client):
        lead = created(client, {"email": "c@example.com", "country": "Narnia"})
        assert (lead["country"], lead["warnings"]) == ("Narnia", ["unknown_country"])

        fixed = client.patch(f"/api/leads/{lead['id']}", json={"country": "Germany"})

        assert (fixed.json()["country"], fixed.json()["warnings"]) == ("DE", [])

    def test_a_zip_sent_as_a_json_number_comes_back_as_padded_text(self, client):
        lead = created(
            client, {"email": "z@example.com", "postal_code": 2134, "country": "US"}
        )

        assert lead["postal_code"] == "02134"
        assert lead["warnings"] == ["zip_zero_padded"]

    def test_the_padding_warning_outlives_updates_of_other_fields(self, client):
        given = {"email": "z@example.com", "postal_code": "2134", "country": "US"}
        lead = created(client, given)

        resent = client.post("/api/leads", json={"email": "z@example.com", "city": "X"})
        patched = client.patch(f"/api/leads/{lead['id']}", json={"company": "Y"})

        assert resent.json()["warnings"] == ["zip_zero_padded"]
        assert patched.json()["warnings"] == ["zip_zero_padded"]

    def test_a_zip_padded_by_a_patch_or_put_is_warned_and_cleared_when_fixed(
        self, client
    ):
        lead = created(client, {"email": "z@example.com", "country": "US"})
        path = f"/api/leads/{lead['id']}"

        padded = client.patch(path, json={"postal_code": "501"}).json()
        fixed = client.patch(path, json={"postal_code": "94105"}).json()
        put = client.put(
            path,
            json={"email": "z@example.com", "country": "US", "postal_code": "8540"},
        ).json()

        assert (padded["postal_code"], padded["warnings"]) == (
            "00501",
            ["zip_zero_padded"],
        )
        assert fixed["warnings"] == []
        assert (put["postal_code"], put["warnings"]) == ("08540", ["zip_zero_padded"])

    def test_a_national_phone_is_read_in_the_leads_own_country(self, client):
        uk = created(
            client,
            {"email": "uk@example.co.uk", "phone": "020 7946 0958", "country": "GB"},
        )
        unknown = created(
            client,
            {"email": "x@example.com", "phone": "(415) 555-0100", "country": "Narnia"},
        )

        assert (uk["phone"], uk["warnings"]) == ("+442079460958", [])
        assert unknown["phone"] == "+14155550100"

    def test_a_uk_postcode_is_untouched(self, client):
        lead = created(
            client,
            {"email": "z@example.com", "postal_code": "SW1A 1AA", "country": "UK"},
        )

        assert (lead["postal_code"], lead["country"], lead["warnings"]) == (
            "SW1A 1AA",
            "GB",
            [],
        )


class TestPhones:
    def test_a_mangled_phone_beside_a_valid_email_is_kept_raw_and_warned(self, client):
        lead = created(client, {"email": "m@example.com", "phone": "4.15555E+09"})

        assert (lead["phone"], lead["phone_raw"]) == (None, "4.15555E+09")
        assert lead["warnings"] == ["phone_mangled_by_spreadsheet"]

    def test_a_mangled_phone_alone_is_refused(self, client, store):
        response = client.post("/api/leads", json={"phone": "4,15555E+09"})

        assert response.status_code == 422
        assert lead_count(store) == 0

    def test_an_extension_leaves_the_main_number(self, client):
        lead = created(client, {"phone": "(415) 555-0100 ext. 123"})

        assert lead["phone"] == "+14155550100"


class TestEmailDomains:
    def test_a_disposable_address_is_kept_and_warned(self, client):
        lead = created(client, {"email": "x@mailinator.com"})

        assert lead["warnings"] == ["disposable_email"]

    def test_a_free_mail_address_is_flagged(self, client):
        lead = created(client, {"email": "ada@gmail.com"})

        assert lead["flags"] == ["free_mail"]
        assert lead["warnings"] == []

    def test_warning_and_flag_go_when_the_address_changes(self, client):
        lead = created(client, {"email": "x@mailinator.com", "phone": "4155550100"})
        free = client.patch(f"/api/leads/{lead['id']}", json={"email": "x@gmail.com"})
        assert (free.json()["warnings"], free.json()["flags"]) == ([], ["free_mail"])

        work = client.patch(f"/api/leads/{lead['id']}", json={"email": "x@acme.com"})

        assert (work.json()["warnings"], work.json()["flags"]) == ([], [])
