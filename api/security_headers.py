"""Security headers on every answer the API gives.

Every answer gets `X-Content-Type-Options: nosniff`, `Referrer-Policy:
no-referrer`, `X-Frame-Options: DENY`, a Content-Security-Policy that allows
nothing (`default-src 'none'; frame-ancestors 'none'`: JSON needs nothing) and
`Cache-Control: no-store` (answers hold personal data), each unless the route
set its own: the docs page sets one that allows its scripts
(`connectors.sandbox.docs.page_policy`), the unsubscribe pages set theirs
(inline style, a form posting to themselves). The docs' static assets may be
cached. `Strict-Transport-Security` is added only when the API's public address
is https: over plain http a browser ignores it, and behind a TLS proxy it is
the public address that counts. Only the answers to CORS preflights go without:
`api.cors` gives them, outside this, and they carry no content.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem

JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"
# A year; without includeSubDomains, as other hosts of the domain are not ours.
HSTS = "max-age=31536000"
# Same words as the app's own handler for an error nothing else caught.
UNEXPECTED = "an unexpected error occurred; nothing was written"


class SecurityHeaders:
    """Adds the security headers to every HTTP answer that passes through it.

    An error that no handler answered (it reaches Starlette's last-resort
    handler, outside every middleware) is answered here, as the 500 problem
    that handler would send, so that it carries the headers too; it is then
    raised on, to be logged there.
    """

    def __init__(
        self, app: ASGIApp, *, https: bool, cacheable_prefix: str | None = None
    ) -> None:
        self.app = app
        self.cacheable_prefix = cacheable_prefix
        defaults = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", JSON_POLICY.encode()),
        ]
        if https:
            defaults.append((b"strict-transport-security", HSTS.encode()))
        self._defaults = defaults
        self._uncached = [*defaults, (b"cache-control", b"no-store")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        prefix = self.cacheable_prefix
        defaults = (
            self._defaults
            if prefix is not None and scope["path"].startswith(prefix)
            else self._uncached
        )
        started = False

        async def secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(
                    (name, value) for name, value in defaults if name not in present
                )
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, secured)
        except Exception:
            if not started:
                await problem(500, UNEXPECTED)(scope, receive, secured)
            raise
