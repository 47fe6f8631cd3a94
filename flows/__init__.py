"""One module per automation (issue #3 onwards)."""
