"""Which CRM a tenant syncs to, with what credentials, mapping and mode."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from connectors.crm.budget import RateBudget
from connectors.crm.errors import CrmConfigError
from connectors.crm.protocol import CrmConnector

if TYPE_CHECKING:
    from connectors.crm.mapping import CrmMapping
    from leads.settings import Settings

Provider = Literal["hubspot", "salesforce"]
Mode = Literal["upsert", "update_only", "create_only"]
PROVIDERS: tuple[Provider, ...] = ("hubspot", "salesforce")
MODES: tuple[Mode, ...] = ("upsert", "update_only", "create_only")

# HubSpot private apps: calls per ten seconds and per day, by tier
# (https://developers.hubspot.com/docs/api/usage-details).
HUBSPOT_TIERS = {
    "starter": (100, 250_000),
    "professional": (190, 625_000),
    "enterprise": (190, 1_000_000),
}
# Salesforce has no burst limit, only a rolling daily allocation (reported by
# every response's `Sforce-Limit-Info`); this only keeps one sync from
# monopolising the org's concurrent requests.
SALESFORCE_CALLS_PER_SECOND = 25
# The credentials that tell one vendor account from another, for its budget.
# TODO(#8): an installation re-authorised gets a new refresh token, and with
# it a new budget; the portal or org id (known after login) would not.
_ACCOUNT_IDENTITY = frozenset(
    ("host", "token_url", "access_token", "client_id", "username", "refresh_token")
)


@dataclass(frozen=True)
class CrmAccount:
    """A tenant's CRM: the vendor, how to log in, how leads map, and how to write."""

    provider: Provider
    credentials: BaseModel
    mapping: CrmMapping
    mode: Mode = "upsert"
    tier: str = "professional"
    # `environment`, `sandbox` or `stored` (saved through the API).
    origin: str = "environment"

    @property
    def budget_key(self) -> str:
        """One name per real account: every worker and tenant on it shares a budget.

        An OAuth app's `client_id` is the same in every portal or org that
        installed it, so the refresh token (one per installation) is part of
        the name: two tenants on different accounts never share a budget.
        """
        identity = "|".join(
            str(
                value.get_secret_value()
                if hasattr(value, "get_secret_value")
                else value
            )
            for name, value in sorted(self.credentials)
            if name in _ACCOUNT_IDENTITY and value is not None
        )
        digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
        return f"{self.provider}:{digest}"

    @property
    def budget_size(self) -> tuple[float, float, int | None]:
        """Calls per window, the window in seconds, and the daily allowance if known."""
        if self.provider == "hubspot":
            per_ten_seconds, daily = HUBSPOT_TIERS.get(
                self.tier, HUBSPOT_TIERS["professional"]
            )
            return float(per_ten_seconds), 10.0, daily
        return float(SALESFORCE_CALLS_PER_SECOND), 1.0, None

    def connect(
        self, budget: RateBudget, *, sleep: Callable[[float], None] = time.sleep
    ) -> CrmConnector:
        """A connector to the account that draws on `budget` and waits with `sleep`."""
        # Imported here: each pulls in its vendor's client, which the other
        # vendor's users never need.
        credentials: Any = self.credentials
        if self.provider == "hubspot":
            from connectors.crm.hubspot import HubSpotConnector

            return HubSpotConnector(
                credentials,
                budget=budget,
                sleep=sleep,
                opt_out=self.mapping.unsubscribes,
            )
        from connectors.crm.salesforce import SalesforceConnector

        return SalesforceConnector(credentials, budget=budget, sleep=sleep)


def credentials_model(provider: Provider) -> type[BaseModel]:
    """The credentials class of `provider`'s connector."""
    if provider == "hubspot":
        from connectors.crm.hubspot import HubSpotCredentials

        return HubSpotCredentials
    from connectors.crm.salesforce import SalesforceCredentials

    return SalesforceCredentials


def parse_credentials(provider: Provider, values: dict[str, Any]) -> BaseModel:
    """`values` checked as `provider`'s credentials.

    Raises:
        CrmConfigError: a field is missing or wrong; names each one and why.
    """
    try:
        return credentials_model(provider).model_validate(values)
    except ValidationError as exc:
        problems = tuple(
            (
                ".".join(map(str, error["loc"])),
                str(error["msg"]).removeprefix("Value error, "),
            )
            for error in exc.errors()
        )
        text = "; ".join(
            f"{name}: {message}" if name else message for name, message in problems
        )
        raise CrmConfigError(
            f"{provider} credentials: {text}", problems=problems
        ) from exc


def mapping_file(settings: Settings, provider: Provider) -> Path:
    """The shipped (or the user's edited) mapping file of `provider`."""
    return settings.config_dir / "crm" / f"{provider}.yaml"


def sandbox_credentials(settings: Settings, provider: Provider) -> dict[str, Any]:
    """Credentials the bundled sandbox accepts, as `provider`."""
    if provider == "hubspot":
        from connectors.sandbox import hubspot

        return {"access_token": hubspot.SANDBOX_TOKEN, "host": settings.sandbox_url}
    from connectors.sandbox import salesforce

    return {
        "flow": "client_credentials",
        "token_url": f"{settings.sandbox_url}/services/oauth2/token",
        "client_id": salesforce.SANDBOX_CLIENT_ID,
        "client_secret": salesforce.SANDBOX_CLIENT_SECRET,
        "external_id_field": "Web_Lead_Id__c",
    }


def environment_credentials(provider: Provider) -> dict[str, Any]:
    """`ORCH_HUBSPOT_*` or `ORCH_SALESFORCE_*` variables as credential fields."""
    prefix = f"ORCH_{provider.upper()}_"
    return {
        name.removeprefix(prefix).lower(): value
        for name, value in os.environ.items()
        if name.startswith(prefix) and value != ""
    }


def account_from_settings(settings: Settings) -> CrmAccount | None:
    """The CRM `ORCH_CRM` names, or None for `none`.

    Raises:
        CrmConfigError: the variables of the chosen CRM are incomplete.
    """
    from connectors.crm.mapping import load_mapping

    if settings.crm == "none":
        return None
    if settings.crm == "sandbox":
        provider: Provider = settings.sandbox_crm
        values = sandbox_credentials(settings, provider)
        origin = "sandbox"
    else:
        provider = settings.crm
        values = environment_credentials(provider)
        origin = "environment"
    return CrmAccount(
        provider=provider,
        credentials=parse_credentials(provider, values),
        mapping=load_mapping(mapping_file(settings, provider)),
        mode=settings.crm_mode,
        tier=settings.crm_tier,
        origin=origin,
    )
