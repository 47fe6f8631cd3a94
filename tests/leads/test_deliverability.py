"""The optional deliverability check, answered by a fake resolver and never by DNS.

The fake stands in for dnspython's resolver only; email-validator's rules and
dnspython's own record types and errors are real.
"""

from __future__ import annotations

import dns.exception
import dns.rdata
import dns.resolver
import pytest

from leads.deliverability import check_deliverable
from leads.normalise import clean_fields


class FakeResolver:
    """Answers from a table of (name, type) → record texts; anything else is absent."""

    def __init__(
        self,
        records: dict[tuple[str, str], list[str]],
        *,
        missing: type[Exception] = dns.resolver.NXDOMAIN,
    ) -> None:
        self.records = records
        self.missing = missing
        self.asked: list[tuple[str, str]] = []

    def resolve(self, qname: str, rdtype: str):
        self.asked.append((qname, rdtype))
        texts = self.records.get((qname, rdtype))
        if texts is None:
            names = {name for name, _ in self.records}
            raise dns.resolver.NoAnswer() if qname in names else self.missing()
        return [dns.rdata.from_text("IN", rdtype, text) for text in texts]


def accepts_mail() -> FakeResolver:
    return FakeResolver({("example.com", "MX"): ["10 mx.example.com."]})


def test_a_domain_with_an_mx_record_is_deliverable():
    resolver = accepts_mail()

    check_deliverable("ada@example.com", resolver)

    assert resolver.asked == [("example.com", "MX")]


def test_a_domain_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="does not exist"):
        check_deliverable("ada@nowhere.example", FakeResolver({}))


def test_a_null_mx_says_the_domain_takes_no_mail():
    resolver = FakeResolver({("example.net", "MX"): ["0 ."]})

    with pytest.raises(ValueError, match="does not accept email"):
        check_deliverable("ada@example.net", resolver)


def test_a_timeout_is_no_verdict_and_the_address_passes():
    slow = FakeResolver({}, missing=dns.exception.Timeout)

    check_deliverable("ada@slow.example", slow)


class TestCleanFields:
    def test_syntax_alone_is_checked_unless_a_resolver_is_given(self):
        cleaned = clean_fields({"email": "ada@nowhere.example"}, "US")

        assert cleaned.errors == []
        assert cleaned.values["email"] == "ada@nowhere.example"

    def test_an_undeliverable_address_is_an_error_naming_the_field(self):
        cleaned = clean_fields(
            {"email": "ada@nowhere.example"}, "US", resolver=FakeResolver({})
        )

        assert [(e.field, e.reason) for e in cleaned.errors] == [
            ("email", "undeliverable_email")
        ]

    def test_a_deliverable_address_is_kept(self):
        cleaned = clean_fields(
            {"email": "Ada@Example.com"}, "US", resolver=accepts_mail()
        )

        assert cleaned.errors == []
        assert cleaned.values["email"] == "ada@example.com"
