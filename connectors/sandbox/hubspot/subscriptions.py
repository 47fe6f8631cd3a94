"""The sandbox's HubSpot subscription types, and the addresses unsubscribed from them.

HubSpot keeps a subscription status per e-mail address, not per contact
(https://legacydocs.hubspot.com/docs/methods/email/update_status): an address
may be unsubscribed before any contact has it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.sandbox.hubspot.contacts import iso, now_ms
from connectors.sandbox.hubspot.errors import HubSpotError
from connectors.sandbox.hubspot.properties import EMAIL_PATTERN

# `legalBasis` values the v3 API takes (hubspot-api-client 12's
# PublicUpdateSubscriptionStatusRequest lists the same seven).
LEGAL_BASES = frozenset(
    {
        "LEGITIMATE_INTEREST_PQL",
        "LEGITIMATE_INTEREST_CLIENT",
        "PERFORMANCE_OF_CONTRACT",
        "CONSENT_WITH_NOTICE",
        "NON_GDPR",
        "PROCESS_AND_STORE",
        "LEGITIMATE_INTEREST_OTHER",
    }
)
REQUIRED = ("emailAddress", "subscriptionId")
# When the sandbox's subscription types were made; HubSpot sends both stamps.
DEFINED_AT = iso(1_704_067_200_000)


@dataclass(frozen=True)
class Definition:
    """One subscription type, as the definitions endpoint lists it."""

    id: str
    name: str
    description: str
    purpose: str
    is_default: bool = False
    is_internal: bool = False
    is_active: bool = True

    def as_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "purpose": self.purpose,
            "communicationMethod": "Email",
            "isActive": self.is_active,
            "isDefault": self.is_default,
            "isInternal": self.is_internal,
            "createdAt": DEFINED_AT,
            "updatedAt": DEFINED_AT,
        }


# A new HubSpot account's email types: one for marketing, one for sales.
DEFINITIONS = (
    Definition(
        "1001",
        "Marketing Information",
        "Marketing offers and updates.",
        "Marketing",
        is_default=True,
    ),
    Definition("1002", "One to One", "One to one emails.", "Sales"),
)


@dataclass(frozen=True)
class Unsubscribed:
    """An address's unsubscribe from one type, with the legal basis it was given."""

    email: str
    subscription_id: str
    legal_basis: str | None
    legal_basis_explanation: str | None
    at_ms: int

    def as_record(self) -> dict[str, Any]:
        return {
            "email": self.email,
            "subscription_id": self.subscription_id,
            "legal_basis": self.legal_basis,
            "legal_basis_explanation": self.legal_basis_explanation,
            "at_ms": self.at_ms,
        }


class Subscriptions:
    """The account's subscription types and who left which; safe across threads.

    `version` grows with every unsubscribe, so a saver can tell.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.definitions: list[Definition] = list(DEFINITIONS)
        self.unsubscribed: dict[tuple[str, str], Unsubscribed] = {}
        self.version = 0

    def reset(self) -> None:
        """The default types again, and nobody unsubscribed."""
        with self.lock:
            self.definitions = list(DEFINITIONS)
            self.unsubscribed.clear()
            self.version += 1

    def restore(self, saved: Iterable[Mapping[str, Any]]) -> None:
        """Replaces every unsubscribe with those `records()` gave."""
        with self.lock:
            self.unsubscribed = {
                (item["email"], item["subscription_id"]): Unsubscribed(**item)
                for item in saved
            }
            self.version += 1

    def records(self) -> list[dict[str, Any]]:
        """Every unsubscribe, oldest first: what outlives a restart."""
        with self.lock:
            kept = sorted(self.unsubscribed.values(), key=lambda u: u.at_ms)
        return [item.as_record() for item in kept]

    def unsubscribe(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """`POST /communication-preferences/v3/unsubscribe`: the new status.

        Raises:
            HubSpotError: 400 when a required attribute is missing, the address,
                the subscription type or the legal basis is unknown, or the
                address already left that type.
        """
        missing = [name for name in REQUIRED if not body.get(name)]
        if missing:
            # HubSpot's words for a body without them (hubspot-api-ruby#170).
            raise HubSpotError(
                400,
                "Invalid input JSON on line 1, column 2: Cannot build "
                "PublicUpdateSubscriptionStatusRequest, some of required "
                f"attributes are not set [{', '.join(missing)}]",
            )
        email = str(body["emailAddress"]).strip().lower()
        subscription_id = str(body["subscriptionId"])
        basis = body.get("legalBasis")
        if not EMAIL_PATTERN.fullmatch(email):
            raise HubSpotError(400, f"Email address {email} is invalid")
        if basis is not None and basis not in LEGAL_BASES:
            raise HubSpotError(
                400,
                f"Invalid input JSON: legalBasis {basis!r} is not one of "
                f"{', '.join(sorted(LEGAL_BASES))}",
            )
        with self.lock:
            definition = self._definition(subscription_id)
            if (email, subscription_id) in self.unsubscribed:
                # HubSpot answers a repeated unsubscribe with 400 in these words
                # (ethyca/fides#5237 ignores that 400; integrations quote the text).
                raise HubSpotError(
                    400,
                    f"{email} is already unsubscribed from subscription "
                    f"{subscription_id}",
                )
            explanation = body.get("legalBasisExplanation")
            self.unsubscribed[(email, subscription_id)] = Unsubscribed(
                email,
                subscription_id,
                basis,
                None if explanation is None else str(explanation),
                now_ms(),
            )
            self.version += 1
            return self._status(definition, email)

    def statuses(self, email: str) -> dict[str, Any]:
        """`GET /communication-preferences/v3/status/email/{emailAddress}`."""
        email = email.strip().lower()
        with self.lock:
            statuses = [
                self._status(definition, email)
                for definition in self.definitions
                if definition.is_active
            ]
        return {"recipient": email, "subscriptionStatuses": statuses}

    def listed(self) -> list[dict[str, Any]]:
        """Every active subscription type in the API's shape."""
        with self.lock:
            return [d.as_api() for d in self.definitions if d.is_active]

    def _definition(self, subscription_id: str) -> Definition:
        for definition in self.definitions:
            if definition.id == subscription_id and definition.is_active:
                return definition
        # The wording of HubSpot's answer to an unknown type is unverified.
        raise HubSpotError(
            400, f"Subscription {subscription_id} does not exist in this account."
        )

    def _status(self, definition: Definition, email: str) -> dict[str, Any]:
        # The sandbox account has no data privacy settings: an address not
        # unsubscribed counts as subscribed, as HubSpot's opt-out model has it.
        left = self.unsubscribed.get((email, definition.id))
        status: dict[str, Any] = {
            "id": definition.id,
            "name": definition.name,
            "description": definition.description,
            "status": "NOT_SUBSCRIBED" if left else "SUBSCRIBED",
            "sourceOfStatus": "SUBSCRIPTION_STATUS",
        }
        if left is not None and left.legal_basis is not None:
            status["legalBasis"] = left.legal_basis
        if left is not None and left.legal_basis_explanation is not None:
            status["legalBasisExplanation"] = left.legal_basis_explanation
        return status
