"""The mailbox key: which spellings of an address count as one mailbox."""

from __future__ import annotations

import pytest

from leads.matching import GMAIL_DOTS, PLUS_TAG, mailbox_key, match_reason


class TestMailboxKey:
    @pytest.mark.parametrize(
        "email",
        [
            "jane.roe@example.com",
            "jane.roe+webinar@example.com",
            "jane.roe+news+eu@example.com",
        ],
    )
    def test_a_tag_is_dropped_so_every_tag_shares_the_plain_key(self, email):
        assert mailbox_key(email) == "jane.roe@example.com"

    def test_dots_are_significant_outside_gmail(self):
        assert mailbox_key("j.roe@example.com") != mailbox_key("jroe@example.com")

    @pytest.mark.parametrize(
        ("email", "key"),
        [
            ("j.a.n.e@gmail.com", "jane@gmail.com"),
            ("jane+x@gmail.com", "jane@gmail.com"),
            ("j.ane+x.y@gmail.com", "jane@gmail.com"),
            ("ja.ne@googlemail.com", "jane@googlemail.com"),
        ],
    )
    def test_gmail_ignores_dots_in_the_local_part(self, email, key):
        assert mailbox_key(email) == key

    def test_the_domain_keeps_its_dots(self):
        assert mailbox_key("jane@mail.example.com") == "jane@mail.example.com"

    @pytest.mark.parametrize("email", [None, "", "+@example.com", "+tag@example.com"])
    def test_no_address_or_an_empty_mailbox_has_no_key(self, email):
        assert mailbox_key(email) is None


class TestMatchReason:
    def test_addresses_differing_by_a_tag_are_a_plus_tag_match(self):
        assert match_reason("jane+a@example.com", "jane@example.com") == PLUS_TAG
        assert match_reason("jane+a@gmail.com", "jane+b@gmail.com") == PLUS_TAG

    def test_addresses_differing_by_gmail_dots_are_a_dots_match(self):
        assert match_reason("j.ane@gmail.com", "jane@gmail.com") == GMAIL_DOTS
        assert match_reason("j.ane+a@gmail.com", "jane@gmail.com") == GMAIL_DOTS
