"""Derived warnings and flags: recomputed on every write, cleared with their cause."""

from __future__ import annotations

from leads.changes import derive_warnings
from leads.store.tables import Lead


def lead(**fields) -> Lead:
    values = {"warnings": [], "flags": [], "email": "ada@example.com"} | fields
    return Lead(**values)


class TestWarnings:
    def test_a_clean_lead_has_none(self):
        assert derive_warnings(lead(phone="+14155550100", country="US")) == []

    def test_a_lead_without_email_is_missing_email(self):
        assert derive_warnings(lead(email=None, phone="+14155550100")) == [
            "missing_email"
        ]

    def test_a_disposable_address_is_warned_about(self):
        assert derive_warnings(lead(email="x@mailinator.com")) == ["disposable_email"]

    def test_a_phone_a_spreadsheet_mangled_is_named_as_such(self):
        assert derive_warnings(lead(phone_raw="4.15555E+09")) == [
            "phone_mangled_by_spreadsheet"
        ]

    def test_a_country_that_is_not_a_code_is_unknown(self):
        assert derive_warnings(lead(country="Narnia")) == ["unknown_country"]

    def test_derived_warnings_go_when_their_cause_goes(self):
        stale = ["disposable_email", "invalid_phone", "unknown_country"]
        fixed = lead(phone="+14155550100", country="DE", warnings=stale)

        assert derive_warnings(fixed) == []

    def test_warnings_that_are_not_derived_are_kept(self):
        assert derive_warnings(lead(warnings=["reviewed_by_hand"])) == [
            "reviewed_by_hand"
        ]


class TestZipZeroPadded:
    def test_stays_while_the_padded_zip_stands(self):
        stored = lead(postal_code="00601", country="US", warnings=["zip_zero_padded"])

        assert derive_warnings(stored) == ["zip_zero_padded"]

    def test_goes_when_the_zip_changes_to_one_padding_cannot_give(self):
        stored = lead(postal_code="10001", country="US", warnings=["zip_zero_padded"])

        assert derive_warnings(stored) == []

    def test_goes_when_the_country_no_longer_uses_us_zips(self):
        stored = lead(postal_code="02134", country="DE", warnings=["zip_zero_padded"])

        assert derive_warnings(stored) == []


class TestFlags:
    def test_a_free_mail_address_is_flagged(self):
        stored = lead(email="ada@gmail.com")

        derive_warnings(stored)

        assert stored.flags == ["free_mail"]

    def test_the_flag_goes_with_the_free_mail_address_and_others_stay(self):
        stored = lead(email="ada@example.com", flags=["free_mail", "vip"])

        derive_warnings(stored)

        assert stored.flags == ["vip"]
