"""The flow run doing the current work, so the timeline can name it.

`leads/` knows nothing of Prefect: a task that does lead work states its flow
run with `within_flow_run`, and every timeline event written inside carries
that id unless it names one itself. A context variable, so each thread and
each asyncio task sees only the run it was given.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_current: ContextVar[str | None] = ContextVar("flow_run_id", default=None)


def current_flow_run_id() -> str | None:
    """The flow run the current work belongs to; None outside any."""
    return _current.get()


@contextmanager
def within_flow_run(run_id: str | None) -> Iterator[None]:
    """Makes `run_id` the current flow run inside the block (None: no run).

    Blocks nest; leaving one restores the run that was current before it.
    """
    token = _current.set(run_id)
    try:
        yield
    finally:
        _current.reset(token)
