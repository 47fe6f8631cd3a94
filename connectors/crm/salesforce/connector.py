"""The Salesforce connector: our leads as Salesforce Leads, via simple-salesforce."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Literal

from connectors.crm.budget import RateBudget, Unlimited
from connectors.crm.errors import CrmRequestError
from connectors.crm.protocol import (
    ConnectionInfo,
    CrmField,
    CrmRecord,
    CrmSnapshot,
    SyncResult,
)
from connectors.crm.salesforce import bulk
from connectors.crm.salesforce.client import SalesforceClient
from connectors.crm.salesforce.credentials import SalesforceCredentials
from connectors.crm.salesforce.fields import crm_fields
from connectors.crm.salesforce.leads import (
    BATCH_SIZE,
    Leads,
    require_results,
    rounds,
)


class SalesforceConnector:
    """A Salesforce org's Leads, found by an external-id field or by e-mail.

    Implements `connectors.crm.protocol.CrmConnector`; only `CrmError`s leave it.
    """

    provider = "salesforce"
    batch_size = BATCH_SIZE

    @property
    def bulk_threshold(self) -> int:
        """Past this many records in one `upsert`, Bulk API 2.0 is used."""
        return self.credentials.bulk_threshold

    def __init__(
        self,
        credentials: SalesforceCredentials,
        *,
        budget: RateBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.credentials = credentials
        self.key_field = credentials.external_id_field or "Email"
        self.key_source: Literal["email", "lead_id"] = (
            "lead_id" if credentials.external_id_field else "email"
        )
        self._client = SalesforceClient(
            credentials, budget=budget or Unlimited(), sleep=sleep
        )
        self._leads = Leads(self._client, self.key_field)

    def upsert(self, records: Sequence[CrmRecord]) -> list[SyncResult]:
        """Creates or updates each record by its key; one result per record, in order.

        Up to `bulk_threshold` records go through sObject Collections, 200 a
        call; more go through one Bulk API 2.0 job. A create the org's
        duplicate rule refuses updates the Lead it matched instead (SF-06).
        """
        pending, results = self._leads.prepare(records)
        # A key twice in one call goes in a later round, so it updates the
        # Lead the first one wrote instead of racing it.
        for batch in rounds(pending):
            if len(batch) > self.credentials.bulk_threshold:
                written, duplicates = bulk.write(self._leads, self._client, batch)
                results.update(written)
                results.update(self._leads.merge_duplicates(duplicates))
            else:
                results.update(self._leads.write(batch))
        return require_results(records, results)

    def erase(self, crm_id: str) -> bool:
        """Deletes the Lead with this Id (`DELETE /sobjects/Lead/{id}`).

        Salesforce answers 404 both for an Id it never had (`NOT_FOUND`) and
        for a Lead deleted before (`ENTITY_IS_DELETED`): gone either way.

        Returns:
            True when Salesforce deleted it now; False when it was not there.
        """
        # TODO(#8): a deleted Lead waits in the org's recycle bin for 15 days;
        # purging it sooner needs Bulk API hardDelete, a permission the
        # integration user rarely has.
        try:
            self._client.call("delete lead", lambda sf: sf.Lead.delete(crm_id))
        except CrmRequestError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def read(
        self, keys: Sequence[str], fields: Sequence[str]
    ) -> dict[str, CrmSnapshot]:
        """The Leads found by `keys` (key → snapshot); e-mail keys lower-cased."""
        return self._leads.read(keys, fields)

    def changed(
        self, start: datetime, end: datetime, fields: Sequence[str]
    ) -> Iterator[CrmSnapshot]:
        """Every Lead modified in `[start, end)`, each once."""
        return self._leads.changed(start, end, fields)

    def list_fields(self) -> list[CrmField]:
        """The Lead object's fields, from describe."""
        describe = self._client.call("describe lead", lambda sf: sf.Lead.describe())
        return crm_fields(describe)

    def test_connection(self) -> ConnectionInfo:
        """Logs in and reads the org's limits."""
        limits = self._client.call("read limits", lambda sf: sf.limits())
        daily = limits.get("DailyApiRequests") or {}
        return ConnectionInfo(
            provider=self.provider,
            account=self._client.instance_url or "",
            detail={
                "daily_requests_max": daily.get("Max"),
                "daily_requests_remaining": daily.get("Remaining"),
            },
        )

    def close(self) -> None:
        """Releases the HTTP session."""
        self._client.close()
