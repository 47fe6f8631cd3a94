"""GroupCommit: items sent together are done together, each caller gets its own."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Hashable

import pytest

from api.group_commit import QUIET_LINGERS, GroupCommit

pytestmark = pytest.mark.anyio
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="nobody")


@pytest.fixture
def anyio_backend() -> str:
    # The API runs on asyncio (uvicorn); GroupCommit's futures are asyncio's.
    return "asyncio"


class Recorder:
    """A `work` that records its groups and can be held until released."""

    def __init__(self) -> None:
        self.groups: list[tuple[Hashable, list[object]]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self, key: Hashable, items: list[object]) -> list[object]:
        self.entered.set()
        assert self.release.wait(10), "the test never released the group"
        self.groups.append((key, list(items)))
        return [
            ValueError(f"item {item} refused")
            if isinstance(item, str) and item.startswith("bad")
            else (key, item)
            for item in items
        ]


async def _held_first_group(
    committer: GroupCommit, recorder: Recorder, key: Hashable, first: object
) -> asyncio.Task:
    """Starts a group of `first` and waits until `work` holds it."""
    recorder.release.clear()
    task = asyncio.create_task(committer.submit(key, first))
    await asyncio.to_thread(recorder.entered.wait, 10)
    return task


class TestGrouping:
    async def test_a_lone_item_is_done_at_once_in_a_group_of_its_own(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=10, name="test")

        assert await committer.submit("t", 1) == ("t", 1)
        assert recorder.groups == [("t", [1])]

    async def test_items_arriving_while_a_group_runs_go_together_in_the_next(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=10, name="test")
        first = await _held_first_group(committer, recorder, "t", 0)

        waiting = [asyncio.create_task(committer.submit("t", n)) for n in range(1, 6)]
        await asyncio.sleep(0.05)
        recorder.release.set()

        assert await first == ("t", 0)
        assert await asyncio.gather(*waiting) == [("t", n) for n in range(1, 6)]
        assert recorder.groups == [("t", [0]), ("t", [1, 2, 3, 4, 5])]
        assert (committer.groups, committer.items) == (2, 6)

    async def test_a_group_holds_at_most_most_items_and_the_rest_follow(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=2, name="test")
        first = await _held_first_group(committer, recorder, "t", 0)

        waiting = [asyncio.create_task(committer.submit("t", n)) for n in range(1, 6)]
        await asyncio.sleep(0.05)
        recorder.release.set()
        await asyncio.gather(first, *waiting)

        assert [items for _, items in recorder.groups] == [[0], [1, 2], [3, 4], [5]]

    async def test_each_key_has_groups_of_its_own(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=10, name="test")
        first = await _held_first_group(committer, recorder, "a", 0)

        waiting = [
            asyncio.create_task(committer.submit(key, n))
            for n, key in enumerate("abab", start=1)
        ]
        await asyncio.sleep(0.05)
        recorder.release.set()
        answers = await asyncio.gather(first, *waiting)

        assert answers == [("a", 0), ("a", 1), ("b", 2), ("a", 3), ("b", 4)]
        assert sorted(recorder.groups, key=str) == sorted(
            [("a", [0]), ("b", [2, 4]), ("a", [1, 3])], key=str
        )


# Items enough at a steady pace for a group to linger: the first counts as
# after a quiet spell.
PACE_ITEMS = 12
# Far enough apart for a lone item to be written before the next comes, on a
# busy machine too; well within the lingers below.
APART_S = 0.1


async def _paced(committer: GroupCommit, key: Hashable, count: int, gap: float) -> list:
    """Submits `count` items `gap` s apart (each answered or not), in order."""
    sent = []
    for n in range(count):
        sent.append(asyncio.create_task(committer.submit(key, f"pace {n}")))
        await asyncio.sleep(gap)
    return await asyncio.gather(*sent)


async def _quick_pace(committer: GroupCommit, recorder: Recorder) -> None:
    """Gives key "t" a quick pace with a long linger, no group left lingering:
    PACE_ITEMS come at once behind a held group, and go as one full group
    (`committer` must take PACE_ITEMS a group)."""
    first = await _held_first_group(committer, recorder, "t", "first")
    queued = [committer.submit("t", f"pace {n}") for n in range(PACE_ITEMS)]
    recorder.release.set()
    await asyncio.wait_for(asyncio.gather(first, *queued), 10)
    recorder.groups.clear()


async def _lingering(recorder: Recorder) -> tuple[GroupCommit, asyncio.Task]:
    """A committer lingering up to a minute over item 1 of key "t"."""
    committer = GroupCommit(recorder, most=PACE_ITEMS, name="test", linger=60)
    await _quick_pace(committer, recorder)
    lingering = asyncio.create_task(committer.submit("t", 1))
    await asyncio.sleep(0.05)
    assert recorder.groups == [], "item 1 did not linger"
    return committer, lingering


class TestLinger:
    async def test_items_coming_fast_wait_for_each_other(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=10, name="test", linger=0.5)
        await _paced(committer, "t", PACE_ITEMS, 0.01)
        recorder.groups.clear()

        # Each finds the writer idle; without lingering, each is a group.
        answers = await _paced(committer, "t", 3, APART_S)

        assert answers == [("t", f"pace {n}") for n in range(3)]
        assert recorder.groups == [("t", ["pace 0", "pace 1", "pace 2"])]

    async def test_without_linger_the_same_items_go_alone(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=10, name="test")
        await _paced(committer, "t", PACE_ITEMS, 0.01)
        recorder.groups.clear()

        await _paced(committer, "t", 3, APART_S)

        assert [items for _, items in recorder.groups] == [
            ["pace 0"],
            ["pace 1"],
            ["pace 2"],
        ]

    async def test_a_caller_sending_one_at_a_time_soon_stops_waiting(self):
        recorder = Recorder()
        linger = 0.15
        committer = GroupCommit(recorder, most=10, name="test", linger=linger)
        loop = asyncio.get_running_loop()

        async def one_at_a_time(count: int) -> list[float]:
            # Each sent once the last is answered: quick, but never together.
            waited = []
            for n in range(count):
                sent = loop.time()
                await committer.submit("t", n)
                waited.append(loop.time() - sent)
            return waited

        waited = await one_at_a_time(PACE_ITEMS + 16)
        # A quiet spell, then another burst like it.
        await asyncio.sleep(linger * QUIET_LINGERS + 0.1)
        again = await one_at_a_time(PACE_ITEMS + 4)

        # A lingering item waits its whole linger, as no company comes: it
        # lingered, and seven such waits brought the company found below
        # COMPANY_WORTH. Without that stop, every item after the first
        # PACE_ITEMS - 4 would wait.
        lingered = [w >= linger for w in waited]
        assert 1 <= sum(lingered) <= 8
        assert not any(lingered[-10:])
        # The next burst remembers that lingering found no company.
        assert not any(w >= linger for w in again)
        assert len(recorder.groups) == len(waited) + len(again)

    async def test_a_first_item_is_written_at_once(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=10, name="test", linger=60)

        # Lingering, it would wait a minute.
        assert await asyncio.wait_for(committer.submit("t", 1), 10) == ("t", 1)

    async def test_a_group_waits_no_longer_than_the_linger(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=10, name="test", linger=0.2)
        await _paced(committer, "t", PACE_ITEMS, 0.01)

        loop = asyncio.get_running_loop()
        sent = loop.time()

        # No company comes: it is written once its linger is over.
        assert await asyncio.wait_for(committer.submit("t", 1), 10) == ("t", 1)
        waited = loop.time() - sent
        assert recorder.groups[-1] == ("t", [1])
        # Timers never fire early; the bound above is loose for a busy machine.
        assert 0.9 * 0.2 <= waited < 10 * 0.2

    async def test_a_full_group_does_not_wait(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=3, name="test", linger=60)
        first = await _held_first_group(committer, recorder, "t", 0)
        # Eight queue behind the held group, fast: two groups of three go at
        # once (full), and two items linger for a third.
        queued = [asyncio.create_task(committer.submit("t", n)) for n in range(1, 9)]
        recorder.release.set()
        await asyncio.gather(first, *queued[:6])
        await asyncio.sleep(0.05)
        assert [items for _, items in recorder.groups] == [[0], [1, 2, 3], [4, 5, 6]]

        third = asyncio.create_task(committer.submit("t", 9))

        assert await asyncio.wait_for(asyncio.gather(*queued[6:], third), 10) == [
            ("t", 7),
            ("t", 8),
            ("t", 9),
        ]
        assert recorder.groups[-1] == ("t", [7, 8, 9])

    async def test_after_a_quiet_spell_an_item_is_written_at_once(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=10, name="test", linger=0.1)
        await _paced(committer, "t", PACE_ITEMS, 0.01)
        # Ten lingers without an item.
        await asyncio.sleep(1.1)
        recorder.groups.clear()

        # Without starting again, the fourth would linger (its mean gap under
        # two lingers) and the fifth join it; starting again, the mean stays
        # above until the ninth.
        await _paced(committer, "t", 5, 0.02)

        assert [items for _, items in recorder.groups] == [
            [f"pace {n}"] for n in range(5)
        ]

    async def test_each_key_has_its_own_pace(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=10, name="test", linger=0.5)
        await _paced(committer, "busy", PACE_ITEMS, 0.01)
        recorder.groups.clear()

        # Lingering at "busy"'s pace, the second would join the first.
        await _paced(committer, "calm", 2, 0.02)

        assert recorder.groups == [("calm", ["pace 0"]), ("calm", ["pace 1"])]

    async def test_a_lingering_group_is_written_at_once_when_closing(self):
        recorder = Recorder()
        committer, lingering = await _lingering(recorder)

        loop = asyncio.get_running_loop()
        started = loop.time()

        await committer.aclose(timeout=1)

        assert loop.time() - started < 1, "closing waited out the linger"
        assert await asyncio.wait_for(lingering, 1) == ("t", 1)

    async def test_a_writer_cancelled_while_lingering_fails_what_waits(self):
        recorder = Recorder()
        _, lingering = await _lingering(recorder)
        [writer] = [
            t for t in asyncio.all_tasks() if t.get_name() == "test group commit"
        ]

        writer.cancel()

        with pytest.raises(RuntimeError, match="stopped before this was written"):
            await asyncio.wait_for(lingering, 10)
        assert recorder.groups == []

    def test_a_negative_or_endless_linger_is_refused(self):
        for linger in (-0.01, float("inf"), float("nan")):
            with pytest.raises(ValueError, match="linger: expected a finite 0 s"):
                GroupCommit(Recorder(), most=1, name="test", linger=linger)


class TestLifetime:
    async def test_a_writer_does_not_run_in_its_first_callers_context(self):
        seen: list[str] = []

        def work(key: Hashable, items: list[int]) -> list[int]:
            seen.append(CALLER.get())
            return items

        committer = GroupCommit(work, most=10, name="test")
        CALLER.set("the first caller")

        await committer.submit("t", 1)

        assert seen == ["nobody"]

    async def test_closing_waits_for_the_group_being_written(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=10, name="test")
        first = await _held_first_group(committer, recorder, "t", 0)

        closing = asyncio.create_task(committer.aclose(timeout=10))
        await asyncio.sleep(0.05)
        assert not closing.done()
        recorder.release.set()
        await closing

        assert first.done() and first.result() == ("t", 0)


class TestFailures:
    async def test_an_items_own_error_reaches_its_caller_alone(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=10, name="test")
        first = await _held_first_group(committer, recorder, "t", 0)

        good = asyncio.create_task(committer.submit("t", 1))
        bad = asyncio.create_task(committer.submit("t", "bad one"))
        await asyncio.sleep(0.05)
        recorder.release.set()

        assert await first == ("t", 0)
        assert await good == ("t", 1)
        with pytest.raises(ValueError, match="item bad one refused"):
            await bad
        assert recorder.groups[1] == ("t", [1, "bad one"])

    async def test_an_error_escaping_work_fails_that_group_and_the_next_goes_on(self):
        calls: list[list[int]] = []

        def work(key: Hashable, items: list[int]) -> list[int]:
            calls.append(items)
            if len(calls) == 1:
                raise ConnectionError("the store went away")
            return items

        committer = GroupCommit(work, most=10, name="test")

        with pytest.raises(ConnectionError, match="the store went away"):
            await committer.submit("t", 1)
        assert await committer.submit("t", 2) == 2

    async def test_too_few_outcomes_fail_the_group_with_a_clear_error(self):
        committer = GroupCommit(lambda key, items: [], most=10, name="lead intake")

        with pytest.raises(RuntimeError, match="lead intake: 1 items gave 0 outcomes"):
            await committer.submit("t", 1)

    async def test_an_item_whose_caller_went_away_is_still_done(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=10, name="test")
        first = await _held_first_group(committer, recorder, "t", 0)

        gone = asyncio.create_task(committer.submit("t", "bad but unheard"))
        kept = asyncio.create_task(committer.submit("t", 2))
        await asyncio.sleep(0.05)
        gone.cancel()
        recorder.release.set()

        assert await first == ("t", 0)
        assert await kept == ("t", 2)
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert recorder.groups[1] == ("t", ["bad but unheard", 2])

    async def test_cancelled_writers_fail_what_waits_instead_of_leaving_it(self):
        recorder = Recorder()
        committer = GroupCommit(recorder, most=1, name="test")
        first = await _held_first_group(committer, recorder, "t", 0)
        waiting = asyncio.create_task(committer.submit("t", 1))
        await asyncio.sleep(0.05)
        [writer] = [
            t for t in asyncio.all_tasks() if t.get_name() == "test group commit"
        ]

        writer.cancel()
        recorder.release.set()

        with pytest.raises(RuntimeError, match="may or may not be stored"):
            await first
        with pytest.raises(RuntimeError, match="stopped before this was written"):
            await waiting

    def test_a_group_of_less_than_one_is_refused(self):
        with pytest.raises(ValueError, match="most: expected at least 1, got 0"):
            GroupCommit(lambda key, items: items, most=0, name="test")
