"""Runs every benchmark in turn (`python -m bench`), or one (`python -m bench NAME …`).

Each runs in its own process, so one's memory and imports do not colour the
next one's figures; each writes `bench/results/<name>-latest.md`, and most a
`<name>-headline.json` too. `python -m bench report` (also run after all of
them) turns the headline files into `bench/results/README.md` and the table in
the top-level README.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench import headline

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


def report(results: Path = headline.RESULTS, readme: Path = headline.README) -> int:
    """Writes the headline table; 1 when the README has no place for it."""
    try:
        entries = headline.write(list(BENCHMARKS), results, readme)
    except headline.MarkersMissing as exc:
        print(f"{readme.name} not updated: {exc}", file=sys.stderr)
        return 1
    shown = sum(entry.not_run is None for entry in entries)
    print(
        f"headlines of {shown} of {len(entries)} benchmarks written to "
        "bench/results/README.md and README.md",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str]) -> int:
    """Runs the named benchmark with its arguments, or all with their defaults.

    `report` writes the headline table alone; after all benchmarks it is
    written too, whether or not some failed.
    """
    if argv == ["report"]:
        return report()
    if argv and argv[0] in BENCHMARKS:
        chosen = {argv[0]: argv[1:]}
    elif argv:
        names = ", ".join([*BENCHMARKS, "report"])
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
    written = report() if not argv else 0
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return written


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
