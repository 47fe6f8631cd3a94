"""Bulk API 2.0 ingest jobs in the sandbox: CSV in, per-row result CSVs out."""

from __future__ import annotations

import csv
import io
from typing import Any

from connectors.sandbox.salesforce.fields import (
    FieldError,
    RecordRefused,
    SObjectType,
)
from connectors.sandbox.salesforce.state import (
    BulkJob,
    MultipleMatches,
    State,
    now_text,
)

OPERATIONS = ("insert", "update", "upsert")
RESULT_FILES = ("successfulResults", "failedResults", "unprocessedrecords")
# Bulk API 2.0 CSV: an empty cell leaves the field alone, `#N/A` sets it to null
# (https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/datafiles_prepare_csv.htm).
NULL_CELL = "#N/A"


class JobRefused(Exception):
    """A job request Bulk API 2.0 refuses; `code` is its errorCode."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def create_job(state: State, sobject: SObjectType, body: dict[str, Any]) -> BulkJob:
    """A new Open job, checked like Salesforce checks one."""
    operation = body.get("operation")
    if operation not in OPERATIONS:
        raise JobRefused("INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
    external_id = body.get("externalIdFieldName")
    if operation == "upsert":
        field = sobject.field(external_id or "")
        if field is None or not (field.external_id or field.name == "Id"):
            raise JobRefused(
                "INVALIDJOB",
                f"InvalidJob : External ID field {external_id} is not an "
                "external id field",
            )
        external_id = field.name
    if body.get("contentType", "CSV") != "CSV":
        raise JobRefused("INVALIDJOB", "InvalidJob : contentType must be CSV")
    job = BulkJob(
        id=state.new_id("750"),
        operation=operation,
        sobject=sobject,
        external_id_field=external_id if operation == "upsert" else None,
        created=now_text(),
    )
    state.jobs[job.id] = job
    return job


def upload(job: BulkJob, data: bytes) -> None:
    """Stores the job's CSV; only an Open job takes data."""
    if job.state != "Open":
        raise JobRefused(
            "INVALIDJOBSTATE", f"Job {job.id} is not open for data: {job.state}"
        )
    job.data = data


def _cell(sobject: SObjectType, column: str, text: str) -> Any:
    field = sobject.field(column)
    assert field is not None
    if text == NULL_CELL:
        return None
    if field.type == "boolean":
        if text.lower() not in ("true", "false"):
            raise _wrong_type(field.label, field.name, text)
        return text.lower() == "true"
    if field.type == "double":
        try:
            return float(text)
        except ValueError as exc:
            raise _wrong_type(field.label, field.name, text) from exc
    return text


def _wrong_type(label: str, name: str, text: str) -> RecordRefused:
    return RecordRefused(
        FieldError(
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            f"{label}: value not of required type: {text}",
            (name,),
        )
    )


def _error_cell(error: RecordRefused | MultipleMatches) -> str:
    # Salesforce writes `CODE:message:Field1,Field2 --` into sf__Error.
    if isinstance(error, MultipleMatches):
        return "DUPLICATE_EXTERNAL_ID:more than one record found for external id:--"
    first = error.errors[0]
    return f"{first.code}:{first.message}:{','.join(first.fields)} --"


def process(state: State, job: BulkJob) -> None:
    """Runs an UploadComplete job to JobComplete (or Failed), row by row."""
    try:
        text = job.data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        job.state = "Failed"
        job.error_message = "InvalidBatch : Failed to parse CSV: the data is not UTF-8"
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    job.columns = list(reader.fieldnames or [])
    unknown = [name for name in job.columns if job.sobject.field(name) is None]
    if unknown or not job.columns:
        job.state = "Failed"
        job.error_message = f"InvalidBatch : Field name not found : {unknown[:1]}"
        return
    stop_after = state.settings.bulk_fail_after
    for index, row in enumerate(reader):
        if stop_after is not None and index >= stop_after:
            job.unprocessed.append(row)
            continue
        try:
            values = {
                column: _cell(job.sobject, column, text)
                for column, text in row.items()
                if text != ""
            }
        except RecordRefused as refused:
            job.failed.append({"sf__Id": "", "sf__Error": _error_cell(refused), **row})
            continue
        _write_row(state, job, row, values)
    if job.unprocessed:
        job.state = "Failed"
        job.error_message = "InvalidBatch : the job stopped before every row was read"
    else:
        job.state = "JobComplete"


def _write_row(
    state: State, job: BulkJob, row: dict[str, str], values: dict[str, Any]
) -> None:
    created = job.operation == "insert"
    if job.operation == "insert":
        operation: Any = state.create(job.sobject, values)
    elif job.operation == "update":
        record_id = str(values.pop("Id", "") or "")
        operation = state.update(job.sobject, record_id, values)
    else:
        assert job.external_id_field is not None
        field = job.sobject.field(job.external_id_field)
        assert field is not None
        key = str(values.get(field.name) or "")
        operation = state.upsert(job.sobject, field, key, values)
    [result] = state.write([operation], sobject=job.sobject)
    if isinstance(result, RecordRefused | MultipleMatches):
        job.failed.append({"sf__Id": "", "sf__Error": _error_cell(result), **row})
        return
    if isinstance(result, tuple):
        result, created = result
    job.successful.append(
        {"sf__Id": str(result), "sf__Created": str(created).lower(), **row}
    )


def results_csv(job: BulkJob, kind: str) -> bytes:
    """One of the job's result files as UTF-8 CSV bytes."""
    if kind == "successfulResults":
        header, rows = ["sf__Id", "sf__Created", *job.columns], job.successful
    elif kind == "failedResults":
        header, rows = ["sf__Id", "sf__Error", *job.columns], job.failed
    else:
        header, rows = job.columns, job.unprocessed
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")
