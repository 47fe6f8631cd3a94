"""The sandbox's Salesforce half: REST, SOQL and Bulk API 2.0 for simple-salesforce.

simple-salesforce always builds `https://` URLs from the instance it is given;
the connector reaches this plain-HTTP sandbox through a `requests.Session` that
rewrites the scheme for a loopback instance only.
"""

from connectors.sandbox.salesforce.oauth import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_PASSWORD,
    SANDBOX_REFRESH_TOKEN,
    SANDBOX_SECURITY_TOKEN,
    SANDBOX_USERNAME,
)
from connectors.sandbox.salesforce.routes import error_response, router
from connectors.sandbox.salesforce.state import State

__all__ = [
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "SANDBOX_PASSWORD",
    "SANDBOX_REFRESH_TOKEN",
    "SANDBOX_SECURITY_TOKEN",
    "SANDBOX_USERNAME",
    "State",
    "error_response",
    "router",
]
