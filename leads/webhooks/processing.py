"""Processing a stored delivery once: a lead taken in, or the reason it was not.

Every delivery is claimed by a conditional update before it is processed, and
settled in the same transaction as the lead it wrote, so a delivery is applied
at most once however many processors (the API's background, the drain flow)
look at it. A failure that may pass (a locked database, a CRM that is down)
leaves it pending for a later attempt: nothing kept is ever dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError, OperationalError

from leads.errors import FieldError, LeadRejected
from leads.flow_run import current_flow_run_id
from leads.intake import prepare, store_prepared
from leads.matching import mailbox_key
from leads.store import Store, TenantScope, duplicates, timeline
from leads.store import webhooks as deliveries
from leads.store.leads import find_by_email
from leads.tracebacks import valueless
from leads.webhooks.events import find, parse_json
from leads.webhooks.sources import Payload, WebhookSource

logger = logging.getLogger(__name__)


class TryLater(Exception):
    """Processing could not finish now but may later (a CRM read that failed)."""


@dataclass(frozen=True)
class Verdict:
    """How a delivery ended: `applied`, `stale`, `ignored` or `rejected`."""

    status: str
    lead_id: str | None = None
    reasons: list[FieldError] = field(default_factory=list)
    outcome: str | None = None

    @property
    def leaves_work(self) -> bool:
        """Whether a lead was written (its CRM sync and e-mails are now owed)."""
        return self.status == deliveries.APPLIED and self.outcome is not None


Apply = Callable[[TenantScope, WebhookSource, deliveries.Claimed, Any], Verdict]
Fetch = Callable[[Store, WebhookSource, deliveries.Claimed], Any]


@dataclass(frozen=True)
class Handler:
    """How one kind of payload is processed, in two steps.

    `fetch` runs first, outside any store transaction: whatever it needs from
    elsewhere (a CRM read) it gets there, so no network call ever holds the
    store's write lock. `apply` then writes, in the transaction that settles
    the delivery, with what `fetch` returned.
    """

    apply: Apply
    fetch: Fetch | None = None


class ClaimLost(Exception):
    """Another processor took the delivery over (this one outlived its lease)."""


def stale(lead_id: str, newest: datetime) -> Verdict:
    """An event older than one already applied to its lead: kept, not applied."""
    return Verdict(
        deliveries.STALE,
        lead_id=lead_id,
        reasons=[
            FieldError(
                "occurred_at",
                "older_than_applied",
                f"an event of {newest.isoformat()} was applied to the lead already",
            )
        ],
    )


def rejected(field_name: str, reason: str, message: str) -> Verdict:
    return Verdict(
        deliveries.REJECTED, reasons=[FieldError(field_name, reason, message)]
    )


def lead_handler(region: str) -> Handler:
    """The handler of `lead` payloads: the body (or a part of it) is a lead."""

    def apply(
        scope: TenantScope,
        source: WebhookSource,
        delivery: deliveries.Claimed,
        _fetched: Any,
    ) -> Verdict:
        return take_in_lead(scope, source, delivery, region)

    return Handler(apply)


def take_in_lead(
    scope: TenantScope,
    source: WebhookSource,
    delivery: deliveries.Claimed,
    region: str,
) -> Verdict:
    """Takes the delivery's lead in, unless an event applied to it is newer."""
    try:
        document = parse_json(delivery.body)
    except ValueError as exc:
        return rejected("body", "invalid_json", str(exc))

    if source.events is not None:
        kind = find(document, source.events.field)
        if kind not in source.events.accept:
            return Verdict(
                deliveries.IGNORED,
                reasons=[
                    FieldError(
                        source.events.field,
                        "event_type_not_handled",
                        f"{kind!r} is not one of {source.events.accept}",
                    )
                ],
            )

    lead = find(document, source.lead) if source.lead else document
    if not isinstance(lead, Mapping):
        return rejected(
            source.lead or "body", "not_an_object", "the lead must be a JSON object"
        )
    try:
        values = prepare(mapped(lead, source), region)
    except LeadRejected as exc:
        return Verdict(deliveries.REJECTED, reasons=list(exc.errors))

    email = values.get("email")
    if email:
        # The same lock intake takes, so the order check and the write below
        # see one state of the lead.
        duplicates.lock_mailboxes(scope, [mailbox_key(email)])
        existing = find_by_email(scope, email, lock=True)
        if existing is not None:
            newest = deliveries.newest_applied(scope, existing.id, None)
            if newest is not None and newest > delivery.occurred_at:
                timeline.record(
                    scope,
                    existing,
                    "webhook.out_of_order",
                    source=f"webhook:{source.name}",
                    detail={
                        "delivery_id": delivery.delivery_id,
                        "occurred_at": delivery.occurred_at.isoformat(),
                        "newest_applied_at": newest.isoformat(),
                    },
                )
                return stale(existing.id, newest)

    result = store_prepared(
        scope,
        values,
        channel=f"webhook:{source.name}",
        reference=f"webhook:{source.name}:{delivery.delivery_id}",
    )
    return Verdict(deliveries.APPLIED, lead_id=result.lead.id, outcome=result.outcome)


def mapped(lead: Mapping[str, Any], source: WebhookSource) -> dict[str, Any]:
    """The lead object with the source's field names turned into ours.

    A mapped top-level key is consumed, so it does not also land in `custom`;
    every other key is kept as given.
    """
    values = dict(lead)
    for target, path in source.fields.items():
        value = find(lead, path)
        if "." not in path:
            values.pop(path, None)
        if value is not None:
            values[target] = value
    if source.lead_source and not values.get("source"):
        values["source"] = source.lead_source
    return values


def process(
    store: Store,
    tenant_id: str,
    delivery_pk: int,
    sources: Mapping[str, WebhookSource],
    handlers: Mapping[Payload, Handler],
) -> Verdict | None:
    """Claims and processes one delivery; None when it was not processed now.

    None means another processor holds or finished it, or it must wait (its
    source is gone from the config, or its handler asked to try later); it
    stays pending with the reason in `last_error`.
    """
    with store.write(tenant_id) as scope:
        delivery = deliveries.claim(scope, delivery_pk)
    if delivery is None:
        return None

    source = sources.get(delivery.source)
    if source is None:
        return _later(
            store, delivery, f"source {delivery.source!r} is not in webhooks.yaml"
        )
    handler = handlers.get(source.payload)
    if handler is None:
        return _later(store, delivery, f"no handler for {source.payload} payloads")

    try:
        fetched = handler.fetch(store, source, delivery) if handler.fetch else None
    except TryLater as exc:
        return _later(store, delivery, str(exc))
    except Exception as exc:  # noqa: BLE001 - kept, and parked after a few tries
        logger.error(
            "webhook delivery %s: its fetch failed\n%s", delivery.id, valueless(exc)
        )
        return _later(store, delivery, _named(exc), unexpected=True)

    # A unique-key race with another writer of the same new lead turns into
    # an update on the second try, as for `POST /api/leads`.
    for attempt in (1, 2):
        try:
            with store.write(tenant_id) as scope:
                # Held until this transaction ends: a processor that outlived
                # its lease finds another one's claim here and writes nothing.
                if not deliveries.still_claimed(scope, delivery):
                    raise ClaimLost
                verdict = handler.apply(scope, source, delivery, fetched)
                deliveries.settle(
                    scope,
                    delivery,
                    verdict.status,
                    lead_id=verdict.lead_id,
                    reasons=[reason.as_dict() for reason in verdict.reasons],
                    flow_run_id=current_flow_run_id(),
                )
            return verdict
        except ClaimLost:
            logger.warning(
                "webhook delivery %s was taken over by another processor",
                delivery.id,
            )
            return None
        except IntegrityError as exc:
            if attempt == 2:
                # The error's own text quotes key values (an address).
                return _later(store, delivery, f"store conflict ({_named(exc)})")
        except (OperationalError, TryLater) as exc:
            return _later(store, delivery, _named(exc))
        except Exception as exc:  # noqa: BLE001 - kept, and parked after a few tries
            logger.error(
                "webhook delivery %s could not be processed\n%s",
                delivery.id,
                valueless(exc),
            )
            return _later(store, delivery, _named(exc), unexpected=True)
    raise AssertionError("unreachable")


def _named(exc: Exception) -> str:
    """What went wrong, without the values a database error quotes."""
    if isinstance(exc, TryLater):
        return str(exc)
    original = getattr(exc, "orig", None)
    constraint = getattr(getattr(original, "diag", None), "constraint_name", None)
    name = type(original or exc).__name__
    return f"{name} on {constraint}" if constraint else name


def _later(
    store: Store, delivery: deliveries.Claimed, error: str, *, unexpected: bool = False
) -> None:
    """Leaves the delivery pending for a later attempt, or parks it as `failed`.

    A failure that may pass (a database busy, a CRM down, a source missing
    from the config) is tried again for as long as it takes; an unexpected
    error is parked after `deliveries.MAX_UNEXPECTED` attempts, listed under
    `status=failed` and retried on request.
    """
    logger.warning(
        "webhook delivery %s of %s left pending: %s",
        delivery.id,
        delivery.source,
        error,
    )
    with store.write(delivery.tenant_id) as scope:
        if unexpected and delivery.attempts >= deliveries.MAX_UNEXPECTED:
            deliveries.settle(
                scope,
                delivery,
                deliveries.FAILED,
                reasons=[
                    {"field": "body", "reason": "processing_failed", "message": error}
                ],  # fmt: skip
            )
        else:
            deliveries.retry_later(scope, delivery, error)
    return None
