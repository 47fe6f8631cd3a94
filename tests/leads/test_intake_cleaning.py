"""Cleaning on a real store: cases CSV-05 and CSV-08, and warnings across updates.

Reading CSV files belongs to the importer; here the case rows are read with the
standard library and taken in as the importer will hand them over.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from leads.errors import LeadRejected
from leads.intake import submit
from leads.store.tables import OutboxItem

CASES = Path(__file__).parents[1] / "cases"


def take(store, data: dict):
    return submit(store, "default", data, channel="import", region="US").lead


def case_rows(name: str) -> list[dict[str, str]]:
    with (CASES / f"{name}.csv").open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


def expected(name: str) -> dict:
    return json.loads((CASES / f"{name}.expected.json").read_text())["expected"]


def topics_of(store, lead_id: str) -> list[str]:
    with store.read("default") as scope:
        rows = scope.session.scalars(
            scope.select(OutboxItem).where(OutboxItem.lead_id == lead_id)
        )
        return sorted(row.topic for row in rows)


class TestCaseCsv05:
    """CSV-05: postal codes are text; US ZIPs that lost their zeros get them back."""

    def test_zips_are_text_and_stripped_us_zips_are_padded_with_a_warning(self, store):
        want = expected("CSV-05")

        leads = [
            take(store, {**row, "postal_code": row.pop("zip")})
            for row in case_rows("CSV-05")
        ]

        assert {lead.email: lead.postal_code for lead in leads} == want["zip"]
        assert all(isinstance(lead.postal_code, str) for lead in leads)
        warned = want["warnings"]
        assert {lead.email: lead.warnings for lead in leads} == {
            email: [warned[email]] if email in warned else [] for email in want["zip"]
        }


class TestCaseCsv08:
    """CSV-08: placeholders are empty; a phone-only row is kept, never e-mailed."""

    def test_placeholders_become_empty_and_the_surname_null_is_kept(self, store):
        want = expected("CSV-08")

        leads = [take(store, row) for row in case_rows("CSV-08")]

        fields = ["email", "first_name", "last_name", "phone", "company", "website"]
        assert [{f: getattr(lead, f) for f in fields} for lead in leads] == [
            {f: wanted[f] for f in fields} for wanted in want["leads"]
        ]
        assert want["rejected"] == []

    def test_the_row_with_an_na_email_is_a_phone_only_lead_outside_sequences(
        self, store
    ):
        want = next(lead for lead in expected("CSV-08")["leads"] if not lead["email"])

        hugo = [take(store, row) for row in case_rows("CSV-08")][2]

        assert (hugo.email, hugo.phone) == (None, want["phone"])
        assert hugo.warnings == want["warnings"]
        assert topics_of(store, hugo.id) == ["crm_sync"]
        assert want["enrolled_in_email_sequences"] is False


class TestWarningsAcrossUpdates:
    def test_a_padded_zip_warning_survives_an_update_that_leaves_the_zip(self, store):
        take(store, {"email": "z@example.com", "postal_code": "2134"})

        lead = take(store, {"email": "z@example.com", "city": "Boston"})

        assert (lead.postal_code, lead.warnings) == ("02134", ["zip_zero_padded"])

    def test_a_padded_zip_warning_goes_when_a_full_zip_replaces_it(self, store):
        take(store, {"email": "z@example.com", "postal_code": "2134"})

        lead = take(store, {"email": "z@example.com", "postal_code": "10001"})

        assert (lead.postal_code, lead.warnings) == ("10001", [])

    def test_a_mangled_phone_warning_goes_when_a_valid_phone_arrives(self, store):
        first = take(store, {"email": "p@example.com", "phone": "4.15555E+09"})
        assert first.warnings == ["phone_mangled_by_spreadsheet"]

        lead = take(store, {"email": "p@example.com", "phone": "+14155550100"})

        assert (lead.phone, lead.phone_raw, lead.warnings) == ("+14155550100", None, [])

    def test_an_unknown_country_warning_goes_when_a_known_country_arrives(self, store):
        first = take(store, {"email": "c@example.com", "country": "Narnia"})
        assert (first.country, first.warnings) == ("Narnia", ["unknown_country"])

        lead = take(store, {"email": "c@example.com", "country": "Deutschland"})

        assert (lead.country, lead.warnings) == ("DE", [])

    def test_a_placeholder_never_erases_a_stored_value(self, store):
        take(
            store, {"email": "k@example.com", "company": "Acme", "phone": "4155550100"}
        )

        lead = take(store, {"email": "k@example.com", "company": "N/A", "phone": "-"})

        assert (lead.company, lead.phone) == ("Acme", "+14155550100")


def test_a_mangled_phone_without_an_email_is_rejected_as_today(store):
    with pytest.raises(LeadRejected) as caught:
        take(store, {"phone": "4.15555E+09"})

    assert {e.field for e in caught.value.errors} == {"email", "phone"}
