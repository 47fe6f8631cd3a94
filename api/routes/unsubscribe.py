"""Unsubscribe pages: a signed link's confirmation page and its one-click POST.

A GET only shows the page: link scanners and mail filters open every URL in a
message, so nothing may change on a GET. The POST unsubscribes at once, from
the page's button or from a mail client's RFC 8058 one-click request. The
signed token is the only credential, and no page shows whom it is for.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from jinja2 import Environment, StrictUndefined
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from api.deps import PendingDep, SettingsDep, StoreDep
from connectors.email.messages import ONE_CLICK
from leads.settings import Settings
from leads.store import Store
from leads.store.leads import is_lead_id
from leads.store.tables import Lead
from leads.suppression import suppress_hash, unsubscribe
from leads.unsubscribe import InvalidToken, UnsubscribeTarget, read_token, signing_key

logger = logging.getLogger(__name__)
router = APIRouter(tags=["unsubscribe"], include_in_schema=False)

_HEADERS = {
    # The token in the URL is a credential: kept out of caches, search
    # engines and the Referer of anything the page links to.
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
}
_PAGES = Environment(autoescape=True, undefined=StrictUndefined)
_PAGE = _PAGES.from_string(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto;
       padding: 0 1rem; line-height: 1.5; }
button { font-size: 1rem; padding: .5rem 1.25rem; cursor: pointer; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p>{{ text }}</p>
{% if action %}
<form method="post" action="{{ action }}">
<button type="submit">Unsubscribe</button>
</form>
{% endif %}
</body>
</html>
"""
)


def _page(
    title: str, text: str, *, status: int = 200, action: str = ""
) -> HTMLResponse:
    html = _PAGE.render(title=title, text=text, action=action)
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _not_found() -> HTMLResponse:
    return _page(
        "Link not recognised",
        "This unsubscribe link is not valid. Use the link from the e-mail "
        "exactly as it came, or reply to the e-mail and ask to be removed.",
        status=404,
    )


def _verified(settings: Settings, token: str) -> UnsubscribeTarget | None:
    try:
        return read_token(signing_key(settings), token)
    except InvalidToken:
        return None


@router.get("/u/{token}", response_class=HTMLResponse)
def confirm_page(token: str, settings: SettingsDep) -> HTMLResponse:
    """Shows the unsubscribe confirmation page; changes nothing."""
    if _verified(settings, token) is None:
        return _not_found()
    return _page(
        "Unsubscribe",
        "Press the button to stop getting these e-mails from us.",
        # Relative, so the form posts back to this very URL also behind a
        # proxy that serves the app under a path prefix.
        action=token,
    )


@router.post("/u/{token}", response_class=HTMLResponse)
async def unsubscribe_now(
    token: str,
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    pending: PendingDep,
) -> HTMLResponse:
    """Unsubscribes the link's recipient at once (RFC 8058 one-click or the page)."""
    target = _verified(settings, token)
    if target is None:
        return _not_found()
    source = "one_click" if _is_one_click(await _form(request)) else "unsubscribe_page"
    await run_in_threadpool(_apply, store, target, source)
    # The CRM's opt-out and the stop of the sequences follow within seconds.
    pending.notify()
    return _page(
        "You are unsubscribed",
        "You will get no more of these e-mails from us. Messages you ask for, "
        "such as meeting confirmations, may still reach you.",
    )


async def _form(request: Request) -> FormData | None:
    try:
        return await request.form()
    except (HTTPException, MultiPartException):
        # A malformed form still unsubscribes: the body only names the source.
        return None


def _is_one_click(form: FormData | None) -> bool:
    # RFC 8058 section 3.1: the client posts `List-Unsubscribe=One-Click`.
    name, _, value = ONE_CLICK.partition("=")
    return form is not None and form.get(name) == value


def _apply(store: Store, target: UnsubscribeTarget, source: str) -> None:
    with store.write(target.tenant_id) as scope:
        if target.address_hash is not None:
            # A link for a bare address (a one-off e-mail): the lead holding the
            # address now, if any, is unsubscribed as a lead link would have it,
            # its opt-out and the CRM's following; the hash blocks marketing to
            # the address in any case, a lead's made later included.
            holders = scope.session.scalars(
                scope.select(Lead).where(Lead.email_hash == target.address_hash)
            ).all()
            for lead in holders:
                if unsubscribe(scope, lead, source=source):
                    logger.info("Lead %s unsubscribed by address (%s)", lead.id, source)
            suppress_hash(
                scope,
                address_hash=target.address_hash,
                reason="unsubscribed",
                lead_id=None,
                source=source,
            )
            logger.info("Unsubscribed an address of tenant %s", target.tenant_id)
            return
        lead_id = target.lead_id
        lead = scope.get(Lead, lead_id) if lead_id and is_lead_id(lead_id) else None
        if lead is None:
            # The lead was erased, and with it every step, send and outbox row
            # it had: nothing can be sent under this id, so the request is
            # already met. Its address is not known any more to suppress.
            logger.info("Unsubscribe link for a lead no longer stored")
            return
        if unsubscribe(scope, lead, source=source):
            logger.info("Lead %s unsubscribed (%s)", lead.id, source)
