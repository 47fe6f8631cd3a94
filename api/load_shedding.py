"""Load shedding: past a bound on requests in flight, answer 503 at once.

A server that takes on every request it is sent queues them without bound
when more arrive than it can answer: every answer is then late, callers time
out and send again, and what it finishes is work nobody waits for any more.
Refusing the excess at once keeps the requests it does take fast, and tells
the rest when to come back (`Retry-After`), which retrying clients honour.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
# Health checks are answered whatever the load: a busy API is not a dead one.
_ALWAYS = frozenset({"/health"})
_WARN_EVERY_SECONDS = 10.0


class LoadShedding:
    """Answers 503 with `Retry-After` to requests past `most` in flight.

    In flight means being worked on: from the head's arrival to the answer,
    less any time spent waiting for more of the body.
    """

    def __init__(self, app: ASGIApp, most: int) -> None:
        self.app = app
        self.most = most
        self.in_flight = 0
        self.taken = 0
        self.shed = 0
        self._warned_at = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _ALWAYS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.most:
            self.shed += 1
            self._warn()
            refusal = problem(
                503,
                f"the API is working on its limit of {self.most:,} requests at "
                f"once (ORCH_MAX_REQUESTS_IN_FLIGHT); send again in "
                f"{RETRY_AFTER_SECONDS} s",
                slug="overloaded",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
            await refusal(scope, receive, send)
            return
        self.in_flight += 1
        self.taken += 1
        body_read = False

        async def receiving() -> Message:
            nonlocal body_read
            if body_read:
                # Watching for a disconnect while answering (a streamed file):
                # still at work.
                return await receive()
            # A request waiting for its body to arrive is not being worked on:
            # slow senders cannot hold every slot.
            self.in_flight -= 1
            try:
                message = await receive()
            finally:
                self.in_flight += 1
            body_read = not message.get("more_body", False)
            return message

        try:
            await self.app(scope, receiving, send)
        finally:
            self.in_flight -= 1

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_SECONDS:
            self._warned_at = now
            logger.warning(
                "overloaded: %d requests in flight, %d refused with 503 so far",
                self.in_flight,
                self.shed,
            )
