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


class TestRememberedLevels:
    """Name and text kinds remember graded pairs: same answers, bounded memory."""

    PAIRS = [
        ("Jon", "John"),
        ("John", "Jon"),
        ("Mary Ann", "Ann"),
        ("J", "John"),
        ("Rbeort", "Robert"),
        ("Smith", "Miller"),
        ("Acme Inc", "Acme Incorporated Holdings"),
        ("Chicago", "Chicgao"),
    ]

    @pytest.mark.parametrize("kind_of", [NameKind, TextKind])
    def test_a_remembered_level_is_the_level_graded_afresh(self, kind_of):
        remembering = kind_of()
        for a, b in self.PAIRS * 2:
            fresh = kind_of()
            assert _grade(remembering, a, b) == _grade(fresh, a, b), (a, b)

    def test_the_order_of_a_pair_is_part_of_what_is_remembered(self):
        kind = TextKind()
        short, long = kind.prepare("Acme"), kind.prepare("Acme Widgets Holdings")

        assert kind.level(short, long) == TextKind().level(short, long)
        assert kind.level(long, short) == TextKind().level(long, short)
        assert (short.text, long.text) in kind._graded
        assert (long.text, short.text) in kind._graded

    def test_a_full_memory_starts_again_empty(self, monkeypatch):
        monkeypatch.setattr("leads.fuzzy.comparison.REMEMBERED_LEVELS", 3)
        kind = NameKind()
        names = ["anna", "anne", "anja", "hanna", "johanna", "ann"]
        for a, b in zip(names, names[1:], strict=False):
            kind.level(kind.prepare(a), kind.prepare(b))
            assert len(kind._graded) <= 3

        assert _grade(kind, "anna", "anne") == _grade(NameKind(), "anna", "anne")

    def test_kinds_with_other_settings_do_not_share_levels(self):
        lenient, strict = NameKind(), NameKind(similar=0.99, partial=0.98)

        assert _grade(lenient, "Steven", "Stephen") == PARTIAL
        assert _grade(strict, "Steven", "Stephen") == DIFFERENT
