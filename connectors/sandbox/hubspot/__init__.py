"""The sandbox's HubSpot half: enough CRM v3 for `hubspot-api-client` to run unchanged.

Contacts and unsubscribes live in memory. The routes check tokens and rate
limits as HubSpot does and answer in its shapes; `/_sandbox/hubspot/…` routes
let tests set limits, expire tokens, seed contacts and see what was received.
"""

from connectors.sandbox.hubspot.access import (
    SANDBOX_AUTHORIZATION_CODE,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_REFRESH_TOKEN,
    SANDBOX_TOKEN,
)
from connectors.sandbox.hubspot.errors import error_response
from connectors.sandbox.hubspot.routes import router
from connectors.sandbox.hubspot.state import State

__all__ = [
    "SANDBOX_AUTHORIZATION_CODE",
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "SANDBOX_REFRESH_TOKEN",
    "SANDBOX_TOKEN",
    "State",
    "error_response",
    "router",
]
