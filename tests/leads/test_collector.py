"""The cycle collector's setting in product processes."""

from __future__ import annotations

import gc

import pytest

from leads.collector import YOUNG_THRESHOLD, collect_less_often
from leads.settings import Settings
from tests.conftest import free_port


@pytest.fixture
def threshold():
    """Puts the process's thresholds back as they were after the test."""
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_the_youngest_generation_is_collected_less_often(threshold):
    gc.set_threshold(700, 10, 10)

    collect_less_often()

    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)


def test_a_higher_threshold_set_by_someone_else_is_kept(threshold):
    gc.set_threshold(YOUNG_THRESHOLD * 5, 20, 30)

    collect_less_often()

    assert gc.get_threshold() == (YOUNG_THRESHOLD * 5, 20, 30)


def test_a_collector_turned_off_by_threshold_stays_off(threshold):
    gc.set_threshold(0, 10, 10)

    collect_less_often()

    assert gc.get_threshold()[0] == 0


def test_the_api_sets_it_when_it_starts(threshold, serve_api, store, tmp_path):
    gc.set_threshold(700, 10, 10)

    serve_api(
        Settings(
            data_dir=tmp_path,
            database_url=store.url,
            prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
            crm="none",
        )
    )

    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
