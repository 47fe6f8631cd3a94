"""Many Leads at once by Bulk API 2.0: CSV sent as UTF-8, results matched by key."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from typing import Any

from simple_salesforce import Salesforce

from connectors.crm.protocol import SyncFailure, SyncResult
from connectors.crm.salesforce.client import SalesforceClient
from connectors.crm.salesforce.errors import BulkJobFailed, bulk_failure
from connectors.crm.salesforce.fields import csv_cell
from connectors.crm.salesforce.leads import (
    BATCH_SIZE,
    DUPLICATES_DETECTED,
    Duplicate,
    Leads,
    Pending,
    failed,
)

# A finished job has every row in one of these; rows in neither come back as
# `unknown` (a Failed job never gets here, see `_run_job`).
RESULT_FILES = ("successful", "failed")


def write(
    leads: Leads, client: SalesforceClient, pending: Sequence[Pending]
) -> tuple[dict[int, SyncResult], list[Duplicate]]:
    """Upserts `pending` with Bulk API 2.0 jobs; results by input index.

    By external id this is one upsert job. By e-mail, the Leads are looked up
    (one query per 200), then new ones go in an insert job and known ones in an
    update job by Id. Records the duplicate rule refused come back to be merged.
    All the jobs share one deadline, `bulk_timeout_seconds` from now.
    """
    deadline = time.monotonic() + client.credentials.bulk_timeout_seconds
    if leads.by_external_id:
        return _run_job(
            client,
            "upsert",
            [(item, item.body) for item in pending],
            key_column=leads.key_field,
            normalise=str,
            deadline=deadline,
        )

    existing: dict[str, str] = {}
    keys = list(dict.fromkeys(item.record.key for item in pending))
    for start in range(0, len(keys), BATCH_SIZE):
        existing.update(leads.find_by_email(keys[start : start + BATCH_SIZE]))
    creates = [
        (item, {"Email": item.record.key} | item.body)
        for item in pending
        if item.record.key not in existing
    ]
    updates = [
        (item, {**item.body, "Id": existing[item.record.key]})
        for item in pending
        if item.record.key in existing
    ]
    results: dict[int, SyncResult] = {}
    duplicates: list[Duplicate] = []
    if creates:
        created, duplicates = _run_job(
            client,
            "insert",
            creates,
            key_column="Email",
            normalise=str.lower,
            deadline=deadline,
        )
        results.update(created)
    if updates:
        updated, _ = _run_job(
            client,
            "update",
            updates,
            key_column="Id",
            normalise=str,
            deadline=deadline,
        )
        results.update(updated)
    return results, duplicates


def _run_job(
    client: SalesforceClient,
    operation: str,
    items: list[tuple[Pending, dict[str, Any]]],
    *,
    key_column: str,
    normalise: Callable[[str], str],
    deadline: float,
) -> tuple[dict[int, SyncResult], list[Duplicate]]:
    """Runs one Bulk API 2.0 job over `items` and reads its result files.

    The job is waited for until `deadline` (a `time.monotonic()` value); a job
    still running then fails every record as retryable (`bulk_timeout`).
    """
    if time.monotonic() >= deadline:
        # An earlier job of this upsert used the time up: do not start another.
        failure = SyncFailure(
            "bulk_timeout",
            "no time was left for this Bulk API 2.0 job within bulk_timeout_seconds",
            True,
        )
        return {item.index: failed(item.record, failure) for item, _ in items}, []

    rows = [{name: csv_cell(value) for name, value in row.items()} for _, row in items]
    by_key = {normalise(rows[n][key_column]): item for n, (item, _) in enumerate(items)}
    poll = client.credentials.bulk_poll_seconds
    external_id = client.credentials.external_id_field

    def run(sf: Salesforce) -> Any:
        lead = sf.bulk2.Lead
        # simple-salesforce waits for a job up to its class attribute
        # `DEFAULT_WAIT_TIMEOUT_SECONDS` (24 hours) and takes no argument for it;
        # shadowed on this one helper, the wait ends by our deadline, then the
        # client aborts the job and raises "Job timeout".
        lead._client.DEFAULT_WAIT_TIMEOUT_SECONDS = max(
            0.0, deadline - time.monotonic()
        )
        # simple-salesforce writes the CSV itself and sends it as UTF-8 bytes
        # (SF-07: text bodies were once encoded as Latin-1 and failed on ™).
        if operation == "upsert":
            return lead.upsert(records=rows, external_id_field=external_id, wait=poll)
        if operation == "insert":
            return lead.insert(records=rows, wait=poll)
        return lead.update(records=rows, wait=poll)

    try:
        jobs = client.call(
            f"bulk {operation} leads",
            run,
            count=len(rows),
            # An insert job that failed to answer may have run: a repeat could
            # create every Lead twice. The next sync looks them up by e-mail.
            repeatable=operation != "insert",
        )
    except BulkJobFailed as exc:
        # A Failed or Aborted job raises inside simple-salesforce before its id
        # comes back, so its unprocessed rows cannot be read: every row of it
        # is failed and retryable (an upsert or update repeats safely; a
        # repeated insert is looked up by e-mail first).
        failure = SyncFailure(exc.code, str(exc), True)
        return {item.index: failed(item.record, failure) for item, _ in items}, []

    results: dict[int, SyncResult] = {}
    duplicates: list[Duplicate] = []
    for job in jobs:
        files = _result_files(client, str(job["job_id"]))
        columns = tuple(files["columns"])
        for row in files["successful"]:
            item = by_key.get(normalise(row.get(key_column, "")))
            if item is not None:
                outcome = "created" if row.get("sf__Created") == "true" else "updated"
                results[item.index] = SyncResult(
                    item.record.ref, outcome, crm_id=row.get("sf__Id") or None
                )
        for row in files["failed"]:
            item = by_key.get(normalise(row.get(key_column, "")))
            if item is None:
                continue
            failure = bulk_failure(row.get("sf__Error", ""), columns)
            if failure.code == DUPLICATES_DETECTED and operation != "update":
                duplicates.append(Duplicate(item, None))
            else:
                results[item.index] = failed(item.record, failure)
    return results, duplicates


def _result_files(client: SalesforceClient, job_id: str) -> dict[str, list[Any]]:
    """A finished job's successful and failed rows, and the job's columns.

    Bulk API 2.0 does not keep the upload's row order in these files, so rows
    are matched back to records by their key column, never by position.
    """
    readers: dict[str, Callable[[Salesforce], str]] = {
        "successful": lambda sf: sf.bulk2.Lead.get_successful_records(job_id),
        "failed": lambda sf: sf.bulk2.Lead.get_failed_records(job_id),
    }
    files: dict[str, list[Any]] = {"columns": []}
    for name in RESULT_FILES:
        text = client.call(f"bulk {name} results", readers[name])
        reader = csv.DictReader(io.StringIO(text, newline=""))
        files[name] = list(reader)
        if name == "failed":
            files["columns"] = [
                column
                for column in reader.fieldnames or []
                if not column.startswith("sf__")
            ]
    return files
