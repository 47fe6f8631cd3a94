"""Who is calling: the request context every store query is scoped by."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Header

DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class RequestContext:
    """The tenant a request acts for, and the key that proved it (none yet)."""

    tenant_id: str
    key_id: str | None = None


def request_context(
    authorization: Annotated[
        str | None, Header(description="`Bearer <key>`; not required yet.")
    ] = None,
    x_api_key: Annotated[
        str | None, Header(description="The key, for callers that cannot set Bearer.")
    ] = None,
) -> RequestContext:
    """Resolves the caller's tenant.

    No keys exist yet, so every request acts for tenant `default`, and a key
    sent now is not checked.
    """
    # TODO(#8): look the key up, refuse unknown keys with 401, resolve its tenant.
    return RequestContext(tenant_id=DEFAULT_TENANT)
