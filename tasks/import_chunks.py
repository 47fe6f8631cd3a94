"""Taking one chunk of an import's records in, as a Prefect task."""

from __future__ import annotations

from prefect import runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from sqlalchemy.exc import OperationalError

from leads.flow_run import within_flow_run
from leads.importer import Chunk, Job, run_chunk
from leads.store import Store
from leads.store.database import is_transient
from leads.tracebacks import withholding


def _store_busy(_task: object, _run: object, state: object) -> bool:
    # A locked SQLite file or a dropped PostgreSQL connection passes; a chunk is
    # one transaction, so a retry starts it clean. A missing table or a
    # refused login will not, however often it is tried.
    try:
        state.result()  # type: ignore[attr-defined]
    except OperationalError as exc:
        return is_transient(exc)
    except Exception:
        return False
    return False


@task(
    name="import chunk",
    cache_policy=NO_CACHE,
    retries=3,
    # Workers that found one SQLite file locked should not all retry at once.
    retry_delay_seconds=exponential_backoff(backoff_factor=1),
    retry_jitter_factor=0.2,
    retry_condition_fn=_store_busy,
)
@withholding
def import_chunk(store: Store, job: Job, chunk: Chunk) -> dict[str, int]:
    """Runs `run_chunk`: the chunk's leads, rejects and progress in one transaction.

    Call it with `job` and `chunk` wrapped in `prefect.utilities.annotations.quote`:
    Prefect then neither walks the records and seen keys on every call nor
    records them; the task's inputs stay the import's id and counts. The
    leads' timeline events name the flow run.
    """
    with within_flow_run(runtime.flow_run.id):
        return run_chunk(store, job, chunk)
