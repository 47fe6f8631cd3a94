"""Tenants' CRM accounts: saved with their secrets sealed, and resolved for a sync."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, SecretStr

from connectors.crm.accounts import (
    CrmAccount,
    Mode,
    Provider,
    account_from_settings,
    mapping_file,
    parse_credentials,
)
from connectors.crm.errors import CrmConfigError
from connectors.crm.mapping import load_mapping, load_mapping_document
from leads.encryption import SecretBox, SecretKeyError, secret_box
from leads.settings import DEFAULT_TENANT, Settings
from leads.store.database import Store, TenantScope
from leads.store.tables import CrmAccount as CrmAccountRow


def split_secrets(credentials: BaseModel) -> tuple[dict[str, Any], dict[str, str]]:
    """The credentials' plain fields, and their secret ones as plain text."""
    plain: dict[str, Any] = {}
    secret: dict[str, str] = {}
    for name, value in credentials:
        if isinstance(value, SecretStr):
            secret[name] = value.get_secret_value()
        elif value is not None:
            plain[name] = value
    return plain, secret


def save(
    scope: TenantScope,
    account: CrmAccount,
    *,
    mapping_document: dict[str, Any] | None,
    box: SecretBox,
) -> CrmAccountRow:
    """Stores the tenant's CRM (replacing any), its secrets sealed with `box`."""
    plain, secret = split_secrets(account.credentials)
    row = scope.get(CrmAccountRow, scope.tenant_id, lock=True)
    if row is None:
        row = CrmAccountRow(tenant_id=scope.tenant_id)
        scope.session.add(row)
    row.provider = account.provider
    row.settings = plain | {"tier": account.tier}
    row.secrets = box.seal(secret) if secret else None
    row.mapping = mapping_document
    row.mode = account.mode
    return row


def account_of(row: CrmAccountRow, box: SecretBox, settings: Settings) -> CrmAccount:
    """The stored row as an account a connector can be built from.

    Raises:
        CrmConfigError: the saved secrets cannot be opened with the secret key
            in use, or the saved credentials or mapping no longer check out.
    """
    provider: Provider = row.provider  # type: ignore[assignment]
    values = dict(row.settings)
    tier = values.pop("tier", "professional")
    try:
        secrets = box.open(row.secrets) if row.secrets else {}
    except SecretKeyError as exc:
        raise CrmConfigError(str(exc)) from exc
    if row.mapping is not None:
        mapping = load_mapping_document(row.mapping, origin="the saved CRM mapping")
    else:
        mapping = load_mapping(mapping_file(settings, provider))
    mode: Mode = row.mode  # type: ignore[assignment]
    return CrmAccount(
        provider=provider,
        credentials=parse_credentials(provider, values | secrets),
        mapping=mapping,
        mode=mode,
        tier=tier,
        origin="stored",
    )


def resolve(store: Store, tenant_id: str, settings: Settings) -> CrmAccount | None:
    """The tenant's saved CRM; for the default tenant, else the environment's.

    The CRM `ORCH_CRM` names belongs to the default tenant alone: another
    tenant's leads must never land in it, so a tenant without a saved account
    has no CRM and its leads wait until it saves one.

    Raises:
        CrmConfigError: the account is configured but cannot be used; says why.
    """
    with store.read(tenant_id) as scope:
        row = scope.get(CrmAccountRow, tenant_id)
    if row is not None:
        return account_of(row, secret_box(settings), settings)
    if tenant_id != DEFAULT_TENANT:
        return None
    return account_from_settings(settings)
