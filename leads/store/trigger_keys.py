"""Idempotency keys of workflow triggers, held in the store by one request at a time.

A key is held by inserting its row (`INSERT … ON CONFLICT DO NOTHING`), so
of two requests on two API replicas exactly one holds it. A hold ends when
its request finishes, or by itself after `HOLD` if that request died; the
next request may then take the key over, with the lead its holder took in.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update

from leads.store import lease_time
from leads.store.database import Store, TenantScope
from leads.store.inserts import insert_if_absent
from leads.store.tables import TriggerKey

# Longer than a trigger can take: its Prefect calls each give up after 15 s.
HOLD = timedelta(seconds=60)


@dataclass(frozen=True)
class Hold:
    """A key this request holds; `lead_id` is the lead an earlier holder took in."""

    key: str
    holder: str
    lead_id: str | None


def try_hold(
    store: Store, tenant_id: str, key: str, now: datetime | None = None
) -> Hold | None:
    """Holds `key` for this request, or None while another request holds it.

    Holds are stamped and judged by the database server's clock where it can
    be (`lease_time`): replicas whose clocks disagree never take a live hold.
    """
    holder = uuid.uuid4().hex
    with store.write(tenant_id) as scope:
        now = lease_time.read(scope.session, now)
        inserted = insert_if_absent(
            scope,
            TriggerKey,
            {"key": key, "holder": holder, "held_until": now + HOLD, "created_at": now},
        )
        if inserted is not None:
            return Hold(key, holder, None)
        row = scope.get(TriggerKey, (tenant_id, key), lock=True)
        if row is None or row.held_until > now:
            return None
        row.holder = holder
        row.held_until = now + HOLD
        return Hold(key, holder, row.lead_id)


def note_lead(store: Store, tenant_id: str, hold: Hold, lead_id: str) -> None:
    """Records the lead this hold's request took in, for a request taking over."""
    with store.write(tenant_id) as scope:
        _set(scope, hold, lead_id=lead_id)


def release(
    store: Store, tenant_id: str, hold: Hold, now: datetime | None = None
) -> None:
    """Ends the hold, so the next request with the key goes on at once."""
    with store.write(tenant_id) as scope:
        _set(scope, hold, held_until=lease_time.now(scope.session, now))


def _set(scope: TenantScope, hold: Hold, **values: object) -> None:
    # Only while still the holder: a request that outlived its hold must not
    # change what the request that took over has written.
    scope.session.execute(
        update(TriggerKey)
        .where(
            TriggerKey.tenant_id == scope.tenant_id,
            TriggerKey.key == hold.key,
            TriggerKey.holder == hold.holder,
        )
        .values(**values)
    )
