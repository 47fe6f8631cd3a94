"""Prefect tasks wrapping domain and connector calls (issue #3 onwards)."""
