"""The audit record of every mutating API call: the key, the route, the answer.

A call with any method but GET, HEAD and OPTIONS that carried a valid key is
recorded once, after its handler, in a transaction it shares only with the
records of calls answered at about the same time (`GroupCommit`), or by the
handler itself in the transaction making its change (`RECORDED`; a single
lead is not stored without its record, and a failed write fails the call):
the key's id
and tenant, the route's template (`PUT /api/leads/{lead_id}`, never the
values), the status, and the object it named or created. The record is
written before the answer leaves, so a caller who has the answer can find
the record; a store too slow to take it within `WAIT_SECONDS` does not hold
the answer longer, and the write goes on in its thread.

A call refused for its key (the 401 or 403 whose errors name
`Authorization`) is recorded when the key names one that exists (revoked, a
wrong secret, too small a scope) under that key's tenant, by its id only. A
call with no key, or with a key naming none, has no tenant to be recorded
for; the access log has it. Routes that take no key (webhook receipt,
unsubscribe pages) record their decisions, not their calls.

A record the store refuses is kept in the data dir's spool
(`api.audit_spool`) and written before the next record that gets through,
or when the API next starts.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.audit_spool import AuditSpool
from api.group_commit import GroupCommit
from leads.store import Store
from leads.store.api_keys import key_id_of
from leads.store.audit import CallRecord, acting_for, append_requests
from leads.store.tables import ApiKey, utcnow

logger = logging.getLogger(__name__)

# The longest an answer waits for its record. The write itself is not cut
# short: it finishes, or fails and is logged, in its thread.
WAIT_SECONDS = 5.0
# The most records one transaction appends.
GROUP_MOST = 500
# Set in the request's state by a handler that appended its call's record in
# the transaction making its change, to the status it answers with: nothing
# is then written here.
RECORDED = "audit_recorded_status"
_READING = frozenset({"GET", "HEAD", "OPTIONS"})
# What the ids in paths look like (UUIDs, integers). A value of another shape
# is whatever the caller typed, perhaps an address: it is not recorded.
_ID = re.compile(r"[0-9A-Fa-f-]{1,64}")
_TYPE_LENGTH = 32


@dataclass(frozen=True)
class Call:
    """One mutating call to record; `tenant_id` None until a refused key is found."""

    action: str
    status: int
    tenant_id: str | None
    key_id: str | None
    target_type: str | None = None
    target_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class AuditLog:
    """ASGI middleware appending a `request` record for each mutating call."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _READING:
            await self.app(scope, receive, send)
            return
        # `request_context` puts the checked key here; the dict is shared with
        # every Request made of this scope.
        state = scope.setdefault("state", {})
        answered = False
        held: list[Message] = []

        async def answer(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                if message["status"] in (401, 403):
                    # A refusal says in its body whether the key was refused.
                    held.append(message)
                    return
                await self._record(scope, message["status"], _location(message))
            elif held:
                held.append(message)
                if message["type"] != "http.response.body" or message.get("more_body"):
                    return
                status = held[0]["status"]
                await self._record(scope, status, None, _key_refusal(held))
                for kept in held:
                    await send(kept)
                held.clear()
                return
            await send(message)

        with acting_for(lambda: state.get("key_id")):
            try:
                await self.app(scope, receive, answer)
            except Exception:
                # Answered 500 by the outermost middleware, past this one.
                if not answered:
                    await self._record(scope, 500, None)
                raise

    async def _record(
        self,
        scope: Scope,
        status: int,
        location: str | None,
        refused: str | None = None,
    ) -> None:
        route = scope.get("route")
        template = getattr(route, "path_format", None)
        if template is None:
            return
        state = scope.get("state") or {}
        if state.get(RECORDED) == status:
            # The handler wrote it with its change (`RECORDED`).
            return
        call = Call(
            action=f"{scope['method']} {template}",
            status=status,
            tenant_id=state.get("tenant_id"),
            key_id=state.get("key_id"),
            detail={"refused": refused} if refused else {},
        )
        secret = None
        if call.key_id is None:
            # A key was refused, or the route takes none (webhooks, unsubscribe).
            secret = _sent_key(scope)
            if refused is None or secret is None or key_id_of(secret) is None:
                return
        call = _with_target(call, route, scope.get("path_params") or {}, location)
        app_state = scope["app"].state
        with anyio.move_on_after(WAIT_SECONDS) as waited:
            if call.tenant_id is None:
                await anyio.to_thread.run_sync(
                    write_call,
                    app_state.store,
                    call,
                    secret,
                    app_state.audit_spool,
                    abandon_on_cancel=True,
                )
            else:
                await app_state.audit_writes.submit(None, call)
        if waited.cancelled_caught:
            logger.error(
                "audit record of %s (%d) not written within %.1f s; answered "
                "without it, the write goes on",
                call.action,
                status,
                WAIT_SECONDS,
            )


def audit_writes(store: Store, spool: AuditSpool) -> GroupCommit[Call, bool]:
    """The records of calls made at about the same time, written together."""
    return GroupCommit(
        lambda _, calls: write_calls(store, calls, spool),
        most=GROUP_MOST,
        name="audit",
    )


def write_call(store: Store, call: Call, secret: str | None, spool: AuditSpool) -> bool:
    """Appends the call's record in its own transaction; False when it was not.

    A refused call (no tenant yet) is looked up by the id part of `secret`
    and recorded under that key's tenant, or not at all when no key has that
    id. A record the store does not take is spooled (see `write_calls`); one
    whose key could not be looked up is only logged, as an ERROR naming the
    route: the spool keeps no secrets. Nothing is raised.
    """
    if call.tenant_id is None:
        try:
            refusal = _refusal(store, call.detail.get("refused", ""), secret)
        except Exception as exc:
            _not_written([call], exc, kept=False)
            return False
        if refusal is None:
            return False
        tenant_id, key_id, reason = refusal
        call = replace(
            call,
            tenant_id=tenant_id,
            key_id=key_id,
            detail=call.detail | {"refused": reason},
        )
    [written] = write_calls(store, [call], spool)
    return written


def write_calls(store: Store, calls: list[Call], spool: AuditSpool) -> list[bool]:
    """Appends the records of calls whose key is known, in one transaction.

    Records waiting in the spool go first, in a transaction of their own.
    When the store fails, the records are added to the spool and the failure
    is logged as an ERROR naming each route; nothing is raised: the calls
    have happened, and their callers have or will have their answers.

    Returns:
        For each call, whether its record was written now (all or none are).
    """
    records = [_record_of(call) for call in calls]
    if spool.waiting():
        error, kept = _after_the_spool(store, spool, records)
    else:
        error = _append(store, records)
        kept = error is not None and _keep(spool, records)
    if error is None:
        return [True] * len(calls)
    _not_written(calls, error, kept=kept)
    return [False] * len(calls)


def replay_spool(store: Store, spool: AuditSpool) -> None:
    """Writes the records waiting in the spool, if any (at the API's start)."""
    if spool.waiting():
        write_calls(store, [], spool)


def _after_the_spool(
    store: Store, spool: AuditSpool, records: list[CallRecord]
) -> tuple[Exception | None, bool]:
    """Replays the spool, then appends `records`; their error, and whether they
    were spooled."""
    with spool.taken() as taken:
        replay_error = _append(store, taken.records) if taken.records else None
        error = _append(store, records) if records else None
        if replay_error is not None:
            if records and error is None:
                # The store took these but refused the replay: one at a
                # time, the records it will never take are set aside.
                for record in taken.records:
                    if _append(store, [record]) is not None:
                        taken.refuse(record)
            else:
                taken.keep(taken.records)
        if error is not None:
            taken.keep(records)
    return error, error is not None and taken.usable


def _append(store: Store, records: list[CallRecord]) -> Exception | None:
    """Appends the records in one transaction; the error when it failed."""
    try:
        with store.write_across_tenants() as session:
            append_requests(session, records)
    except Exception as exc:
        return exc
    return None


def _keep(spool: AuditSpool, records: list[CallRecord]) -> bool:
    try:
        spool.keep(records)
    except OSError as exc:
        logger.error(
            "audit spool %s not written: %s", spool.path.name, exc.__class__.__name__
        )
        return False
    return True


def _record_of(call: Call) -> CallRecord:
    assert call.tenant_id is not None and call.key_id is not None
    return CallRecord(
        call.tenant_id,
        call.key_id,
        call.action,
        call.status,
        call.target_type,
        call.target_id,
        call.detail,
        at=utcnow(),
    )


def _not_written(calls: list[Call], exc: Exception, *, kept: bool) -> None:
    where = "kept in the spool" if kept else "lost"
    for call in calls:
        # The driver's message may quote values; the class names the failure.
        logger.error(
            "audit record of %s (%d) not written: %s; %s",
            call.action,
            call.status,
            exc.__class__.__name__,
            where,
        )


def _refusal(
    store: Store, refused: str, secret: str | None
) -> tuple[str, str, str] | None:
    """The tenant, key id and reason code of a refused call, if its key exists."""
    key_id = key_id_of(secret) if secret else None
    if key_id is None:
        return None
    with store.read_across_tenants() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            return None
        if refused == "unknown_key":
            # Which of the two: the caller is not told, the tenant's admin is.
            refused = "revoked_key" if row.revoked_at is not None else "wrong_secret"
        return row.tenant_id, key_id, refused


def _key_refusal(messages: list[Message]) -> str | None:
    """The reason code of a 401 or 403 that refused the key, from its body."""
    body = b"".join(m.get("body", b"") for m in messages[1:])
    try:
        errors = json.loads(body).get("errors") or []
        return next(
            str(e["reason"]) for e in errors if e.get("field") == "Authorization"
        )
    except (ValueError, AttributeError, TypeError, KeyError, StopIteration):
        return None


def _sent_key(scope: Scope) -> str | None:
    """The key the request sent, as `request_context` reads it; None if none."""
    headers = Headers(scope=scope)
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    sent = (headers.get("x-api-key") or "").strip()
    return sent or None


def _location(message: Message) -> str | None:
    for name, value in message.get("headers", ()):
        if name.lower() == b"location":
            return value.decode("latin-1")
    return None


def _with_target(
    call: Call, route: Any, path_params: dict[str, Any], location: str | None
) -> Call:
    """The call with the object it named in its path, or created (`Location`).

    The last `…_id` of the template is the target; any before it go into the
    detail by name. Without one, a 2xx answer's `Location` names the object
    made: `/api/leads/<id>` is a `lead`, `/api/email/sends/<id>` an `email_send`.
    """
    names = [n for n in getattr(route, "param_convertors", {}) if n.endswith("_id")]
    ids = {n: str(path_params[n]) for n in names if n in path_params}
    ids = {n: value for n, value in ids.items() if _ID.fullmatch(value)}
    if names and names[-1] in ids:
        target_type = names[-1].removesuffix("_id")
        target_id = ids.pop(names[-1])
        return replace(
            call,
            target_type=target_type,
            target_id=target_id,
            detail=call.detail | ids,
        )
    if location and 200 <= call.status < 300:
        parts = [p for p in urlsplit(location).path.split("/") if p]
        if parts[:1] == ["api"]:
            parts = parts[1:]
        if len(parts) >= 2 and _ID.fullmatch(parts[-1]):
            kind = "_".join([*parts[:-2], parts[-2].removesuffix("s")])
            return replace(
                call,
                target_type=kind[:_TYPE_LENGTH],
                target_id=parts[-1],
                detail=call.detail | ids,
            )
    return replace(call, detail=call.detail | ids)
