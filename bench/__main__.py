"""Runs every benchmark in turn (`python -m bench`), or one (`python -m bench NAME …`).

Each runs in its own process, so one's memory and imports do not colour the
next one's figures; each writes `bench/results/<name>-latest.md`.
"""

from __future__ import annotations

import subprocess
import sys

# In the order `make bench` runs them, with the arguments it gives.
BENCHMARKS: dict[str, list[str]] = {
    "ingest": [],
    "lead_api": [],
    "imports": [],
    "matching": [],
    "store_matching": [],
    "scoring": [],
    "crm_sync": [],
    "email_sending": [],
    "orchestration": [],
    "mixed_load": [],
}


def main(argv: list[str]) -> int:
    """Runs the named benchmark with its arguments, or all with their defaults."""
    if argv and argv[0] in BENCHMARKS:
        chosen = {argv[0]: argv[1:]}
    elif argv:
        names = ", ".join(BENCHMARKS)
        print(f"unknown benchmark {argv[0]!r}; choose one of {names}", file=sys.stderr)
        return 2
    else:
        chosen = BENCHMARKS
    failed = []
    for name, arguments in chosen.items():
        print(f"== bench.{name} ==", flush=True)
        done = subprocess.run([sys.executable, "-m", f"bench.{name}", *arguments])
        if done.returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
