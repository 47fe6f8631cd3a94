"""Matching rules: which stored e-mail keys probably reach one person's mailbox."""

from __future__ import annotations

import hashlib

# Google delivers `j.roe@gmail.com` and `jroe@gmail.com` to one mailbox; most
# providers treat dots as significant, so the rule stops at these domains.
DOTLESS_DOMAINS = frozenset({"gmail.com", "googlemail.com"})

PLUS_TAG = "email_plus_tag"
GMAIL_DOTS = "gmail_dots"


def _untagged(email: str) -> tuple[str, str]:
    """The local part without its `+tag`, and the domain."""
    local, _, domain = email.rpartition("@")
    return local.split("+", 1)[0], domain


def address_digest(email: str | None) -> str | None:
    """The SHA-256 hex digest of a stored e-mail key: what suppressions and
    address unsubscribe links name an address by."""
    if not email:
        return None
    return hashlib.sha256(email.encode()).hexdigest()


def mailbox_key(email: str | None) -> str | None:
    """The key every spelling of one mailbox shares.

    The `+tag` is dropped from the local part, and on Gmail so are the dots:
    `jane.roe+webinar@example.com` and `jane.roe@example.com` share
    `jane.roe@example.com`. The addresses themselves are never changed; this
    key only finds leads that may be one person.

    Args:
        email: a stored e-mail key (trimmed, lower-cased, domain in punycode).

    Returns:
        The mailbox key, or None when there is no address or nothing is left of
        the local part once the tag is gone (`+@example.com`).
    """
    if not email or "@" not in email:
        return None
    local, domain = _untagged(email)
    if domain in DOTLESS_DOMAINS:
        local = local.replace(".", "")
    if not local or not domain:
        return None
    return f"{local}@{domain}"


def match_reason(email: str, other: str) -> str:
    """Why two addresses with one mailbox key were matched.

    `email_plus_tag` when they differ only by a tag; `gmail_dots` when Gmail's
    dots (perhaps beside a tag) make the difference.
    """
    return PLUS_TAG if _untagged(email) == _untagged(other) else GMAIL_DOTS
