"""`HubSpotConnector`: the `CrmConnector` protocol over HubSpot's CRM v3 contacts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Literal

from hubspot.crm.contacts import PublicGdprDeleteInput

from connectors.crm.budget import RateBudget, Unlimited
from connectors.crm.errors import CrmDailyLimitReached, CrmError
from connectors.crm.hubspot.client import HubSpotClient
from connectors.crm.hubspot.contacts import (
    BATCH_SIZE,
    KEY,
    ChangeScanner,
    ContactWriter,
    collapse,
    read_contact,
    read_contacts,
)
from connectors.crm.hubspot.credentials import HubSpotCredentials
from connectors.crm.hubspot.errors import HubSpotNotFound
from connectors.crm.hubspot.properties import list_contact_fields
from connectors.crm.hubspot.subscriptions import Subscriptions
from connectors.crm.mapping import OptOut
from connectors.crm.protocol import (
    ConnectionInfo,
    CrmField,
    CrmRecord,
    CrmSnapshot,
    SyncFailure,
    SyncResult,
)

logger = logging.getLogger(__name__)


class HubSpotConnector:
    """A HubSpot account's contacts, keyed by lower-cased e-mail.

    Writes go to batch upsert with `idProperty=email` (never search-then-create,
    whose search lags writes: HS-01), so every write is safe to retry. A record
    marked `unsubscribe` also has its address unsubscribed, after its contact
    was written, from the subscription type `opt_out` names (the account's one
    marketing type when it names none); unsubscribing again is harmless.
    """

    provider = "hubspot"
    key_field = KEY
    key_source: Literal["email", "lead_id"] = "email"
    batch_size = BATCH_SIZE
    # HubSpot has no bulk write API for contacts beyond the batch endpoints.
    bulk_threshold = None

    def __init__(
        self,
        credentials: HubSpotCredentials,
        *,
        budget: RateBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        opt_out: OptOut | None = None,
    ) -> None:
        self._credentials = credentials
        self._client = HubSpotClient(
            credentials, budget=budget or Unlimited(), sleep=sleep
        )
        self._writer = ContactWriter(self._client)
        self._scanner = ChangeScanner(self._client, sleep=sleep)
        self._subscriptions = Subscriptions(self._client, opt_out or OptOut())

    def upsert(self, records: Sequence[CrmRecord]) -> list[SyncResult]:
        """Creates or updates each record by e-mail; one result per record, in order.

        A record to unsubscribe is a success only once its address is
        unsubscribed too; a contact written whose unsubscribe failed is a
        failure (with the contact's id), retryable when the unsubscribe may
        succeed later.

        Raises:
            CrmDailyLimitReached: the day's allowance ran out; nothing more
                succeeds before it resets.
            CrmError: a failure of a whole call that retrying did not cure.
        """
        started = time.monotonic()
        pending, refused = collapse(records)
        by_ref = {result.ref: result for result in refused}
        unsubscribed = 0
        for start in range(0, len(pending), BATCH_SIZE):
            chunk = pending[start : start + BATCH_SIZE]
            written = self._writer.write(chunk)
            for item in chunk:
                result = written[item.key]
                if item.unsubscribe and result.ok:
                    result = self._unsubscribe(item.key, result)
                    unsubscribed += result.ok
                for ref in item.refs:
                    by_ref[ref] = SyncResult(
                        ref, result.outcome, result.crm_id, result.failure, result.note
                    )
        results = [by_ref[record.ref] for record in records]
        logger.info(
            "HubSpot upsert: %d record(s) as %d contact(s): %d created, "
            "%d updated, %d failed, %d unsubscribed in %.1f s",
            len(records),
            len(pending),
            sum(r.outcome == "created" for r in results),
            sum(r.outcome == "updated" for r in results),
            sum(r.outcome == "failed" for r in results),
            unsubscribed,
            time.monotonic() - started,
        )
        return results

    def _unsubscribe(self, address: str, written: SyncResult) -> SyncResult:
        """`written` once `address` is unsubscribed, else a failure saying why.

        Raises:
            CrmDailyLimitReached: the day's allowance ran out; every later call
                would meet it too, so the whole upsert stops.
        """
        try:
            self._subscriptions.unsubscribe(address)
        except CrmDailyLimitReached:
            raise
        except CrmError as exc:
            failure = SyncFailure(
                exc.code,
                f"the contact was written but its e-mail opt-out was not: {exc}",
                retryable=exc.retryable,
                retry_after=exc.retry_after,
            )
            return SyncResult("", "failed", crm_id=written.crm_id, failure=failure)
        return written

    def erase(self, crm_id: str) -> bool:
        """Deletes the contact for good through HubSpot's GDPR delete, by record id.

        Never by e-mail: HubSpot puts an address it does not find on a
        blocklist that stops the address for good, which would keep a person
        who signs up again out. A contact HubSpot does not have (404) is gone
        already.

        Returns:
            True when HubSpot deleted it now; False when it had no such contact.
        """
        try:
            self._client.call(
                "GDPR delete contact",
                self._client.basic_api.purge_with_http_info,
                PublicGdprDeleteInput(object_id=crm_id),
            )
        except HubSpotNotFound:
            logger.info("HubSpot GDPR delete: contact %s was not there", crm_id)
            return False
        logger.info("HubSpot GDPR delete: contact %s deleted", crm_id)
        return True

    def read(
        self, keys: Sequence[str], fields: Sequence[str]
    ) -> dict[str, CrmSnapshot]:
        """The contacts found by e-mail; an e-mail not found is absent."""
        return read_contacts(self._client, keys, fields)

    def read_by_id(self, crm_id: str, fields: Sequence[str]) -> CrmSnapshot | None:
        """One contact by its record id; None when HubSpot has no such contact."""
        return read_contact(self._client, crm_id, fields)

    def changed(
        self, start: datetime, end: datetime, fields: Sequence[str]
    ) -> Iterator[CrmSnapshot]:
        """Every contact modified in `[start, end)`, each once."""
        return self._scanner.scan(start, end, fields)

    def list_fields(self) -> list[CrmField]:
        """The contact object's properties."""
        return list_contact_fields(self._client)

    def test_connection(self) -> ConnectionInfo:
        """Reads one contact, which needs a working token and the contacts scope."""
        page = self._client.call(
            "test connection",
            self._client.basic_api.get_page_with_http_info,
            count=0,
            limit=1,
        )
        return ConnectionInfo(
            provider=self.provider,
            account=self._credentials.api_host,
            detail={
                "auth": "oauth" if self._credentials.uses_oauth else "private app",
                "contacts_visible": bool(page.results),
            },
        )

    def close(self) -> None:
        self._client.close()
