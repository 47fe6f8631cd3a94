"""E-mail domains: throw-away inboxes are warned about, free mailboxes flagged."""

from __future__ import annotations

import pytest

from leads.email_domains import (
    email_flags,
    email_warnings,
    is_disposable,
    is_free_mail,
)


class TestDisposable:
    @pytest.mark.parametrize(
        "domain", ["mailinator.com", "yopmail.com", "inbox.mailinator.com"]
    )
    def test_throw_away_services_and_their_sub_domains_are_disposable(self, domain):
        assert is_disposable(domain)

    @pytest.mark.parametrize("domain", ["example.com", "gmail.com", "com"])
    def test_ordinary_domains_are_not(self, domain):
        assert not is_disposable(domain)

    def test_a_disposable_address_earns_a_warning(self):
        assert email_warnings("x@mailinator.com") == ["disposable_email"]
        assert email_warnings("x@example.com") == []
        assert email_warnings(None) == []


class TestFreeMail:
    @pytest.mark.parametrize(
        "domain",
        [
            "gmail.com",
            "yahoo.com",
            "yahoo.co.uk",
            "yahoo.de",
            "outlook.com",
            "hotmail.fr",
            "hotmail.co.uk",
            "gmx.de",
            "gmx.net",
            "web.de",
            "icloud.com",
            "proton.me",
        ],
    )
    def test_free_mailbox_providers_are_free_mail(self, domain):
        assert is_free_mail(domain)

    @pytest.mark.parametrize(
        "domain", ["example.com", "yahoo.example.com", "acme.de", "gmx.company.com"]
    )
    def test_company_domains_are_not(self, domain):
        assert not is_free_mail(domain)

    def test_a_free_mail_address_earns_a_flag(self):
        assert email_flags("ada@gmail.com") == ["free_mail"]
        assert email_flags("ada@example.com") == []
