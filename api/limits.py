"""Request size limits, enforced before a body is parsed."""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import STATUS_SLUGS, problem


def _too_large(limit: int) -> str:
    return f"the request body is larger than the {limit:,}-byte limit"


class BodySizeLimit:
    """Answers 413 to a body over the path's limit, declared or streamed.

    A declared `Content-Length` over the limit is refused before anything is
    read; a chunked body is counted as it arrives and refused on the chunk that
    crosses the limit.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            refusal = problem(
                413,
                _too_large(limit),
                slug=STATUS_SLUGS[413],
                # The body is not read: the connection cannot carry another request.
                headers={"Connection": "close"},
            )
            await refusal(scope, receive, send)
            return

        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, _too_large(limit))
            return message

        await self.app(scope, counted, send)
