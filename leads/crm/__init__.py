"""Syncing leads to their tenant's CRM, and reading the CRM's changes back."""
