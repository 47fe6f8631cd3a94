"""Import runs: a stopped one says how far it got; repeats fold into one write."""

from __future__ import annotations

import io

import pytest

from leads import importer
from leads.store import imports as stored

FILE = "email,first_name\n" + "".join(
    f"person{n}@example.com,Name{n}\n" for n in range(1, 7)
)


def accept(store, folder):
    return importer.accept(
        store,
        "default",
        io.BytesIO(FILE.encode()),
        filename="leads.csv",
        folder=folder,
        max_bytes=10**6,
        chunk_size=2,
    )


def the_import(store, import_id):
    with store.read("default") as scope:
        return stored.get(scope, import_id)


def test_an_unexpected_error_fails_the_import_after_its_committed_chunks(
    store, tmp_path
):
    row = accept(store, tmp_path)
    calls = []

    def breaks_on_the_second(store_, job, chunk):
        calls.append(chunk.first)
        if len(calls) == 2:
            raise RuntimeError("a bug")
        return importer.run_chunk(store_, job, chunk)

    with pytest.raises(RuntimeError):
        importer.run(
            store, row.id, owner="run", region="US", run_chunk=breaks_on_the_second
        )

    done = the_import(store, row.id)
    assert (done.status, done.records_done) == ("failed", 2)
    assert "RuntimeError" in done.error and "after record 2" in done.error
    assert "a bug" not in done.error
    assert row.id not in stored.resumable(store)
    assert not list(tmp_path.glob("upload-*"))


def test_a_chunk_retried_after_its_commit_is_not_taken_in_twice(store, tmp_path):
    row = accept(store, tmp_path)
    job = importer.start(store, row.id, owner="run", region="US")
    [first, *_] = importer.chunks(store, job)

    once = importer.run_chunk(store, job, first)
    again = importer.run_chunk(store, job, first)

    assert once["created"] == 2
    assert again == {}
    assert the_import(store, row.id).counts["created"] == 2


def test_a_run_that_lost_the_import_cannot_fail_it(store, tmp_path):
    row = accept(store, tmp_path)
    job = importer.start(store, row.id, owner="first", region="US")
    with store.write("default") as scope:
        stored.get(scope, row.id).lease_owner = "second"

    importer.fail(store, job, "too late")

    assert the_import(store, row.id).status == "running"


def test_a_file_imported_again_changes_nothing_though_it_repeats_people(
    store, tmp_path
):
    repeats = (
        "email,first_name,city\n"
        "aria@example.com,Aria,Newcastle\n"
        "aria@example.com,Aira,\n"
        "aria@example.com,Cross,Newastle\n"
        "ben@example.com,Ben,Leeds\n"
    )

    def run_once():
        row = importer.accept(
            store,
            "default",
            io.BytesIO(repeats.encode()),
            filename="repeats.csv",
            folder=tmp_path,
            max_bytes=10**6,
        )
        return importer.run(store, row.id, owner=f"run-{row.id}", region="US")

    first, second = run_once(), run_once()

    assert (first["created"], first["merged"]) == (2, 2)
    assert (second["unchanged"], second["merged"], second["updated"]) == (2, 2, 0)
