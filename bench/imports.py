"""Import benchmark: CSV files of 10k, 100k (and 1M) rows into a store already full.

Each import runs in a child process (`python -m bench.imports --child …`), the
way `orchestrator import --local` runs one, so its peak RSS is its own. The
store is first filled with `--preload` leads through the same import path; the
measured files hold invented people (see `write_leads`), plus 2 % rows with an
invalid e-mail and no phone (rejects).

    python -m bench.imports [--sizes 10000 100000 1000000] [--preload 100000]
        [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import machine
from bench.matching import Population

RESULTS = Path(__file__).parent / "results" / "imports-latest.md"
TARGET_ROWS_PER_SECOND = 10_000
TARGET_PEAK_RSS_MB = 500
TITLES = ["VP Sales", "Head of Marketing", "Engineer", "CEO", "Analyst", ""]
HEADER = [
    "Email",
    "First Name",
    "Last Name",
    "Company",
    "Title",
    "Phone",
    "City",
    "Country",
    "Lead Source",
]


def write_leads(path: Path, rows: int, offset: int, seed: int) -> None:
    """A lead file of `rows` invented people, numbered from `offset`.

    Names, companies and cities are drawn as `bench.matching` draws them (Zipf
    weights over tens of thousands of invented names, so some people share a
    name, as in life); e-mails and phones are unique, so files never overlap.
    Every 50th row has an invalid e-mail and no phone: a reject.
    """
    population = Population.invent(seed)
    chooser = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for number in range(offset, offset + rows):
            lead = population.lead()
            local, _, domain = lead["email"].partition("@")
            invalid = number % 50 == 0
            writer.writerow(
                [
                    f"{local}@@{domain}" if invalid else f"{local}.{number}@{domain}",
                    lead["first_name"],
                    lead["last_name"],
                    lead["company"],
                    chooser.choice(TITLES),
                    ""
                    if invalid
                    else f"+1 415 {number // 10000 % 1000:03d} {number % 10000:04d}",
                    lead["city"],
                    "US",
                    "webinar",
                ]
            )


def _child(url: str, folder: Path, file: Path) -> None:
    """Imports one file here and prints what it measured as JSON."""
    from leads import importer
    from leads.store import Store

    store = Store(url)
    started = time.perf_counter()
    with file.open("rb") as source:
        row = importer.accept(
            store,
            "default",
            source,
            filename=file.name,
            folder=folder,
            max_bytes=10**12,
        )
    counts = importer.run(store, row.id, owner=f"bench-{row.id}"[:64], region="US")
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store.dispose()
    print(json.dumps({"seconds": seconds, "counts": counts, "peak_kb": peak_kb}))


def _import(url: str, folder: Path, file: Path) -> dict:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.imports", "--child", url, str(folder), str(file)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(finished.stdout.strip().splitlines()[-1])


def _store_url(backend: str, folder: Path) -> tuple[str, object]:
    from sqlalchemy import create_engine, text

    if backend == "sqlite":
        return f"sqlite:///{folder / 'bench.db'}", None
    name = f"bench_imports_{int(time.time())}"
    admin = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()

    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", drop


def run(sizes: list[int], preload: int, backend: str) -> list[str]:
    from leads.store.database import create_store_engine
    from leads.store.schema import upgrade

    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as scratch:
        folder = Path(scratch)
        url, drop = _store_url(backend, folder)
        try:
            engine = create_store_engine(url)
            upgrade(engine)
            engine.dispose()
            offset = 0
            if preload:
                file = folder / "preload.csv"
                write_leads(file, preload, offset, seed=1)
                offset += preload
                done = _import(url, folder, file)
                lines.append(
                    f"Preloaded {preload:,} rows in {done['seconds']:.1f} s "
                    f"({preload / done['seconds']:,.0f} rows/s)."
                )
            lines += [
                "",
                "| Rows | Store before | Seconds | Rows/s | µs per row | Peak RSS "
                "| Created | Merged | Flagged | Rejected |",
                "|" + " ---: |" * 10,
            ]
            stored = preload
            for size in sizes:
                file = folder / f"leads-{size}.csv"
                write_leads(file, size, offset, seed=size)
                offset += size
                done = _import(url, folder, file)
                file.unlink()
                counts = done["counts"]
                lines.append(
                    f"| {size:,} | {stored:,} | {done['seconds']:.1f} "
                    f"| {size / done['seconds']:,.0f} "
                    f"| {1e6 * done['seconds'] / size:,.0f} "
                    f"| {done['peak_kb'] / 1024:,.0f} MB "
                    f"| {counts['created']:,} | {counts['merged']:,} "
                    f"| {counts['possible_duplicate']:,} | {counts['rejected']:,} |"
                )
                print(lines[-1], flush=True)
                stored += counts["created"]
        finally:
            if drop is not None:
                drop()
    return lines


def main(argv: list[str]) -> int:
    """Runs the benchmark, prints the report and writes it to `bench/results/`."""
    if argv[:1] == ["--child"]:
        _child(argv[1], Path(argv[2]), Path(argv[3]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.imports")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--preload", type=int, default=100_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args(argv)

    command = "python -m bench.imports " + " ".join(argv)
    body = run(args.sizes, args.preload, args.backend)
    report = [
        "# Import benchmark",
        "",
        f"Command: `{command.strip()}` ({args.backend} store). Each import runs "
        "`leads.importer` in its own process (as `orchestrator import --local` "
        "does), from upload to finished.",
        f"Targets: ≥ {TARGET_ROWS_PER_SECOND:,} rows/s, peak RSS ≤ "
        f"{TARGET_PEAK_RSS_MB} MB, flat µs per row as files and the store grow.",
        "",
        *body,
    ]
    machine.publish(RESULTS, report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
