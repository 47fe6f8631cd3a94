"""CRM and e-mail connectors, and the CRM sandbox (issues #5 and #6)."""
