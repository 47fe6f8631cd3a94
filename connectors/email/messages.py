"""Building one e-mail's MIME message: checked headers, a text part and an HTML part."""

from __future__ import annotations

import re
from datetime import datetime
from email.headerregistry import (
    Address,
    AddressHeader,
    BaseHeader,
    HeaderRegistry,
    UnstructuredHeader,
)
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8, Policy
from email.utils import format_datetime, make_msgid
from functools import lru_cache
from typing import Any, cast

from email_validator import EmailNotValidError, validate_email

from connectors.email.errors import EmailRenderError
from connectors.email.templates import RenderedEmail
from leads import clock

_HEADERS = HeaderRegistry()
# RFC 8058 section 3.1: the body a mail client's one-click POST carries.
ONE_CLICK = "List-Unsubscribe=One-Click"
_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")
# An unsubscribe URL stays on one header line: RFC 5322 allows 998 characters.
_MAX_URL = 900
_URL = re.compile(r"https?://[!#-;=?-~]+")


class _VerbatimHeader(UnstructuredHeader):
    """A header written on one line, as given.

    The stdlib folds a value longer than 78 characters with no space in it into
    RFC 2047 encoded words, and mail clients read a URL so folded as garbage.
    """

    def fold(self, *, policy: Policy) -> str:  # type: ignore[override]
        return f"{self.name}: {self}{policy.linesep}"


class _FoldedOnce(BaseHeader):
    """A header that keeps its folded lines, per line length, separator and charset.

    One parsed header of `_SHARED_HEADERS` serves every message that sets the
    same value (see `_Headers`), and folding it again for each costs as much as
    parsing it.
    """

    def fold(self, *, policy: Policy) -> str:  # type: ignore[override]
        # Folding reads only these three of the policy (email._header_value_parser).
        key = (policy.max_line_length, policy.linesep, getattr(policy, "utf8", False))
        folds: dict[tuple[Any, ...], str] = self.__dict__.setdefault("_folds", {})
        folded = folds.get(key)
        if folded is None:
            folded = folds[key] = super().fold(policy=policy)
        return folded


# Headers set to the same few values in every message, whose parsed form is
# kept and handed out again. Others (the subject, the recipient, the unsubscribe
# link) may name the person and are parsed for their message alone.
_SHARED_HEADERS = frozenset(
    {
        "content-type",
        "content-transfer-encoding",
        "mime-version",
        "list-unsubscribe-post",
    }
)


class _Headers(HeaderRegistry):
    """The stdlib's registry, keeping the header classes it makes and shared values.

    The stdlib makes a new class for every header of every message, which
    costs more than parsing the header; a dispatcher builds hundreds a second.
    The parts' Content-Type and encoding and MIME-Version are the same in every
    message, so a value of `_SHARED_HEADERS` parsed once is handed out again: a
    parsed header is an immutable string.
    """

    def __init__(self) -> None:
        super().__init__(base_class=_FoldedOnce)
        self._made: dict[str, type] = {}
        self._parsed = lru_cache(maxsize=256)(super().__call__)

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = super().__getitem__(name)
        return made

    def __call__(self, name: str, value: Any) -> BaseHeader:
        if type(value) is str and name.lower() in _SHARED_HEADERS:
            return cast(BaseHeader, self._parsed(name, value))
        return cast(BaseHeader, super().__call__(name, value))


_MESSAGE_HEADERS = _Headers()
_MESSAGE_HEADERS.map_to_type("list-unsubscribe", _VerbatimHeader)
_ASCII_POLICY = SMTP.clone(header_factory=_MESSAGE_HEADERS)
_UTF8_POLICY = SMTPUTF8.clone(header_factory=_MESSAGE_HEADERS)


@lru_cache(maxsize=64)
def parse_sender(value: str) -> Address:
    """The one address of a From value such as `Automation Orchestrator <noreply@x>`.

    Raises:
        EmailRenderError: the value is not exactly one complete address, or
            holds a line break.
    """
    if len(value.splitlines()) > 1:
        raise EmailRenderError("the From address may not contain a line break")
    header = _HEADERS("From", value)
    addresses = cast(AddressHeader, header).addresses
    if header.defects or len(addresses) != 1 or not addresses[0].domain:
        raise EmailRenderError(
            f"the From address {value!r} is not one address like "
            "'Name <user@example.com>'; check ORCH_EMAIL_FROM"
        )
    return addresses[0]


def build_message(
    rendered: RenderedEmail,
    *,
    sender: str,
    recipient: str,
    now: datetime | None = None,
    unsubscribe_url: str | None = None,
    message_id: str | None = None,
) -> EmailMessage:
    """The e-mail, ready to hand over: its headers, a text part and an HTML one.

    Headers are From, To, Subject, Date and Message-ID; with `unsubscribe_url`,
    also List-Unsubscribe and List-Unsubscribe-Post for one-click unsubscribes
    (RFC 8058), which marketing messages carry and transactional ones do not.

    Values from a lead can never add a header or a recipient: the recipient must
    be exactly one address, the subject is made one line, and the message's
    policy refuses any header value that still holds a line break.

    Args:
        rendered: what the templates produced for the lead.
        sender: the From value (the `ORCH_EMAIL_FROM` setting).
        recipient: the lead's address, as typed or as its normalised key.
        now: the Date header's time, aware; the clock's when not given.
        unsubscribe_url: the recipient's signed one-click unsubscribe link, an
            http(s) URL of printable ASCII.
        message_id: the Message-ID, `<left@right>`, when the caller made it
            earlier (to have told someone); a new one when not given.

    Raises:
        EmailRenderError: the sender or recipient is not one valid address, or
            the unsubscribe URL or Message-ID is not of the form above.
    """
    from_address = parse_sender(sender)
    try:
        # The same check intake applies; the stdlib's own parser refuses the
        # non-ASCII local parts intake accepts.
        checked = validate_email(
            recipient, check_deliverability=False, allow_smtputf8=True
        )
    except EmailNotValidError as exc:
        # The address itself stays out of the message: it is personal data.
        raise EmailRenderError("the recipient is not one e-mail address") from exc
    # The domain in its ASCII (IDNA) form: only a non-ASCII local part needs
    # SMTPUTF8 from the relay; an internationalised domain never does.
    to_address = Address(username=checked.local_part, domain=checked.ascii_domain)

    # Addresses with non-ASCII local parts or domains cannot be RFC 2047
    # encoded; they need SMTPUTF8 (RFC 6531), which every modern relay offers.
    ascii_only = to_address.addr_spec.isascii() and from_address.addr_spec.isascii()
    message = EmailMessage(policy=_ASCII_POLICY if ascii_only else _UTF8_POLICY)
    if message_id is not None and not _MESSAGE_ID.fullmatch(message_id):
        raise EmailRenderError(
            f"the Message-ID {message_id!r} is not one `<left@right>` identifier"
        )
    if unsubscribe_url is not None and not (
        len(unsubscribe_url) <= _MAX_URL and _URL.fullmatch(unsubscribe_url)
    ):
        raise EmailRenderError(
            "the unsubscribe URL is not one http(s) URL of printable ASCII "
            f"within {_MAX_URL} characters; check ORCH_PUBLIC_BASE_URL"
        )
    try:
        message["From"] = from_address
        message["To"] = to_address
        message["Subject"] = _literal(_one_line(rendered.subject))
        message["Date"] = format_datetime(now or clock.now())
        # Given a domain, make_msgid asks no name server for this host's name.
        message["Message-ID"] = message_id or make_msgid(domain=from_address.domain)
        if unsubscribe_url is not None:
            message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
            message["List-Unsubscribe-Post"] = ONE_CLICK
    except ValueError as exc:
        raise EmailRenderError(
            f"a header of the message is not allowed: {exc}"
        ) from exc
    for name, value in message.items():
        # Whatever a header's text became once parsed, it is one line.
        if "\r" in str(value) or "\n" in str(value):
            raise EmailRenderError(f"the {name} header would span lines")
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


def _literal(text: str) -> str:
    """The text as a header value that no mail program reads as encoded words.

    RFC 2047 encoded words (`=?utf-8?b?…?=`) are decoded where a header is
    parsed: here, and again in every mail client. A name typed as one could
    hide line breaks, and with them new headers or a new body (Python before
    3.11.10 does not check generated headers, CVE-2024-6923). An invisible
    word joiner after each `=` of `=?` keeps the text as it reads, but no
    longer an encoded word anywhere.
    """
    return text.replace("=?", "=\u2060?")


def _one_line(text: str) -> str:
    # A subject is one line; a line break a lead typed into a name becomes a
    # space rather than a new header.
    return " ".join(text.split())
