"""What can go wrong making an e-mail or handing it over."""

from __future__ import annotations


class EmailError(Exception):
    """Root of every e-mail failure."""


class EmailRenderError(EmailError, ValueError):
    """The message could not be made, and trying again as it is cannot help.

    A template is missing or broken or does not render for this lead, or a
    header value is not allowed. Fix the template, the setting or the lead.
    """


class EmailDeliveryError(EmailError, OSError):
    """A finished message could not be handed over, and nothing was sent.

    The same message may go through later (a full disk, a relay that is down).
    """
