"""How `call_with_retries` waits between attempts, and when it stops waiting."""

from __future__ import annotations

import pytest

from connectors.crm.budget import Unlimited
from connectors.crm.errors import CrmRateLimited, CrmRequestError, CrmUnavailable
from connectors.crm.retries import (
    MAX_ATTEMPTS,
    MAX_RETRY_AFTER_SECONDS,
    call_with_retries,
)


class Failing:
    """A call that raises the given errors in turn, then returns `"done"`."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


class TestRetryAfter:
    def test_a_retry_after_within_the_cap_is_slept_through(self):
        waits: list[float] = []
        call = Failing(CrmRateLimited("slow down", retry_after=MAX_RETRY_AFTER_SECONDS))

        result = call_with_retries(
            "upsert", call, budget=Unlimited(), sleep=waits.append
        )

        assert result == "done"
        assert waits == [MAX_RETRY_AFTER_SECONDS]
        assert call.calls == 2

    def test_a_longer_retry_after_is_raised_at_once_without_sleeping(self):
        waits: list[float] = []
        call = Failing(CrmRateLimited("slow down", retry_after=3600))

        with pytest.raises(CrmRateLimited) as caught:
            call_with_retries("upsert", call, budget=Unlimited(), sleep=waits.append)

        assert waits == []
        assert call.calls == 1
        assert caught.value.retry_after == 3600

    def test_a_long_retry_after_on_a_server_error_is_raised_too(self):
        waits: list[float] = []
        call = Failing(CrmUnavailable("down", status=503, retry_after=120))

        with pytest.raises(CrmUnavailable) as caught:
            call_with_retries("read", call, budget=Unlimited(), sleep=waits.append)

        assert (waits, caught.value.retry_after) == ([], 120)


class TestBackOff:
    def test_without_retry_after_the_wait_doubles_with_jitter(self):
        waits: list[float] = []
        call = Failing(*(CrmUnavailable("down") for _ in range(3)))

        call_with_retries("read", call, budget=Unlimited(), sleep=waits.append)

        assert len(waits) == 3
        for attempt, wait in enumerate(waits):
            full = 0.5 * 2**attempt
            assert full / 2 <= wait <= full

    def test_gives_up_after_the_last_attempt(self):
        waits: list[float] = []
        call = Failing(*(CrmUnavailable("down") for _ in range(MAX_ATTEMPTS)))

        with pytest.raises(CrmUnavailable):
            call_with_retries("read", call, budget=Unlimited(), sleep=waits.append)

        assert call.calls == MAX_ATTEMPTS
        assert len(waits) == MAX_ATTEMPTS - 1

    def test_a_refused_request_is_never_retried(self):
        waits: list[float] = []
        call = Failing(CrmRequestError("bad", status=400))

        with pytest.raises(CrmRequestError):
            call_with_retries("upsert", call, budget=Unlimited(), sleep=waits.append)

        assert (call.calls, waits) == (1, [])
