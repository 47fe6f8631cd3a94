"""The sandbox's records on disk: one JSON file, read at start and replaced whole."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from connectors.sandbox.app import SandboxState

logger = logging.getLogger(__name__)

FORMAT = 1
# A `kill -9` loses at most this much; a clean stop loses nothing.
SAVE_EVERY_SECONDS = 5.0


def _has_id(record: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(record.get("Id"), str) or not record["Id"]:
        raise ValueError("a Salesforce record needs its Id")
    return record


class _Saved(BaseModel):
    model_config = ConfigDict(strict=True)


class SavedContact(_Saved):
    id: int = Field(ge=1)
    values: dict[str, str]
    created_ms: int
    updated_ms: int


class SavedUnsubscribe(_Saved):
    email: str = Field(min_length=1)
    subscription_id: str = Field(min_length=1)
    legal_basis: str | None
    legal_basis_explanation: str | None
    at_ms: int


class SavedHubSpot(_Saved):
    next_id: int = Field(ge=1)
    contacts: list[SavedContact]
    # Files saved before the sandbox kept unsubscribes have none.
    subscriptions: list[SavedUnsubscribe] = Field(default_factory=list)


class SavedSalesforce(_Saved):
    next_id: int = Field(ge=1)
    leads: list[Annotated[dict[str, Any], AfterValidator(_has_id)]]
    accounts: list[Annotated[dict[str, Any], AfterValidator(_has_id)]]


class SavedRecords(_Saved):
    """The file's content; anything else in it (`saved_at`) is for people."""

    format: Literal[1]
    hubspot: SavedHubSpot
    salesforce: SavedSalesforce


class StateFile:
    """Where a sandbox keeps its records between runs; saves only what changed.

    Sessions, tokens, faults, limits, jobs and request logs are not kept: a
    restarted sandbox asks clients to log in again, as a restarted CRM would.
    """

    def __init__(self, path: Path, state: SandboxState) -> None:
        self.path = path
        self.state = state
        self.last_saved: datetime | None = None
        self._saved_version: tuple[int, int] | None = None
        # The periodic save runs in a worker thread; the final one may overlap it.
        self._lock = threading.Lock()

    def _version(self) -> tuple[int, int]:
        return self.state.hubspot.version, self.state.salesforce.version

    def load(self) -> None:
        """Fills the state from the file if there is one; a bad file is set aside.

        A file that cannot be read or understood leaves the state empty, is
        renamed to `<name>.corrupt`, and is named in a warning: the sandbox
        starts either way.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._saved_version = self._version()
            return
        except (OSError, ValueError) as exc:
            self._set_aside(str(exc))
            return

        try:
            saved = SavedRecords.model_validate_json(text)
            self.state.hubspot.restore(saved.hubspot.model_dump())
            self.state.salesforce.restore(saved.salesforce.model_dump())
        except ValidationError as exc:
            self._set_aside(_first_problem(exc))
            return
        self._saved_version = self._version()
        logger.info(
            "loaded %d HubSpot contacts, %d Salesforce Leads and %d Accounts from %s",
            len(saved.hubspot.contacts),
            len(saved.salesforce.leads),
            len(saved.salesforce.accounts),
            self.path,
        )

    def _set_aside(self, reason: str) -> None:
        # Nothing was restored: the whole file is checked before any of it is used.
        self._saved_version = self._version()
        aside = self.path.with_name(self.path.name + ".corrupt")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            logger.warning(
                "the sandbox's state file %s is unusable (%s); starting empty, and "
                "it could not be set aside (%s): the next save replaces it",
                self.path,
                reason,
                exc,
            )
            return
        logger.warning(
            "the sandbox's state file %s is unusable (%s); starting empty, the file "
            "is kept as %s",
            self.path,
            reason,
            aside,
        )

    def save(self) -> bool:
        """Writes the records if they changed since the last save; True if it did.

        A failed write is logged and tried again at the next save.
        """
        with self._lock:
            version = self._version()
            if version == self._saved_version:
                return False
            now = datetime.now(UTC)
            content = {
                "format": FORMAT,
                "saved_at": now.isoformat(timespec="seconds"),
                "hubspot": self.state.hubspot.records(),
                "salesforce": self.state.salesforce.records(),
            }
            try:
                self._replace(json.dumps(content, ensure_ascii=False, indent=1))
            except OSError as exc:
                logger.warning(
                    "could not save the sandbox's records to %s: %s", self.path, exc
                )
                return False
            self._saved_version = version
            self.last_saved = now
        logger.debug("saved the sandbox's records to %s", self.path)
        return True

    def _replace(self, text: str) -> None:
        # A reader (or a crash) sees the old file or the new one, never half of
        # one: os.replace is atomic within a file system, hence the same folder.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    async def keep_saved(self, every: float = SAVE_EVERY_SECONDS) -> None:
        """Saves every `every` seconds while there are changes, until cancelled."""
        while True:
            await asyncio.sleep(every)
            await asyncio.to_thread(self.save)

    def describe(self) -> dict[str, Any]:
        """Where the records are kept and when they were last saved, for `/`."""
        return {
            "file": str(self.path),
            "saves": f"when it stops, and every {SAVE_EVERY_SECONDS:g} s after a "
            "change",
            "last_saved": self.last_saved.isoformat() if self.last_saved else None,
        }


def _first_problem(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    problem = f"{where}: {first['msg']}" if where else first["msg"]
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more problems)"
    return problem
