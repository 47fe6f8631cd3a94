"""Checking a delivery's signature on the raw bytes it arrived as.

Every check works on the exact bytes received: a body parsed and serialised
again differs in spacing, key order, number format and escapes, so its
signature never matches one made by a sender in another language. Every
comparison is constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from urllib.parse import unquote

from leads.webhooks.sources import SignatureFormat, WebhookSource

# How far a signed timestamp may be from our clock, either way.
REPLAY_WINDOW = timedelta(minutes=5)


class SignatureRejected(ValueError):
    """The delivery does not prove it came from the source; `reason` says why."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        self.reason = reason
        # The header at fault when it is not the signature's own.
        self.field = field
        super().__init__(message)


def _hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_orchestrator(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Orchestrator-Signature` value for a body sent at `timestamp`."""
    return f"t={timestamp},v1={_hex_hmac(secret, f'{timestamp}.'.encode() + body)}"


def sign_sha256(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Signature` value (`sha256=<hex>`) over `<timestamp>.<body>`."""
    return "sha256=" + _hex_hmac(secret, f"{timestamp}.".encode() + body)


def sign_hubspot_v3(
    secret: str, method: str, url: str, body: bytes, timestamp: str
) -> str:
    """HubSpot's `X-HubSpot-Signature-v3` for a request (base64 HMAC-SHA256)."""
    message = method.encode() + hubspot_uri(url).encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def hubspot_uri(url: str) -> str:
    """The URL as HubSpot signs it: percent-escapes of URL syntax decoded.

    HubSpot's request-validation guide decodes `%3A %2F %3F %40 %21 %24 %27
    %28 %29 %2A %2C %3B` before signing; `unquote` of only those keeps any
    other escape (a `%20` in a query value) as sent.
    """
    for escaped in ("%3A", "%2F", "%3F", "%40", "%21", "%24", "%27", "%28",
                    "%29", "%2A", "%2C", "%3B"):  # fmt: skip
        url = url.replace(escaped, unquote(escaped)).replace(
            escaped.lower(), unquote(escaped)
        )
    return url


def verify(
    source: WebhookSource,
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    token: str | None,
    method: str,
    url: str,
    now: datetime,
) -> None:
    """Checks the delivery was signed with `secret` within the replay window.

    Args:
        source: the configured source (its format and header names).
        secret: the source's secret.
        body: the raw request body.
        headers: the request's headers (case-insensitive mapping).
        token: the `?token=` query value, if any.
        method: the HTTP method (HubSpot signs it).
        url: the public URL the sender called (HubSpot signs it).
        now: the current time.

    Raises:
        SignatureRejected: missing, malformed, stale or wrong.
    """
    match source.signature:
        case SignatureFormat.TOKEN:
            if not token:
                raise SignatureRejected(
                    "missing_signature", "send the source's token as `?token=`"
                )
            _compare(token, secret)
        case SignatureFormat.ORCHESTRATOR:
            stamp, signatures = _orchestrator_parts(_header(source, headers))
            _check_time(_seconds(stamp), now)
            expected = _hex_hmac(secret, f"{stamp}.".encode() + body)
            if not any(
                hmac.compare_digest(expected.encode(), s.encode()) for s in signatures
            ):
                raise _mismatch()
        case SignatureFormat.SHA256:
            given = _header(source, headers)
            if not given.startswith("sha256="):
                raise SignatureRejected(
                    "malformed_signature",
                    f"{source.signature_header} must read `sha256=<hex>`",
                )
            stamp = _timestamp(source, headers)
            _check_time(_seconds(stamp), now)
            _compare(given, sign_sha256(secret, stamp, body))
        case SignatureFormat.HUBSPOT_V3:
            given = _header(source, headers)
            stamp = _timestamp(source, headers)
            # HubSpot's timestamp is in milliseconds.
            _check_time(_seconds(stamp) // 1000, now)
            _compare(given, sign_hubspot_v3(secret, method, url, body, stamp))


def _header(source: WebhookSource, headers: Mapping[str, str]) -> str:
    name = source.signature_header or ""
    value = headers.get(name)
    if not value:
        raise SignatureRejected("missing_signature", f"no {name} header")
    return value.strip()


def _timestamp(source: WebhookSource, headers: Mapping[str, str]) -> str:
    name = source.timestamp_header or ""
    value = (headers.get(name) or "").strip()
    if not value:
        raise SignatureRejected("missing_timestamp", f"no {name} header", name)
    try:
        _seconds(value)
    except SignatureRejected as exc:
        exc.field = name
        raise
    return value


def _orchestrator_parts(value: str) -> tuple[str, list[str]]:
    """`t=…,v1=…[,v1=…]` as the timestamp and its signatures (rotation sends two)."""
    stamp = None
    signatures = []
    for part in value.split(","):
        key, _, item = part.strip().partition("=")
        if key == "t":
            stamp = item
        elif key == "v1":
            signatures.append(item)
    if stamp is None or not signatures:
        raise SignatureRejected(
            "malformed_signature",
            "X-Orchestrator-Signature must read `t=<unix seconds>,v1=<hex>`",
        )
    return stamp, signatures


_DIGITS = frozenset("0123456789")


def _seconds(stamp: str) -> int:
    # `str.isdigit` also takes `²` and other digits `int` refuses; 16 digits
    # cover milliseconds for millennia and keep the arithmetic in range.
    if not stamp or len(stamp) > 16 or not set(stamp) <= _DIGITS:
        raise SignatureRejected(
            "malformed_timestamp",
            "the timestamp must be a Unix time in ASCII digits",
        )
    return int(stamp)


def _check_time(seconds: int, now: datetime) -> None:
    skew = abs(now.timestamp() - seconds)
    if skew > REPLAY_WINDOW.total_seconds():
        raise SignatureRejected(
            "stale_timestamp",
            f"the signed timestamp is {math.ceil(skew)} s from our clock; the "
            f"window is {int(REPLAY_WINDOW.total_seconds())} s (check the sender's "
            "clock, "
            "or this is a replay)",
        )


def _compare(given: str, expected: str) -> None:
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise _mismatch()


def _mismatch() -> SignatureRejected:
    return SignatureRejected(
        "bad_signature",
        "the signature does not match the body: sign the exact bytes sent, "
        "with the source's secret",
    )
