"""The HTTP API: lead intake, lead reads and edits, status."""
