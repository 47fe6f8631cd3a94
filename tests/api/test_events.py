"""The leads.pending signal: many notifications, one event a second, never a crash."""

from __future__ import annotations

import asyncio
import json

import httpx

from api.events import EVENT, RESOURCE_ID, PendingSignal


def run_for(signal: PendingSignal, seconds: float, during) -> None:
    async def main() -> None:
        loop = asyncio.create_task(signal.run())
        await during()
        await asyncio.sleep(seconds)
        loop.cancel()

    asyncio.run(main())


def test_a_burst_of_notifications_becomes_one_event_with_the_count():
    received: list[dict] = []

    def answer(request: httpx.Request) -> httpx.Response:
        received.extend(json.loads(request.content))
        return httpx.Response(204)

    signal = PendingSignal(
        "http://127.0.0.1:9/api/events",
        interval=0.2,
        transport=httpx.MockTransport(answer),
    )

    async def burst() -> None:
        for _ in range(500):
            signal.notify()

    run_for(signal, 0.5, burst)

    assert len(received) == 1
    assert received[0]["event"] == EVENT
    assert received[0]["resource"] == {"prefect.resource.id": RESOURCE_ID}
    assert received[0]["payload"] == {"leads": 500}


def test_nothing_is_emitted_when_nothing_happened():
    calls: list[httpx.Request] = []
    signal = PendingSignal(
        "http://127.0.0.1:9/api/events",
        interval=0.1,
        transport=httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(204)),
    )

    async def idle() -> None:
        return None

    run_for(signal, 0.4, idle)

    assert calls == []


def test_the_loop_survives_any_failure_and_emits_later():
    answers = iter([httpx.InvalidURL("bad"), httpx.Response(204)])

    def answer(request: httpx.Request) -> httpx.Response:
        outcome = next(answers)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    signal = PendingSignal(
        "http://127.0.0.1:9/api/events",
        interval=0.1,
        transport=httpx.MockTransport(answer),
    )

    async def twice() -> None:
        signal.notify()
        await asyncio.sleep(0.25)
        signal.notify()

    run_for(signal, 0.3, twice)

    assert signal.emitted == 1
