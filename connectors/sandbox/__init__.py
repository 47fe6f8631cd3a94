"""A local CRM speaking enough HubSpot and Salesforce for their official clients."""
