"""Taking one chunk of an import's records in, as a Prefect task."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.exc import OperationalError

from leads.importer import Chunk, Job, run_chunk
from leads.store import Store


def _store_busy(_task: object, _run: object, state: object) -> bool:
    # A locked SQLite file or a dropped PostgreSQL connection passes; a chunk is
    # one transaction, so a retry starts it clean. Anything else will not.
    try:
        state.result()  # type: ignore[attr-defined]
    except OperationalError:
        return True
    except Exception:
        return False
    return False


@task(
    name="import chunk",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=2,
    retry_condition_fn=_store_busy,
)
def import_chunk(store: Store, job: Job, chunk: Chunk) -> dict[str, int]:
    """Runs `run_chunk`: the chunk's leads, rejects and progress in one transaction.

    Call it with `job` and `chunk` wrapped in `prefect.utilities.annotations.quote`:
    Prefect then neither walks the records and seen keys on every call nor
    records them; the task's inputs stay the import's id and counts.
    """
    return run_chunk(store, job, chunk)
