"""Sending claimed one-off e-mails (`POST /api/email/send`), each at most once.

`dispatch_one_offs` does the work and needs no Prefect server; `send_one_offs`
is the task the e-mail dispatcher flow runs it as.
"""

from __future__ import annotations

import html
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from prefect import runtime, task
from prefect.cache_policies import NO_CACHE

from connectors.email.backends import Outbox
from connectors.email.errors import (
    EmailAuthenticationError,
    EmailDeliveryError,
    EmailOutcomeUnknownError,
    EmailRejectedError,
    EmailRenderError,
)
from connectors.email.messages import build_message, parse_sender
from connectors.email.templates import RenderedEmail, TemplateRenderer
from leads import clock
from leads.email_sends import (
    EMAIL_SEND,
    SETTLED,
    SendStatus,
    begin_sending,
    mark_failed,
    mark_refused,
    mark_sent,
    mark_unknown,
    revert_to_pending,
    template_fields,
)
from leads.flow_run import within_flow_run
from leads.settings import Settings
from leads.store import Store
from leads.store.claims import Claim, extend_in, finish_in, release_in
from leads.store.database import TenantScope
from leads.store.tables import EmailSend, Lead
from leads.suppression import address_hash, blocked_reason, record_bounce, suppress
from leads.tracebacks import withholding
from leads.unsubscribe import unsubscribe_url

logger = logging.getLogger(__name__)

# A message the outbox could not take is tried again this much later.
RETRY_DELAY = timedelta(minutes=1)
DEFAULT_LEASE = timedelta(seconds=60)
OUTCOMES = ("sent", "refused", "failed", "unknown", "requeued", "settled", "contended")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def dispatch_one_offs(
    store: Store,
    claims: Iterable[Claim],
    *,
    renderer: TemplateRenderer,
    outbox: Outbox,
    sender_address: str,
    flow_run_id: str | None,
    settings: Settings,
    lease: timedelta = DEFAULT_LEASE,
) -> dict[str, int]:
    """Sends each claimed one-off e-mail, and settles every claim.

    At most once per send, even when runs overlap: the send is marked `sending`
    by a conditional update only one run can win, in the transaction that also
    checks the suppression list, before the message is handed over. A send a
    dead run left `sending` is settled by the outbox's answer where it can
    tell whether the message arrived, and parked `unknown` where it cannot;
    it is never sent again by itself.

    Claims end as follows: done once the send is `sent`, `refused` (its
    recipient became suppressed), `unknown` or settled already; parked when it
    `failed` (the message cannot be made, or the relay refused it for good; a
    refusal blaming the recipient's mailbox also suppresses the address as
    bounced); released for a retry a minute later when the outbox could not
    take it (the send is `pending` again); left to expire when another run
    holds it.

    Args:
        store: the lead store.
        claims: `email_send` claims this run holds.
        renderer: renders templates.
        outbox: where messages go; its `session()`, when it has one, spans
            the batch (one SMTP connection).
        sender_address: the From value, `ORCH_EMAIL_FROM`.
        flow_run_id: the Prefect flow run sending, recorded on the send.
        settings: for marketing e-mail's unsubscribe links (the public base
            URL and the secret key).
        lease: how long each claim is renewed for before its message is sent.

    Returns:
        How many claims ended in each outcome (no personal data).

    Raises:
        ValueError: a claim is not an `email_send` claim.
        EmailRenderError: the sender address is broken; raised before any claim
            is touched, so they return to the queue when their leases run out.
        EmailAuthenticationError: the relay refused our login; that send is
            pending again, and the batch's other claims return to the queue
            when their leases run out.
    """
    batch = list(claims)
    other_topics = sorted({held.topic for held in batch} - {EMAIL_SEND})
    if other_topics:
        raise ValueError(f"only {EMAIL_SEND} claims are sent; got {other_topics}")
    parse_sender(sender_address)

    sender = _OneOffSender(
        store, renderer, outbox, sender_address, flow_run_id, settings, lease
    )
    opened = getattr(outbox, "session", None)
    session: AbstractContextManager[Any] = opened() if opened else nullcontext()
    outcomes: Counter[str] = Counter()
    with session:
        for held in batch:
            outcome = sender.send(held)
            logger.debug("One-off send %s: %s", held.key, outcome)
            outcomes[outcome] += 1
    counts = {name: outcomes[name] for name in OUTCOMES}
    logger.info("Dispatched %d one-off e-mails: %s", len(batch), counts)
    return counts


@dataclass(frozen=True)
class _Ready:
    """A send committed `sending`, with its finished message."""

    send_id: str
    lead_id: str | None
    recipient: str
    message: EmailMessage


@dataclass(frozen=True)
class _OneOffSender:
    store: Store
    renderer: TemplateRenderer
    outbox: Outbox
    sender_address: str
    flow_run_id: str | None
    settings: Settings
    lease: timedelta

    def send(self, held: Claim) -> str:
        """Handles one claim; returns the outcome it counts in."""
        prepared = self._prepare(held)
        if isinstance(prepared, str):
            return prepared
        run = self.flow_run_id

        try:
            message_id = self.outbox.send(prepared.message)
        except EmailDeliveryError as exc:
            # Nothing left this machine: the send may go again later.
            with self.store.write(held.tenant_id) as scope:
                revert_to_pending(scope, prepared.send_id, error=str(exc))
                release_in(
                    scope.session,
                    held,
                    error=str(exc),
                    retry_at=clock.now() + RETRY_DELAY,
                )
            return "requeued"
        except EmailAuthenticationError as exc:
            # Every message would be refused alike until ORCH_SMTP_URL is
            # fixed: nothing is failed for it, and the run stops.
            with self.store.write(held.tenant_id) as scope:
                revert_to_pending(scope, prepared.send_id, error=str(exc))
                release_in(
                    scope.session,
                    held,
                    error=str(exc),
                    retry_at=clock.now() + RETRY_DELAY,
                    count_attempt=False,
                )
            raise
        except EmailRejectedError as exc:
            with self.store.write(held.tenant_id) as scope:
                mark_failed(scope, prepared.send_id, reason=str(exc), flow_run_id=run)
                if exc.bounce:
                    self._suppress_bounce(scope, prepared)
                finish_in(scope.session, held, "parked", str(exc))
            return "failed"
        except EmailOutcomeUnknownError as exc:
            with self.store.write(held.tenant_id) as scope:
                mark_unknown(scope, prepared.send_id, reason=str(exc), flow_run_id=run)
                finish_in(scope.session, held, "done")
            return "unknown"
        # Any other error leaves the send `sending`: the next run parks it
        # `unknown` rather than risk sending it twice.

        with self.store.write(held.tenant_id) as scope:
            mark_sent(
                scope,
                prepared.send_id,
                message_id=message_id,
                flow_run_id=run,
                now=clock.now(),
            )
            finish_in(scope.session, held, "done")
        return "sent"

    def _prepare(self, held: Claim) -> _Ready | str:
        """Checks, renders and marks the send `sending`; or settles it, and says how."""
        send_id = str(held.payload.get("send_id") or held.key)
        run, moment = self.flow_run_id, clock.now()
        with self.store.write(held.tenant_id) as scope:
            send = scope.get(EmailSend, send_id)
            if send is None:
                # Deleting a lead deletes its sends and outbox rows too:
                # nothing is owed, and the claim went with its row.
                return "settled"
            # Only a run that still holds the claim may act on its send: a
            # slow run whose lease was taken over must not send beside the
            # new holder.
            if not extend_in(scope.session, held, self.lease):
                return "contended"
            status = SendStatus(send.status)
            if status in SETTLED:
                finish_in(scope.session, held, "done")
                return "settled"
            if status is SendStatus.SENDING:
                # Its sender may be dead, or only slow and still sending: a
                # missing message proves nothing, so only one that arrived
                # settles it; otherwise it is `unknown`, never sent again.
                if not self._was_delivered(send.message_id):
                    mark_unknown(
                        scope,
                        send.id,
                        reason="its sender stopped while sending; whether it went "
                        "out is unknown",
                        flow_run_id=run,
                    )
                    finish_in(scope.session, held, "done")
                    return "unknown"
                mark_sent(
                    scope,
                    send.id,
                    message_id=str(send.message_id),
                    flow_run_id=run,
                    now=moment,
                )
                finish_in(scope.session, held, "done")
                return "sent"

            lead = scope.get(Lead, send.lead_id) if send.lead_id else None
            recipient = send.recipient or (
                (lead.email_display or lead.email) if lead else None
            )
            if recipient is None:
                mark_failed(scope, send.id, reason="missing_email", flow_run_id=run)
                finish_in(scope.session, held, "parked", "missing_email")
                return "failed"
            reason = blocked_reason(
                scope, lead=lead, address=send.recipient, category=send.category
            )
            if reason is not None:
                mark_refused(scope, send.id, reason=reason, flow_run_id=run)
                finish_in(scope.session, held, "done")
                return "refused"

            try:
                message = self._message(send, lead, recipient, moment)
            except EmailRenderError as exc:
                mark_failed(scope, send.id, reason=str(exc), flow_run_id=run)
                finish_in(scope.session, held, "parked", str(exc))
                return "failed"
            if not begin_sending(scope, send.id, flow_run_id=run):
                # Another run holds the send; whichever run takes the row next
                # sees how it ended.
                return "contended"
            return _Ready(send.id, send.lead_id, recipient, message)

    def _message(
        self, send: EmailSend, lead: Lead | None, recipient: str, moment: datetime
    ) -> EmailMessage:
        link = None
        if send.category == "marketing":
            link = unsubscribe_url(
                self.settings,
                send.tenant_id,
                lead_id=send.lead_id,
                address_hash=None if send.lead_id else address_hash(recipient),
            )
        subject = send.subject or ""
        if send.template is not None:
            rendered = self.renderer.render(
                send.template,
                # The caller's subject is text, never compiled as a template.
                "",
                template_fields(lead, recipient),
                unsubscribe_url=link,
            )
            rendered = replace(rendered, subject=subject)
        else:
            rendered = _given_body(subject, send.body_text or "", send.body_html, link)
        return build_message(
            rendered,
            sender=self.sender_address,
            recipient=recipient,
            now=moment,
            unsubscribe_url=link,
            message_id=send.message_id,
        )

    def _suppress_bounce(self, scope: TenantScope, ready: _Ready) -> None:
        lead = scope.get(Lead, ready.lead_id) if ready.lead_id else None
        if lead is not None:
            record_bounce(scope, lead, source="one_off")
        else:
            suppress(
                scope,
                address=ready.recipient,
                reason="bounced",
                lead_id=None,
                source="one_off",
            )

    def _was_delivered(self, message_id: str | None) -> bool | None:
        if message_id is None:
            return None
        ask = getattr(self.outbox, "delivered", None)
        return ask(message_id) if ask is not None else None


def _given_body(
    subject: str, text: str, given_html: str | None, link: str | None
) -> RenderedEmail:
    """The caller's own text and HTML, with the unsubscribe link added to each."""
    page = given_html if given_html is not None else _as_html(text)
    if link is None:
        return RenderedEmail(subject, text, page)
    text = f"{text.rstrip()}\n\n--\nTo stop these e-mails: {link}\n"
    footer = (
        '<p style="font-size:small;color:#666">To stop these e-mails, '
        f'<a href="{html.escape(link)}">unsubscribe</a>.</p>\n'
    )
    ends = list(_BODY_END.finditer(page))
    if ends:
        at = ends[-1].start()
        page = page[:at] + footer + page[at:]
    else:
        page = page + footer
    return RenderedEmail(subject, text, page)


def _as_html(text: str) -> str:
    """Plain text as HTML paragraphs, escaped: it is a caller's text, not markup."""
    paragraphs = [part for part in re.split(r"\n\s*\n", text.strip()) if part]
    body = "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in part.splitlines()) + "</p>"
        for part in paragraphs
    )
    return f'<!DOCTYPE html>\n<html lang="en">\n<body>\n{body}\n</body>\n</html>\n'


# Sending is a side effect: never cached, never retried by Prefect. A failed
# send is released back to the outbox with a delay, and a later run retries it.
@task(name="send one-off emails", cache_policy=NO_CACHE, retries=0)
@withholding
def send_one_offs(
    claims: list[Claim], *, store: Store, context: Mapping[str, Any]
) -> dict[str, int]:
    """Runs `dispatch_one_offs` on one batch; returns its counts (no personal data)."""
    with within_flow_run(runtime.flow_run.id):
        return dispatch_one_offs(store, claims, **context)
