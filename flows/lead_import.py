"""The lead import: an uploaded file's records through intake, a chunk at a time."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_table_artifact
from prefect.utilities.annotations import quote

from flows.summaries import publish_summary
from leads import importer
from leads.collector import collect_less_often
from leads.importer import Chunk, Job
from leads.priority import follow_own_niceness
from leads.settings import Settings, get_settings
from leads.store import Store
from leads.store import imports as stored
from leads.tracebacks import withholding
from tasks.import_chunks import import_chunk
from tasks.pending import wake_drains_unless_polling

ImportEnding = Literal["finished", "skipped", "failed", "stopped"]


@flow(name="lead-import", log_prints=False)
@withholding
def import_leads(import_id: str | None = None) -> dict[str, int]:
    """Imports an uploaded lead file, or resumes every import no run holds.

    Guarantees: each chunk of records commits with the import's progress, so a
    run that dies is resumed (by the next run, once its lease has run out) after
    the last committed chunk, and the counts end as an uninterrupted run's. Two
    runs never read one import. Personal data never reaches Prefect: the
    parameters are an id, the artifact and logs carry counts.

    Args:
        import_id: the import to run; None takes every queued import and every
            one whose run died (the schedule's safety net).

    Returns:
        Counts by outcome, summed over the imports this run finished.
    """
    collect_less_often()
    follow_own_niceness()
    settings = get_settings()
    store = Store(settings.store_url)
    totals: Counter[str] = Counter()
    # How each import this run took ended: finished, skipped, failed, stopped.
    imports: Counter[str] = Counter()
    try:
        ids = [import_id] if import_id else stored.resumable(store)
        for one in ids:
            ending, counts = _run_one(store, one, settings)
            imports[f"imports_{ending}"] += 1
            totals.update(counts)
    finally:
        store.dispose()

    publish_summary(
        "lead-import-summary",
        {**totals, **imports},
        (
            "What this import run did: records by outcome, summed over the "
            "imports it finished, and how each import it took ended (counts only)."
        ),
    )
    return dict(totals)


def _run_one(
    store: Store, import_id: str, settings: Settings
) -> tuple[ImportEnding, dict[str, int]]:
    logger = get_run_logger()
    owner = str(runtime.flow_run.id)
    try:
        job = importer.start(
            store, import_id, owner=owner, region=settings.default_region
        )
    except importer.ImportBusy as exc:
        logger.info("skipped: %s", exc)
        return "skipped", {}
    logger.info("import %s: started", import_id)

    try:
        chunks = importer.chunks(store, job)
        for chunk in importer.cleaned_chunks(job, chunks, settings.import_workers):
            counts = import_chunk(store, quote(job), quote(chunk))
            _log_progress(job, chunk)
            if not job.dry_run and counts:
                # The drains take the new rows now, not at the next minute.
                wake_drains_unless_polling(store, sum(counts.values()))
    except importer.ImportFileError as exc:
        # Marked failed with this reason, which the import's status shows.
        logger.error("import %s: failed: %s", import_id, exc)
        return "failed", {}
    except importer.ImportBusy as exc:
        logger.warning("import %s: let go: %s", import_id, exc)
        return "skipped", {}
    except Exception as exc:
        # Failed with how far it got (or, with the store down, left for the
        # sweeper); the error's text stays out of Prefect, it may quote a record.
        importer.stop(store, job, exc)
        logger.error("import %s: stopped by %s", import_id, type(exc).__name__)
        return "stopped", {}

    counts = importer.finish(store, job)
    logger.info("import %s: finished %s", import_id, counts)
    create_table_artifact(
        key=f"lead-import-{import_id}",
        table=_report(store, job, counts),
        description=(
            f"Lead import {import_id}"
            + (" (dry run: nothing was written)" if job.dry_run else "")
            + ": counts only."
        ),
    )
    return "finished", counts


def _log_progress(job: Job, chunk: Chunk) -> None:
    get_run_logger().info(
        "import %s: %d records read (%d bytes)",
        job.import_id,
        chunk.last,
        chunk.bytes_read,
    )


def _report(store: Store, job: Job, counts: dict[str, int]) -> list[dict[str, object]]:
    with store.read(job.tenant_id) as scope:
        row = stored.get(scope, job.import_id)
        read = {
            "records": row.records_done,
            "encoding": row.encoding,
            "delimiter": {"\t": "tab"}.get(row.delimiter or "", row.delimiter),
        }
    prefix = "would be " if job.dry_run else ""
    lines: list[dict[str, object]] = [
        {"what": name, "value": value} for name, value in read.items()
    ]
    lines += [
        {"what": prefix + name, "value": counts.get(name, 0)}
        for name in stored.OUTCOMES
    ]
    return lines
