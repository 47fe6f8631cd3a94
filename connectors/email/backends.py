"""Where finished e-mails go: the `file` or `smtp` backend the settings choose."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from email.message import EmailMessage
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from connectors.email.errors import EmailConfigError
from connectors.email.file_outbox import FileOutbox
from connectors.email.smtp import SmtpOutbox

if TYPE_CHECKING:
    from leads.settings import Settings


@runtime_checkable
class Outbox(Protocol):
    """Where finished messages go: `.eml` files, an SMTP relay."""

    def send(self, message: EmailMessage) -> str:
        """Hands the message over and returns its Message-ID.

        Raises:
            EmailDeliveryError: nothing was sent; it may be tried again.
            EmailRejectedError: nothing was sent, and trying again cannot help.
            EmailOutcomeUnknownError: it may have been sent; do not send it again.
        """
        ...

    def delivered(self, message_id: str) -> bool | None:
        """Whether that message was handed over; None when this outbox cannot tell."""
        ...

    def session(self) -> AbstractContextManager[None]:
        """A batch: messages sent inside share what the outbox keeps open."""
        ...


def kept_copies(settings: Settings) -> Callable[[Iterable[str]], int] | None:
    """What deletes the copies the backend kept of messages, by Message-ID.

    The `file` backend keeps every message in the data folder, so an erasure
    deletes those written to the person; None for `smtp`, which keeps none.
    """
    if settings.email_backend == "file":
        return FileOutbox(settings.email_outbox_dir).forget
    return None


def outbox_from_settings(settings: Settings) -> FileOutbox | SmtpOutbox:
    """The outbox ORCH_EMAIL_BACKEND names, made from the other e-mail settings.

    Raises:
        EmailConfigError: the smtp backend without a usable ORCH_SMTP_URL.
    """
    if settings.email_backend == "file":
        return FileOutbox(settings.email_outbox_dir)
    if settings.email_backend != "smtp":
        raise EmailConfigError(
            f"ORCH_EMAIL_BACKEND must be file or smtp, not {settings.email_backend!r}"
        )
    if settings.smtp_url is None:
        raise EmailConfigError(
            "ORCH_EMAIL_BACKEND=smtp needs ORCH_SMTP_URL, as in "
            "smtp://user:password@relay.example.com:587?starttls=true"
        )
    try:
        return SmtpOutbox.from_url(settings.smtp_url.get_secret_value())
    except ValueError as exc:
        raise EmailConfigError(f"ORCH_SMTP_URL cannot be used: {exc}") from exc
