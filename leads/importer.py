"""Running a lead import: an uploaded file's records, a chunk at a time, through intake.

Each chunk is one transaction: its leads, its rejects and the import's progress
(`records_done`, counts) commit together, so a run that dies resumes after the
last committed chunk and ends with exactly the counts of an uninterrupted run.
A dry run goes through the same steps and rolls the leads back, chunk by chunk.
"""

from __future__ import annotations

import logging
import multiprocessing
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from leads import rulebook
from leads.erasure import erased_since
from leads.errors import FieldError, LeadRejected
from leads.fuzzy import BlockIndex
from leads.imports import (
    CsvFile,
    ImportFileError,
    Record,
    RecordProblem,
    open_records,
    parse_decimal,
    read_mapping,
)
from leads.intake import IntakeResult, fold, prepare, store_many
from leads.matching import mailbox_key
from leads.normalise import email_key
from leads.store import Store, TenantScope, audit, duplicates, lease_time
from leads.store import imports as stored
from leads.store.statistics import refresh_statistics
from leads.store.tables import LeadImport, utcnow
from leads.tracebacks import PlainMessage, valueless

logger = logging.getLogger(__name__)

CHANNEL = "import"
DEFAULT_CHUNK_SIZE = 1000
COPY_BLOCK = 1024 * 1024
# Records skipped on a resume between renewals of the lease.
RENEW_EVERY = 5000
# Chunks between refreshes of the planner's statistics.
STATISTICS_EVERY = 25
# Profiles a dry run keeps to count fuzzy matches across chunks; beyond this a
# dry run of a huge file would hold too much memory, and it says so.
MAX_REMEMBERED = 200_000
# A run extends it with every chunk; a dead run's import is resumable after it.
DEFAULT_LEASE = timedelta(seconds=60)


class ImportBusy(PlainMessage, RuntimeError):
    """Another run holds the import under a live lease, or it has ended."""


@dataclass
class Job:
    """One run's hold on an import: what it reads and what it has seen so far.

    `seen` holds the e-mail keys of every record taken in so far, so a later
    record of the same person counts as merged into the earlier one, in
    whichever chunk it falls. A resumed run rebuilds it from the records it
    skips. A dry run rolls every chunk back, so the next chunk cannot find the
    leads the earlier ones would have made; it counts as the real run would
    by these keys, by `mailboxes` for possible duplicates, and by the
    profiles in `made` for fuzzy matches.
    """

    import_id: str
    tenant_id: str
    owner: str
    region: str
    dry_run: bool
    chunk_size: int
    headers: dict[str, str] = field(default_factory=dict)
    # Fields the mapping declares numbers, with their decimal marks.
    numbers: dict[str, str | None] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    mailboxes: set[str] = field(default_factory=set)
    # A dry run's leads of earlier chunks, for fuzzy matching (see above).
    made: BlockIndex | None = None
    made_emails: dict[Hashable, str] = field(default_factory=dict)
    lease: timedelta = DEFAULT_LEASE

    def note(self, emails: Iterable[str]) -> None:
        """Records e-mail keys of leads taken in (or, in a dry run, that would be)."""
        for email in emails:
            self.seen.add(email)
            box = mailbox_key(email)
            if box:
                self.mailboxes.add(box)


@dataclass(frozen=True)
class Cleaned:
    """A chunk's records as `prepare` left them: leads to write, and rejects."""

    leads: tuple[tuple[Record, dict[str, Any]], ...]
    rejects: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Chunk:
    """Consecutive records of the file, with how far into it the last one ends.

    `cleaned` is filled by `clean_chunk`, perhaps in another process.
    """

    items: tuple[Record | RecordProblem, ...]
    bytes_read: int
    cleaned: Cleaned | None = None

    @property
    def first(self) -> int:
        return self.items[0].number

    @property
    def last(self) -> int:
        return self.items[-1].number


__all__ = ["ImportFileError"]

ChunkRunner = Callable[[Store, Job, Chunk], dict[str, int]]


class ImportTooLarge(ValueError):
    """The upload is larger than the configured limit."""


def accept(
    store: Store,
    tenant_id: str,
    source: BinaryIO,
    *,
    filename: str,
    folder: Path,
    mapping: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_bytes: int,
) -> LeadImport:
    """Keeps an uploaded lead file and queues its import.

    The bytes are copied to `folder` a block at a time, then the header is read:
    a file whose encoding, header or mapping is wrong is refused here, before
    anything is queued, and its copy removed.

    Raises:
        ImportTooLarge: more than `max_bytes` bytes came.
        ImportFileError: the file cannot be read as a lead file (the message
            says why and what to do).
    """
    folder.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=folder, prefix="upload-", suffix=".csv")
    path = Path(name)
    try:
        with open(descriptor, "wb") as target:
            size = _copy(source, target, max_bytes)
        # Reads the encoding and the header only; the records wait for the run.
        columns = read_mapping(mapping)
        with open_records(path, columns.names) as opened:
            read = (opened.encoding, opened.delimiter, dict(opened.headers))
        with store.write(tenant_id) as scope:
            row = stored.create(
                scope,
                filename=Path(filename or "upload.csv").name[:255],
                path=str(path),
                size_bytes=size,
                mapping=mapping,
                dry_run=dry_run,
                chunk_size=chunk_size,
            )
            _note_reading(row, *read)
            return row
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _note_reading(
    row: LeadImport, encoding: str, delimiter: str, headers: Mapping[str, str]
) -> None:
    """Records how the file reads: its encoding, delimiter and columns in order."""
    row.encoding, row.delimiter = encoding, delimiter
    # Pairs, not an object: a JSONB object would not keep the file's order.
    row.columns = [[header, name] for header, name in headers.items()]


def _copy(source: BinaryIO, target: BinaryIO, max_bytes: int) -> int:
    size = 0
    while block := source.read(COPY_BLOCK):
        size += len(block)
        if size > max_bytes:
            raise ImportTooLarge(
                f"the file is larger than {max_bytes:,} bytes "
                "(ORCH_MAX_IMPORT_BYTES); split it into smaller files"
            )
        target.write(block)
    return size


def start(
    store: Store,
    import_id: str,
    *,
    owner: str,
    region: str,
    lease: timedelta = DEFAULT_LEASE,
) -> Job:
    """Takes the import for this run.

    Raises:
        ImportNotFound: there is no such import.
        ImportBusy: another run holds it, or it has finished or failed.
    """
    tenant_id = stored.tenant_of(store, import_id)
    if not stored.claim(store, import_id, owner, lease=lease):
        raise ImportBusy(
            f"import {import_id} is held by another run or has already ended"
        )
    with store.read(tenant_id) as scope:
        row = stored.get(scope, import_id)
        return Job(
            import_id=import_id,
            tenant_id=tenant_id,
            owner=owner,
            region=region,
            dry_run=row.dry_run,
            chunk_size=row.chunk_size,
            lease=lease,
        )


def chunks(store: Store, job: Job) -> Iterator[Chunk]:
    """The records not yet committed, a chunk at a time, in file order.

    Opens the file, records how it was read on the import, and skips the records
    an earlier run committed (noting their e-mail keys in `job.seen`).

    Raises:
        ImportFileError: the file cannot be read as a lead file; the import is
            marked failed with the reason before this is raised.
    """
    with store.read(job.tenant_id) as scope:
        row = stored.get(scope, job.import_id)
        path, mapping, done = Path(row.path), dict(row.mapping), row.records_done
    try:
        columns = read_mapping(mapping)
        job.numbers = columns.numbers
        opened = open_records(path, columns.names or None)
    except (ImportFileError, OSError) as exc:
        fail(store, job, str(exc))
        raise
    with opened:
        job.headers = opened.headers
        with store.write(job.tenant_id) as scope:
            row = stored.get(scope, job.import_id)
            _note_reading(row, opened.encoding, opened.delimiter, opened.headers)
        try:
            for number, chunk in enumerate(_batches(store, opened, job, done)):
                if number % STATISTICS_EVERY == 0:
                    # A store filled by this import must not be planned as
                    # the empty one it was (see `refresh_statistics`).
                    refresh_statistics(store)
                yield chunk
        except ImportFileError as exc:
            # A line too long for a lead file, found part way through: what
            # was committed stays, and the import says where and why it stopped.
            fail(store, job, str(exc))
            raise


def _batches(store: Store, opened: CsvFile, job: Job, done: int) -> Iterator[Chunk]:
    batch: list[Record | RecordProblem] = []
    for item in opened:
        if item.number <= done:
            _note_key(job, item)
            if item.number % RENEW_EVERY == 0:
                # Skipping a long committed stretch takes time: hold on to it.
                stored.extend(store, job.import_id, job.owner, lease=job.lease)
            continue
        batch.append(item)
        if len(batch) == job.chunk_size:
            yield Chunk(tuple(batch), opened.bytes_read)
            batch = []
    if batch:
        yield Chunk(tuple(batch), opened.bytes_read)


def _note_key(job: Job, item: Record | RecordProblem) -> None:
    # Only the key of a record that was taken in: a rejected one made no lead,
    # so a later record of its address was not merged into anything.
    if not isinstance(item, Record) or not email_key(item.values.get("email") or ""):
        return
    try:
        key = prepare(item.values, job.region).get("email")
    except LeadRejected:
        return
    if key:
        job.note([key])


def clean_chunk(
    chunk: Chunk,
    region: str,
    headers: dict[str, str],
    numbers: Mapping[str, str | None] | None = None,
) -> Chunk:
    """The chunk with its records cleaned and checked (`prepare`); no store needed.

    Pure, so it can run in a worker process while the last chunk is written.
    Fields in `numbers` (declared numbers by the mapping) become numbers.
    """
    leads: list[tuple[Record, dict[str, Any]]] = []
    rejects: list[dict[str, Any]] = []
    for item in chunk.items:
        if isinstance(item, RecordProblem):
            error = FieldError("record", item.reason.value, item.message)
            rejects.append(_reject(item.number, item.line, [error], {}))
            continue
        try:
            given = _with_numbers(item.values, numbers) if numbers else item.values
            leads.append((item, prepare(given, region)))
        except LeadRejected as exc:
            cells = _by_header(headers, item)
            rejects.append(_reject(item.number, item.line, exc.errors, cells))
    return replace(chunk, cleaned=Cleaned(tuple(leads), tuple(rejects)))


def _with_numbers(
    values: dict[str, str], numbers: Mapping[str, str | None]
) -> dict[str, Any]:
    """The record's values with declared number columns as numbers.

    Raises:
        LeadRejected: a declared number column holds text that is no number.
    """
    converted: dict[str, Any] = dict(values)
    errors = []
    for name, mark in numbers.items():
        text = (values.get(name) or "").strip()
        if not text:
            continue
        try:
            number = parse_decimal(text, mark)
        except ValueError as exc:
            errors.append(FieldError(name, "not_a_number", str(exc)))
            continue
        converted[name] = (
            int(number) if number == number.to_integral() else float(number)
        )
    if errors:
        raise LeadRejected(errors)
    return converted


def cleaned_chunks(job: Job, source: Iterable[Chunk], workers: int) -> Iterator[Chunk]:
    """`source`'s chunks cleaned, in order; by `workers` other processes when > 0.

    Cleaning (parsing e-mails and phones) costs about as much as writing, so
    worker processes clean the next chunks while this one writes. At most
    `workers + 1` chunks are in flight, which bounds the memory it takes.
    """
    if workers < 1:
        for chunk in source:
            yield clean_chunk(chunk, job.region, job.headers, job.numbers)
        return
    # Forked from a clean server process: forking this one, which may run
    # Prefect's threads, could copy a lock some thread holds.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["leads.importer"])
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending: deque[Future[Chunk]] = deque()
        for chunk in source:
            pending.append(
                pool.submit(clean_chunk, chunk, job.region, job.headers, job.numbers)
            )
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def run_chunk(store: Store, job: Job, chunk: Chunk) -> dict[str, int]:
    """Takes one chunk in: its leads, rejects and the import's progress, together.

    Returns:
        What the chunk's records became, by outcome.

    Raises:
        ImportBusy: the run lost its hold on the import (its lease ran out and
            another run took it); nothing of this chunk was written.
    """
    if chunk.cleaned is None:
        chunk = clean_chunk(chunk, job.region, job.headers, job.numbers)
    assert chunk.cleaned is not None
    rejects = list(chunk.cleaned.rejects)
    keys: set[str] = set()
    with store.write(job.tenant_id) as scope:
        row = stored.get(scope, job.import_id, lock=True)
        if not stored.holds(row, job.owner):
            raise ImportBusy(f"import {job.import_id} was taken over by another run")
        if row.records_done >= chunk.last:
            # A retry of a chunk whose commit did reach the store, though its
            # answer was lost: it is in already.
            return {}
        taken, erased = _without_erased(scope, row.created_at, chunk.cleaned.leads)
        rejects = _scrub_erased(scope, row.created_at, rejects) + erased
        # In file order (`store_many` locks rows in key order itself), with
        # the records of one address folded into its first, before anything
        # is written: one write per person, and the same file imported again
        # finds nothing to change.
        prepared, folded = _fold_repeats(taken)
        merged = sum(map(len, folded.values()))
        counts: Counter[str] = Counter(rejected=len(rejects), merged=merged)
        leads = scope.session.begin_nested()
        references = [
            (_reference(job.import_id, record.number, folded), values)
            for record, values in prepared
        ]
        results = store_many(scope, references, channel=CHANNEL)
        made: list[tuple[int, dict[str, Any]]] = []
        merges: dict[str, dict[str, Any]] = {}
        for (record, values), result in zip(prepared, results, strict=True):
            if not isinstance(result, IntakeResult):
                cells = _by_header(job.headers, record)
                rejects.append(_reject(record.number, record.line, result, cells))
                counts["rejected"] += 1
                continue
            if record.number in folded:
                # Two addresses of a chunk may end in one lead (a fuzzy match).
                detail = merges.setdefault(result.lead.id, _folded_detail(job))
                detail["records"] += folded[record.number]
            outcome = _outcome(job, keys, values.get("email"), result)
            if job.dry_run and outcome == "created":
                outcome = _like_an_earlier_chunk(job, values)
                made.append((record.number, values))
            counts[outcome] += 1
        # Records of the file folded into one write are merges too, as the
        # same records taken one by one would have been.
        audit.append_decisions(
            scope.session, job.tenant_id, "lead.merged", "lead", merges
        )
        if job.dry_run:
            leads.rollback()
        else:
            leads.commit()
        stored.add_rejects(scope, job.import_id, rejects)
        _advance(scope.session, row, job, chunk, counts)
    # Only once the chunk is committed: a retried chunk starts from the same keys.
    job.note(keys)
    _remember(job, made)
    return dict(counts)


ERASED_ERROR = FieldError(
    "email",
    "erased",
    "the person was erased after this file was uploaded; the record was not "
    "taken in, and none of its cells is kept",
)


def _without_erased(
    scope: TenantScope,
    uploaded_at: datetime,
    leads: Iterable[tuple[Record, dict[str, Any]]],
) -> tuple[list[tuple[Record, dict[str, Any]]], list[dict[str, Any]]]:
    """The chunk's leads but those of people erased since the upload; their rejects.

    The uploaded file is not rewritten when a person in it is erased (a
    resumed run reads it by offsets), so their records are refused here.
    """
    leads = list(leads)
    emails = [values["email"] for _, values in leads if values.get("email")]
    # Before the check, as an erasure takes them: one erasing a person of this
    # chunk commits first, or waits for the chunk and then removes what it
    # wrote. `store_many` takes the same locks again, which holds them.
    duplicates.lock_mailboxes(scope, map(mailbox_key, emails))
    erased = erased_since(scope, emails, uploaded_at)
    if not erased:
        return leads, []
    kept, rejects = [], []
    for record, values in leads:
        if values.get("email") in erased:
            rejects.append(_reject(record.number, record.line, [ERASED_ERROR], {}))
        else:
            kept.append((record, values))
    return kept, rejects


def _scrub_erased(
    scope: TenantScope, uploaded_at: datetime, rejects: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rejects, with those holding an address erased since the upload emptied.

    A record refused for another field (a bad phone) still holds the person's
    cells. Only addresses are matched: `erased` entries are hashes of them.
    """
    cells = {v for reject in rejects for v in reject["values"].values() if v}
    addresses = [cell for cell in cells if email_key(cell) is not None]
    erased = erased_since(scope, addresses, uploaded_at)
    if not erased:
        return rejects
    return [
        reject | {"errors": [ERASED_ERROR.as_dict()], "values": {}}
        if erased.intersection(reject["values"].values())
        else reject
        for reject in rejects
    ]


def _like_an_earlier_chunk(job: Job, values: dict[str, Any]) -> str:
    """What a lead a dry run would create becomes when the real run made the
    earlier chunks' leads: merged into one fuzzy matching finds, or flagged."""
    rules = rulebook.matching_rules()
    if rules is None or not job.made:
        return "created"
    profile = rules.profile(values)
    best = rules.best_match(profile, job.made.candidate_profiles(profile))
    if best is None or best[1].decision == "distinct":
        return "created"
    email, other = values.get("email"), job.made_emails.get(best[0])
    if best[1].decision == "match" and not (email and other and email != other):
        return "merged"
    return "possible_duplicate"


def _remember(job: Job, made: list[tuple[int, dict[str, Any]]]) -> None:
    """Keeps the profiles of leads a dry run would have created, for later chunks."""
    rules = rulebook.matching_rules()
    if rules is None or not made:
        return
    if job.made is None:
        job.made = BlockIndex.for_rules(rules)
    for number, values in made:
        if len(job.made) >= MAX_REMEMBERED:
            logger.warning(
                "dry run of import %s: past %d leads, fuzzy matches with earlier "
                "chunks are no longer counted",
                job.import_id,
                MAX_REMEMBERED,
            )
            return
        job.made.add(number, rules.profile(values))
        if values.get("email"):
            job.made_emails[number] = values["email"]


def _fold_repeats(
    leads: Iterable[tuple[Record, dict[str, Any]]],
) -> tuple[list[tuple[Record, dict[str, Any]]], dict[int, list[int]]]:
    """The chunk's leads with later records of an address folded into the first.

    Returns:
        The leads to write, in file order, and the numbers of the records
        folded into each, by the number of the record they were folded into.
    """
    kept: list[tuple[Record, dict[str, Any]]] = []
    first: dict[str, int] = {}
    folded: dict[int, list[int]] = {}
    for record, values in leads:
        email = values.get("email")
        if email and email in first:
            position = first[email]
            into = kept[position][0]
            kept[position] = (into, fold(kept[position][1], values))
            folded.setdefault(into.number, []).append(record.number)
            continue
        if email:
            first[email] = len(kept)
        kept.append((record, values))
    return kept, folded


def _folded_detail(job: Job) -> dict[str, Any]:
    """A `lead.merged` decision's detail for records folded into earlier ones;
    the caller adds their numbers."""
    return {
        "match": "email_key",
        "channel": CHANNEL,
        "import_id": job.import_id,
        "records": [],
    }


def _reference(import_id: str, number: int, folded: Mapping[int, list[int]]) -> str:
    """Where a lead came from in the file: `import:<id>#<record>[,<record>…]`.

    The records folded into the first are listed after it, so the timeline
    names every record the lead's one write took in.
    """
    numbers = [number, *folded.get(number, ())]
    return f"import:{import_id}#" + ",".join(map(str, numbers))


def _outcome(job: Job, keys: set[str], email: str | None, result: IntakeResult) -> str:
    if email:
        repeated = email in job.seen or email in keys
        keys.add(email)
        if repeated:
            # An earlier record of this file was the same person.
            return "merged"
    if result.outcome == "updated" and not result.changed:
        return "unchanged"
    if (
        result.outcome == "created"
        and job.dry_run
        and mailbox_key(email) in job.mailboxes
    ):
        # The real run made the earlier spelling's lead in an earlier chunk.
        return "possible_duplicate"
    return result.outcome


def _advance(
    session: Session, row: LeadImport, job: Job, chunk: Chunk, counts: Counter[str]
) -> None:
    totals = Counter(row.counts or {})
    totals.update(counts)
    # Reassigned, not mutated: a JSON column notices only a new value.
    row.counts = {name: totals.get(name, 0) for name in stored.OUTCOMES}
    row.records_done = chunk.last
    row.bytes_done = chunk.bytes_read
    # Renewed by the clock other runs judge it with (`lease_time`).
    row.lease_expires_at = lease_time.read(session) + job.lease


def _reject(
    number: int, line: int, errors: Iterable[FieldError], values: dict[str, str]
) -> dict[str, Any]:
    return {
        "record": number,
        "line": line,
        "errors": [error.as_dict() for error in errors],
        "values": values,
    }


def _by_header(headers: dict[str, str], record: Record) -> dict[str, str]:
    """The record's cells under the file's own headers, as a user would fix them."""
    return {header: record.values.get(name, "") for header, name in headers.items()}


def finish(store: Store, job: Job) -> dict[str, int]:
    """Marks the import finished and lets go of the uploaded file.

    Returns:
        The import's counts.
    """
    with store.write(job.tenant_id) as scope:
        row = stored.get(scope, job.import_id, lock=True)
        if not stored.holds(row, job.owner):
            raise ImportBusy(f"import {job.import_id} was taken over by another run")
        row.status = stored.FINISHED
        row.finished_at = utcnow()
        row.bytes_done = row.size_bytes
        row.lease_owner = row.lease_expires_at = None
        counts, path = dict(row.counts), Path(row.path)
    # The rejects keep what a user needs; the upload held every row's personal
    # data and is no longer needed.
    path.unlink(missing_ok=True)
    refresh_statistics(store)
    return counts


def fail(store: Store, job: Job, reason: str) -> None:
    """Marks the import failed with a reason a user can act on.

    What earlier chunks took in stays. The upload is deleted: a failed import
    is not resumed (it would fail again), and the file holds every row's
    personal data. A run that lost the import to another changes nothing.
    """
    with store.write(job.tenant_id) as scope:
        row = stored.get(scope, job.import_id, lock=True)
        if row.status == stored.RUNNING and row.lease_owner not in (job.owner, None):
            return
        row.status = stored.FAILED
        row.error = reason
        row.finished_at = utcnow()
        row.lease_owner = row.lease_expires_at = None
        path = Path(row.path)
    path.unlink(missing_ok=True)


def stop(store: Store, job: Job, error: Exception) -> None:
    """Ends an import that an error other than its file's stopped.

    The store being unreachable leaves it running: the sweeper resumes it from
    its last committed chunk once the lease runs out. Any other error would
    stop every later run at the same place, so the import is failed, saying
    how far it got; its traceback goes to this process's log only, without the
    error's text, which may quote a record.

    Raises:
        OperationalError: the store could not be reached (re-raised).
    """
    if isinstance(error, OperationalError):
        raise error
    logger.error("import %s stopped\n%s", job.import_id, valueless(error))
    with store.read(job.tenant_id) as scope:
        done = stored.get(scope, job.import_id).records_done
    fail(
        store,
        job,
        f"stopped by an unexpected error ({type(error).__name__}) after record "
        f"{done:,}; the records up to it were taken in. Import the rest again "
        "(the rejects file and the counts say which), or report the error with "
        "the import's id",
    )


def run(
    store: Store,
    import_id: str,
    *,
    owner: str,
    region: str,
    run_chunk: ChunkRunner = run_chunk,
    on_chunk: Callable[[Job, Chunk, dict[str, int]], None] | None = None,
    lease: timedelta = DEFAULT_LEASE,
    workers: int = 0,
) -> dict[str, int]:
    """Runs (or resumes) an import to the end without Prefect.

    Args:
        store: the lead store.
        import_id: the queued (or interrupted) import.
        owner: who runs it, unique per run (a flow run id, a process id).
        region: default region for phone numbers without a country prefix.
        run_chunk: takes one chunk in; the flow passes its task.
        on_chunk: told after every committed chunk (progress bars, logs).
        lease: how long the run holds the import past each chunk.
        workers: processes that clean records while others are written; 0
            cleans them here.

    Returns:
        The import's counts by outcome.
    """
    job = start(store, import_id, owner=owner, region=region, lease=lease)
    try:
        for chunk in cleaned_chunks(job, chunks(store, job), workers):
            counts = run_chunk(store, job, chunk)
            if on_chunk is not None:
                on_chunk(job, chunk, counts)
    except (ImportFileError, ImportBusy):
        raise
    except Exception as exc:
        stop(store, job, exc)
        raise
    return finish(store, job)


def reject_rows(scope: TenantScope, row: LeadImport) -> Iterator[list[Any]]:
    """The rejects file's rows: a header, then per reject why and its cells as read.

    The reasons come first (record, line, field, reason, message), then the
    file's own columns, so a user can fix the cells and import the rows again.
    """
    headers = [header for header, _ in row.columns or []]
    yield ["record", "line", "field", "reason", "message", *headers]
    for reject in stored.rejects(scope, row.id):
        yield [
            reject.record,
            reject.line,
            *_said_once(reject.errors or []),
            *(reject.values.get(header, "") for header in headers),
        ]


def _said_once(errors: list[dict[str, str]]) -> tuple[str, str, str]:
    """A reject's field, reason and message cells, each error said once.

    Errors are kept one a field, as the API lists them; one error on several
    fields (neither an e-mail nor a phone is `missing_contact` on both) has the
    same reason and message on each. Its fields are joined by ", " in one
    entry, and entries by "; ", so the three cells still line up.
    """
    fields: dict[tuple[str, str], list[str]] = {}
    for error in errors:
        said = (error["reason"], error["message"])
        fields.setdefault(said, []).append(error["field"])
    return (
        "; ".join(", ".join(dict.fromkeys(names)) for names in fields.values()),
        "; ".join(reason for reason, _ in fields),
        "; ".join(message for _, message in fields),
    )
