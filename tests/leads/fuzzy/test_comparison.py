"""Comparison kinds: how two values of one field are graded."""

from __future__ import annotations

from datetime import date

import pytest

from leads.fuzzy.comparison import (
    DIFFERENT,
    EXACT,
    PARTIAL,
    SIMILAR,
    CodeKind,
    DateKind,
    EmailDomainKind,
    EmailLocalKind,
    NameKind,
    PhoneKind,
    StreetKind,
    TextKind,
)


def _grade(kind, a, b):
    return kind.level(kind.prepare(a), kind.prepare(b))


class TestNames:
    @pytest.mark.parametrize(
        ("a", "b"),
        [
            ("O'Neil", "ONeil"),
            ("Zoë", "zoe"),
            ("Smith-Jones", "smith jones"),
            ("De la Cruz", "Delacruz"),
            ("Łukasz", "Lukasz"),
        ],
    )
    def test_spelling_variants_of_one_name_are_exact(self, a, b):
        assert _grade(NameKind(), a, b) == EXACT

    @pytest.mark.parametrize(
        ("a", "b"),
        [("Whitaker", "Whittaker"), ("Jonathan", "Jonathon"), ("Rbeort", "Robert")],
    )
    def test_one_typo_or_shuffled_letters_are_similar(self, a, b):
        assert _grade(NameKind(), a, b) == SIMILAR

    @pytest.mark.parametrize(("a", "b"), [("J", "John"), ("Mary Ann", "Ann")])
    def test_an_initial_or_one_word_of_a_double_name_is_partial(self, a, b):
        assert _grade(NameKind(), a, b) == PARTIAL

    def test_unrelated_names_are_different(self):
        assert _grade(NameKind(), "Peter", "Jane") == DIFFERENT

    def test_a_blank_name_is_missing(self):
        assert NameKind().prepare("  ") is None
        assert NameKind().prepare("'-") is None


class TestText:
    def test_ignored_words_do_not_separate_companies(self):
        kind = TextKind(ignore_words=frozenset({"inc", "the"}))

        assert _grade(kind, "The Acme, Inc.", "ACME") == EXACT

    def test_one_name_inside_the_other_is_partial(self):
        assert _grade(TextKind(), "Jenner", "Jenner Academy of the Arts") == PARTIAL

    def test_a_misspelt_city_is_similar(self):
        assert _grade(TextKind(), "Lonon", "London") == SIMILAR


class TestStreets:
    def test_abbreviations_are_the_same_street(self):
        assert _grade(StreetKind(), "707 E. 37th Street", "707 east 37th st") == EXACT

    def test_another_house_number_is_different(self):
        assert _grade(StreetKind(), "12 Main Street", "14 Main Street") == DIFFERENT

    def test_a_second_line_makes_the_street_partly_alike(self):
        kind = StreetKind()

        assert _grade(kind, "4859 S. Wabash\n2nd floor", "4859 S Wabash Ave") in {
            SIMILAR,
            PARTIAL,
        }


class TestDates:
    def test_both_spellings_of_a_day_are_exact(self):
        kind = DateKind()

        assert _grade(kind, "1971-06-24", "19710624") == EXACT
        assert _grade(kind, date(1971, 6, 24), "1971-06-24") == EXACT

    @pytest.mark.parametrize("other", ["1971-24-06", "1971-06-25", "1917-06-24"])
    def test_swapped_day_and_month_or_one_typo_are_similar(self, other):
        assert _grade(DateKind(), "1971-06-24", other) == SIMILAR

    def test_a_day_that_cannot_exist_still_compares_digit_by_digit(self):
        assert _grade(DateKind(), "1971-13-24", "1971-12-24") == SIMILAR

    def test_near_days_make_close_dates_partly_alike(self):
        assert _grade(DateKind(near_days=60), "1971-06-24", "1971-08-01") == PARTIAL
        assert _grade(DateKind(), "1971-06-24", "1971-08-01") == DIFFERENT

    def test_text_that_is_no_date_is_missing(self):
        assert DateKind().prepare("unknown") is None


class TestPhones:
    def test_one_wrong_digit_is_similar(self):
        assert _grade(PhoneKind(), "+13125550100", "+13125550109") == SIMILAR

    def test_a_number_without_its_country_code_is_similar(self):
        assert _grade(PhoneKind(), "+13125550100", "3125550100") == SIMILAR

    def test_a_fragment_is_no_number(self):
        assert PhoneKind().prepare("+1 23") is None


class TestEmail:
    def test_tags_and_dots_do_not_separate_mailboxes(self):
        kind = EmailLocalKind()

        assert _grade(kind, "jane.roe+news@acme.com", "janeroe@gmail.com") == EXACT

    def test_initials_agree_only_partly(self):
        assert _grade(EmailLocalKind(), "jd@acme.com", "jd@other.com") == PARTIAL

    def test_a_free_mail_domain_is_weaker_than_a_company_domain(self):
        kind = EmailDomainKind()

        assert _grade(kind, "a@acme.com", "b@acme.com") == EXACT
        assert _grade(kind, "a@gmail.com", "b@gmail.com") == SIMILAR


class TestCodes:
    def test_one_typo_in_a_code_is_similar(self):
        assert _grade(CodeKind(), "60614", "60641") == SIMILAR
        assert _grade(CodeKind(), "60614", "60699") == DIFFERENT
