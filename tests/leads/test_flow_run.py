"""The current flow run: set by a block, seen only where that block's context is."""

from __future__ import annotations

import contextvars
import threading

import pytest

from leads.flow_run import current_flow_run_id, within_flow_run

RUN = "0b9a3c1e-0000-4000-8000-000000000001"
OTHER = "0b9a3c1e-0000-4000-8000-000000000002"


def test_no_flow_run_is_current_outside_any_block():
    assert current_flow_run_id() is None


def test_a_block_makes_its_run_current_and_leaving_it_restores_none():
    with within_flow_run(RUN):
        assert current_flow_run_id() == RUN
    assert current_flow_run_id() is None


def test_nested_blocks_restore_the_outer_run_and_none_clears_it_inside():
    with within_flow_run(RUN):
        with within_flow_run(OTHER):
            assert current_flow_run_id() == OTHER
        with within_flow_run(None):
            assert current_flow_run_id() is None
        assert current_flow_run_id() == RUN


def test_the_run_is_restored_when_the_block_raises():
    with pytest.raises(RuntimeError), within_flow_run(RUN):
        raise RuntimeError("the work failed")
    assert current_flow_run_id() is None


def test_a_thread_started_inside_a_block_does_not_see_its_run():
    seen: list[str | None] = []
    with within_flow_run(RUN):
        thread = threading.Thread(target=lambda: seen.append(current_flow_run_id()))
        thread.start()
        thread.join()
    # Why each task states its run itself: a worker thread starts empty.
    assert seen == [None]


def test_work_run_in_a_copy_of_the_context_sees_the_run():
    with within_flow_run(RUN):
        copied = contextvars.copy_context()
    assert copied.run(current_flow_run_id) == RUN
    assert current_flow_run_id() is None
