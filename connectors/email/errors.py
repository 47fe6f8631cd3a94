"""What can go wrong making an e-mail or handing it over."""

from __future__ import annotations

from leads.tracebacks import PlainMessage


class EmailError(Exception):
    """Root of every e-mail failure."""


class EmailConfigError(PlainMessage, ValueError):
    """The e-mail settings cannot be used; the message names the setting and why.

    Written from the settings' shape only, never their values (a password in
    ORCH_SMTP_URL included), so a flow run shows it whole.
    """


class EmailRenderError(EmailError, ValueError):
    """The message could not be made, and trying again as it is cannot help.

    A template is missing or broken or does not render for this lead, or a
    header value is not allowed. Fix the template, the setting or the lead.
    """


class EmailDeliveryError(EmailError, OSError):
    """A finished message could not be handed over, and nothing was sent.

    The same message may go through later (a full disk, a relay that is down).
    """


class EmailRejectedError(EmailError):
    """The relay refused this message for good, and nothing was sent.

    Sending the same message again cannot help. The message names the relay's
    code and reply but never the recipient's address.

    Attributes:
        code: the relay's SMTP reply code, when it gave one.
        bounce: True when the refusal is about the recipient (their mailbox
            does not exist or takes no mail); False when it is not their fault
            (the relay refuses our sender, or their address needs SMTPUTF8 and
            the relay does not offer it).
    """

    def __init__(
        self, message: str, *, code: int | None = None, bounce: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.bounce = bounce


class EmailAuthenticationError(PlainMessage, EmailRejectedError):
    """The relay refused our login, or wants one we were not given.

    Every other message would be refused the same way until the credentials in
    ORCH_SMTP_URL are fixed, so stop the batch rather than fail each message.
    The message is written from the settings and the reply's code alone, never
    the relay's own words (which may quote the login), so a flow run shows it
    whole; the connector logs those words at DEBUG.
    """


class EmailOutcomeUnknownError(EmailError):
    """The message may or may not have been accepted: do not send it again.

    The connection broke after the message itself was handed over and before
    the relay's final reply, so only the recipient's mailbox can tell.
    """
