"""Countries: ISO 3166-1 alpha-2 from codes, names, translations and variants."""

from __future__ import annotations

import pytest

from leads.countries import country_code, is_country_code


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("US", "US"),
        ("us", "US"),
        ("USA", "US"),
        ("U.S.", "US"),
        ("U.S.A.", "US"),
        ("United States", "US"),
        ("united states of america", "US"),
        ("UK", "GB"),
        ("U.K.", "GB"),
        ("Great Britain", "GB"),
        ("United Kingdom", "GB"),
        ("GBR", "GB"),
        ("Deutschland", "DE"),
        ("DEU", "DE"),
        ("Germany", "DE"),
        ("Россия", "RU"),
        ("Russia", "RU"),
        ("The Netherlands", "NL"),
        ("Holland", "NL"),
        ("Cote d'Ivoire", "CI"),
        ("Republic of Korea", "KR"),
        ("South Korea", "KR"),
        ("España", "ES"),
        ("Turkey", "TR"),
        ("Trinidad & Tobago", "TT"),
    ],
)
def test_codes_names_and_variants_give_the_alpha_2_code(text, code):
    assert country_code(text) == code


@pytest.mark.parametrize("text", ["Narnia", "Earth", "XX", "Korea"])
def test_unknown_or_ambiguous_values_give_none(text):
    assert country_code(text) is None


class TestIsCountryCode:
    def test_assigned_codes_in_capitals_are_codes(self):
        assert is_country_code("US") and is_country_code("GB")

    @pytest.mark.parametrize("value", ["us", "UK", "XX", "USA", "Germany"])
    def test_anything_else_is_not(self, value):
        assert not is_country_code(value)
