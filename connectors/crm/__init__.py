"""CRM connectors: one protocol (`protocol.py`), a package per vendor."""
