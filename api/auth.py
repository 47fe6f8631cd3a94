"""Who is calling: the API key, and the tenant and scope it grants.

Every route but `/health`, the API docs, unsubscribe pages (signed tokens)
and webhook receipt (signatures) depends on `request_context`, so a request
without a valid key never reaches a handler. Reads need scope `read`, any
other method `write`; routes that change who may do what, or erase, need
`admin`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.concurrency import run_in_threadpool

from leads.errors import FieldError
from leads.store import Store
from leads.store.api_keys import KeyInfo, Scope, allows, find_key

# A verified key is trusted this long before it is looked up again, so the
# store is not read on every request; a revocation takes effect within it.
CACHE_SECONDS = 5.0
_READING = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class RequestContext:
    """The tenant a request acts for, and the key that proved it."""

    tenant_id: str
    key_id: str | None = None
    scope: Scope = "read"


class KeyProblem(Exception):
    """The request's key is missing, not valid, or not enough: 401 or 403."""

    def __init__(self, status: int, error: FieldError, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


class KeyCache:
    """Verified keys by their full text, each for `CACHE_SECONDS`."""

    def __init__(self, ttl: float = CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._known: dict[str, tuple[float, KeyInfo | None]] = {}
        self._lock = threading.Lock()

    def held(self, secret: str) -> tuple[bool, KeyInfo | None]:
        """Whether `secret` was looked up within `ttl`, and what it was then."""
        with self._lock:
            held = self._known.get(secret)
        if held is not None and time.monotonic() - held[0] < self.ttl:
            return True, held[1]
        return False, None

    def find(self, store: Store, secret: str) -> KeyInfo | None:
        known, info = self.held(secret)
        if known:
            return info
        now = time.monotonic()
        info = find_key(store, secret)
        with self._lock:
            if len(self._known) > 10_000:
                # Guessed keys must not grow this without end.
                self._known.clear()
            self._known[secret] = (now, info)
        return info


def _sent_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise KeyProblem(
                401,
                FieldError(
                    "Authorization",
                    "invalid_scheme",
                    "expected `Authorization: Bearer <key>`",
                ),
                "the Authorization header must be `Bearer <key>`",
            )
        return value.strip()
    if x_api_key:
        return x_api_key.strip()
    return None


# Declared for the OpenAPI document (the docs page's Authorize button); the
# headers themselves are read below, to say exactly what is wrong with them.
_BEARER = HTTPBearer(auto_error=False, description="An API key: `Bearer orch_…`.")
_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="The key, for callers without Bearer.",
)


async def request_context(
    request: Request,
    _bearer: Annotated[object, Depends(_BEARER)] = None,
    _header: Annotated[object, Depends(_HEADER)] = None,
) -> RequestContext:
    """The caller's tenant and scope, from the key sent.

    Raises:
        KeyProblem: 401 when no key or an unknown or revoked key was sent;
            403 when the key's scope does not cover the method.
    """
    secret = _sent_key(
        request.headers.get("authorization"), request.headers.get("x-api-key")
    )
    if secret is None:
        raise KeyProblem(
            401,
            FieldError(
                "Authorization",
                "missing_key",
                "send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            ),
            "an API key is required",
        )
    cache: KeyCache = request.app.state.keys
    # Most calls find their key verified moments ago; only a lookup in the
    # store leaves the event loop for a thread.
    known, info = cache.held(secret)
    if not known:
        info = await run_in_threadpool(cache.find, request.app.state.store, secret)
    if info is None:
        raise KeyProblem(
            401,
            FieldError(
                "Authorization", "unknown_key", "the key is not known or was revoked"
            ),
            "the API key is not valid",
        )
    needed: Scope = "read" if request.method in _READING else "write"
    _check_scope(info.scope, needed)
    request.state.key_id = info.id
    request.state.tenant_id = info.tenant_id
    return RequestContext(tenant_id=info.tenant_id, key_id=info.id, scope=info.scope)


def _check_scope(have: Scope, needed: Scope) -> None:
    if not allows(have, needed):
        raise KeyProblem(
            403,
            FieldError(
                "Authorization",
                "insufficient_scope",
                f"this needs a key with scope {needed}; this key has {have}",
            ),
            f"the API key's scope ({have}) does not allow this",
        )


async def admin_context(
    context: Annotated[RequestContext, Depends(request_context)],
) -> RequestContext:
    """`request_context`, for routes that need an `admin` key."""
    _check_scope(context.scope, "admin")
    return context


ContextDep = Annotated[RequestContext, Depends(request_context)]
# For a router all of whose routes need a key, declared on the router itself
# so the module says so where its routes are.
KEYED = [Depends(request_context)]
AdminDep = Annotated[RequestContext, Depends(admin_context)]
