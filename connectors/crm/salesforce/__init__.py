"""The Salesforce connector, on simple-salesforce: Leads by external id or e-mail."""

from connectors.crm.salesforce.connector import SalesforceConnector
from connectors.crm.salesforce.credentials import SalesforceCredentials

__all__ = ["SalesforceConnector", "SalesforceCredentials"]
