"""The import chunk task in real flow runs: the leads it writes name the run."""

from __future__ import annotations

import io

import pytest
from prefect import flow, runtime
from prefect.utilities.annotations import quote
from sqlalchemy import select

from leads import importer
from leads.store.tables import TimelineEvent
from tasks.import_chunks import import_chunk

pytestmark = pytest.mark.slow

FILE = (
    b"email,first_name,phone\r\n"
    b"ada@example.com,Ada,\r\n"
    b"grace@example.com,Grace,4.15556E+09\r\n"
    b"ada@example.com,Augusta,\r\n"
    b"linus@example.com,Linus,\r\n"
)


@flow(name="import-chunks-in-a-test")
def import_in_chunks(store, import_id: str, in_thread: bool) -> dict[str, int]:
    """Runs an import's chunks as the lead-import flow does, or in worker threads."""
    job = importer.start(store, import_id, owner=str(runtime.flow_run.id), region="US")
    for chunk in importer.chunks(store, job):
        if in_thread:
            import_chunk.submit(store, quote(job), quote(chunk)).result()
        else:
            import_chunk(store, quote(job), quote(chunk))
    return importer.finish(store, job)


@pytest.mark.parametrize("in_thread", [False, True], ids=["called", "submitted"])
def test_every_event_of_the_imported_leads_names_the_flow_run(
    store, on_prefect, tmp_path, in_thread
):
    row = importer.accept(
        store,
        "default",
        io.BytesIO(FILE),
        filename="leads.csv",
        folder=tmp_path / "imports",
        chunk_size=2,
        max_bytes=1024 * 1024,
    )

    state = import_in_chunks(store, row.id, in_thread, return_state=True)

    assert state.is_completed()
    run_id = str(state.state_details.flow_run_id)
    with store.read("default") as scope:
        events = scope.session.execute(
            select(TimelineEvent.kind, TimelineEvent.flow_run_id).order_by(
                TimelineEvent.id
            )
        ).all()
    # Two chunks: Ada's second record falls in the second and updates her
    # (a chunk writes its new leads together, so only the counts are fixed).
    assert sorted(kind for kind, _ in events) == [
        "lead.created",
        "lead.created",
        "lead.created",
        "lead.updated",
    ]
    assert {run for _, run in events} == {run_id}
