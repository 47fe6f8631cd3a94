"""HubSpot CRM connector, on the official `hubspot-api-client`."""

from connectors.crm.hubspot.connector import HubSpotConnector
from connectors.crm.hubspot.credentials import HubSpotCredentials

__all__ = ["HubSpotConnector", "HubSpotCredentials"]
