"""A verified delivery split into the events it carries, each with its id and time."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from leads.errors import not_json
from leads.webhooks.sources import FromHeaderOrField, Payload, WebhookSource

MAX_ID_LENGTH = 255


@dataclass(frozen=True)
class Event:
    """One event to store: its delivery id, type, subject, time and bytes."""

    delivery_id: str
    occurred_at: datetime
    body: bytes
    event_type: str | None = None
    subject: str | None = None


def parse_json(body: bytes) -> Any:
    """The body as JSON, or raises ValueError saying what is wrong."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(not_json(exc)) from exc
    except RecursionError as exc:
        raise ValueError("the body is not JSON we read: it nests too deep") from exc


def find(document: Any, path: str) -> Any:
    """The value at a dotted path of nested objects; None when any step is missing."""
    for part in path.split("."):
        if not isinstance(document, Mapping):
            return None
        document = document.get(part)
    return document


def split(
    source: WebhookSource,
    body: bytes,
    headers: Mapping[str, str],
    received_at: datetime,
) -> list[Event]:
    """The events of a delivery, in the order the sender listed them.

    A body that is not JSON is still one event (it is kept, and rejected with
    its reason when processed). Its id and time are read as from a body
    without fields: a header's id is the sender's whatever the body holds, so
    two broken events with the same bytes stay two and the sender finds its
    delivery by its id; an id to be read from the body falls back to a hash
    of the bytes.
    """
    try:
        document = parse_json(body)
    except ValueError:
        document = None
    if source.payload is Payload.HUBSPOT:
        return _hubspot_events(document, body, received_at)

    delivery_id = _read(source.delivery_id, headers, document)
    when = _read(source.occurred_at, headers, document)
    event_type = find(document, source.events.field) if source.events else None
    return [
        Event(
            delivery_id=_id_text(delivery_id) or _body_hash(body),
            occurred_at=_at_most(parse_time(when), received_at),
            body=body,
            event_type=str(event_type)[:128] if event_type is not None else None,
        )
    ]


def _hubspot_events(document: Any, body: bytes, received_at: datetime) -> list[Event]:
    """HubSpot posts a list of up to 100 events; each is kept on its own.

    HubSpot may batch a retried event with others, and documents that
    `eventId` "is not guaranteed to be unique": an event's id is its `eventId`
    with a digest of everything in it but `attemptNumber` (which a retry
    changes), so a retry is a redelivery and another event is not.
    """
    if not isinstance(document, list) or not all(
        isinstance(item, Mapping) and item.get("eventId") is not None
        for item in document
    ):
        return [Event(_body_hash(body), received_at, body)]
    events = []
    for item in document:
        subscription = str(item.get("subscriptionType") or "")[:128] or None
        events.append(
            Event(
                delivery_id=_hubspot_id(item),
                occurred_at=_at_most(parse_time(item.get("occurredAt")), received_at),
                body=json.dumps(item, separators=(",", ":")).encode(),
                event_type=subscription,
                subject=_subject(item),
            )
        )
    return events


def _hubspot_id(item: Mapping[str, Any]) -> str:
    event = {key: value for key, value in item.items() if key != "attemptNumber"}
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return f"{str(item['eventId'])[:200]}:{digest}"


def _at_most(claimed: datetime | None, received_at: datetime) -> datetime:
    """The event's time as the sender states it, but never after it arrived.

    An event dated in the future would make every later event of its lead
    look older, and so never be applied.
    """
    if claimed is None or claimed > received_at:
        return received_at
    return claimed


def _subject(item: Mapping[str, Any]) -> str | None:
    """What a HubSpot event is about within its contact: the property it changed."""
    name = item.get("propertyName")
    return str(name)[:128] if name else None


def _read(
    where: FromHeaderOrField | None, headers: Mapping[str, str], document: Any
) -> Any:
    if where is None:
        return None
    if where.header is not None:
        return headers.get(where.header)
    return find(document, where.field or "")


def _id_text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) > MAX_ID_LENGTH:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def _body_hash(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def parse_time(value: Any) -> datetime | None:
    """An event time as ISO 8601 or Unix seconds or milliseconds; None if neither.

    An ISO time without a zone is taken as UTC.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,16}", value.strip()):
        value = int(value)
    if isinstance(value, (int, float)):
        # Milliseconds since 1970 pass 10^11 in 1973; seconds will not until 5138.
        seconds = value / 1000 if abs(value) >= 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            # Form tools that leave the zone out mostly mean UTC.
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    return None
