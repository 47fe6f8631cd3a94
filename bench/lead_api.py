"""Lead-API benchmark: single and batch intake on SQLite and PostgreSQL, as Markdown."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import shlex
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter

import httpx

from bench import headline, machine
from bench.server import (
    BENCH_RATE_LIMIT_PER_MINUTE,
    Backend,
    BackendUnavailable,
    ServerFailed,
    api_server,
    postgresql_backend,
    sqlite_backend,
    upgrade_store,
)
from leads.settings import Settings

BACKENDS = ("sqlite", "postgresql")
RESULTS = Path(__file__).parent / "results" / "lead_api-latest.md"
REPO_ROOT = Path(__file__).resolve().parent.parent

# Upper bounds keep a mistyped option from running for hours; the batch size
# is the API's default `ORCH_MAX_BATCH_LEADS`.
MAX_REQUESTS = 200_000
MAX_CONCURRENCY = 256
MAX_BATCHES = 1_000
MAX_BATCH_SIZE = 1_000
MAX_RUNS = 20
REQUEST_TIMEOUT_S = 60.0
PHASE_TIMEOUT_S = 900.0
BATCH_WARMUP_LEADS = 10
ERROR_SAMPLES = 3

FULL = {"requests": 2000, "concurrency": 16, "batches": 20, "batch_size": 1000}
QUICK = {"requests": 200, "concurrency": 8, "batches": 3, "batch_size": 100}
JSON_HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True)
class Plan:
    """How much traffic each backend gets."""

    requests: int
    concurrency: int
    warmup: int
    batches: int
    batch_size: int
    backends: tuple[str, ...]
    runs: int = 1
    quick: bool = False


@dataclass
class Measurement:
    """One backend × measurement row: latencies, wall time and what went wrong."""

    backend: str
    name: str
    work: str
    clients: int
    unit: str
    tail: bool
    run: int = 1
    done: int = 0
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)

    def fail(self, kind: str, sample: str) -> None:
        """Counts one failure of this kind and keeps the first few samples."""
        self.failures[kind] += 1
        if len(self.samples) < ERROR_SAMPLES:
            self.samples.append(f"{kind}: {sample[:300]}")

    @property
    def failed(self) -> int:
        """How many requests or items failed, of every kind."""
        return sum(self.failures.values())

    @property
    def rate(self) -> float:
        """Requests or leads a second, NaN when nothing was timed."""
        return self.done / self.wall_s if self.wall_s > 0 else math.nan


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile of `values`.

    Args:
        values: the samples, in any order.
        share: which percentile, from 0 to 100.

    Returns:
        The sample at that rank, or NaN when there are none.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return ordered[rank - 1]


NEW_LEAD_OUTCOMES = ("created", "possible_duplicate")


def lead(prefix: str, index: int) -> dict[str, str]:
    """A valid lead whose e-mail no other lead of this run shares.

    Args:
        prefix: tells the phases and batches of a run apart.
        index: the lead's number within its prefix.
    """
    # Stable across runs (unlike hash()): tells the prefixes' people apart.
    number = zlib.crc32(prefix.encode()) * 100_000 + index
    first, last = _invented(number, 1), _invented(number, 2)
    return {
        # Unique through the prefix and index; unlike other leads' addresses.
        "email": f"{first}.{last}.{prefix}{index}@example.com".lower(),
        "first_name": first,
        "last_name": last,
        "company": f"{_invented(number, 3)} Ltd",
        "phone": f"+1 415 {2 + number // 10**6 % 8}{number % 10**6:06d}",
        "source": "bench",
    }


def _invented(index: int, salt: int) -> str:
    """A name of its own per index, unlike its neighbours: one person per lead,
    so fuzzy matching has nothing to merge or flag, as with new sign-ups."""
    value = (index * 2654435761 + salt * 40503) % 26**7
    letters = []
    for _ in range(7):
        value, letter = divmod(value, 26)
        letters.append(chr(ord("a") + letter))
    return "".join(letters).capitalize()


def _encoded(prefix: str, count: int) -> list[bytes]:
    # Encoded before the clock starts so the load generator's JSON work is not
    # counted as server latency.
    return [json.dumps(lead(prefix, i)).encode() for i in range(count)]


async def _post_singles(
    client: httpx.AsyncClient, bodies: list[bytes], clients: int, row: Measurement
) -> None:
    pending: Iterator[bytes] = iter(bodies)

    async def one_client() -> None:
        # Every client pulls from the same iterator; asyncio switches tasks only
        # at `await`, so no body is sent twice.
        for body in pending:
            started = perf_counter()
            try:
                response = await client.post(
                    "/api/leads", content=body, headers=JSON_HEADERS
                )
            except httpx.HTTPError as exc:
                row.fail(type(exc).__name__, str(exc))
                continue
            row.latencies_ms.append((perf_counter() - started) * 1000)
            if response.is_success:
                row.done += 1
                if response.status_code != 201:
                    row.fail(
                        f"HTTP {response.status_code} for a new e-mail", body.decode()
                    )
            else:
                row.fail(f"HTTP {response.status_code}", response.text)

    started = perf_counter()
    try:
        async with asyncio.timeout(PHASE_TIMEOUT_S):
            await asyncio.gather(*(one_client() for _ in range(clients)))
    except TimeoutError:
        row.fail("phase timeout", f"stopped after {PHASE_TIMEOUT_S:.0f} s")
    row.wall_s = perf_counter() - started


async def _post_batches(
    client: httpx.AsyncClient, bodies: list[bytes], size: int, row: Measurement
) -> None:
    started = perf_counter()
    try:
        async with asyncio.timeout(PHASE_TIMEOUT_S):
            for body in bodies:
                await _post_batch(client, body, size, row)
    except TimeoutError:
        row.fail("phase timeout", f"stopped after {PHASE_TIMEOUT_S:.0f} s")
    row.wall_s = perf_counter() - started


async def _post_batch(
    client: httpx.AsyncClient, body: bytes, size: int, row: Measurement
) -> None:
    sent = perf_counter()
    try:
        response = await client.post(
            "/api/leads/batch", content=body, headers=JSON_HEADERS
        )
    except httpx.HTTPError as exc:
        row.fail(type(exc).__name__, str(exc))
        return
    row.latencies_ms.append((perf_counter() - sent) * 1000)
    if not response.is_success:
        row.fail(f"HTTP {response.status_code}", response.text)
        return
    try:
        items = response.json()["results"]
        outcomes = [item["outcome"] for item in items]
    except (ValueError, KeyError, TypeError) as exc:
        row.fail("unreadable answer", f"{exc}: {response.text}")
        return
    if len(outcomes) != size:
        row.fail("wrong answer count", f"{len(outcomes)} results for {size} leads")
    for item, outcome in zip(items, outcomes, strict=True):
        # A possible duplicate is stored as its own lead too: invented names
        # now and then come out alike enough to be flagged for review.
        if outcome in NEW_LEAD_OUTCOMES:
            row.done += 1
        else:
            row.fail(f"item {outcome}", json.dumps(item))


def _batch_bodies(prefix: str, batches: int, size: int) -> list[bytes]:
    return [
        json.dumps([lead(f"{prefix}{b}", i) for i in range(size)]).encode()
        for b in range(batches)
    ]


async def measure(
    base_url: str, headers: dict[str, str], backend: str, plan: Plan, run: int = 1
) -> list[Measurement]:
    """Runs the warm-up, the single-lead and the batch measurements on one server.

    Args:
        base_url: the API's loopback address.
        headers: sent with every request: the API key.
        backend: the backend's name, for the report's rows.
        plan: how many requests, clients and batches.
        run: which run on this server this is, for the report's rows.

    Returns:
        The single-lead row, then the batch row.
    """
    tag = secrets.token_hex(4)
    single = Measurement(
        backend,
        "single `POST /api/leads`",
        f"{plan.requests:,} requests",
        plan.concurrency,
        "req/s",
        tail=True,
        run=run,
    )
    batch = Measurement(
        backend,
        "batch `POST /api/leads/batch`",
        f"{plan.batches} × {plan.batch_size:,} leads",
        1,
        "leads/s",
        tail=False,
        run=run,
    )
    limits = httpx.Limits(
        max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency
    )
    async with httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        limits=limits,
        timeout=REQUEST_TIMEOUT_S,
        trust_env=False,
    ) as client:
        warmup = Measurement(backend, "warm-up", "", plan.concurrency, "", tail=False)
        await _post_singles(
            client, _encoded(f"w{tag}", plan.warmup), plan.concurrency, warmup
        )
        await _post_batch(
            client,
            _batch_bodies(f"wb{tag}", 1, BATCH_WARMUP_LEADS)[0],
            BATCH_WARMUP_LEADS,
            warmup,
        )
        # A failing warm-up says the measurements below will fail the same way.
        single.failures.update({f"warm-up {k}": n for k, n in warmup.failures.items()})
        single.samples.extend(warmup.samples)

        await _post_singles(
            client, _encoded(f"s{tag}", plan.requests), plan.concurrency, single
        )
        await _post_batches(
            client,
            _batch_bodies(f"b{tag}", plan.batches, plan.batch_size),
            plan.batch_size,
            batch,
        )
    return [single, batch]


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}"


def table(rows: list[Measurement]) -> list[str]:
    """The Markdown table, one line per backend × measurement."""
    lines = [
        "| Backend | Measurement | Run | Work | Clients | Throughput | p50 ms "
        "| p95 ms | p99 ms | max ms | Failures |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in sorted(
        rows, key=lambda r: (BACKENDS.index(r.backend), not r.tail, r.run)
    ):
        lat = row.latencies_ms
        p95 = _ms(percentile(lat, 95)) if row.tail else "–"
        p99 = _ms(percentile(lat, 99)) if row.tail else "–"
        lines.append(
            f"| {row.backend} | {row.name} | {row.run} | {row.work} | {row.clients} "
            f"| {row.rate:,.0f} {row.unit} | {_ms(percentile(lat, 50))} | {p95} "
            f"| {p99} "
            f"| {_ms(max(lat, default=math.nan))} | {row.failed} |"
        )
    return lines


def report(
    argv: list[str],
    plan: Plan,
    stores: list[str],
    rows: list[Measurement],
    notes: list[str],
    load_at_start: str,
) -> str:
    """The whole report: the machine, the command, the table and what went wrong.

    Args:
        argv: the arguments the benchmark was given, shown as the command.
        plan: the traffic each backend got.
        stores: one line per backend that ran, saying what it was.
        rows: the measurements, in table order.
        notes: skipped or failed backends, one line each.
        load_at_start: the load averages before any server started; other
            work on the machine shows here.
    """
    command = shlex.join([machine.shown_python(), "-m", "bench.lead_api", *argv])
    lines = [
        "# Lead API benchmark",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Command: `{command}`",
        f"- Code: {machine.code_version()}",
    ]
    lines += [f"- {label}: {value}" for label, value in machine.describe()]
    lines.append(f"- Load average when the run began: {load_at_start}")
    lines += [f"- Store, {store}" for store in stores]
    lines += [
        "- Server: one `orchestrator api --host 127.0.0.1 --port <free port>` "
        "process per backend (uvicorn, one worker, default log level, so every "
        "request is access-logged to a file), after `orchestrator db upgrade` on "
        "an empty store, with `ORCH_RATE_LIMIT_PER_MINUTE="
        f"{BENCH_RATE_LIMIT_PER_MINUTE}` (one key sends "
        "every request; the limiter still runs and charges each).",
        "- Key: every request sends `Authorization: Bearer <key>`, a `write` key "
        "of tenant `default` made in the store before the server started.",
        f"- Single: {plan.warmup} warm-up requests, then {plan.requests:,} requests "
        f"with new e-mails from {plan.concurrency} concurrent `httpx.AsyncClient` "
        "tasks sharing one connection pool; latency is from send to full response.",
        f"- Runs: {plan.runs} per backend, one after another on the same server "
        "and store (the store grows by each run's leads); each run has its own "
        "warm-up.",
        f"- Batch: one {BATCH_WARMUP_LEADS}-lead warm-up batch, then "
        f"{plan.batches} batches of {plan.batch_size:,} new leads sent one after "
        "another; throughput counts leads answered `created` (or "
        "`possible_duplicate`: stored too, flagged for review).",
        "- Failures: non-2xx answers, transport errors and timeouts, plus answers "
        "other than a new lead for a new e-mail; every one should be 0.",
        "- Note: the load generator (one Python process, one event loop) runs on "
        "the same machine and shares its cores with the server and the database, "
        "so these figures understate what the server does with the machine to "
        "itself.",
        "",
        *table(rows),
    ]
    problems = [
        f"- {row.backend}, {row.name}: {row.failed} failed "
        f"({', '.join(f'{k}: {n}' for k, n in row.failures.items())}); "
        f"e.g. {' | '.join(row.samples)}"
        for row in rows
        if row.failed
    ]
    if notes or problems:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes), *problems]
    return "\n".join(lines) + "\n"


def headlines(rows: list[Measurement], notes: list[str]) -> list[headline.Figure]:
    """Per backend: single requests/s and their p99, batch leads/s, over the runs."""
    figures = []
    for backend in BACKENDS:
        singles = [r for r in rows if r.backend == backend and r.tail]
        batches = [r for r in rows if r.backend == backend and not r.tail]
        if not singles:
            why = next(
                (note for note in notes if backend in note.lower()),
                "not in --backends",
            )
            figures.append(headline.skipped(f"{backend}: lead API", why))
            continue
        failed = sum(r.failed for r in [*singles, *batches])
        note = f"{failed:,} failed" if failed else None
        figures += [
            headline.measured(
                f"{backend}: single `POST /api/leads`, {singles[0].clients} clients, "
                "one API process",
                "req/s",
                [r.rate for r in singles],
                note=note,
            ),
            headline.measured(
                f"{backend}: single `POST /api/leads`, p99 latency",
                "ms",
                [percentile(r.latencies_ms, 99) for r in singles],
            ),
            headline.measured(
                f"{backend}: batch `POST /api/leads/batch`, {batches[0].work}",
                "leads/s",
                [r.rate for r in batches],
                note=note,
            ),
        ]
    return figures


def _positive(most: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not 1 <= value <= most:
            raise argparse.ArgumentTypeError(f"must be between 1 and {most:,}")
        return value

    return parse


def _backend_list(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part))
    unknown = [name for name in chosen if name not in BACKENDS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"choose from {', '.join(BACKENDS)}, comma-separated"
        )
    return chosen


def parse_plan(argv: list[str]) -> Plan:
    """The plan from the command line; `--quick` lowers every default.

    Args:
        argv: the arguments after `python -m bench.lead_api`.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bench.lead_api",
        description="Benchmarks lead intake through the API on loopback and "
        f"writes a Markdown report to {RESULTS.relative_to(REPO_ROOT)}.",
    )
    parser.add_argument(
        "--requests",
        type=_positive(MAX_REQUESTS),
        help=f"single-lead requests per backend (default {FULL['requests']})",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive(MAX_CONCURRENCY),
        help=f"concurrent clients (default {FULL['concurrency']})",
    )
    parser.add_argument(
        "--warmup",
        type=_positive(MAX_REQUESTS),
        help="unmeasured single-lead requests first (default 5 per client)",
    )
    parser.add_argument(
        "--batches",
        type=_positive(MAX_BATCHES),
        help=f"batches per backend, sent one by one (default {FULL['batches']})",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive(MAX_BATCH_SIZE),
        help=f"leads per batch (default {FULL['batch_size']})",
    )
    parser.add_argument(
        "--backends",
        type=_backend_list,
        default=BACKENDS,
        help="comma-separated, from sqlite,postgresql (default both)",
    )
    parser.add_argument(
        "--runs",
        type=_positive(MAX_RUNS),
        default=3,
        help="runs per backend on the same server (default 3)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: "
        + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in QUICK.items()),
    )
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    concurrency = args.concurrency or defaults["concurrency"]
    return Plan(
        requests=args.requests or defaults["requests"],
        concurrency=concurrency,
        warmup=args.warmup or 5 * concurrency,
        batches=args.batches or defaults["batches"],
        batch_size=args.batch_size or defaults["batch_size"],
        backends=args.backends,
        runs=args.runs,
        quick=args.quick,
    )


def _open_backend(name: str) -> AbstractContextManager[Backend]:
    if name == "sqlite":
        return sqlite_backend()
    return postgresql_backend(Settings().test_postgres_url)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    """Runs the benchmark, prints the report and writes it to `bench/results/`.

    Returns:
        0 when every request succeeded, 1 when any failed or a server would not
        start (a skipped PostgreSQL is not a failure).
    """
    plan = parse_plan(argv)
    load_at_start = machine.load_average()
    rows: list[Measurement] = []
    stores: list[str] = []
    notes: list[str] = []
    broken = False
    for name in plan.backends:
        try:
            with _open_backend(name) as backend:
                _progress(f"[{name}] {upgrade_store(backend)}")
                with api_server(backend) as server:
                    _progress(f"[{name}] API up at {server.base_url}; measuring")
                    for run in range(1, plan.runs + 1):
                        rows += asyncio.run(
                            measure(server.base_url, server.headers, name, plan, run)
                        )
                stores.append(f"{name}: {backend.label}")
        except BackendUnavailable as exc:
            skipped = f"PostgreSQL rows skipped: {exc}"
            print(skipped, flush=True)
            notes.append(skipped)
        except ServerFailed as exc:
            broken = True
            failed = f"{name} rows missing: {exc}"
            print(failed, flush=True)
            notes.append(failed.replace("\n", " / "))
    text = report(argv, plan, stores, rows, notes, load_at_start)
    print(text, end="")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    _progress(f"report written to {os.path.relpath(RESULTS)}")
    headline.record(
        "lead_api", argv, headlines(rows, notes), report=RESULTS, smoke=plan.quick
    )
    if any(row.failed for row in rows):
        print("FAILED: some requests did not succeed; see Notes above.", flush=True)
        return 1
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
