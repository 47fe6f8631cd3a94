"""Blocking keys: short, stable, and shared by spellings of one person."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from leads.fuzzy import load_rules
from leads.fuzzy.blocking import MAX_KEY_LENGTH, BlockingRule, Part, soundex

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_RULES = REPO_ROOT / "config" / "matching.yaml"

LEAD = {
    "first_name": "Zoë",
    "last_name": "O'Neil",
    "email": "zoe.oneil+events@acme.com",
    "phone": "+13125550100",
}


@pytest.fixture(scope="module")
def rules():
    return load_rules(DEFAULT_RULES)


class TestKeys:
    def test_keys_are_short_and_named_by_their_rule(self, rules):
        keys = rules.blocking_keys(rules.profile(LEAD))

        assert 1 < len(keys) <= 8
        assert all(len(key) <= MAX_KEY_LENGTH for key in keys)
        assert {key.split(":")[0] for key in keys} <= {
            "names",
            "surname",
            "mailbox",
            "phone",
            "surname_domain",
        }

    def test_keys_are_the_same_in_another_process(self, rules):
        # String hashing is salted per process; keys must not depend on it.
        script = (
            "from pathlib import Path; from leads.fuzzy import load_rules; "
            f"r = load_rules(Path({str(DEFAULT_RULES)!r})); "
            f"print(sorted(r.blocking_keys(r.profile({LEAD!r}))))"
        )
        found = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )

        assert found.stdout.strip() == str(sorted(rules.profile(LEAD).keys))

    def test_swapped_names_share_the_names_key(self, rules):
        swapped = {"first_name": "ONeil", "last_name": "Zoe"}

        shared = rules.profile(LEAD).keys & rules.profile(swapped).keys

        assert any(key.startswith("names:") for key in shared)

    def test_a_number_without_its_prefix_shares_the_phone_key(self, rules):
        local = {"phone": "5550100"}

        assert "phone:5550100" in rules.profile(local).keys

    def test_a_lead_without_the_fields_has_no_keys(self, rules):
        assert rules.profile({"company": "Acme"}).keys == frozenset()

    def test_colleagues_at_a_company_domain_share_the_surname_domain_key(self, rules):
        colleague = {"first_name": "Bob", "last_name": "ONeil", "email": "b@acme.com"}

        shared = rules.profile(LEAD).keys & rules.profile(colleague).keys

        assert "surname_domain:o540|acme.com" in shared

    @pytest.mark.parametrize("domain", ["gmail.com", "yahoo.co.uk", "outlook.de"])
    def test_a_free_mail_domain_makes_no_surname_domain_key(self, rules, domain):
        lead = {**LEAD, "email": f"zoe.oneil@{domain}"}

        keys = rules.profile(lead).keys

        assert not any(key.startswith("surname_domain:") for key in keys)
        assert any(key.startswith("surname:") for key in keys), "other keys stay"

    @pytest.mark.parametrize(
        ("email", "key"),
        [("x@Acme.COM", "acme.com"), ("x@gmail.com", None), ("no-at-sign", None)],
    )
    def test_work_domain_keeps_only_a_company_domain(self, email, key):
        rule = BlockingRule("d", (Part("email", "work_domain"),))

        assert rule.key({"email": email}) == (None if key is None else f"d:{key}")

    def test_a_long_key_is_replaced_by_a_digest_of_itself(self):
        rule = BlockingRule("street", (Part("street", "value"),))
        street = "1 " + "very long street name " * 5

        key = rule.key({"street": street})

        assert key is not None
        assert len(key) <= MAX_KEY_LENGTH
        assert key.startswith("street#")
        assert key == rule.key({"street": street.upper()})


class TestSoundex:
    @pytest.mark.parametrize(
        ("word", "code"),
        [
            ("robert", "r163"),
            ("rupert", "r163"),
            ("ashcraft", "a261"),
            ("tymczak", "t522"),
            ("pfister", "p236"),
            ("lee", "l000"),
        ],
    )
    def test_codes_follow_the_american_soundex_rules(self, word, code):
        assert soundex(word) == code
