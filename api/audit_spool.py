"""Audit records the store refused, kept in a local file until it takes them.

A call's record is written after the call has happened (`api.audit_log`); when
the store cannot take it then (down, locked, refusing), the record goes to a
spool file in the data dir instead of only into the log. The next record that
is written replays the spool first, in the same transaction, so records reach
the log in the order they were answered and none is dropped for a store that
was away.

Records hold ids, route templates and reason codes, never personal data, so
the file holds none either. It is one JSON object a line, appended under an
exclusive `flock`: the API's processes on this machine share one spool.

A process killed between the transaction holding the replayed records and
the spool's truncation replays them again: a record may then be in the log
twice, never missing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from leads.store.audit import CallRecord

logger = logging.getLogger(__name__)

SPOOL_NAME = "audit-spool.jsonl"
# Lines that could not be read back (a line cut short by a crash mid-write)
# are moved here, so one bad line never holds up the others.
UNREADABLE_NAME = "audit-spool.unreadable.jsonl"
_FIELDS = ("tenant_id", "key_id", "action", "status", "target_type", "target_id")


class AuditSpool:
    """The spool file of one data dir."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / SPOOL_NAME
        self.unreadable = folder / UNREADABLE_NAME

    def keep(self, records: Sequence[CallRecord]) -> None:
        """Appends the records, flushed to disk before returning.

        Raises:
            OSError: the file could not be written (the caller logs it).
        """
        lines = "".join(json.dumps(_as_dict(record)) + "\n" for record in records)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked("a") as spool:
            spool.write(lines)
            spool.flush()
            os.fsync(spool.fileno())

    def waiting(self) -> bool:
        """Whether records wait in the spool (a stat, no lock: a hint)."""
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False

    @contextmanager
    def taken(self) -> Iterator[list[CallRecord]]:
        """The waiting records, held under the lock; emptied when the block ends
        without an error, kept when it raises.

        Other processes' `keep` and `taken` wait meanwhile, so a record
        appended during a replay is neither lost nor replayed twice.
        """
        if not self.waiting():
            yield []
            return
        with self._locked("r+") as spool:
            records, unreadable = _read(spool)
            if unreadable:
                self._set_aside(unreadable)
            yield records
            spool.seek(0)
            spool.truncate()
            spool.flush()
            os.fsync(spool.fileno())

    @contextmanager
    def _locked(self, mode: str) -> Iterator[IO[str]]:
        # "r+" needs the file; "a" makes it. A missing file has nothing waiting.
        try:
            spool = self.path.open(mode, encoding="utf-8")
        except FileNotFoundError:
            self.path.touch()
            spool = self.path.open(mode, encoding="utf-8")
        with spool:
            fcntl.flock(spool, fcntl.LOCK_EX)
            try:
                yield spool
            finally:
                fcntl.flock(spool, fcntl.LOCK_UN)

    def _set_aside(self, lines: list[str]) -> None:
        with self.unreadable.open("a", encoding="utf-8") as kept:
            kept.writelines(
                line if line.endswith("\n") else line + "\n" for line in lines
            )
        logger.error(
            "%d line(s) of the audit spool could not be read back; moved to %s",
            len(lines),
            self.unreadable.name,
        )


def _as_dict(record: CallRecord) -> dict[str, Any]:
    found: dict[str, Any] = {name: getattr(record, name) for name in _FIELDS}
    found["detail"] = record.detail
    found["at"] = record.at.isoformat() if record.at is not None else None
    return found


def _read(spool: IO[str]) -> tuple[list[CallRecord], list[str]]:
    records, unreadable = [], []
    for line in spool:
        if not line.strip():
            continue
        try:
            found = json.loads(line)
            at = found.get("at")
            records.append(
                CallRecord(
                    **{name: found[name] for name in _FIELDS},
                    detail=dict(found.get("detail") or {}),
                    at=datetime.fromisoformat(at) if at else None,
                )
            )
        except (ValueError, TypeError, KeyError):
            unreadable.append(line)
    return records, unreadable
