"""The e-mail dispatcher: due sequence steps and one-off e-mails, each at most once."""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Annotated

from prefect import flow, get_run_logger, runtime
from pydantic import Field

from connectors.email.backends import outbox_from_settings
from connectors.email.templates import TemplateRenderer
from flows.summaries import publish_summary
from leads.collector import collect_less_often
from leads.email_sends import EMAIL_SEND
from leads.priority import follow_own_niceness
from leads.sequences import SequenceConfigError, load_sequences
from leads.settings import get_settings
from leads.store import Store
from leads.store.outbox import DISPATCHER_DRAIN, SEQUENCE_ENROLMENT
from leads.store.sequence_plans import wake_changed
from leads.store.statistics import refresh_statistics
from leads.tracebacks import withholding
from leads.unsubscribe import lead_link_maker
from tasks.drain import DrainLimits, drain
from tasks.one_off_sends import send_one_offs
from tasks.pending import wake_drains
from tasks.sequence_steps import DispatchContext, send_sequence_steps


@flow(name="sequence-dispatcher", log_prints=False)
@withholding
def dispatch_sequence(
    sequence: str | None = None,
    lead_id: str | None = None,
    batch_size: Annotated[int, Field(ge=1, le=500)] = 50,
    idle_grace_seconds: Annotated[float, Field(ge=0, le=60)] = 3.0,
) -> dict[str, int]:
    """Sends queued one-off e-mails and every due sequence step, until none is left.

    The sequence-enrolment outbox is drained until it stays empty for a grace
    period; one-off e-mails (`POST /api/email/send`) are sent before and after.
    Guarantees: each (lead, sequence, step) is sent at most once, also when runs
    overlap, when missed schedules catch up, or when a run dies mid-send (its
    step is parked as `unknown`, never sent again on its own). A claim whose run
    died returns to the queue when its lease expires. Steps wait for their
    delay and send window in the lead's time zone; stop conditions and the
    suppression list are checked just before each send.

    Args:
        sequence: the sequence a run started by name is for (its deployment's),
            checked to exist and named in the logs and artifact. Every due
            enrolment is handled whatever its sequence: one drain keeps one
            relay connection and one pass over the outbox.
        lead_id: one lead's steps only (on-demand runs); None drains all.
        batch_size: rows claimed per batch.
        idle_grace_seconds: how long to keep polling once nothing is due.

    Returns:
        Counts by outcome (`sent`, `waiting`, `stopped`, `finished`, `unknown`,
        `failed`, `bounced`, `requeued`, …); one-offs' as `one_off_<outcome>`.
    """
    collect_less_often()
    follow_own_niceness()
    logger = get_run_logger()
    settings = get_settings()
    sequences = load_sequences(settings.config_dir / "sequences.yaml")
    if sequence is not None and sequence not in sequences:
        raise SequenceConfigError(
            f"no sequence {sequence!r} in sequences.yaml; known: {', '.join(sequences)}"
        )
    store = Store(settings.store_url)
    run_id = str(runtime.flow_run.id)
    context = DispatchContext(
        sequences=sequences,
        renderer=TemplateRenderer(settings.config_dir / "templates"),
        outbox=outbox_from_settings(settings),
        sender_address=settings.email_from,
        flow_run_id=run_id,
        default_timezone=settings.default_timezone,
        unsubscribe_link=lead_link_maker(settings),
    )

    one_offs = {
        "renderer": context.renderer,
        "outbox": context.outbox,
        "sender_address": settings.email_from,
        "flow_run_id": run_id,
        "settings": settings,
    }
    totals: Counter[str] = Counter()
    try:
        # This flow runs every minute: the place to keep PostgreSQL's planner
        # statistics fresh for stores fed one lead at a time (batches do it
        # themselves) where autovacuum is off or behind.
        refresh_statistics(store)
        woken = wake_changed(store, sequences)
        if woken:
            logger.info("sequences changed; enrolments woken: %s", woken)

        # One-offs first and again at the end: someone asked for each just now.
        # They share the run (and its relay connection per batch) with the
        # sequences rather than start a process of their own on every signal.
        send_queued = partial(
            drain,
            store,
            EMAIL_SEND,
            owner=run_id,
            handle=partial(send_one_offs, store=store, context=one_offs),
            limits=DrainLimits(batch_size=batch_size, idle_grace_seconds=0),
            lead_id=lead_id,
        )
        totals.update(_prefixed("one_off", send_queued()))
        totals.update(
            drain(
                store,
                SEQUENCE_ENROLMENT,
                owner=run_id,
                handle=partial(send_sequence_steps, store=store, context=context),
                limits=DrainLimits(
                    batch_size=batch_size, idle_grace_seconds=idle_grace_seconds
                ),
                lead_id=lead_id,
                # The one-offs' last drain below follows its last look.
                present_as=DISPATCHER_DRAIN,
                wake=wake_drains,
            )
        )
        totals.update(_prefixed("one_off", send_queued()))
    finally:
        store.dispose()

    label = sequence or "every sequence"
    logger.info("dispatched %s: %s", label, dict(totals) or "nothing due")
    publish_summary(
        "sequence-dispatch-summary",
        totals,
        f"What this run of {label}{' for one lead' if lead_id else ''} did "
        "(counts by outcome only).",
    )
    return dict(totals)


def _prefixed(prefix: str, counts: dict[str, int]) -> dict[str, int]:
    return {f"{prefix}_{outcome}": count for outcome, count in counts.items()}
