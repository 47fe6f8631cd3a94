"""Lead imports in the store: creating them, holding one by lease, and their rejects."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from leads.errors import LeadError
from leads.store import lease_time
from leads.store.database import Store, TenantScope
from leads.store.tables import ImportReject, LeadImport

QUEUED, RUNNING, FINISHED, FAILED = "queued", "running", "finished", "failed"
STATUSES = (QUEUED, RUNNING, FINISHED, FAILED)

# What each record of an import became, in the order reports list them.
OUTCOMES = (
    "created",
    "updated",
    "unchanged",
    "merged",
    "possible_duplicate",
    "rejected",
)


class ImportNotFound(LeadError, LookupError):
    """No import with this id in this tenant."""

    def __init__(self, import_id: str) -> None:
        self.import_id = import_id
        super().__init__(f"no import with id {import_id!r}")


def create(
    scope: TenantScope,
    *,
    filename: str,
    path: str,
    size_bytes: int,
    mapping: Mapping[str, str] | None,
    dry_run: bool,
    chunk_size: int,
) -> LeadImport:
    """Records an uploaded file as a queued import."""
    row = LeadImport(
        filename=filename,
        path=path,
        size_bytes=size_bytes,
        mapping=dict(mapping or {}),
        dry_run=dry_run,
        chunk_size=chunk_size,
        status=QUEUED,
        columns=[],
        records_done=0,
        bytes_done=0,
        counts=dict.fromkeys(OUTCOMES, 0),
    )
    scope.add(row)
    scope.session.flush()
    return row


def get(scope: TenantScope, import_id: str, *, lock: bool = False) -> LeadImport:
    """The tenant's import with this id.

    Raises:
        ImportNotFound: no such import here.
    """
    row = scope.get(LeadImport, str(import_id), lock=lock)
    if row is None:
        raise ImportNotFound(str(import_id))
    return row


def claim(
    store: Store,
    import_id: str,
    owner: str,
    *,
    lease: timedelta,
    now: datetime | None = None,
) -> bool:
    """Takes the import for `owner` when it is queued, or running under a dead lease.

    Two runs started for one import never both read it: the loser gets False.
    """
    with store.write_across_tenants() as session:
        # Stamped and judged by the database server's clock where it can be.
        moment = lease_time.now(session, now)
        takeable = or_(
            LeadImport.status == QUEUED,
            and_(LeadImport.status == RUNNING, LeadImport.lease_expires_at < moment),
            and_(LeadImport.status == RUNNING, LeadImport.lease_owner == owner),
        )
        taken = session.execute(
            update(LeadImport)
            .where(LeadImport.id == import_id, takeable)
            .values(
                status=RUNNING,
                lease_owner=owner,
                lease_expires_at=lease_time.after(session, lease, now),
                started_at=func.coalesce(LeadImport.started_at, moment),
                error=None,
            )
            .execution_options(synchronize_session=False)
        )
        return taken.rowcount == 1


def extend(store: Store, import_id: str, owner: str, *, lease: timedelta) -> bool:
    """Renews `owner`'s lease on the import; False when it no longer holds it."""
    with store.write_across_tenants() as session:
        renewed = session.execute(
            update(LeadImport)
            .where(
                LeadImport.id == import_id,
                LeadImport.status == RUNNING,
                LeadImport.lease_owner == owner,
            )
            .values(lease_expires_at=lease_time.after(session, lease))
            .execution_options(synchronize_session=False)
        )
        return renewed.rowcount == 1


def resumable(store: Store, now: datetime | None = None) -> list[str]:
    """Imports no run holds: queued, or running under a lease that has run out."""
    with store.write_across_tenants() as session:
        expired = LeadImport.lease_expires_at < lease_time.now(session, now)
        waiting = or_(
            LeadImport.status == QUEUED,
            and_(LeadImport.status == RUNNING, expired),
        )
        query = select(LeadImport.id).where(waiting).order_by(LeadImport.created_at)
        return list(session.scalars(query))


def tenant_of(store: Store, import_id: str) -> str:
    """The tenant an import belongs to (system work starts from the id alone).

    Raises:
        ImportNotFound: there is no import with this id.
    """
    with store.write_across_tenants() as session:
        tenant = session.scalar(
            select(LeadImport.tenant_id).where(LeadImport.id == import_id)
        )
    if tenant is None:
        raise ImportNotFound(import_id)
    return tenant


def holds(row: LeadImport, owner: str) -> bool:
    """Whether `owner` still holds the import (another run may have taken it)."""
    return row.status == RUNNING and row.lease_owner == owner


def add_rejects(
    scope: TenantScope, import_id: str, rejects: list[dict[str, Any]]
) -> None:
    """Stores rejected records: each a dict of `record`, `line`, `errors`, `values`."""
    for reject in rejects:
        scope.add(ImportReject(import_id=import_id, **reject))


def rejects(scope: TenantScope, import_id: str) -> Iterator[ImportReject]:
    """Every reject of the import in record order, read a page at a time."""
    last = 0
    while True:
        batch = list(
            scope.session.scalars(
                scope.select(ImportReject)
                .where(ImportReject.import_id == import_id, ImportReject.record > last)
                .order_by(ImportReject.record)
                .limit(500)
            )
        )
        yield from batch
        if len(batch) < 500:
            return
        last = batch[-1].record
