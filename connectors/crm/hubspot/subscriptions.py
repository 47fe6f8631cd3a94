"""HubSpot subscription types: unsubscribing an address when its lead opted out.

HubSpot's `hs_email_optout` is read-only; an opt-out is written by
unsubscribing the e-mail address from a subscription type with
`POST /communication-preferences/v3/unsubscribe`
(https://developers.hubspot.com/docs/api-reference/legacy/communication-preferences/v3/unsubscribe-contact).
The status belongs to the address, not to a contact record.
"""

from __future__ import annotations

import logging
from typing import Any

from hubspot.communication_preferences import PublicUpdateSubscriptionStatusRequest

from connectors.crm.errors import CrmConfigError
from connectors.crm.hubspot.client import HubSpotClient
from connectors.crm.hubspot.errors import HubSpotAlreadyUnsubscribed
from connectors.crm.mapping import OptOut

logger = logging.getLogger(__name__)

SETTING = "opt_out.subscription_id"


class Subscriptions:
    """Unsubscribes addresses from the one subscription type opt-outs leave.

    That type is the mapping's `opt_out.subscription_id`; without one, the
    account's only active marketing type, found by one call to
    `GET /communication-preferences/v3/definitions` the first time it is
    needed and kept for the connector's life.
    """

    def __init__(self, client: HubSpotClient, opt_out: OptOut) -> None:
        self._client = client
        self._opt_out = opt_out
        self._subscription_id = opt_out.subscription_id
        # Why the account's types name none, once asked: not asked again.
        self._unresolved: str | None = None

    def unsubscribe(self, address: str) -> None:
        """Unsubscribes `address`; an address that already was counts as done.

        Raises:
            CrmConfigError: no subscription type is set and the account's own
                do not say which one; the message names the setting and the
                account's types.
            CrmError: what the call's last failure translates to.
        """
        subscription_id = self.subscription_id()
        request = PublicUpdateSubscriptionStatusRequest(
            email_address=address,
            subscription_id=subscription_id,
            legal_basis=self._opt_out.legal_basis,
            legal_basis_explanation=self._opt_out.legal_basis_explanation,
        )
        try:
            self._client.call(
                "unsubscribe",
                self._client.status_api.unsubscribe_with_http_info,
                request,
            )
        except HubSpotAlreadyUnsubscribed:
            logger.debug(
                "HubSpot unsubscribe: the address already left subscription %s",
                subscription_id,
            )

    def subscription_id(self) -> str:
        """The subscription type opt-outs leave, looked up when none is set.

        Raises:
            CrmConfigError: none is set and the account has no single active
                marketing type.
            CrmError: the lookup failed.
        """
        if self._subscription_id is not None:
            return self._subscription_id
        if self._unresolved is not None:
            raise CrmConfigError(self._unresolved, problems=((SETTING, "not set"),))

        response = self._client.call(
            "list subscription types",
            self._client.definition_api.get_page_with_http_info,
            count=0,
        )
        active = [d for d in response.subscription_definitions or () if d.is_active]
        marketing = [d for d in active if _is_marketing(d)]
        if len(marketing) == 1:
            self._subscription_id = str(marketing[0].id)
            return self._subscription_id

        listed = ", ".join(f"{d.id} ({d.name})" for d in active) or "none"
        found = "none is" if not marketing else f"{len(marketing)} are"
        self._unresolved = (
            "unsubscribe: the HubSpot mapping does not say which subscription type "
            f"an opt-out leaves, and of the account's active types {found} for "
            f"marketing; set `{SETTING}` in the HubSpot mapping to one of: {listed}"
        )
        raise CrmConfigError(self._unresolved, problems=((SETTING, "not set"),))


def _is_marketing(definition: Any) -> bool:
    # HubSpot's own marketing type ("Marketing Information") has the purpose
    # "Marketing"; sales ("One to One") and service types have others. The exact
    # words of `purpose` are unverified, hence the loose match.
    purpose = str(definition.purpose or "").casefold()
    return "marketing" in purpose and not definition.is_internal
