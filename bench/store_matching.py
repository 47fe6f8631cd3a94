"""Matching one new lead against a store of N leads, through the store as intake does.

`bench.matching` times the matcher on an in-memory index; this times the path
intake takes: blocking keys looked up in `lead_match_keys`, candidates read
from `leads`, compared. The store is filled directly (rows and keys in bulk),
not through intake, so that a million leads take minutes, not an hour.

    python -m bench.store_matching [--size 1000000] [--queries 1000] [--runs 3]
        [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text

from bench import headline, machine
from bench.matching import SYNTHETIC_SEED, Population
from leads.changes import lead_values
from leads.fuzzy import MatchRules, load_rules
from leads.intake import find_match
from leads.settings import get_settings
from leads.store import Store
from leads.store.database import create_store_engine
from leads.store.schema import upgrade
from leads.store.tables import Lead, MatchKey, new_id, utcnow

RESULTS = Path(__file__).parent / "results" / "store_matching-latest.md"
TARGET_MEDIAN_MS = 5.0
BATCH = 10_000
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _row(lead: dict[str, Any], number: int, now: Any) -> dict[str, Any]:
    local, _, domain = lead["email"].partition("@")
    return {
        **{column.key: None for column in Lead.__table__.c},
        **lead,
        # Unique per lead, as the store's key demands.
        "email": f"{local}.{number}@{domain}",
        "id": new_id(),
        "tenant_id": "default",
        "status": "new",
        "score_reasons": [],
        "warnings": [],
        "flags": [],
        "custom": {},
        "crm_state": {},
        "email_opt_out": False,
        "email_state": {},
        "crm_sync_status": "pending",
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }


def fill(
    store: Store, rules: MatchRules, population: Population, size: int, every: int
) -> list[dict[str, Any]]:
    """Stores `size` invented leads with their keys; returns every `every`-th."""
    kept = []
    now = utcnow()
    for start in range(0, size, BATCH):
        rows, keys = [], []
        for number in range(start, min(size, start + BATCH)):
            lead = population.lead()
            row = _row(lead, number, now)
            rows.append(row)
            for key in rules.blocking_keys(rules.profile(row)):
                keys.append({"lead_id": row["id"], "key": key, "tenant_id": "default"})
            if number % every == 0:
                kept.append(lead)
        with store.engine.begin() as connection:
            connection.execute(insert(Lead.__table__), rows)
            connection.execute(insert(MatchKey.__table__), keys)
        print(f"  stored {min(size, start + BATCH):,} leads", file=sys.stderr)
    if store.backend == "postgresql":
        with store.engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    return kept


def query(store: Store, population: Population, kept: list[dict[str, Any]], count: int):
    """Times `find_match` for resubmitted leads (half) and new people (half)."""
    asked = [population.resubmission(lead) for lead in kept[: count // 2]]
    asked += [population.lead() for _ in range(count - len(asked))]
    times, found = [], 0
    for number, lead in enumerate(asked):
        with store.read("default") as scope:
            begun = time.perf_counter()
            match = find_match(scope, lead)
            times.append(time.perf_counter() - begun)
        if number < count // 2 and match is not None:
            original = kept[number]
            values = lead_values(match.lead)
            found += values["first_name"] in (
                original["first_name"],
                lead["first_name"],
            )
    return times, found


@dataclass(frozen=True)
class QueryRun:
    """One pass of the queries over the filled store."""

    times: list[float]
    found: int

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times) * 1000

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.times)
        return ordered[int(0.95 * (len(ordered) - 1))] * 1000


def run(
    size: int, queries: int, runs: int, backend: str
) -> tuple[float, list[QueryRun]]:
    """Fills a store of `size` leads, then asks `queries` queries `runs` times.

    Returns:
        The seconds the fill took, and each run's times.
    """
    rules = load_rules(get_settings().config_dir / "matching.yaml")
    population = Population.invent(SYNTHETIC_SEED)
    with tempfile.TemporaryDirectory(prefix="bench-store-matching-") as scratch:
        url, drop = _store(backend, Path(scratch))
        try:
            engine = create_store_engine(url)
            upgrade(engine)
            engine.dispose()
            store = Store(url)
            started = time.perf_counter()
            kept = fill(store, rules, population, size, max(1, size // queries))
            filled = time.perf_counter() - started
            done = [
                QueryRun(*query(store, population, kept, queries)) for _ in range(runs)
            ]
            store.dispose()
        finally:
            if drop is not None:
                drop()
    return filled, done


def results_table(
    size: int, queries: int, backend: str, filled: float, runs: list[QueryRun]
) -> list[str]:
    """One row per run of the queries, then their median against the target."""
    medians = [one.median_ms for one in runs]
    median = statistics.median(medians)
    verdict = "met" if median <= TARGET_MEDIAN_MS else "MISSED"
    return [
        f"Store of {size:,} leads on {backend}, filled in {filled:.0f} s; "
        f"{len(runs)} runs of the queries over it (each resubmits the same stored "
        "leads with new typos, and asks new people).",
        "",
        "| Run | Queries | Median | p95 | Resubmissions matched |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {number} | {queries:,} | {one.median_ms:.2f} ms | {one.p95_ms:.2f} ms "
            f"| {one.found:,} of {queries // 2:,} |"
            for number, one in enumerate(runs, start=1)
        ),
        "",
        f"Median of the runs' medians: {median:.2f} ms ({min(medians):.2f} – "
        f"{max(medians):.2f}); target ≤ {TARGET_MEDIAN_MS:.0f} ms: {verdict}.",
    ]


def headlines(size: int, backend: str, runs: list[QueryRun]) -> list[headline.Figure]:
    """The median per query against the target, and the p95."""
    medians = [one.median_ms for one in runs]
    what = f"one new lead matched against {size:,} stored ({backend})"
    return [
        headline.measured(
            f"Median, {what}",
            "ms",
            medians,
            target=f"≤ {TARGET_MEDIAN_MS:.0f} ms",
            met=statistics.median(medians) <= TARGET_MEDIAN_MS,
        ),
        headline.measured(f"p95, {what}", "ms", [one.p95_ms for one in runs]),
    ]


def _store(backend: str, folder: Path) -> tuple[str, Any]:
    if backend == "sqlite":
        return f"sqlite:///{folder / 'bench.db'}", None
    name = f"bench_matching_{int(time.time())}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()

    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", drop


def main(argv: list[str]) -> int:
    """Runs the benchmark, prints the report and writes it to `bench/results/`."""
    parser = argparse.ArgumentParser(prog="python -m bench.store_matching")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="passes of the queries over the one filled store (default 3)",
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args(argv)
    filled, runs = run(args.size, args.queries, args.runs, args.backend)
    body = results_table(args.size, args.queries, args.backend, filled, runs)
    report = [
        "# Matching one lead against the store",
        "",
        f"Command: `python -m bench.store_matching {' '.join(argv)}`. Each query is "
        "`leads.intake.find_match` in a read transaction: keys looked up, "
        "candidates read and compared, under `config/matching.yaml`. Half the "
        "queries resubmit a stored lead with a typo in a name and another "
        "e-mail; half are new people.",
        "",
        *body,
    ]
    machine.publish(RESULTS, report)
    headline.record(
        "store_matching", argv, headlines(args.size, args.backend, runs), report=RESULTS
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
