"""Cleaning values: white space, e-mail keys and phone numbers."""

from __future__ import annotations

import pytest

from leads.normalise import clean_fields, clean_text, email_key, parse_email


class TestCleanText:
    @pytest.mark.parametrize(
        "raw",
        [
            " Tara ",
            "\tTara\n",
            "\u00a0Tara\u00a0",
            "\u200bTara\ufeff",
            "\u200b \u00a0Tara \u2060",
        ],
    )
    def test_strips_every_kind_of_surrounding_blank(self, raw):
        assert clean_text(raw) == "Tara"

    def test_keeps_inner_spaces_and_line_breaks(self):
        assert clean_text(" 1 Main St\nApt 2 ") == "1 Main St\nApt 2"

    def test_composes_to_nfc(self):
        assert clean_text("Zoe\u0308") == "Zo\u00eb"

    @pytest.mark.parametrize("raw", ["", "   ", "\u200b", None])
    def test_empty_becomes_none(self, raw):
        assert clean_text(raw) is None


class TestEmail:
    def test_key_is_lower_cased_and_display_keeps_the_typed_form(self):
        email = parse_email("Ada.Lovelace@Example.COM")

        assert email.key == "ada.lovelace@example.com"
        assert email.display == "Ada.Lovelace@Example.COM"

    def test_internationalised_domain_is_keyed_in_punycode(self):
        assert parse_email("jürgen@Müller.de").key == "jürgen@xn--mller-kva.de"

    def test_plus_addresses_are_valid_and_kept_whole(self):
        assert parse_email("jane.roe+webinar@example.com").key == (
            "jane.roe+webinar@example.com"
        )

    @pytest.mark.parametrize("raw", ["tara .bose@example.com", "no-at-sign", "a@b"])
    def test_invalid_addresses_raise_with_a_reason(self, raw):
        with pytest.raises(ValueError, match=r"\w"):
            parse_email(raw)

    def test_email_key_of_a_search_term(self):
        assert email_key("  ADA@example.com\u00a0") == "ada@example.com"
        assert email_key("nope") is None


class TestCleanFields:
    def test_valid_phone_becomes_e164_without_raw(self):
        values = clean_fields({"phone": "(415) 555-0100"}, "US").values

        assert values == {"phone": "+14155550100", "phone_raw": None}

    def test_phone_in_another_region(self):
        values = clean_fields({"phone": "020 7946 0958"}, "GB").values

        assert values["phone"] == "+442079460958"

    def test_invalid_phone_is_kept_raw(self):
        values = clean_fields({"phone": " 555 "}, "US").values

        assert values == {"phone": None, "phone_raw": "555"}

    def test_invalid_email_is_an_error_naming_the_field(self):
        cleaned = clean_fields({"email": "x@"}, "US")

        assert [(e.field, e.reason) for e in cleaned.errors] == [
            ("email", "invalid_email")
        ]

    def test_null_clears_email_and_display(self):
        assert clean_fields({"email": None}, "US").values == {
            "email": None,
            "email_display": None,
        }
