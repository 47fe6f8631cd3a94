"""Webhooks: sources, signatures on raw bytes, payloads turned into leads."""
