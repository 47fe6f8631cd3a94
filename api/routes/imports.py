"""Lead imports: upload a CSV file, follow its import, download what was rejected."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, File, Form, Path, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from prefect.client.orchestration import PrefectClient
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from pydantic import BaseModel, ConfigDict, Field

from api.auth import KEYED
from api.deps import ContextDep, SettingsDep, StoreDep
from api.problems import problem
from api.routes.workflows import tenant_tags
from leads import importer
from leads.errors import FieldError, LeadRejected
from leads.importer import ImportTooLarge
from leads.imports import ImportFileError, read_mapping
from leads.run_parameters import json_ready
from leads.settings import Settings
from leads.store import Store
from leads.store import imports as stored
from leads.store.tables import LeadImport

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/imports", tags=["imports"], dependencies=KEYED)

UPLOAD_PATH = "/api/imports"
# The deployment in prefect.yaml that runs one import.
DEPLOYMENT = "lead-import/lead_import"
# How long an upload waits for Prefect to start its run; the sweeper starts
# any import left queued.
PREFECT_START_SECONDS = 15.0
ImportId = Annotated[str, Path(description="The import's id.", max_length=64)]


class Progress(BaseModel):
    records_done: int = Field(description="Records read and committed so far.")
    bytes_done: int
    size_bytes: int
    percent: float = Field(description="Of the file's bytes read, 0–100.")


class Column(BaseModel):
    header: str = Field(description="As written in the file's header line.")
    field: str = Field(description="The lead field, or the custom name, it fills.")


class ImportView(BaseModel):
    """An import: how the file was read, how far it got and what became of it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    filename: str
    status: str = Field(description="`queued`, `running`, `finished` or `failed`.")
    dry_run: bool = Field(description="Counts say what would happen; no lead written.")
    encoding: str | None = Field(description="As detected, e.g. `utf-8-sig`, `cp1252`.")
    delimiter: str | None = Field(description="As detected: `,`, `;`, `\\t` or `|`.")
    columns: list[Column] = Field(
        description="The file's columns in order, and what each fills."
    )
    progress: Progress
    counts: dict[str, int] = Field(
        description="Records by outcome: created, updated, unchanged, merged, "
        "possible_duplicate, rejected."
    )
    error: str | None = Field(description="Why a failed import stopped.")
    flow_run_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    status_url: str
    rejects_url: str


def _view(row: LeadImport) -> ImportView:
    percent = 100.0 * row.bytes_done / row.size_bytes if row.size_bytes else 100.0
    return ImportView(
        id=row.id,
        filename=row.filename,
        status=row.status,
        dry_run=row.dry_run,
        encoding=row.encoding,
        delimiter=row.delimiter,
        columns=[Column(header=h, field=f) for h, f in row.columns or []],
        progress=Progress(
            records_done=row.records_done,
            bytes_done=row.bytes_done,
            size_bytes=row.size_bytes,
            percent=round(min(percent, 100.0), 1),
        ),
        counts=row.counts or {},
        error=row.error,
        flow_run_id=row.flow_run_id,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        status_url=f"{UPLOAD_PATH}/{row.id}",
        rejects_url=f"{UPLOAD_PATH}/{row.id}/rejects.csv",
    )


def _mapping(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        mapping = json.loads(text)
    except ValueError as exc:
        raise _bad_mapping(f"not JSON: {exc}") from exc
    if not isinstance(mapping, dict):
        raise _bad_mapping("expected a JSON object of file header → field name")
    try:
        read_mapping(mapping)
    except ImportFileError as exc:
        raise _bad_mapping(str(exc)) from exc
    return mapping


def _bad_mapping(message: str) -> LeadRejected:
    return LeadRejected([FieldError("mapping", "invalid_mapping", message)])


@router.post(
    "",
    status_code=202,
    response_model=ImportView,
    responses={413: {}, 422: {"description": "The file or mapping cannot be read."}},
)
async def upload(
    store: StoreDep,
    settings: SettingsDep,
    context: ContextDep,
    file: Annotated[UploadFile, File(description="The CSV file of leads.")],
    mapping: Annotated[
        str | None,
        Form(description='JSON: file header → field, e.g. {"E-Mail": "email"}.'),
    ] = None,
    dry_run: Annotated[
        bool, Form(description="Report what would happen; write no lead.")
    ] = False,
) -> Any:
    """Takes a CSV file of leads and starts its import; follow it at `status_url`."""
    try:
        row = await run_in_threadpool(
            importer.accept,
            store,
            context.tenant_id,
            file.file,
            filename=file.filename or "upload.csv",
            folder=settings.import_dir,
            mapping=_mapping(mapping),
            dry_run=dry_run,
            max_bytes=settings.max_import_bytes,
        )
    except ImportTooLarge as exc:
        return problem(413, str(exc), slug="import-too-large")
    except ImportFileError as exc:
        return problem(
            422,
            str(exc),
            slug="unreadable-import",
            errors=[FieldError("file", "unreadable_file", str(exc))],
        )
    flow_run_id = await start_run(settings, row.id, context.tenant_id)
    if flow_run_id is not None:
        await run_in_threadpool(
            _note_run, store, context.tenant_id, row.id, flow_run_id
        )
    row = await run_in_threadpool(_read, store, context.tenant_id, row.id)
    return JSONResponse(
        _view(row).model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"{UPLOAD_PATH}/{row.id}"},
    )


async def start_run(settings: Settings, import_id: str, tenant_id: str) -> str | None:
    """Starts the tenant's import's flow run; None when Prefect cannot start it now.

    The import is stored either way: the sweeper deployment takes queued imports
    every five minutes, so an upload is never lost to a Prefect outage.
    """
    try:
        # The client's own timeout is per try, and it retries a hung server
        # for minutes: the upload's answer must not wait that long.
        async with (
            asyncio.timeout(PREFECT_START_SECONDS),
            PrefectClient(api=settings.prefect_url) as client,
        ):
            deployment = await client.read_deployment_by_name(DEPLOYMENT)
            run = await client.create_flow_run_from_deployment(
                deployment.id,
                parameters=json_ready({"import_id": import_id}),
                tags=tenant_tags(tenant_id),
            )
    except (
        httpx.HTTPError,
        PrefectHTTPStatusError,
        ObjectNotFound,
        TimeoutError,
    ) as exc:
        logger.warning(
            "import %s queued without a run (%s); the sweeper will take it",
            import_id,
            exc.__class__.__name__,
        )
        return None
    return str(run.id)


def _note_run(store: Store, tenant_id: str, import_id: str, run_id: str) -> None:
    with store.write(tenant_id) as scope:
        stored.get(scope, import_id).flow_run_id = run_id


def _read(store: Store, tenant_id: str, import_id: str) -> LeadImport:
    with store.read(tenant_id) as scope:
        return stored.get(scope, import_id)


@router.get("/{import_id}", response_model=ImportView, responses={404: {}})
async def status(import_id: ImportId, store: StoreDep, context: ContextDep) -> Any:
    """How far an import got: progress, counts, and how the file was read."""
    try:
        row = await run_in_threadpool(_read, store, context.tenant_id, import_id)
    except stored.ImportNotFound as exc:
        return problem(404, str(exc), slug="import-not-found")
    return _view(row)


@router.get(
    "/{import_id}/rejects.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}, 404: {}},
)
async def rejects(import_id: ImportId, store: StoreDep, context: ContextDep) -> Any:
    """The rejected records as CSV: why each was refused, then its cells as read."""
    try:
        row = await run_in_threadpool(_read, store, context.tenant_id, import_id)
    except stored.ImportNotFound as exc:
        return problem(404, str(exc), slug="import-not-found")
    return StreamingResponse(
        _reject_lines(store, context.tenant_id, row),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="rejects-{row.id}.csv"'},
    )


def _reject_lines(store: Store, tenant_id: str, row: LeadImport) -> Iterator[str]:
    """CSV text a row at a time; Starlette runs this sync iterator in a thread."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    # A BOM, so that Excel opens the UTF-8 file with its accents intact.
    buffer.write("\ufeff")
    with store.read(tenant_id) as scope:
        for line in importer.reject_rows(scope, row):
            writer.writerow(line)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
