"""HubSpot's webhook events: contacts created, properties changed, privacy deletions.

HubSpot posts batches of events naming a contact by its record id; each event
was split out and kept on its own (`leads.webhooks.events`). A property change
of a contact we hold updates the state the e-mail stop conditions read, at
once instead of at the next reconciliation; a contact created in HubSpot is
read back by id and taken in as a lead; a privacy deletion erases the person
(`leads.erasure`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.crm.errors import CrmError
from connectors.crm.protocol import CrmSnapshot
from connectors.crm.reconcile import STATE_FIELDS, apply_state
from connectors.crm.saved_accounts import resolve
from connectors.crm.store_budget import StoreBudget
from connectors.email.backends import kept_copies
from leads.encryption import secret_box
from leads.erasure import Seal, erase
from leads.errors import FieldError, LeadRejected
from leads.intake import prepare, store_prepared
from leads.settings import Settings
from leads.store import Store, TenantScope
from leads.store import webhooks as deliveries
from leads.store.audit import SYSTEM
from leads.store.tables import Lead
from leads.webhooks.events import parse_json
from leads.webhooks.processing import (
    Handler,
    TryLater,
    Verdict,
    lead_handler,
    rejected,
    stale,
)
from leads.webhooks.sources import Payload, WebhookSource

PROVIDER = "hubspot"
# HubSpot's own limit on a text property's value.
MAX_VALUE = 65_536
# HubSpot's default contact properties, as our lead fields.
LEAD_FIELDS = {
    "email": "email",
    "firstname": "first_name",
    "lastname": "last_name",
    "company": "company",
    "jobtitle": "job_title",
    "phone": "phone",
    "website": "website",
    "address": "street",
    "city": "city",
    "state": "state",
    "zip": "postal_code",
    "country": "country",
}
ContactReader = Callable[[str, list[str]], CrmSnapshot | None]


@dataclass(frozen=True)
class ContactRead:
    """What reading a created contact gave, before the write: it, or a verdict."""

    snapshot: CrmSnapshot | None = None
    verdict: Verdict | None = None


def hubspot_handler(
    read_contact: ContactReader | None,
    region: str,
    *,
    seal: Seal | None = None,
    forget_messages: Callable[[Iterable[str]], int] | None = None,
) -> Handler:
    """The handler of `hubspot` payloads.

    Args:
        read_contact: reads a contact by id from the tenant's HubSpot account;
            None when the tenant has none (created contacts are then ignored,
            with that reason).
        region: default region for phone numbers.
        seal: encrypts what an erasure must keep until the CRM is done
            (`leads.erasure`); None keeps no address.
        forget_messages: deletes the e-mail backend's copies of messages, for
            an erasure (`leads.erasure.erase`).
    """

    def fetch(
        store: Store, source: WebhookSource, delivery: deliveries.Claimed
    ) -> ContactRead | None:
        """Reads a created contact from HubSpot, outside any store transaction."""
        event = _event(delivery)
        if delivery.event_type != "contact.creation" or isinstance(event, Verdict):
            return None
        contact_id = str(event["objectId"])
        with store.read(delivery.tenant_id) as scope:
            if _lead_of(scope, contact_id) is not None:
                return None
        if read_contact is None:
            return ContactRead(
                verdict=_ignored(
                    "objectId",
                    "no_hubspot_account",
                    "the tenant's CRM is not HubSpot, so the contact cannot be read",
                )
            )
        try:
            return ContactRead(snapshot=read_contact(contact_id, list(LEAD_FIELDS)))
        except CrmError as exc:
            if exc.retryable:
                raise TryLater(f"reading contact {contact_id}: {exc}") from exc
            return ContactRead(verdict=rejected("objectId", exc.code, str(exc)))

    def apply(
        scope: TenantScope,
        source: WebhookSource,
        delivery: deliveries.Claimed,
        fetched: ContactRead | None,
    ) -> Verdict:
        event = _event(delivery)
        if isinstance(event, Verdict):
            return event
        # Locked: two events of one contact applied at once must not each
        # write back the state the other had not seen yet.
        lead = _lead_of(scope, str(event["objectId"]), lock=True)
        kind = delivery.event_type
        if kind == "contact.propertyChange":
            return _property_changed(scope, source, delivery, event, lead)
        if kind == "contact.creation":
            return _created(scope, source, delivery, lead, fetched, region)
        if kind == "contact.privacyDeletion":
            return _privacy_deletion(scope, delivery, lead, seal, forget_messages)
        return _ignored("subscriptionType", "event_type_not_handled", f"{kind!r}")

    return Handler(apply, fetch)


def _event(delivery: deliveries.Claimed) -> Mapping[str, Any] | Verdict:
    """The stored event, or the verdict that it is none."""
    try:
        event = parse_json(delivery.body)
    except ValueError as exc:
        return rejected("body", "invalid_json", str(exc))
    if not isinstance(event, Mapping) or not event.get("objectId"):
        return rejected("body", "not_a_hubspot_event", "HubSpot sends a list of events")
    value = event.get("propertyValue")
    if value is not None and (not isinstance(value, str) or len(value) > MAX_VALUE):
        return rejected(
            "propertyValue",
            "invalid_value",
            f"HubSpot sends property values as text of at most {MAX_VALUE} characters",
        )
    return event


def _lead_of(scope: TenantScope, contact_id: str, *, lock: bool = False) -> Lead | None:
    query = scope.select(Lead).where(Lead.crm_id == contact_id).limit(1)
    if lock:
        query = query.with_for_update()
    return scope.session.scalar(query)


def _property_changed(
    scope: TenantScope,
    source: WebhookSource,
    delivery: deliveries.Claimed,
    event: Mapping[str, Any],
    lead: Lead | None,
) -> Verdict:
    name = str(event.get("propertyName") or "")
    if lead is None:
        return _ignored("objectId", "contact_not_known", "no lead holds this contact")
    if name not in STATE_FIELDS[PROVIDER]:
        return _ignored(
            "propertyName",
            "property_not_followed",
            f"only {', '.join(STATE_FIELDS[PROVIDER])} are read back",
        )
    # Ordered per property: a later change of another property says nothing
    # about this one.
    newest = deliveries.newest_applied(scope, lead.id, name)
    if newest is not None and newest > delivery.occurred_at:
        return stale(lead.id, newest)
    fields = _fields_of(lead) | {name: event.get("propertyValue")}
    apply_state(scope, lead, PROVIDER, fields, source=f"webhook:{source.name}")
    return Verdict(deliveries.APPLIED, lead_id=lead.id)


def _fields_of(lead: Lead) -> dict[str, Any]:
    """The HubSpot state fields as the lead's last known CRM state holds them."""
    state = lead.crm_state or {}
    return {
        "lifecyclestage": state.get("lifecycle_stage"),
        "hs_lead_status": state.get("status"),
        "hs_email_optout": state.get("opted_out"),
        "hs_sales_email_last_replied": state.get("replied_at"),
    }


def _created(
    scope: TenantScope,
    source: WebhookSource,
    delivery: deliveries.Claimed,
    lead: Lead | None,
    fetched: ContactRead | None,
    region: str,
) -> Verdict:
    if lead is not None:
        # Most often one we created ourselves, echoed back.
        return Verdict(deliveries.APPLIED, lead_id=lead.id)
    if fetched is None:
        # A lead held the contact when it was looked at, and none does now.
        raise TryLater("the contact's lead changed while it was read; read again")
    if fetched.verdict is not None:
        return fetched.verdict
    if fetched.snapshot is None:
        return _ignored("objectId", "contact_gone", "HubSpot no longer has it")
    values = {
        ours: fetched.snapshot.fields[theirs]
        for theirs, ours in LEAD_FIELDS.items()
        if fetched.snapshot.fields.get(theirs) not in (None, "")
    }
    try:
        prepared = prepare({**values, "source": "hubspot"}, region)
    except LeadRejected as exc:
        return Verdict(deliveries.REJECTED, reasons=list(exc.errors))
    result = store_prepared(
        scope,
        prepared,
        channel=f"webhook:{source.name}",
        reference=f"webhook:{source.name}:{delivery.delivery_id}",
    )
    return Verdict(deliveries.APPLIED, lead_id=result.lead.id, outcome=result.outcome)


def _privacy_deletion(
    scope: TenantScope,
    delivery: deliveries.Claimed,
    lead: Lead | None,
    seal: Seal | None,
    forget_messages: Callable[[Iterable[str]], int] | None,
) -> Verdict:
    """Erases the contact's lead, as `DELETE /api/leads/{id}?erase=true` does.

    HubSpot deleted the contact itself, so no CRM call is owed for it; other
    records of the person (an account used before, leads merged in) are
    still deleted there. The delivery is linked to no lead afterwards.
    """
    if lead is None:
        return _ignored("objectId", "contact_not_known", "no lead holds this contact")
    erase(
        scope,
        lead.id,
        actor=SYSTEM,
        seal=seal,
        trigger={"via": "webhook:hubspot", "delivery_id": delivery.delivery_id},
        crm_gone={str(lead.crm_id)},
        forget_messages=forget_messages,
    )
    return Verdict(deliveries.APPLIED)


def _ignored(field: str, reason: str, message: str) -> Verdict:
    return Verdict(deliveries.IGNORED, reasons=[FieldError(field, reason, message)])


def handlers_for(
    store: Store, settings: Settings, tenant_id: str
) -> dict[Payload, Handler]:
    """Every payload's handler for one tenant's deliveries."""
    region = settings.default_region
    return {
        Payload.LEAD: lead_handler(region),
        Payload.HUBSPOT: hubspot_handler(
            _contact_reader(store, settings, tenant_id),
            region,
            seal=secret_box(settings).seal,
            forget_messages=kept_copies(settings),
        ),
    }


def _contact_reader(
    store: Store, settings: Settings, tenant_id: str
) -> ContactReader | None:
    """Reads contacts from the tenant's HubSpot account; None without one."""
    try:
        account = resolve(store, tenant_id, settings)
    except CrmError as exc:
        # Configured but unusable: the delivery waits for the fix.
        problem = str(exc)

        def broken(contact_id: str, fields: list[str]) -> CrmSnapshot | None:
            raise TryLater(f"the tenant's CRM account cannot be used: {problem}")

        return broken
    if account is None or account.provider != PROVIDER:
        return None

    def read(contact_id: str, fields: list[str]) -> CrmSnapshot | None:
        # Contacts created in HubSpot are rare next to our own writes: a
        # connection per read is cheap enough, and shares the rate budget.
        connector = account.connect(StoreBudget.for_account(store, account))
        try:
            return connector.read_by_id(contact_id, fields)  # type: ignore[attr-defined]
        finally:
            connector.close()

    return read
