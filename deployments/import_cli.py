"""`orchestrator import`: a CSV file of leads into the store, with a progress bar."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from sqlalchemy.exc import OperationalError

from deployments.key_cli import api_client, not_answering, refused_key
from leads.imports import ImportFileError, read_mapping
from leads.settings import Settings

# How often the bar asks the API how far the import got.
POLL_SECONDS = 0.5


def import_file(
    file: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV file."),
    ],
    mapping: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="YAML or JSON object: file header → lead field or custom name, "
            "or {field: NAME, type: number} to store the values as numbers.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Report what would happen; write no lead.")
    ] = False,
    local: Annotated[
        bool,
        typer.Option(
            help="Import in this process, without the API and Prefect (the stack "
            "need not run; the import is not a flow run)."
        ),
    ] = False,
    rejects: Annotated[
        Path | None,
        typer.Option(dir_okay=False, help="Write the rejected records here (CSV)."),
    ] = None,
) -> None:
    """Imports a CSV file of leads: through the running stack, or --local."""
    from deployments.cli import _fail, _settings

    settings = _settings()
    columns = _read_mapping(mapping) if mapping else None
    if local:
        view = _run_here(settings, file, columns, dry_run, rejects)
    else:
        view = _run_through_api(settings, file, columns, dry_run, rejects)
    _summarise(view)
    if view.get("rejects_written"):
        typer.echo(f"  rejects written to {rejects}")
    if view["status"] == "failed":
        _fail(f"the import failed: {view['error']}")


def _read_mapping(path: Path) -> dict[str, Any]:
    from deployments.cli import _fail

    try:
        mapping = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        _fail(f"--mapping {path}: not YAML or JSON{where}: {problem}")
    except UnicodeDecodeError:
        _fail(f"--mapping {path}: not UTF-8 text")
    if not isinstance(mapping, dict):
        _fail(f"--mapping {path}: expected an object of file header → field name")
    try:
        read_mapping(mapping)
    except ImportFileError as exc:
        _fail(f"--mapping {path}: {exc}")
    return mapping


def _bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[records]:,} records"),
    )


def _run_through_api(
    settings: Settings,
    file: Path,
    mapping: dict[str, Any] | None,
    dry_run: bool,
    rejects: Path | None,
) -> dict[str, Any]:
    from deployments.cli import _fail

    data: dict[str, str] = {"dry_run": "true" if dry_run else "false"}
    if mapping:
        data["mapping"] = json.dumps(mapping)
    with api_client(settings) as client:
        try:
            with file.open("rb") as body:
                answer = client.post(
                    "/api/imports",
                    files={"file": (file.name, body, "text/csv")},
                    data=data,
                )
        except httpx.TransportError:
            _fail(not_answering(settings, "import"))
        if answer.status_code != 202:
            _fail(refused_key(answer) or _problem(answer))
        view = answer.json()
        with _bar() as bar:
            task = bar.add_task(file.name, total=100.0, records=0)
            while view["status"] in ("queued", "running"):
                time.sleep(POLL_SECONDS)
                view = client.get(view["status_url"]).json()
                bar.update(
                    task,
                    completed=view["progress"]["percent"],
                    records=view["progress"]["records_done"],
                )
        if rejects is not None and view["counts"].get("rejected"):
            rejects.write_bytes(client.get(view["rejects_url"]).content)
            view["rejects_written"] = True
    return view


def _problem(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return f"the API answered {answer.status_code}: {answer.text[:200]}"
    return f"the API refused the file ({answer.status_code}): {body.get('detail')}"


def _run_here(
    settings: Settings,
    file: Path,
    mapping: dict[str, Any] | None,
    dry_run: bool,
    rejects: Path | None,
) -> dict[str, Any]:
    from deployments.cli import _fail
    from leads import importer
    from leads.collector import collect_less_often
    from leads.store import Store
    from leads.store import imports as stored
    from leads.store.schema import schema_state

    collect_less_often()

    store = Store(settings.store_url)
    try:
        state = schema_state(store.engine)
        if not state.current:
            _fail("the lead store is not ready; run `orchestrator db upgrade` first")
        try:
            with file.open("rb") as source:
                row = importer.accept(
                    store,
                    "default",
                    source,
                    filename=file.name,
                    folder=settings.import_dir,
                    mapping=mapping,
                    dry_run=dry_run,
                    max_bytes=settings.max_import_bytes,
                )
        except (ImportFileError, importer.ImportTooLarge) as exc:
            _fail(str(exc))
        size = row.size_bytes or 1
        with _bar() as bar:
            task = bar.add_task(file.name, total=100.0, records=0)

            def advance(_job: Any, chunk: importer.Chunk, _counts: Any) -> None:
                percent = min(100.0, 100.0 * chunk.bytes_read / size)
                bar.update(task, completed=percent, records=chunk.last)

            try:
                importer.run(
                    store,
                    row.id,
                    owner=f"cli-{row.id}"[:64],
                    region=settings.default_region,
                    on_chunk=advance,
                    workers=settings.import_workers,
                )
            except importer.ImportBusy:
                _fail(
                    f"import {row.id} was taken by another run (the stack's "
                    f"sweeper); follow it with GET /api/imports/{row.id}"
                )
            except OperationalError:
                _fail(
                    f"the lead store stopped answering; import {row.id} resumes "
                    "from its last committed chunk when the stack's sweeper "
                    "runs, or run `orchestrator import` on the file again"
                )
            except Exception:  # noqa: BLE001 - marked failed with its reason
                # An unreadable file or any other stop is on the import, with
                # its reason, which the summary shows.
                pass
            bar.update(task, completed=100.0)
        with store.read("default") as scope:
            done = stored.get(scope, row.id)
            written = rejects is not None and bool(done.counts.get("rejected"))
            if written:
                with rejects.open("w", encoding="utf-8-sig", newline="") as out:
                    csv.writer(out).writerows(importer.reject_rows(scope, done))
            return {
                "rejects_written": written,
                "id": done.id,
                "status": done.status,
                "dry_run": done.dry_run,
                "encoding": done.encoding,
                "delimiter": done.delimiter,
                "counts": done.counts,
                "error": done.error,
                "rejects_url": f"/api/imports/{done.id}/rejects.csv",
            }
    finally:
        store.dispose()


def _summarise(view: dict[str, Any]) -> None:
    delimiter = {"\t": "tab"}.get(view.get("delimiter") or "", view.get("delimiter"))
    typer.echo(
        f"import {view['id']}: {view['status']}"
        + (" (dry run: nothing written)" if view.get("dry_run") else "")
    )
    typer.echo(f"  read as {view.get('encoding')}, delimiter {delimiter!r}")
    would = "would be " if view.get("dry_run") else ""
    for name, count in (view.get("counts") or {}).items():
        typer.echo(f"  {would}{name}: {count:,}")
    if (view.get("counts") or {}).get("rejected"):
        typer.echo(f"  rejects: GET {view['rejects_url']}")
