"""Signed one-click unsubscribe links (RFC 8058) that name no one.

A token carries a version, the tenant and the target, a lead id or the hash of
a bare address, signed with HMAC-SHA256 under a key derived from the secret
key. It never expires: a link in a years-old e-mail must still work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

from leads.encryption import secret_key
from leads.settings import Settings

VERSION = 1
_LEAD = b"l"
_ADDRESS = b"a"
# 128 bits of the HMAC: far past guessing, and keeps links short.
_TAG_BYTES = 16
_HASH_BYTES = 32
_MAX_FIELD = 255
_HEX_HASH = re.compile(r"[0-9a-f]{64}")
# Unpadded url-safe base64 of at most a version, two fields and a tag.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,700}")
# Domain separation: the same secret key also seals CRM credentials.
_PURPOSE = b"orchestrator/unsubscribe-token"


class InvalidToken(ValueError):
    """The token was not made by this installation, or was changed since."""


@dataclass(frozen=True)
class UnsubscribeTarget:
    """Whom a verified token unsubscribes: a lead, or a bare address by its hash."""

    tenant_id: str
    lead_id: str | None = None
    address_hash: str | None = None


def signing_key(settings: Settings) -> bytes:
    """The key tokens are signed with, derived from the installation's secret key."""
    return hmac.new(secret_key(settings).encode(), _PURPOSE, hashlib.sha256).digest()


def make_token(
    key: bytes,
    tenant_id: str,
    *,
    lead_id: str | None = None,
    address_hash: str | None = None,
) -> str:
    """A url-safe token for exactly one of a lead or an address hash.

    Raises:
        ValueError: neither or both targets given, an address hash that is not
            64 hex digits, or a tenant or lead id that is empty or too long.
    """
    if (lead_id is None) == (address_hash is None):
        raise ValueError("an unsubscribe token names a lead or an address, one")
    tenant = tenant_id.encode()
    if not 0 < len(tenant) <= _MAX_FIELD:
        raise ValueError("the tenant id must be 1 to 255 bytes")
    if lead_id is not None:
        target = lead_id.encode()
        if not 0 < len(target) <= _MAX_FIELD:
            raise ValueError("the lead id must be 1 to 255 bytes")
        kind = _LEAD
    else:
        assert address_hash is not None
        if not _HEX_HASH.fullmatch(address_hash):
            raise ValueError("the address hash must be 64 lower-case hex digits")
        target, kind = bytes.fromhex(address_hash), _ADDRESS
    payload = bytes([VERSION]) + kind + bytes([len(tenant)]) + tenant + target
    return _encode(payload + _tag(key, payload))


def read_token(key: bytes, token: str) -> UnsubscribeTarget:
    """The target a token names, once its signature checks out.

    Raises:
        InvalidToken: the token is malformed, from another version or key, or
            altered.
    """
    if not _TOKEN.fullmatch(token):
        raise InvalidToken("the unsubscribe token is not url-safe base64")
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("the unsubscribe token is not url-safe base64") from exc
    if len(data) < 3 + _TAG_BYTES or _encode(data) != token:
        raise InvalidToken("the unsubscribe token is not one this code makes")
    payload, tag = data[:-_TAG_BYTES], data[-_TAG_BYTES:]
    # Constant time: a byte-by-byte compare would let a caller find a valid
    # tag one byte at a time from response timings.
    if not hmac.compare_digest(tag, _tag(key, payload)):
        raise InvalidToken("the unsubscribe token's signature does not match")

    if payload[0] != VERSION:
        raise InvalidToken(f"unsubscribe token version {payload[0]} is unknown")
    kind, size = payload[1:2], payload[2]
    tenant, target = payload[3 : 3 + size], payload[3 + size :]
    try:
        tenant_id = tenant.decode()
        if kind == _LEAD and target:
            return UnsubscribeTarget(tenant_id, lead_id=target.decode())
    except UnicodeDecodeError as exc:
        raise InvalidToken("the unsubscribe token is not well formed") from exc
    if kind == _ADDRESS and len(target) == _HASH_BYTES:
        return UnsubscribeTarget(tenant_id, address_hash=target.hex())
    raise InvalidToken("the unsubscribe token is not well formed")


def unsubscribe_url(
    settings: Settings,
    tenant_id: str,
    *,
    lead_id: str | None = None,
    address_hash: str | None = None,
) -> str:
    """`{ORCH_PUBLIC_BASE_URL}/u/{token}` for a lead or for a bare address's hash.

    Raises:
        ValueError: neither or both targets given (see `make_token`).
    """
    token = make_token(
        signing_key(settings), tenant_id, lead_id=lead_id, address_hash=address_hash
    )
    return f"{settings.public_base_url.rstrip('/')}/u/{token}"


def lead_link_maker(settings: Settings) -> Callable[[str, str], str]:
    """`unsubscribe_url` for leads, `(tenant_id, lead_id) -> url`, key read once.

    For a dispatcher signing a link per message: the generated key file is
    read here, not once per e-mail.
    """
    key = signing_key(settings)
    base = settings.public_base_url.rstrip("/")

    def link(tenant_id: str, lead_id: str) -> str:
        return f"{base}/u/{make_token(key, tenant_id, lead_id=lead_id)}"

    return link


def _tag(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_TAG_BYTES]


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
