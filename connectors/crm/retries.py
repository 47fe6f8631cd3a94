"""One CRM call, retried while retrying can help and never past that."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from connectors.crm.budget import RateBudget
from connectors.crm.errors import CrmError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# HS-05: a ten-secondly 429 clears within the window; five tries span it.
MAX_ATTEMPTS = 5
BASE_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 10.0
# The longest `Retry-After` we sleep through. A worker holds its leads under a
# claim lease while it waits here; a longer wait is left to the caller, which
# releases the rows for that long instead of sleeping on them.
MAX_RETRY_AFTER_SECONDS = 30.0


def call_with_retries(
    operation: str,
    call: Callable[[], T],
    *,
    budget: RateBudget,
    attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Runs `call` under the budget, retrying retryable `CrmError`s with back-off.

    `call` must already translate the vendor's exceptions into `CrmError`s, and
    must be safe to repeat (an upsert, a read, or a create whose conflict is
    handled). A `Retry-After` the vendor sent is honoured up to
    `MAX_RETRY_AFTER_SECONDS`; otherwise the wait doubles from half a second,
    with jitter, up to ten seconds.

    Raises:
        CrmError: the last error, once it is not retryable, attempts ran out,
            or the vendor asked for a longer wait than we sleep through (its
            `retry_after` still says how long).
    """
    for attempt in range(1, attempts + 1):
        budget.acquire()
        try:
            return call()
        except CrmError as exc:
            if not exc.retryable or attempt == attempts:
                raise
            delay = exc.retry_after
            if delay is not None and delay > MAX_RETRY_AFTER_SECONDS:
                logger.debug(
                    "%s: %s asks for %.0fs, more than %.0fs: not waiting",
                    operation,
                    exc.code,
                    delay,
                    MAX_RETRY_AFTER_SECONDS,
                )
                raise
            if delay is None:
                delay = min(MAX_DELAY_SECONDS, BASE_DELAY_SECONDS * 2 ** (attempt - 1))
                delay *= 0.5 + random.random() / 2
            logger.debug(
                "%s: %s (attempt %d of %d), waiting %.2fs",
                operation,
                exc.code,
                attempt,
                attempts,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")
