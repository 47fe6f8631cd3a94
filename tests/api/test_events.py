"""The leads.pending signal: many notifications, one event a second, never a crash."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import httpx

from api.events import EVENT, RESOURCE_ID, PendingSignal

URL = "http://127.0.0.1:9/api/events"


def run_until(
    signal: PendingSignal,
    during: Callable[[], Awaitable[None]],
    done: Callable[[], bool],
    timeout: float = 10,
) -> None:
    """Runs the signal's loop while `during` acts, until `done` or the timeout."""

    async def main() -> None:
        loop = asyncio.create_task(signal.run())
        await during()
        deadline = asyncio.get_running_loop().time() + timeout
        while not done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        # One more interval: anything wrongly emitted late shows up too.
        await asyncio.sleep(signal.interval * 2)
        loop.cancel()

    asyncio.run(main())


def test_a_burst_of_notifications_becomes_one_event_with_the_count():
    received: list[dict] = []

    def answer(request: httpx.Request) -> httpx.Response:
        received.extend(json.loads(request.content))
        return httpx.Response(204)

    signal = PendingSignal(URL, interval=0.2, transport=httpx.MockTransport(answer))

    async def burst() -> None:
        for _ in range(500):
            signal.notify()

    run_until(signal, burst, lambda: bool(received))

    assert len(received) == 1
    assert received[0]["event"] == EVENT
    assert received[0]["resource"] == {"prefect.resource.id": RESOURCE_ID}
    assert received[0]["payload"] == {"leads": 500}


def test_a_lone_notification_goes_out_at_once_and_the_next_waits_the_interval():
    sent: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(time.monotonic())
        return httpx.Response(204)

    signal = PendingSignal(URL, interval=1.5, transport=httpx.MockTransport(answer))
    notified: list[float] = []

    async def two_apart() -> None:
        await asyncio.sleep(0.3)
        notified.append(time.monotonic())
        signal.notify()
        while not sent:
            await asyncio.sleep(0.01)
        notified.append(time.monotonic())
        signal.notify()

    run_until(signal, two_apart, lambda: len(sent) == 2)

    assert len(sent) == 2
    # Well within the interval: the first of a quiet spell is not held back.
    assert sent[0] - notified[0] < 0.75
    # The second came at once too, but waited for the interval to pass (less
    # the moment the first send took after it was decided, on a busy machine).
    assert sent[1] - sent[0] >= 1.25


def test_nothing_is_emitted_when_nothing_happened():
    calls: list[httpx.Request] = []
    signal = PendingSignal(
        URL,
        interval=0.1,
        transport=httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(204)),
    )

    async def idle() -> None:
        await asyncio.sleep(0.5)

    run_until(signal, idle, lambda: True)

    assert calls == []


def test_the_loop_survives_any_failure_and_emits_later():
    answers = iter([httpx.InvalidURL("bad"), httpx.Response(204)])
    attempts: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        outcome = next(answers)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    signal = PendingSignal(URL, interval=0.1, transport=httpx.MockTransport(answer))

    async def fail_then_retry() -> None:
        signal.notify()
        for _ in range(500):
            if attempts:
                break
            await asyncio.sleep(0.02)
        signal.notify()

    run_until(signal, fail_then_retry, lambda: signal.emitted == 1)

    assert len(attempts) == 2
    assert signal.emitted == 1


def test_no_event_while_every_drain_it_would_start_is_polling():
    calls: list[httpx.Request] = []
    polling = iter([True, False])
    signal = PendingSignal(
        URL,
        interval=0.1,
        transport=httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(204)),
        drains_polling=lambda: next(polling),
    )

    async def twice() -> None:
        signal.notify()
        while not signal.skipped:
            await asyncio.sleep(0.01)
        signal.notify(2)

    run_until(signal, twice, lambda: signal.emitted == 1)

    assert signal.skipped == 1
    # The polling drains take the first lead; the event counts only the later.
    assert [json.loads(call.content)[0]["payload"] for call in calls] == [{"leads": 2}]


def test_an_event_is_sent_when_the_drains_cannot_be_asked():
    calls: list[httpx.Request] = []

    def store_away() -> bool:
        raise OSError("the store is away")

    signal = PendingSignal(
        URL,
        interval=0.1,
        transport=httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(204)),
        drains_polling=store_away,
    )

    async def once() -> None:
        signal.notify()

    run_until(signal, once, lambda: signal.emitted == 1)

    assert len(calls) == 1
    assert signal.skipped == 0
