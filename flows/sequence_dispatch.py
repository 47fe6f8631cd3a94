"""The sequence dispatcher: sends every due sequence step, each at most once."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_table_artifact
from pydantic import Field

from connectors.email.file_outbox import FileOutbox
from connectors.email.templates import TemplateRenderer
from leads.sequences import load_sequences
from leads.settings import get_settings
from leads.store import Store
from leads.store.outbox import SEQUENCE_ENROLMENT
from leads.store.statistics import refresh_statistics
from tasks.drain import DrainLimits, drain
from tasks.sequence_steps import send_sequence_steps


@flow(name="sequence-dispatcher", log_prints=False)
def dispatch_sequence(
    sequence: str = "welcome_sequence",
    lead_id: str | None = None,
    batch_size: Annotated[int, Field(ge=1, le=500)] = 50,
    idle_grace_seconds: Annotated[float, Field(ge=0, le=60)] = 3.0,
) -> dict[str, int]:
    """Drains the sequence-enrolment outbox until it stays empty for a grace period.

    Guarantees: each (lead, sequence, step) is sent at most once, also when runs
    overlap or a run dies mid-send (its step is parked as `unknown`, never sent
    again on its own). A claim whose run died returns to the queue when its
    lease expires. With `lead_id`, only that lead's steps are sent.

    Args:
        sequence: the sequence this run is for, in its logs and artifact. Every
            enrolment today is in `welcome_sequence`, so claims are not filtered
            by it yet. TODO(#6): filter claims by sequence once there are several.
        lead_id: one lead's steps only (on-demand runs); None drains all.
        batch_size: rows claimed per batch.
        idle_grace_seconds: how long to keep polling once nothing is due.

    Returns:
        Counts by outcome (`sent`, `skipped`, `unknown`, `failed`, `requeued`).
    """
    logger = get_run_logger()
    settings = get_settings()
    if settings.email_backend != "file":
        # TODO(#6): the SMTP backend; until then refuse rather than pretend.
        raise NotImplementedError(
            f"ORCH_EMAIL_BACKEND={settings.email_backend} is not built yet; "
            "use `file` (messages land in the data dir's outbox folder)"
        )
    sequences = load_sequences(settings.config_dir / "sequences.yaml")
    if sequence not in sequences:
        raise ValueError(
            f"no sequence {sequence!r} in sequences.yaml; known: {', '.join(sequences)}"
        )
    store = Store(settings.store_url)
    run_id = str(runtime.flow_run.id)
    context = {
        "sequences": sequences,
        "renderer": TemplateRenderer(settings.config_dir / "templates"),
        "outbox": FileOutbox(settings.email_outbox_dir),
        "sender_address": settings.email_from,
        "flow_run_id": run_id,
    }

    try:
        # This flow runs every minute: the place to keep PostgreSQL's planner
        # statistics fresh for stores fed one lead at a time (batches do it
        # themselves) where autovacuum is off or behind.
        refresh_statistics(store)
        totals = drain(
            store,
            SEQUENCE_ENROLMENT,
            owner=run_id,
            handle=partial(send_sequence_steps, store=store, context=context),
            limits=DrainLimits(
                batch_size=batch_size, idle_grace_seconds=idle_grace_seconds
            ),
            lead_id=lead_id,
        )
    finally:
        store.dispose()

    logger.info("dispatched %s: %s", sequence, totals or "nothing due")
    create_table_artifact(
        key="sequence-dispatch-summary",
        table=[{"outcome": k, "count": v} for k, v in sorted(totals.items())],
        description=f"What this run of {sequence} did (counts only).",
    )
    return totals
