"""Runs the lead-API benchmark: `python -m bench --help` lists its options."""

from __future__ import annotations

import sys

from bench.lead_api import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
