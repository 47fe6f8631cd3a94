"""Audit records the store refused, kept in a local file until it takes them.

A call's record is written after the call has happened (`api.audit_log`); when
the store cannot take it then (down, locked, refusing), the record goes to a
spool file in the data dir instead of only into the log. The next record that
is written replays the spool first, in a transaction of its own, so records
reach the log in the order they were answered and none is dropped for a
store that was away.

Records hold ids, route templates and reason codes, never personal data, so
the file holds none either. It is one JSON object a line, appended under an
exclusive `flock`: the API's processes on this machine share one spool. The
lock is held while the spool is replayed, so another process's records wait
for that transaction.

A process killed between the transaction holding the replayed records and
the spool's truncation replays them again: a record may then be in the log
twice, never missing. A spool that cannot be read or written (a read-only
data dir) is logged and left alone: the store's writes go on without it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from leads.store.audit import CallRecord

logger = logging.getLogger(__name__)

SPOOL_NAME = "audit-spool.jsonl"
# Lines that cannot be read back (one cut short by a crash mid-write) and
# records the store refuses on their own while it takes others are moved
# here, so that one bad record never holds up the rest.
SET_ASIDE_NAME = "audit-spool.set-aside.jsonl"
_FIELDS = ("tenant_id", "key_id", "action", "status", "target_type", "target_id")


class AuditSpool:
    """The spool file of one data dir."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / SPOOL_NAME
        self.set_aside_path = folder / SET_ASIDE_NAME

    def keep(self, records: Sequence[CallRecord]) -> None:
        """Appends the records, flushed to disk before returning.

        Raises:
            OSError: the file could not be written (the caller logs it).
        """
        lines = "".join(_line(record) for record in records)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked() as spool:
            spool.seek(0, os.SEEK_END)
            if spool.tell() > 0:
                spool.seek(spool.tell() - 1)
                if spool.read(1) != b"\n":
                    # A line a crash cut short stays a line of its own.
                    lines = "\n" + lines
            spool.write(lines.encode())
            spool.flush()
            os.fsync(spool.fileno())

    def waiting(self) -> bool:
        """Whether records wait in the spool (a stat, no lock: a hint)."""
        try:
            return self.path.stat().st_size > 0
        except OSError:
            return False

    @contextmanager
    def taken(self) -> Iterator[Taken]:
        """The waiting records, held under the lock, for one replay.

        When the block ends, the spool holds just what the block kept
        (`Taken.keep`), and what it refused is set aside; when it raises, the
        spool is left as it was. Other processes' `keep` and `taken` wait
        meanwhile, so a record appended during a replay is neither lost nor
        replayed twice. This process must not call `keep` inside the block:
        it would wait for its own lock. A spool that cannot be opened or read
        gives no records, `usable` False (and is logged).
        """
        if not self.waiting():
            yield Taken([])
            return
        with ExitStack() as stack:
            try:
                spool = stack.enter_context(self._locked())
                records, unreadable = _read(spool)
            except OSError as exc:
                _unusable(self.path, exc)
                stack.close()
                records, unreadable, spool = [], [], None
            taken = Taken(records, unreadable, usable=spool is not None)
            yield taken
            if spool is None:
                return
            try:
                self._set_aside(taken.unreadable + taken.refused)
                spool.seek(0)
                spool.truncate()
                spool.write("".join(taken.kept).encode())
                spool.flush()
                os.fsync(spool.fileno())
            except OSError as exc:
                # After the commit: the records are in the store, and may be
                # written again by the next replay.
                _unusable(self.path, exc)

    @contextmanager
    def _locked(self) -> Iterator[IO[bytes]]:
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with open(descriptor, "r+b") as spool:
            fcntl.flock(spool, fcntl.LOCK_EX)
            try:
                yield spool
            finally:
                fcntl.flock(spool, fcntl.LOCK_UN)

    def _set_aside(self, lines: list[str]) -> None:
        if not lines:
            return
        with self.set_aside_path.open("a", encoding="utf-8") as kept:
            kept.writelines(
                line if line.endswith("\n") else line + "\n" for line in lines
            )
        logger.error(
            "%d line(s) of the audit spool could not be read back or were refused "
            "by the store; moved to %s",
            len(lines),
            self.set_aside_path.name,
        )


class Taken:
    """The records a replay took from the spool, and what becomes of them.

    Attributes:
        records: those read back, in the order they were kept.
        unreadable: lines that could not be read back (set aside).
        usable: False when the spool could not be read: nothing kept here
            reaches it.
        kept: lines the spool holds once the replay ends.
        refused: lines set aside once the replay ends.
    """

    def __init__(
        self,
        records: list[CallRecord],
        unreadable: list[str] | None = None,
        *,
        usable: bool = True,
    ) -> None:
        self.records = records
        self.unreadable = unreadable or []
        self.usable = usable
        self.kept: list[str] = []
        self.refused: list[str] = []

    def keep(self, records: Sequence[CallRecord]) -> None:
        """Leaves these records in the spool for a later replay."""
        self.kept.extend(_line(record) for record in records)

    def refuse(self, record: CallRecord) -> None:
        """Sets the record aside: the store takes others but not this one."""
        self.refused.append(_line(record))


def _unusable(path: Path, exc: OSError) -> None:
    logger.error("audit spool %s cannot be used: %s", path.name, exc.__class__.__name__)


def _line(record: CallRecord) -> str:
    found: dict[str, Any] = {name: getattr(record, name) for name in _FIELDS}
    found["detail"] = record.detail
    found["at"] = record.at.isoformat() if record.at is not None else None
    return json.dumps(found) + "\n"


def _read(spool: IO[bytes]) -> tuple[list[CallRecord], list[str]]:
    records, unreadable = [], []
    spool.seek(0)
    for raw in spool:
        line = raw.decode("utf-8", errors="replace")
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
        except (ValueError, TypeError, KeyError, AttributeError):
            unreadable.append(line)
    return records, unreadable
