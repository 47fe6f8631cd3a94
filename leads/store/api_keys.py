"""API keys: issued once in full, kept as a digest, found by their id part."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from sqlalchemy import select, update

from leads.store.database import Store
from leads.store.tables import ApiKey, utcnow

Scope = Literal["read", "write", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
# Each scope includes the ones before it.
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}

PREFIX = "orch"
# `orch_<12 hex id>_<43 url-safe characters>`: the id finds the row, the rest
# is the secret only its digest is kept of.
_SHAPE = re.compile(r"orch_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
# Tenant names go into URLs, logs and Prefect tags: keep them plain.
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class KeyRefused(ValueError):
    """A key cannot be issued as asked: names the field and the reason."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class KeyInfo:
    """What the store knows about a key; never its secret."""

    id: str
    tenant_id: str
    scope: Scope
    name: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedKey:
    """A key just created: `secret` is shown once and never stored."""

    info: KeyInfo
    secret: str


def allows(have: Scope, needed: Scope) -> bool:
    """Whether a key with scope `have` may do what needs `needed`."""
    return _RANK[have] >= _RANK[needed]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        tenant_id=row.tenant_id,
        scope=row.scope,  # type: ignore[arg-type]
        name=row.name,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def create_key(store: Store, tenant_id: str, scope: str, name: str = "") -> IssuedKey:
    """Issues a key for `tenant_id` with `scope`; the tenant needs no other set-up.

    Raises:
        KeyRefused: the tenant name, scope or key name is not acceptable.
    """
    if not TENANT_NAME.fullmatch(tenant_id):
        raise KeyRefused(
            "tenant",
            "expected 1-64 lower-case letters, digits, '-' or '_', starting with "
            f"a letter or digit; got {tenant_id!r}",
        )
    if scope not in SCOPES:
        raise KeyRefused("scope", f"expected one of {', '.join(SCOPES)}; got {scope!r}")
    if len(name) > 128 or not name.isprintable():
        raise KeyRefused("name", "expected at most 128 printable characters")
    key_id = secrets.token_hex(6)
    secret = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    with store.write_across_tenants() as session:
        session.add(
            ApiKey(
                id=key_id,
                tenant_id=tenant_id,
                scope=scope,
                name=name,
                secret_digest=_digest(secret),
            )
        )
        session.flush()
        row = session.get(ApiKey, key_id)
        assert row is not None
        info = _info(row)
    return IssuedKey(info=info, secret=secret)


def find_key(store: Store, secret: str) -> KeyInfo | None:
    """The active key `secret` is, or None for a malformed, unknown or revoked one.

    The digest is compared in constant time, so timing tells nothing about
    how much of a guess was right.
    """
    shape = _SHAPE.fullmatch(secret)
    if shape is None:
        return None
    with store.read_across_tenants() as session:
        row = session.get(ApiKey, shape.group(1))
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_digest, _digest(secret)):
            return None
        return _info(row)


def key_id_of(secret: str) -> str | None:
    """The id part of a well-formed key, to name it without its secret."""
    shape = _SHAPE.fullmatch(secret)
    return shape.group(1) if shape else None


def list_keys(store: Store, tenant_id: str | None = None) -> list[KeyInfo]:
    """Keys, oldest first; one tenant's when `tenant_id` is given."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    with store.read_across_tenants() as session:
        return [_info(row) for row in session.scalars(query)]


def revoke_key(store: Store, key_id: str) -> KeyInfo | None:
    """Revokes a key at once; None when no such key exists.

    Revoking a revoked key keeps its first revocation time.
    """
    with store.write_across_tenants() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        row = session.get(ApiKey, key_id)
        return _info(row) if row is not None else None


def any_keys(store: Store) -> bool:
    """Whether any key, active or revoked, was ever issued."""
    with store.read_across_tenants() as session:
        return session.scalar(select(ApiKey.id).limit(1)) is not None
