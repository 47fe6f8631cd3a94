"""Import benchmark: CSV files of 10k, 100k (and 1M) rows into a store already full.

Each import runs in a child process (`python -m bench.imports --child …`), the
way `orchestrator import --local` runs one, so its peak RSS is its own. The
store is first filled with `--preload` leads through the same import path; the
measured files hold invented people (see `write_leads`), plus 2 % rows with an
invalid e-mail and no phone (rejects). Every committed chunk's time is kept
with the store's size before it: the cost per row as the store grows, drawn in
`bench/results/import_cost_by_store_size.png`.

    python -m bench.imports [--sizes 10000 100000 1000000] [--preload 100000]
        [--runs 1] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import headline, machine
from bench.matching import Population

RESULTS = Path(__file__).parent / "results" / "imports-latest.md"
PLOT = Path(__file__).parent / "results" / "import_cost_by_store_size.png"
TARGET_ROWS_PER_SECOND = 10_000
TARGET_PEAK_RSS_MB = 500
# "Flat" as a number: the cost per row where the store is largest at most this
# many times the cost where it is smallest.
TARGET_GROWTH = 1.2
# The share of chunks at each end of the store's sizes the growth compares.
GROWTH_SHARE = 0.1
MILLION = 1_000_000
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
    """Imports one file here and prints what it measured as JSON.

    `chunks` holds, per committed chunk, the leads stored before it, its
    records and its seconds (the first chunk's include opening the file).
    """
    from sqlalchemy import func, select

    from leads import importer
    from leads.collector import collect_less_often
    from leads.store import Store
    from leads.store.tables import Lead

    # As `orchestrator import --local` and the import flow do.
    collect_less_often()
    store = Store(url)
    with store.engine.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(Lead)).scalar_one()
    chunks: list[tuple[int, int, float]] = []
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
    last = time.perf_counter()

    def on_chunk(_job: Any, chunk: Any, counts: dict[str, int]) -> None:
        nonlocal stored, last
        now = time.perf_counter()
        chunks.append((stored, len(chunk.items), now - last))
        stored += counts.get("created", 0) + counts.get("possible_duplicate", 0)
        last = now

    counts = importer.run(
        store, row.id, owner=f"bench-{row.id}"[:64], region="US", on_chunk=on_chunk
    )
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store.dispose()
    print(
        json.dumps(
            {"seconds": seconds, "counts": counts, "peak_kb": peak_kb, "chunks": chunks}
        )
    )


@dataclass
class Imported:
    """One file imported in a child process, and what it measured."""

    name: str
    rows: int
    stored_before: int
    seconds: float
    peak_mb: float
    counts: dict[str, int]
    # (leads stored before the chunk, its records, its seconds) per chunk.
    chunks: list[tuple[int, int, float]]

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    @property
    def stored(self) -> int:
        return self.counts.get("created", 0) + self.counts.get("possible_duplicate", 0)


def _import(url: str, folder: Path, file: Path, rows: int, name: str) -> Imported:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.imports", "--child", url, str(folder), str(file)],
        check=True,
        capture_output=True,
        text=True,
    )
    done = json.loads(finished.stdout.strip().splitlines()[-1])
    chunks = [tuple(chunk) for chunk in done["chunks"]]
    return Imported(
        name=name,
        rows=rows,
        stored_before=chunks[0][0] if chunks else 0,
        seconds=done["seconds"],
        peak_mb=done["peak_kb"] / 1024,
        counts=done["counts"],
        chunks=chunks,
    )


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


def run(sizes: list[int], preload: int, runs: int, backend: str) -> list[Imported]:
    """The preload (if any), then each size `runs` times, into one growing store."""
    from leads.store.database import create_store_engine
    from leads.store.schema import upgrade

    imports: list[Imported] = []
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as scratch:
        folder = Path(scratch)
        url, drop = _store_url(backend, folder)
        try:
            engine = create_store_engine(url)
            upgrade(engine)
            engine.dispose()
            offset = 0
            plan = [("preload", preload)] if preload else []
            plan += [(f"{size:,} rows", size) for size in sizes for _ in range(runs)]
            for name, size in plan:
                file = folder / f"leads-{offset}.csv"
                write_leads(file, size, offset, seed=1 if name == "preload" else size)
                offset += size
                imports.append(_import(url, folder, file, size, name))
                file.unlink(missing_ok=True)
                done = imports[-1]
                print(
                    f"{name} into {done.stored_before:,} leads: {done.seconds:.1f} s, "
                    f"{done.rate:,.0f} rows/s, peak {done.peak_mb:,.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            if drop is not None:
                drop()
    return imports


def _micros(chunk: tuple[int, int, float]) -> float:
    return 1e6 * chunk[2] / chunk[1]


def cost_growth(imports: list[Imported]) -> tuple[int, float, int, float] | None:
    """The median µs per row over the chunks into the smallest and largest stores.

    Returns:
        (store size, µs per row) at the small end, then at the large end, each
        over `GROWTH_SHARE` of the chunks; None with fewer than two chunks.
    """
    chunks = sorted(chunk for done in imports for chunk in done.chunks)
    if len(chunks) < 2:
        return None
    edge = max(1, int(len(chunks) * GROWTH_SHARE))
    small, large = chunks[:edge], chunks[-edge:]
    return (
        small[len(small) // 2][0],
        statistics.median(map(_micros, small)),
        large[len(large) // 2][0],
        statistics.median(map(_micros, large)),
    )


def cost_table(imports: list[Imported], bands: int = 10) -> list[str]:
    """Median µs per row by the store's size before the chunk, in equal bands."""
    chunks = sorted(chunk for done in imports for chunk in done.chunks)
    if not chunks:
        return []
    low, high = chunks[0][0], chunks[-1][0]
    width = max(1, -(-(high - low + 1) // bands))
    lines = [
        "| Leads stored before the chunk | Chunks | µs per row, median (min – max) |",
        "| --- | ---: | ---: |",
    ]
    for band in range(bands):
        start = low + band * width
        mine = [_micros(c) for c in chunks if start <= c[0] < start + width]
        if mine:
            lines.append(
                f"| {start:,} – {start + width - 1:,} | {len(mine)} "
                f"| {statistics.median(mine):,.0f} ({min(mine):,.0f} – "
                f"{max(mine):,.0f}) |"
            )
    return lines


def plot(imports: list[Imported], path: Path, title: str) -> str:
    """Draws µs per row against the store's size, one series per import."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (`pip install -e '.[bench]'`)"
    figure, axes = plt.subplots(figsize=(9, 5), dpi=100)
    for done in imports:
        axes.plot(
            [chunk[0] for chunk in done.chunks],
            [_micros(chunk) for chunk in done.chunks],
            marker=".",
            linewidth=0.8,
            label=f"{done.name} ({done.rate:,.0f} rows/s)",
        )
    axes.set_xlabel("leads stored before the chunk")
    axes.set_ylabel("µs per row (chunk seconds ÷ its records)")
    axes.set_ylim(bottom=0)
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return f"Plot: `{machine.shown_path(path)}`."


def import_table(imports: list[Imported]) -> list[str]:
    """One row per import, the preload included."""
    lines = [
        "| Import | Store before | Seconds | Rows/s | µs per row | Peak RSS "
        "| Created | Merged | Flagged | Rejected |",
        "| --- |" + " ---: |" * 9,
    ]
    for done in imports:
        counts = done.counts
        lines.append(
            f"| {done.name} | {done.stored_before:,} | {done.seconds:.1f} "
            f"| {done.rate:,.0f} | {1e6 / done.rate:,.0f} | {done.peak_mb:,.0f} MB "
            f"| {counts.get('created', 0):,} | {counts.get('merged', 0):,} "
            f"| {counts.get('possible_duplicate', 0):,} "
            f"| {counts.get('rejected', 0):,} |"
        )
    return lines


def million_skipped(imports: list[Imported], sizes: list[int]) -> str | None:
    """Why 1,000,000 rows were not imported, with the time they would take."""
    measured = [done for done in imports if done.name != "preload"]
    if MILLION in sizes or not measured:
        return None
    largest = max(measured, key=lambda done: done.rows)
    minutes = MILLION / largest.rate / 60
    return (
        f"not measured by default: at the {largest.rate:,.0f} rows/s measured "
        f"for {largest.rows:,} rows, 1,000,000 would take about {minutes:,.0f} "
        "min; `--sizes 10000 100000 1000000` measures it"
    )


def headlines(
    imports: list[Imported], sizes: list[int], runs: int
) -> list[headline.Figure]:
    """Rows/s and peak RSS per size, the cost's growth, and 1M if not measured."""
    figures = []
    measured = [done for done in imports if done.name != "preload"]
    for size in sizes:
        mine = [done for done in measured if done.rows == size]
        stores = f"{mine[0].stored_before:,}" + (
            f" – {mine[-1].stored_before:,}" if len(mine) > 1 else ""
        )
        rates = [done.rate for done in mine]
        figures.append(
            headline.measured(
                f"CSV import, {size:,} rows into a store of {stores} leads",
                "rows/s",
                rates,
                target=f"≥ {TARGET_ROWS_PER_SECOND:,} rows/s",
                met=statistics.median(rates) >= TARGET_ROWS_PER_SECOND,
            )
        )
        peaks = [done.peak_mb for done in mine]
        figures.append(
            headline.measured(
                f"Peak RSS of the import process, {size:,} rows",
                "MB",
                peaks,
                target=f"≤ {TARGET_PEAK_RSS_MB} MB",
                met=statistics.median(peaks) <= TARGET_PEAK_RSS_MB,
            )
        )
    reason = million_skipped(imports, sizes)
    if reason is not None:
        figures.append(
            headline.skipped(
                "CSV import, 1,000,000 rows",
                reason,
                unit="rows/s",
                target=f"≥ {TARGET_ROWS_PER_SECOND:,} rows/s",
            )
        )
    growth = cost_growth(imports)
    if growth is not None:
        small_store, small, large_store, large = growth
        figures.append(
            headline.measured(
                f"µs per row as the store grows: at ~{large_store:,} leads ÷ at "
                f"~{small_store:,}",
                "×",
                [large / small],
                target=f"flat: ≤ {TARGET_GROWTH}×",
                met=large / small <= TARGET_GROWTH,
                note=f"{small:,.0f} → {large:,.0f} µs per row; one sequence of "
                f"imports, {runs} run{'s' if runs > 1 else ''} per size",
            )
        )
    return figures


def main(argv: list[str]) -> int:
    """Runs the benchmark, prints the report and writes it to `bench/results/`."""
    if argv[:1] == ["--child"]:
        _child(argv[1], Path(argv[2]), Path(argv[3]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.imports")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--preload", type=int, default=100_000)
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="imports of each size, one after another into the growing store "
        "(default 1: the default sizes take about 15 min on 2 cores)",
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args(argv)

    imports = run(args.sizes, args.preload, args.runs, args.backend)
    growth = cost_growth(imports)
    title = (
        f"Import cost per row against the store's size ({args.backend}, "
        f"{machine.cpu_counts()})"
    )
    command = " ".join(["python -m bench.imports", *argv])
    report = [
        "# Import benchmark",
        "",
        f"Command: `{command}` ({args.backend} store). Each import runs "
        "`leads.importer` in its own process (as `orchestrator import --local` "
        "does), from upload to finished, 1,000 records a chunk. "
        f"{args.runs} import{'s' if args.runs > 1 else ''} of each size, one after "
        "another into one store that grows: a run of the default sizes takes "
        "about 15 minutes here, so it is one run unless `--runs` says more.",
        f"Targets: ≥ {TARGET_ROWS_PER_SECOND:,} rows/s, peak RSS ≤ "
        f"{TARGET_PEAK_RSS_MB} MB, flat µs per row as files and the store grow "
        f"(taken as: at most {TARGET_GROWTH}× from the smallest store to the "
        "largest).",
        "",
        *import_table(imports),
        "",
        "## Cost per row as the store grows",
        "",
        "Every committed chunk of every import above: its seconds (from the last "
        "chunk's commit to its own; the first includes opening the file) per "
        "record, against the leads stored before it. Every 25th chunk also "
        "refreshes the planner's statistics.",
        "",
        *cost_table(imports),
        "",
        plot(imports, PLOT, title),
    ]
    if growth is not None:
        small_store, small, large_store, large = growth
        report += [
            "",
            f"Median of the {GROWTH_SHARE:.0%} of chunks into the smallest stores "
            f"(~{small_store:,} leads): {small:,.0f} µs per row; into the largest "
            f"(~{large_store:,}): {large:,.0f} µs per row, {large / small:.2f}×; "
            f"target ≤ {TARGET_GROWTH}×: "
            f"{'met' if large / small <= TARGET_GROWTH else 'missed'}.",
        ]
    million = million_skipped(imports, args.sizes)
    if million is not None:
        report += ["", f"1,000,000 rows: {million}."]
    machine.publish(RESULTS, report)
    headline.record(
        "imports",
        argv,
        headlines(imports, args.sizes, args.runs),
        report=RESULTS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
