"""E-mail: one-off sends, provider delivery events and template previews."""

from __future__ import annotations

import logging
import pathlib
from datetime import datetime
from email.utils import make_msgid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from api.auth import KEYED
from api.deps import ContextDep, JsonBody, PendingDep, SettingsDep, StoreDep
from api.problems import problem
from connectors.email.errors import EmailRenderError
from connectors.email.messages import parse_sender
from connectors.email.templates import TemplateRenderer
from leads.control_characters import has_control_characters
from leads.email_events import (
    MAX_EVENTS,
    EmailEventInput,
    apply_events,
    check_events,
)
from leads.email_sends import (
    IdempotencyConflict,
    SendRefused,
    SendRequest,
    accept,
    template_fields,
)
from leads.errors import FieldError, LeadRejected
from leads.normalise import parse_email
from leads.sequences import SequenceConfigError, load_sequences
from leads.settings import Settings
from leads.store.leads import get_lead
from leads.store.tables import EmailSend

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/email", tags=["email"], dependencies=KEYED)

SendId = Annotated[str, Path(max_length=64, description="The send's id.")]
TemplateStem = Annotated[
    str, Path(max_length=128, description="A template's file stem.")
]
# Previews show where the link goes; this token is no valid one.
PREVIEW_TOKEN = "preview"
# A lead to preview templates with when none is named: every field filled.
SAMPLE_LEAD: dict[str, Any] = template_fields(None) | {
    "email": "ada.lovelace@example.com",
    "email_display": "Ada.Lovelace@example.com",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "company": "Analytical Engines Ltd",
    "job_title": "Head of Research",
    "website": "https://example.com",
    "phone": "+442079460000",
    "street": "12 St James's Square",
    "city": "London",
    "state": "Greater London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
    "timezone": "Europe/London",
    "source": "website",
    "custom": {},
}


class SendBody(BaseModel):
    """A one-off e-mail: to a lead or an address, from a template or given text."""

    model_config = ConfigDict(extra="forbid")

    category: Literal["marketing", "transactional"] = Field(
        description="Marketing is refused to anyone unsubscribed and carries an "
        "unsubscribe link; transactional is refused only after a hard bounce."
    )
    lead_id: str | None = Field(None, max_length=64, description="Send to a lead.")
    to: str | None = Field(
        None, max_length=320, description="Send to an address that is no lead."
    )
    template: str | None = Field(
        None,
        max_length=128,
        description="A template stem (`GET /api/email/templates`).",
    )
    subject: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="Required. Plain text on one line, never a template.",
    )
    text: str | None = Field(
        None, min_length=1, max_length=200_000, description="The plain-text body."
    )
    html: str | None = Field(
        None,
        min_length=1,
        max_length=500_000,
        description="An HTML body, sent as given; made from `text` when absent.",
    )


class SendAccepted(BaseModel):
    id: str
    message_id: str = Field(description="The Message-ID the e-mail will carry.")
    status: str
    status_url: str


class SendView(BaseModel):
    """A one-off send and how far it got (never its body or address)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    lead_id: str | None
    category: str
    template: str | None
    status: str = Field(
        description="`pending`, `sending`, `sent`, `unknown` (may have gone; never "
        "re-sent), `failed` or `refused` (the recipient is suppressed)."
    )
    message_id: str | None
    error: str | None
    created_at: datetime
    sent_at: datetime | None


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EmailEventInput] = Field(
        description=f"At most {MAX_EVENTS} events; more is 413."
    )


class EventResult(BaseModel):
    index: int
    id: str
    outcome: str = Field(
        description="`applied`, `recorded` (kept, changes nothing), `duplicate` "
        "(seen before) or `no_such_recipient`."
    )
    lead_id: str | None


class EventResults(BaseModel):
    results: list[EventResult]


class TemplateList(BaseModel):
    data: list[str]


class PreviewView(BaseModel):
    subject: str | None = Field(
        description="From `subject`, else the first sequence step using the "
        "template; null when neither gives one."
    )
    text: str
    html: str


def _templates_folder(settings: Settings) -> pathlib.Path:
    return settings.config_dir / "templates"


def _template_names(folder: pathlib.Path) -> list[str]:
    """Stems that have both a text and an HTML template."""
    if not folder.is_dir():
        return []
    texts = {path.name.removesuffix(".txt.j2") for path in folder.glob("*.txt.j2")}
    htmls = {path.name.removesuffix(".html.j2") for path in folder.glob("*.html.j2")}
    return sorted(texts & htmls)


@router.post(
    "/send",
    dependencies=[JsonBody],
    status_code=202,
    response_model=SendAccepted,
    responses={
        200: {
            "model": SendAccepted,
            "description": "The same Idempotency-Key and body again: that send.",
        },
        202: {"description": "Queued; `status_url` tells how it went."},
        404: {"description": "No such lead."},
        409: {"description": "The recipient is suppressed, or the key was reused."},
        422: {"description": "Invalid; every error names its field."},
    },
)
def send_email(
    body: SendBody,
    response: Response,
    store: StoreDep,
    settings: SettingsDep,
    context: ContextDep,
    pending: PendingDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            description="Sends once per key; the same key with another body is 409.",
        ),
    ] = None,
) -> SendAccepted | JSONResponse:
    """Queues one e-mail to a lead or an address, sent by the one-off e-mail flow."""
    request = _send_request(body, idempotency_key, _templates_folder(settings))
    try:
        domain = parse_sender(settings.email_from).domain
    except EmailRenderError as exc:
        return problem(500, str(exc), slug="email-misconfigured")
    try:
        accepted = accept(
            store, context.tenant_id, request, message_id=make_msgid(domain=domain)
        )
    except SendRefused as exc:
        error = FieldError(
            exc.field, exc.reason, f"the recipient is suppressed ({exc.reason})"
        )
        return problem(409, str(exc), slug="recipient-suppressed", errors=[error])
    except IdempotencyConflict as exc:
        error = FieldError("Idempotency-Key", "key_reused", str(exc))
        return problem(409, str(exc), slug="idempotency-conflict", errors=[error])

    send = accepted.send
    status_url = f"/api/email/sends/{send.id}"
    response.headers["Location"] = status_url
    if accepted.replayed:
        response.status_code = 200
    else:
        pending.notify()
        logger.info("Queued one-off e-mail %s (%s)", send.id, send.category)
    return SendAccepted(
        id=send.id,
        message_id=str(send.message_id),
        status=send.status,
        status_url=status_url,
    )


def _send_request(
    body: SendBody, idempotency_key: str | None, folder: pathlib.Path
) -> SendRequest:
    """The send as the domain takes it, or LeadRejected naming every bad field."""
    errors: list[FieldError] = []
    if (body.lead_id is None) == (body.to is None):
        errors.append(
            FieldError(
                "to" if body.lead_id else "lead_id",
                "conflict" if body.lead_id else "required",
                "send exactly one of `lead_id` (a lead) or `to` (an address)",
            )
        )
    recipient = body.to.strip() if body.to is not None else None
    if recipient is not None:
        try:
            parse_email(recipient)
        except ValueError as exc:
            errors.append(FieldError("to", "invalid_email", str(exc)))

    if body.template is not None:
        if body.text is not None or body.html is not None:
            field = "text" if body.text is not None else "html"
            errors.append(
                FieldError(field, "conflict", "send `template` or a body, not both")
            )
        errors += _template_errors(body.template, folder)
    elif body.text is None and body.html is not None:
        errors.append(
            FieldError(
                "text",
                "required",
                "an `html` body goes with its plain-text alternative in `text`, "
                "which clients that show no HTML (and spam filters) read",
            )
        )
    elif body.text is None:
        errors.append(
            FieldError(
                "template", "required", "send `template`, or `subject` and `text`"
            )
        )
    # Required with a template too: a caller's subject is plain text, and a
    # sequence step's subject is a template for that sequence's leads.
    subject = body.subject
    if subject is None or not subject.strip():
        errors.append(FieldError("subject", "required", "every e-mail needs one"))
    elif has_control_characters(subject):
        errors.append(
            FieldError(
                "subject",
                "control_characters",
                "a subject is one line of text: no line breaks or control characters",
            )
        )
    for name in ("text", "html"):
        value = getattr(body, name)
        if value is not None and "\x00" in value:
            errors.append(
                FieldError(name, "control_characters", "a NUL character is not text")
            )
    if errors:
        raise LeadRejected(errors)

    assert subject is not None
    return SendRequest(
        category=body.category,
        subject=subject,
        lead_id=body.lead_id,
        recipient=recipient,
        template=body.template,
        text=body.text,
        html=body.html,
        idempotency_key=idempotency_key,
    )


def _template_errors(template: str, folder: pathlib.Path) -> list[FieldError]:
    if template not in _template_names(folder):
        return [
            FieldError(
                "template",
                "unknown_template",
                f"no template {template!r}; see GET /api/email/templates",
            )
        ]
    try:
        TemplateRenderer(folder).check(template, "")
    except EmailRenderError as exc:
        return [FieldError("template", "invalid_template", str(exc))]
    return []


@router.get("/sends/{send_id}", response_model=SendView, responses={404: {}})
def get_send(
    send_id: SendId, store: StoreDep, context: ContextDep
) -> SendView | JSONResponse:
    """Reads how a one-off e-mail is getting on."""
    with store.read(context.tenant_id) as scope:
        send = scope.get(EmailSend, send_id)
        if send is None:
            return problem(404, f"no e-mail send {send_id!r}", slug="send-not-found")
        return SendView.model_validate(send)


@router.post(
    "/events",
    dependencies=[JsonBody],
    response_model=EventResults,
    responses={
        413: {"description": f"More than {MAX_EVENTS} events."},
        422: {"description": "Invalid; every error names its event and field."},
    },
)
async def take_events(
    body: EventBatch, store: StoreDep, context: ContextDep, pending: PendingDep
) -> EventResults:
    """Takes a provider's delivery events; each is applied once, however often sent.

    The provider calls with a write key of the tenant (`X-API-Key`, which
    every provider's webhook settings can send as a custom header).
    """
    if len(body.events) > MAX_EVENTS:
        raise HTTPException(
            413, f"{len(body.events):,} events sent; send at most {MAX_EVENTS}"
        )
    errors = check_events(body.events)
    if errors:
        raise LeadRejected(errors)
    outcomes = await run_in_threadpool(
        apply_events, store, context.tenant_id, body.events
    )
    if any(outcome.outcome == "applied" for outcome in outcomes):
        pending.notify()
    return EventResults(
        results=[
            EventResult(index=o.index, id=o.id, outcome=o.outcome, lead_id=o.lead_id)
            for o in outcomes
        ]
    )


@router.get("/templates", response_model=TemplateList)
def list_templates(settings: SettingsDep) -> TemplateList:
    """Lists the e-mail templates by stem."""
    return TemplateList(data=_template_names(_templates_folder(settings)))


@router.get(
    "/templates/{name}/preview",
    response_model=PreviewView,
    responses={404: {}, 422: {"description": "The template does not render."}},
)
def preview_template(
    name: TemplateStem,
    store: StoreDep,
    settings: SettingsDep,
    context: ContextDep,
    lead_id: Annotated[
        str | None,
        Query(max_length=64, description="Render for this lead; a sample when absent."),
    ] = None,
    subject: Annotated[
        str | None,
        Query(max_length=500, description="Plain text; else the sequence's subject."),
    ] = None,
) -> PreviewView | JSONResponse:
    """Renders a template for one of the tenant's leads, or for a sample lead."""
    folder = _templates_folder(settings)
    if name not in _template_names(folder):
        return problem(404, f"no template {name!r}", slug="template-not-found")
    fields = SAMPLE_LEAD
    if lead_id is not None:
        with store.read(context.tenant_id) as scope:
            fields = template_fields(get_lead(scope, lead_id))

    configured = None
    if subject is None:
        try:
            configured = _configured_subject(settings, name)
        except SequenceConfigError as exc:
            logger.error("sequences.yaml cannot be read: %s", exc)
            return problem(
                500,
                "sequences.yaml cannot be read, so the template's subject is not "
                "known; fix the file or pass `subject`",
                slug="config-error",
            )
    link = f"{settings.public_base_url.rstrip('/')}/u/{PREVIEW_TOKEN}"
    try:
        # A subject from the caller is text: Jinja here is not sandboxed, so a
        # caller's template could reach Python's internals.
        rendered = TemplateRenderer(folder).render(
            name, configured or "", fields, unsubscribe_url=link
        )
    except EmailRenderError as exc:
        error = FieldError("name", "render_failed", str(exc))
        return problem(422, str(exc), slug="template-error", errors=[error])
    shown = subject if subject is not None else rendered.subject if configured else None
    return PreviewView(subject=shown, text=rendered.text, html=rendered.html)


def _configured_subject(settings: Settings, template: str) -> str | None:
    """The subject of the first sequence step that sends `template`."""
    path = settings.config_dir / "sequences.yaml"
    if not path.is_file():
        return None
    for sequence in load_sequences(path).values():
        for step in sequence.steps:
            if step.template == template:
                return step.subject
    return None
