"""Dry runs count what the real import then does, across chunk boundaries too."""

from __future__ import annotations

import io

from sqlalchemy import func, select

from leads import importer
from leads.store.tables import Lead

# Two chunks of two: each record of the second chunk is like one of the first.
FILE = (
    "first_name,last_name,phone,email,company\n"
    "Robert,O'Neil,+14155550100,,Acme\n"
    "Ann,Lee,+12125550199,ann@x.example,Initech\n"
    "Rob,ONeil,(415) 555-0100,,Acme\n"
    "Ann,Lee,212 555 0199,ann.lee@gmail.com,Initech\n"
    "Jane,Roe,,jane.roe+news@example.com,\n"
    "Jane,Roe,,jane.roe@example.com,\n"
)


def run(store, folder, *, dry_run: bool) -> dict[str, int]:
    row = importer.accept(
        store,
        "default",
        io.BytesIO(FILE.encode()),
        filename="leads.csv",
        folder=folder,
        max_bytes=10**6,
        chunk_size=2,
        dry_run=dry_run,
    )
    return importer.run(store, row.id, owner=f"test-{dry_run}", region="US")


def test_fuzzy_and_mailbox_matches_with_earlier_chunks_count_as_they_will(
    store, tmp_path
):
    dry = run(store, tmp_path, dry_run=True)
    with store.engine.connect() as connection:
        written = connection.execute(select(func.count()).select_from(Lead))

        assert written.scalar_one() == 0

    real = run(store, tmp_path, dry_run=False)

    assert dry == real
    assert (real["created"], real["merged"], real["possible_duplicate"]) == (3, 1, 2)
