"""Matching rules: loading them, and the verdicts they give on pairs of leads."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
import yaml

from leads.fuzzy import MatchRules, RulesError, load_rules, parse_rules

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_RULES = REPO_ROOT / "config" / "matching.yaml"

# Lead rules plus a date of birth, the way a tenant adds a custom column.
WITH_BIRTH_DATE = """
thresholds: {match: 12, possible: 8}
comparisons:
  first_name:
    kind: name
    swaps_with: last_name
    weights: {exact: 4, similar: 3, partial: 1, different: -5}
  last_name:
    kind: name
    weights: {exact: 6, similar: 4, partial: 1, different: -5}
  date_of_birth:
    kind: date
    field: custom.date_of_birth
    weights: {exact: 7, similar: 4, different: -6}
  company:
    kind: text
    weights: {exact: 3, similar: 2, partial: 1, different: -1}
blocking:
  rules:
    names:
      unordered: true
      parts:
        - {field: first_name, transform: soundex}
        - {field: last_name, transform: soundex}
    born:
      parts:
        - {field: custom.date_of_birth, transform: digits}
"""


@pytest.fixture(scope="module")
def rules() -> MatchRules:
    return load_rules(DEFAULT_RULES)


@pytest.fixture(scope="module")
def birth_rules(tmp_path_factory: pytest.TempPathFactory) -> MatchRules:
    path = tmp_path_factory.mktemp("rules") / "matching.yaml"
    path.write_text(WITH_BIRTH_DATE, encoding="utf-8")
    return load_rules(path)


def _verdict(rules: MatchRules, new: dict, stored: dict):
    return rules.compare(rules.profile(new), rules.profile(stored))


JANE = {
    "first_name": "Jane",
    "last_name": "Roe",
    "email": "jane.roe@acme.com",
    "phone": "+13125550100",
    "company": "Acme Inc",
    "city": "Chicago",
    "country": "US",
}


class TestVerdicts:
    def test_swapped_first_and_last_names_match(self, rules):
        swapped = {**JANE, "first_name": "Roe", "last_name": "Jane", "email": None}

        verdict = _verdict(rules, swapped, JANE)

        assert verdict.decision == "match"
        assert "names_swapped" in verdict.reasons
        assert "same_phone" in verdict.reasons

    def test_a_typo_in_the_surname_with_the_same_birth_date_matches(self, birth_rules):
        stored = {
            "first_name": "Margaret",
            "last_name": "Whitaker",
            "custom": {"date_of_birth": "1984-03-12"},
        }
        new = {**stored, "last_name": "Whittaker"}

        verdict = _verdict(birth_rules, new, stored)

        assert verdict.decision == "match"
        assert verdict.reasons[0] == "same_date_of_birth"
        assert "last_name_similar" in verdict.reasons

    def test_a_birth_date_with_day_and_month_swapped_is_similar(self, birth_rules):
        stored = {
            "first_name": "Ana",
            "last_name": "Lima",
            "custom": {"date_of_birth": "1990-04-07"},
        }
        new = {**stored, "custom": {"date_of_birth": "19900704"}}

        assert "date_of_birth_similar" in _verdict(birth_rules, new, stored).reasons

    def test_different_people_sharing_surname_and_company_are_distinct(self, rules):
        colleague = {
            **JANE,
            "first_name": "Peter",
            "email": "peter.roe@acme.com",
            "phone": "+13125550199",
        }

        verdict = _verdict(rules, colleague, JANE)

        assert verdict.decision == "distinct"
        assert "different_first_name" in verdict.reasons

    def test_missing_fields_do_not_count_against_a_match(self, rules):
        sparse = {"first_name": "Jane", "last_name": "Roe", "phone": "+13125550100"}

        full = _verdict(rules, sparse, JANE)
        alone = _verdict(rules, sparse, sparse)

        assert full.decision == "match"
        assert full.score == alone.score
        assert not any(reason.startswith("different_") for reason in full.reasons)

    def test_accents_apostrophes_and_case_are_folded(self, rules):
        stored = {"first_name": "Zoë", "last_name": "O'Neil", "phone": "+3314155501"}
        new = {"first_name": "ZOE", "last_name": "ONeil", "phone": "+3314155501"}

        verdict = _verdict(rules, new, stored)

        assert verdict.decision == "match"
        assert verdict.reasons[:3] == (
            "same_phone",
            "same_last_name",
            "same_first_name",
        )

    def test_an_initial_agrees_partly_with_the_name(self, rules):
        new = {**JANE, "first_name": "J."}

        assert "first_name_similar" in _verdict(rules, new, JANE).reasons

    def test_a_lead_with_nothing_in_common_is_distinct(self, rules):
        other = {
            "first_name": "Kwame",
            "last_name": "Mensah",
            "email": "kwame@example.org",
            "phone": "+233301234567",
            "country": "GH",
        }

        assert _verdict(rules, other, JANE).decision == "distinct"

    def test_the_same_personal_e_mail_at_another_domain_is_evidence(self, rules):
        new = {**JANE, "email": "jane.roe@gmail.com", "phone": None}

        verdict = _verdict(rules, new, JANE)

        assert verdict.decision == "match"
        assert "same_email_local" in verdict.reasons

    def test_a_role_mailbox_is_no_evidence_of_one_person(self, rules):
        stored = {"first_name": "Ann", "email": "info@acme.com"}
        new = {"first_name": "Bob", "email": "info@acme.com"}

        assert _verdict(rules, new, stored).decision == "distinct"


class TestBestMatch:
    def test_the_strongest_non_distinct_candidate_wins(self, rules):
        new = rules.profile({**JANE, "email": None})
        weaker = rules.profile({"first_name": "Jane", "last_name": "Roe"})
        stronger = rules.profile(JANE)
        stranger = rules.profile({"first_name": "Max", "last_name": "Roe"})

        found = rules.best_match(
            new, [("stranger", stranger), ("weaker", weaker), ("stronger", stronger)]
        )

        assert found is not None
        assert found[0] == "stronger"
        assert found[1] == rules.compare(new, stronger)

    def test_only_distinct_candidates_give_none(self, rules):
        new = rules.profile(JANE)
        stranger = rules.profile({"first_name": "Max", "last_name": "Mustermann"})

        assert rules.best_match(new, [(1, stranger)]) is None
        assert rules.best_match(new, []) is None

    @pytest.mark.parametrize("seed", range(5))
    def test_the_choice_is_the_best_full_comparison(self, rules, seed):
        # `best_match` scores candidates without their reasons and gives up on
        # a pair once it cannot win; it must still choose what comparing every
        # candidate in full would: the highest non-distinct score, the first
        # of equals, with that comparison's verdict.
        document = WITH_BIRTH_DATE
        for field in ("last_name", "company"):
            document = document.replace(
                f"  {field}:\n", f"  {field}:\n    frequency_adjusted: true\n", 1
            )
        # Skewed, so that agreeing on a rare company or surname moves a score.
        common = [{"company": "Acme Inc", "last_name": "Roe"}] * 60
        weighed = parse_rules(yaml.safe_load(document)).with_frequencies(
            _varied(random.Random(seed), 40, birth_dates=True) + common
        )
        for chosen_rules, birth_dates in ((rules, False), (weighed, True)):
            chooser = random.Random(seed)
            people = _varied(chooser, 60, birth_dates=birth_dates)
            profiles = [chosen_rules.profile(person) for person in people]
            for new in profiles[:20]:
                candidates = list(enumerate(profiles[20:]))
                verdicts = [
                    (number, chosen_rules.compare(new, stored))
                    for number, stored in candidates
                ]
                kept = [item for item in verdicts if item[1].decision != "distinct"]
                expected = max(kept, key=lambda item: item[1].score, default=None)
                if expected is not None:
                    expected = next(
                        item for item in kept if item[1].score == expected[1].score
                    )

                assert chosen_rules.best_match(new, candidates) == expected

    def test_the_rarity_of_an_agreed_value_counts_in_the_choice(self):
        document = WITH_BIRTH_DATE.replace(
            "  company:\n", "  company:\n    frequency_adjusted: true\n", 1
        )
        stored = [{"company": "Acme"}] * 50 + [{"company": "Quist Labs"}]
        rules = parse_rules(yaml.safe_load(document)).with_frequencies(stored)
        jane = {"first_name": "Jane", "last_name": "Roe"}
        new = rules.profile(
            {**jane, "company": "Quist Labs", "custom": {"date_of_birth": "1980-03-04"}}
        )
        # A swapped birth date is worth 4; the company's 3 is worth 7 only
        # with the bits its rarity adds.
        born_alike = rules.profile({**jane, "custom": {"date_of_birth": "1980-04-03"}})
        same_rare_company = rules.profile({**jane, "company": "Quist Labs"})

        found = rules.best_match(
            new, [("born", born_alike), ("company", same_rare_company)]
        )

        assert found is not None
        assert found[0] == "company"
        assert found[1] == rules.compare(new, same_rare_company)
        assert found[1].score > rules.compare(new, born_alike).score


FIRST_NAMES = ["Jane", "Jayne", "J", "John", "Jon", "Mary Ann", "Ann", "Roe"]
LAST_NAMES = ["Roe", "Row", "Jane", "Smith", "Smyth", "O'Neil", "Oneil"]


def _varied(chooser: random.Random, count: int, *, birth_dates: bool) -> list[dict]:
    """Leads alike enough to be each other's candidates: names, swaps, typos, gaps."""

    def maybe(value):
        return value if chooser.random() < 0.7 else None

    people = []
    for _ in range(count):
        person = {
            "first_name": maybe(chooser.choice(FIRST_NAMES)),
            "last_name": maybe(chooser.choice(LAST_NAMES)),
            "email": maybe(
                f"{chooser.choice(['jane.roe', 'jroe', 'jane', 'info'])}@"
                f"{chooser.choice(['acme.com', 'gmail.com', 'roe.org'])}"
            ),
            "phone": maybe(f"+1312555{chooser.randrange(100, 103):04d}"),
            "company": maybe(chooser.choice(["Acme Inc", "Acme", "Roe & Sons"])),
            "city": maybe(chooser.choice(["Chicago", "Chicgao", "Boston"])),
            "country": maybe(chooser.choice(["US", "CA"])),
        }
        if birth_dates:
            person["custom"] = {
                "date_of_birth": maybe(
                    chooser.choice(["1980-03-04", "1980-04-03", "1981-03-04"])
                )
            }
        people.append(person)
    return people


class TestFrequencies:
    def test_a_common_surname_weighs_less_than_a_rare_one(self):
        document = WITH_BIRTH_DATE.replace(
            "  last_name:\n    kind: name\n",
            "  last_name:\n    kind: name\n    frequency_adjusted: true\n",
        )
        plain = parse_rules(yaml.safe_load(document))
        stored = [{"last_name": "Smith"}] * 50 + [{"last_name": "Quist"}]
        adjusted = plain.with_frequencies(stored)

        def score(name: str) -> float:
            lead = {"first_name": "Kim", "last_name": name}
            return adjusted.compare(
                adjusted.profile(lead), adjusted.profile(lead)
            ).score

        assert score("Smith") < score("Quist")


class TestLoading:
    def test_the_default_rules_load(self, rules):
        assert rules.match_at > rules.possible_at > 0

    def _error(self, tmp_path: Path, text: str) -> RulesError:
        path = tmp_path / "matching.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(RulesError) as caught:
            load_rules(path)
        return caught.value

    def test_an_unknown_kind_names_the_key(self, tmp_path):
        error = self._error(
            tmp_path, WITH_BIRTH_DATE.replace("kind: date", "kind: birthday")
        )

        assert error.key == "comparisons.date_of_birth.kind"
        assert "birthday" in str(error) or "date" in error.reason

    def test_an_unknown_setting_names_the_key(self, tmp_path):
        error = self._error(
            tmp_path, WITH_BIRTH_DATE.replace("possible: 8}", "possible: 8, maybe: 3}")
        )

        assert error.key == "thresholds.maybe"
        assert isinstance(error, ValueError)

    def test_weights_growing_towards_different_are_refused(self, tmp_path):
        error = self._error(
            tmp_path,
            WITH_BIRTH_DATE.replace(
                "{exact: 7, similar: 4, different: -6}",
                "{exact: 7, similar: 4, different: 5}",
            ),
        )

        assert error.key == "comparisons.date_of_birth.weights"
        assert "must not grow" in error.reason

    def test_an_option_of_another_kind_is_refused(self, tmp_path):
        error = self._error(
            tmp_path,
            WITH_BIRTH_DATE.replace(
                "    kind: date\n", "    kind: date\n    ignore_words: [jr]\n"
            ),
        )

        assert error.key == "comparisons.date_of_birth"
        assert "ignore_words" in error.reason

    def test_a_field_a_lead_does_not_have_is_refused(self, tmp_path):
        error = self._error(
            tmp_path,
            WITH_BIRTH_DATE.replace(
                "custom.date_of_birth, transform", "dob, transform"
            ),
        )

        assert error.key == "blocking.rules.born.parts.0"
        assert "custom.<name>" in error.reason

    def test_a_swap_partner_that_does_not_exist_is_refused(self, tmp_path):
        error = self._error(
            tmp_path,
            WITH_BIRTH_DATE.replace("swaps_with: last_name", "swaps_with: surname"),
        )

        assert error.key == "comparisons.first_name.swaps_with"
        assert "surname" in error.reason

    def test_a_prefix_without_a_length_is_refused(self, tmp_path):
        error = self._error(
            tmp_path, WITH_BIRTH_DATE.replace("transform: digits", "transform: prefix")
        )

        assert error.key == "blocking.rules.born.parts.0"
        assert "length" in error.reason

    def test_a_match_threshold_no_pair_can_reach_is_refused(self, tmp_path):
        error = self._error(tmp_path, WITH_BIRTH_DATE.replace("match: 12", "match: 90"))

        assert error.key == "thresholds.match"

    def test_broken_yaml_is_a_rules_error(self, tmp_path):
        error = self._error(tmp_path, "thresholds: {match: 12\n")

        assert error.key == "(file)"
        assert "YAML" in error.reason

    def test_a_missing_file_is_a_rules_error(self, tmp_path):
        with pytest.raises(RulesError, match="cannot be read"):
            load_rules(tmp_path / "absent.yaml")


class TestStoredProfiles:
    """A stored lead's profile (no keys) is remembered by its values."""

    def test_the_same_values_give_the_same_profile_object(self):
        rules = load_rules(DEFAULT_RULES)

        first = rules.profile(JANE, keys=False)

        assert rules.profile(dict(JANE), keys=False) is first
        assert first.keys == frozenset()

    def test_a_remembered_profile_compares_as_a_fresh_one(self):
        remembering, fresh = load_rules(DEFAULT_RULES), load_rules(DEFAULT_RULES)
        remembering.profile(JANE, keys=False)
        new = {**JANE, "email": "jane@roe.example"}

        again = remembering.compare(
            remembering.profile(new), remembering.profile(JANE, keys=False)
        )

        assert again == fresh.compare(fresh.profile(new), fresh.profile(JANE))

    def test_changed_values_are_never_answered_from_memory(self):
        rules = load_rules(DEFAULT_RULES)
        before = rules.profile(JANE, keys=False)

        after = rules.profile({**JANE, "last_name": "Doe"}, keys=False)

        assert after is not before
        assert after.values != before.values

    def test_unhashable_custom_values_are_profiled_without_memory(self, birth_rules):
        lead = {**JANE, "custom": {"date_of_birth": ["1980", "01", "02"]}}

        profile = birth_rules.profile(lead, keys=False)

        assert profile.values == birth_rules.profile(lead).values

    def test_values_other_than_text_are_not_remembered(self, birth_rules):
        # 1, 1.0 and True are one dict key, but prepare differently.
        as_number = {**JANE, "custom": {"date_of_birth": 19800102}}
        as_text = {**JANE, "custom": {"date_of_birth": "19800102"}}

        assert birth_rules.profile(as_number, keys=False) is not (
            birth_rules.profile(as_number, keys=False)
        )
        assert birth_rules.profile(as_text, keys=False) is (
            birth_rules.profile(as_text, keys=False)
        )

    def test_threads_filling_a_full_memory_at_once_all_get_profiles(self, monkeypatch):
        monkeypatch.setattr("leads.fuzzy.rules._REMEMBERED_PROFILES", 8)
        rules = load_rules(DEFAULT_RULES)
        failures: list[BaseException] = []

        def profile_many(worker: int) -> None:
            try:
                for n in range(2_000):
                    rules.profile(
                        {**JANE, "phone": f"+1312{worker}{n:06d}"}, keys=False
                    )
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        threads = [threading.Thread(target=profile_many, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert failures == []
        assert len(rules._remembered) <= 8

    def test_memory_is_bounded(self, monkeypatch):
        monkeypatch.setattr("leads.fuzzy.rules._REMEMBERED_PROFILES", 3)
        rules = load_rules(DEFAULT_RULES)
        first = rules.profile({**JANE, "phone": "+13125550000"}, keys=False)
        for n in range(1, 5):
            rules.profile({**JANE, "phone": f"+1312555000{n}"}, keys=False)

        again = rules.profile({**JANE, "phone": "+13125550000"}, keys=False)

        assert again is not first
        assert again.values == first.values
