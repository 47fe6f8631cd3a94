"""Sealing secrets (CRM credentials) before they are stored, with the secret key."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from leads.settings import Settings
from leads.tracebacks import PlainMessage


class SecretKeyError(PlainMessage, ValueError):
    """Stored secrets cannot be opened with the secret key in use."""


class SecretBox:
    """Encrypts and authenticates small JSON documents (Fernet: AES-128-CBC + HMAC)."""

    def __init__(self, key: str) -> None:
        # Any passphrase works as ORCH_SECRET_KEY: Fernet wants 32 url-safe
        # base64 bytes, so the passphrase is hashed to that.
        digest = hashlib.sha256(key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, document: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(document).encode()).decode()

    def open(self, sealed: str) -> dict[str, Any]:
        """The document `seal` made.

        Raises:
            SecretKeyError: the secret key changed since it was sealed, or the
                text was altered.
        """
        try:
            return json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken as exc:
            raise SecretKeyError(
                "stored CRM credentials cannot be decrypted with the current secret "
                "key (ORCH_SECRET_KEY or the data dir's secret.key changed); "
                "configure the CRM again"
            ) from exc


def secret_box(settings: Settings) -> SecretBox:
    """The box for `ORCH_SECRET_KEY`, or for a key generated once into the data dir."""
    return SecretBox(secret_key(settings))


def secret_key(settings: Settings) -> str:
    """`ORCH_SECRET_KEY`, or the key generated into the data dir on first use."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    return _generated_key(settings.secret_key_file)


def _generated_key(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    # Written whole to a private temporary file, then linked into place: two
    # processes starting together agree on whichever link landed first, and
    # nobody reads a half-written key.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key)
    try:
        os.link(temporary, path)
    except FileExistsError:
        key = path.read_text().strip()
    finally:
        temporary.unlink()
    return key
