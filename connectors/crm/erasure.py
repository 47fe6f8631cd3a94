"""Carrying an erasure into the CRM: the records an erase row owes, deleted there.

`leads.erasure` leaves one `crm_sync` outbox row per erased lead whose person
the CRM may hold. The sync drain hands such rows here: each named record is
found (by id, or by our key when no id came back) and deleted through the
connector. A record the CRM does not have counts as deleted. When every record
is gone the row itself is deleted, sealed address included, and `crm.erased`
goes on the audit log (the lead's timeline is gone); a failure that may pass
is retried with the sync's back-off, and one that cannot is parked with
`crm.erase_failed` for a person to finish in the CRM.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete

from connectors.crm.accounts import CrmAccount
from connectors.crm.errors import CrmDailyLimitReached, CrmError
from connectors.crm.protocol import CrmConnector
from leads.encryption import SecretKeyError, secret_box
from leads.settings import Settings
from leads.store import audit
from leads.store.claims import Claim, extend_all, finish_in, release_in
from leads.store.database import Store
from leads.store.tables import OutboxItem, utcnow

logger = logging.getLogger(__name__)

Connection = Callable[[str], "tuple[CrmAccount, CrmConnector] | None"]
Backoff = Callable[[int, float | None], timedelta]
# A tenant without a CRM now is looked at again this much later, counted as
# an attempt: a CRM removed for good must not keep the row (and its sealed
# address) for ever.
NO_CRM_RECHECK = timedelta(minutes=5)


@dataclass(frozen=True)
class Deleted:
    """What deleting one erase row's records came to."""

    deleted: int = 0
    not_found: int = 0
    # Records this account cannot reach (synced to an account used before)
    # or cannot find (a key that could not be read back).
    unreachable: int = 0


class CrmErasures:
    """Deletes erased people from their tenant's CRM, for one drain run.

    Args:
        store: the lead store.
        settings: opens the sealed addresses (the secret key).
        connection: the tenant's account and connector, as the sync has them.
        lease: how long a claim is held; renewed before each row's calls.
        backoff: the wait before attempt `n + 1`, given the vendor's wish.
        max_attempts: attempts before a failure that may pass is parked.
        on_daily_limit: told when the account's daily allowance ran out.
        now: the clock.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        connection: Connection,
        *,
        lease: timedelta,
        backoff: Backoff,
        max_attempts: int,
        on_daily_limit: Callable[[str, CrmError], None],
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.settings = settings
        self._connection = connection
        self._lease = lease
        self._backoff = backoff
        self._max_attempts = max_attempts
        self._on_daily_limit = on_daily_limit
        self._now = now

    def handle(self, tenant_id: str, claims: list[Claim]) -> Counter[str]:
        """Works off one tenant's erase claims; returns counts by outcome."""
        counts: Counter[str] = Counter()
        try:
            connected = self._connection(tenant_id)
        except CrmError as exc:
            for held in claims:
                counts[self._failed(held, exc)] += 1
            return counts
        if connected is None:
            for held in claims:
                counts[self._retry(held, "no_crm", "no CRM configured", None)] += 1
            return counts
        account, connector = connected

        for held in claims:
            if held.id not in extend_all(self.store, tenant_id, [held], self._lease):
                counts["lost"] += 1
                continue
            try:
                result = self._delete(account, connector, held.payload)
            except CrmError as exc:
                if isinstance(exc, CrmDailyLimitReached):
                    self._on_daily_limit(tenant_id, exc)
                counts[self._failed(held, exc)] += 1
                continue
            if result.unreachable:
                counts[self._give_up(held, "unreachable", _unreachable(result))] += 1
            else:
                counts[self._done(held, account, result)] += 1
        return counts

    def _delete(
        self, account: CrmAccount, connector: CrmConnector, payload: Mapping[str, Any]
    ) -> Deleted:
        deleted = not_found = unreachable = 0
        for target in payload.get("targets") or []:
            owner = target.get("account")
            if owner and owner != account.budget_key:
                # An id of another account may name someone else's record here.
                # TODO(#8): the digest changes with the credentials too (a
                # rotated HubSpot token), parking records that are reachable;
                # confirm such a record by its key before deleting it.
                unreachable += 1
                continue
            crm_id = target.get("crm_id")
            if crm_id is None:
                key = self._key(connector, target)
                if key is None and "sealed" in target:
                    # The address was kept but cannot be opened any more.
                    unreachable += 1
                    continue
                # No address at all: nothing was ever filed under one.
                crm_id = self._find(connector, key) if key is not None else None
            if crm_id is None:
                # The CRM has no record under our key: none was written there.
                not_found += 1
            elif connector.erase(crm_id):
                deleted += 1
            else:
                not_found += 1
        return Deleted(deleted, not_found, unreachable)

    @staticmethod
    def _find(connector: CrmConnector, key: str) -> str | None:
        """The CRM id of the record filed under our key, if there is one."""
        found = connector.read([key], [])
        snapshot = found.get(key) or found.get(key.lower())
        return snapshot.crm_id if snapshot is not None else None

    def _key(self, connector: CrmConnector, target: Mapping[str, Any]) -> str | None:
        if connector.key_source == "lead_id":
            return target.get("lead_id")
        sealed = target.get("sealed")
        if not sealed:
            return None
        try:
            address = secret_box(self.settings).open(sealed).get("email")
        except SecretKeyError:
            logger.warning("an erased address cannot be opened: the secret key changed")
            return None
        return address.strip().lower() if isinstance(address, str) else None

    def _done(self, held: Claim, account: CrmAccount, result: Deleted) -> str:
        """Deletes the row (its sealed address with it) and records `crm.erased`."""
        with self.store.write(held.tenant_id) as scope:
            gone = scope.session.execute(
                delete(OutboxItem).where(
                    OutboxItem.id == held.id,
                    OutboxItem.tenant_id == held.tenant_id,
                    OutboxItem.status == "claimed",
                    OutboxItem.lease_owner == held.lease_owner,
                )
            ).rowcount
            if not gone:
                return "lost"
            audit.append_decision(
                scope.session,
                held.tenant_id,
                "crm.erased",
                "lead",
                _lead_of(held),
                {
                    "crm": _crm_name(account),
                    "account": account.budget_key,
                    "deleted": result.deleted,
                    "not_found": result.not_found,
                    "attempt": held.attempts,
                },
                actor=audit.SYSTEM,
            )
        logger.info(
            "CRM erasure of lead %s: %d deleted, %d not found",
            _lead_of(held),
            result.deleted,
            result.not_found,
        )
        return "erased"

    def _failed(self, held: Claim, exc: CrmError) -> str:
        if isinstance(exc, CrmDailyLimitReached):
            resets_at = exc.resets_at or self._now() + timedelta(hours=1)
            with self.store.write(held.tenant_id) as scope:
                release_in(
                    scope.session,
                    held,
                    error=f"{exc.code}: {exc}"[:1000],
                    retry_at=resets_at,
                    count_attempt=False,
                )
            return "erase_waiting"
        if exc.retryable:
            return self._retry(held, exc.code, str(exc), exc.retry_after)
        return self._give_up(held, exc.code, str(exc))

    def _retry(
        self, held: Claim, code: str, message: str, retry_after: float | None
    ) -> str:
        """Due again after the sync's back-off; parked once attempts run out."""
        if held.attempts >= self._max_attempts:
            return self._give_up(held, f"gave_up:{code}", message)
        with self.store.write(held.tenant_id) as scope:
            release_in(
                scope.session,
                held,
                error=f"{code}: {message}"[:1000],
                retry_at=self._now() + self._backoff(held.attempts, retry_after),
            )
        return "erase_retrying"

    def _give_up(self, held: Claim, reason: str, message: str) -> str:
        """Parks the row for a person, without its sealed address; audits why.

        The CRM ids stay on the row, so whoever finishes the deletion in the
        CRM knows which records; the address is dropped, as nothing here will
        look it up again.
        """
        with self.store.write(held.tenant_id) as scope:
            note = f"{reason}: {message}"[:1000]
            if not finish_in(scope.session, held, "parked", note):
                return "lost"
            targets = [
                {k: v for k, v in target.items() if k != "sealed"}
                for target in held.payload.get("targets") or []
            ]
            row = scope.session.get(OutboxItem, held.id)
            if row is not None:
                row.payload = {**held.payload, "targets": targets}
            audit.append_decision(
                scope.session,
                held.tenant_id,
                "crm.erase_failed",
                "lead",
                _lead_of(held),
                {"reason": reason, "attempt": held.attempts},
                actor=audit.SYSTEM,
            )
        logger.warning("CRM erasure of lead %s parked: %s", _lead_of(held), reason)
        return "erase_parked"


def _crm_name(account: CrmAccount) -> str:
    # As the sync's timeline events name it: the bundled sandbox, or the vendor.
    return "sandbox" if account.origin == "sandbox" else account.provider


def _lead_of(held: Claim) -> str:
    lead_id = held.payload.get("lead_id")
    return lead_id if isinstance(lead_id, str) else held.key


def _unreachable(result: Deleted) -> str:
    return (
        f"{result.unreachable} record(s) cannot be reached from the tenant's CRM "
        "account (synced to an account used before, or no key to find them by); "
        f"{result.deleted} deleted, {result.not_found} not found. Delete the rest "
        "in the CRM by hand"
    )
