"""The file e-mail backend: each message becomes an `.eml` file in a folder."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from connectors.email.errors import EmailDeliveryError

logger = logging.getLogger(__name__)


class FileOutbox:
    """Writes messages into a folder instead of sending them (the default backend).

    A file appears whole or not at all: it is written under a temporary name in
    the same folder, flushed to disk, then renamed into place.
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)

    def send(self, message: EmailMessage) -> str:
        """Writes `<utc timestamp>-<short id>.eml`, creating the folder if needed.

        Returns:
            The message's Message-ID.

        Raises:
            ValueError: the message has no Message-ID.
            EmailDeliveryError: the file could not be written; none was left.
        """
        message_id = message["Message-ID"]
        if not message_id:
            raise ValueError(
                "the message has no Message-ID; make it with build_message"
            )
        data = message.as_bytes()
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{_digest(str(message_id))}.eml"

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_whole(self.folder / name, data)
        except OSError as exc:
            raise EmailDeliveryError(
                f"could not write {name} into the e-mail outbox {self.folder}: {exc}"
            ) from exc
        logger.info("Wrote %s to the e-mail outbox (%d bytes)", name, len(data))
        return str(message_id)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Nothing to open: each message is a file of its own."""
        yield

    def delivered(self, message_id: str) -> bool:
        """Whether the message with this Message-ID is in the outbox.

        The file is renamed into place whole, so its presence is proof.
        """
        return any(self.folder.glob(f"*-{_digest(message_id)}.eml"))

    def forget(self, message_ids: Iterable[str]) -> int:
        """Deletes the outbox's copies of the messages with these Message-IDs.

        For an erasure: the files are the development stand-in for delivered
        mail, kept in the product's own data folder. The folder is listed
        once, however many messages there are.

        Returns:
            How many files were deleted.
        """
        digests = {_digest(message_id) for message_id in message_ids}
        if not digests or not self.folder.is_dir():
            return 0
        gone = 0
        with os.scandir(self.folder) as entries:
            for entry in entries:
                # `<timestamp>-<digest>.eml`, as `send` names them.
                stem, dot, suffix = entry.name.rpartition(".")
                if dot and suffix == "eml" and stem.rpartition("-")[2] in digests:
                    Path(entry.path).unlink(missing_ok=True)
                    gone += 1
        return gone


def _digest(message_id: str) -> str:
    # The file name carries a digest of the Message-ID, so `delivered` can find
    # a message without reading every file.
    return hashlib.sha256(message_id.encode()).hexdigest()[:16]


def _write_whole(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=".", suffix=".eml.part"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # Makes the rename itself durable. Past the rename the message is there for
    # anyone reading the folder, so a failure here must not report it unsent.
    with contextlib.suppress(OSError):
        _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
