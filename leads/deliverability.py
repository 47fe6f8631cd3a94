"""Whether an address's domain takes mail, asked of DNS only when a caller opts in."""

from __future__ import annotations

from typing import Any, Protocol, cast

import dns.resolver
from email_validator import EmailNotValidError, validate_email

UNDELIVERABLE_EMAIL = "undeliverable_email"


class Resolver(Protocol):
    """The part of dnspython's `dns.resolver.Resolver` the check calls."""

    def resolve(self, qname: str, rdtype: str) -> Any:
        """The answer's records; raises dnspython's NXDOMAIN, NoAnswer or Timeout."""


def check_deliverable(address: str, resolver: Resolver) -> None:
    """Asks DNS whether the domain of a syntactically valid address accepts mail.

    email-validator applies the rules: an MX record that is not a null MX
    (RFC 7505), or else a globally reachable A or AAAA record (RFC 5321
    section 5). A lookup that times out or reaches no name server is no
    verdict, and the address passes.

    Args:
        address: the address as typed, already valid in syntax.
        resolver: answers the DNS queries, e.g. `email_validator.caching_resolver()`.

    Raises:
        ValueError: the domain does not exist or says it takes no mail.
    """
    try:
        validate_email(
            address,
            check_deliverability=True,
            allow_smtputf8=True,
            # email-validator only calls `resolve(name, type)` on it.
            dns_resolver=cast(dns.resolver.Resolver, resolver),
        )
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
