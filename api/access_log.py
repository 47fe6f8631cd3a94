"""One log line per request: method, path, status, duration — never the query.

uvicorn's own access log prints query strings, and `?email=` filters would put
addresses in the log; this one leaves the query out. Unsubscribe links are
logged without their token: whoever reads the log could otherwise unsubscribe
that person.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("api.access")
_UNSUBSCRIBE_TOKEN = re.compile(r"^/u/[^/]+")
# A segment holding an address: a client looking a lead up by its e-mail
# (`/api/leads/ada@example.com`) would otherwise put it in the log.
_ADDRESS_SEGMENT = re.compile(r"[^/]*@[^/]*")


def shown_path(path: str) -> str:
    """The path as the log shows it: an unsubscribe token, or a segment holding
    an e-mail address, replaced by `…`."""
    return _ADDRESS_SEGMENT.sub("…", _UNSUBSCRIBE_TOKEN.sub("/u/…", path))


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            logger.info(
                "%s %s %d %.1f ms",
                scope["method"],
                shown_path(scope["path"]),
                status,
                (time.perf_counter() - started) * 1000,
            )
