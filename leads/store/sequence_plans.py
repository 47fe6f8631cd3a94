"""Waking the enrolments of a sequence whose configuration changed."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from leads.sequences import Sequence
from leads.store.database import Store
from leads.store.outbox import SEQUENCE_ENROLMENT
from leads.store.tables import OutboxItem, SequencePlan, utcnow


def fingerprint(sequence: Sequence) -> str:
    """A digest of everything configured for the sequence."""
    return hashlib.sha256(sequence.model_dump_json().encode()).hexdigest()


def wake_changed(
    store: Store, sequences: Mapping[str, Sequence], now: datetime | None = None
) -> dict[str, int]:
    """Makes every enrolment waiting in a changed sequence due now.

    An enrolment waits until the time its next step was due under the
    configuration in force when it was scheduled; after a change (a shorter
    delay, another window, a step added) the dispatcher must look again. A
    sequence seen for the first time has nothing scheduled under another
    configuration, so nothing is woken for it.

    Returns:
        How many enrolments were woken, by sequence (changed ones only).
    """
    moment = now or utcnow()
    woken: dict[str, int] = {}
    with store.write_across_tenants() as session:
        known = {
            row.sequence: row.fingerprint
            for row in session.scalars(select(SequencePlan))
        }
        build = (
            postgresql.insert
            if session.get_bind().dialect.name == "postgresql"
            else sqlite.insert
        )
        for name, sequence in sequences.items():
            current = fingerprint(sequence)
            if known.get(name) == current:
                continue
            if name in known:
                result = session.execute(
                    update(OutboxItem)
                    .where(
                        OutboxItem.topic == SEQUENCE_ENROLMENT,
                        OutboxItem.status == "pending",
                        OutboxItem.key.endswith(f":{name}", autoescape=True),
                        OutboxItem.available_at > moment,
                    )
                    .values(available_at=moment)
                    .execution_options(synchronize_session=False)
                )
                woken[name] = result.rowcount
            statement = build(SequencePlan).values(
                sequence=name, fingerprint=current, updated_at=moment
            )
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=[SequencePlan.sequence],
                    set_={"fingerprint": current, "updated_at": moment},
                )
            )
    return woken
