"""Cross-origin access for the browser origins `ORCH_CORS_ORIGINS` names, no others.

Starlette's CORSMiddleware answers for the allowed origins. A request from
any other origin never reaches it and gets no CORS header at all (Starlette's
would still add `Access-Control-Expose-Headers`, and answer a refused
preflight with its allowed methods and headers); its preflight meets the
router as a plain OPTIONS, answered 405. Credentials are never allowed: keys
travel in headers a script sets, not in cookies, so `*` stays a plain
wildcard.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.rate_limits import RATE_LIMIT_HEADERS

ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ALLOWED_HEADERS = ("Authorization", "X-API-Key", "Content-Type", "Idempotency-Key")
EXPOSED_HEADERS = ("Location", "Retry-After", *RATE_LIMIT_HEADERS)
# Seconds a browser may reuse a preflight's answer.
PREFLIGHT_SECONDS = 600


def allowed_origins(entries: Sequence[str]) -> frozenset[str]:
    """The entries as a browser writes origins: lower case, no trailing slash.

    Raises:
        ValueError: an entry is neither `*` nor a scheme and host with an
            optional port; the message names the setting and the entry.
    """
    return frozenset(_origin_of(entry) for entry in entries)


def _origin_of(entry: str) -> str:
    if entry == "*":
        return entry
    parts = urlsplit(entry.strip().rstrip("/"))
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or (parts.path or parts.query or parts.fragment or parts.username)
    ):
        raise ValueError(
            "ORCH_CORS_ORIGINS: expected origins such as https://app.example.com "
            f"(scheme, host and optional port, no path), got {entry!r}"
        )
    return f"{parts.scheme}://{parts.netloc}".lower()


class CrossOrigin:
    """CORSMiddleware for allowed origins; other requests pass through untouched.

    With specific origins configured, an answer to any other request says
    `Vary: Origin`, since the same URL answers an allowed origin differently.
    Starlette builds middleware at the first request, too late to refuse a
    bad setting: check `origins` with `allowed_origins` when making the app.
    """

    def __init__(self, app: ASGIApp, *, origins: Sequence[str]) -> None:
        self.app = app
        self.origins = allowed_origins(origins)
        self.any = "*" in self.origins
        self.cors = CORSMiddleware(
            app,
            allow_origins=sorted(self.origins),
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            allow_credentials=False,
            expose_headers=EXPOSED_HEADERS,
            max_age=PREFLIGHT_SECONDS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.origins:
            await self.app(scope, receive, send)
            return
        origin = next(
            (value for name, value in scope["headers"] if name == b"origin"), None
        )
        if origin is not None and (
            self.any or origin.decode("latin-1") in self.origins
        ):
            await self.cors(scope, receive, send)
            return
        if self.any:
            await self.app(scope, receive, send)
            return

        async def varied(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"vary", b"Origin"),
                ]
            await send(message)

        await self.app(scope, receive, varied)
