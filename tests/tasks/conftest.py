"""Flow runs for task tests: the session's Prefect server, called in this process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings


@pytest.fixture
def on_prefect(prefect_server, tmp_path) -> Iterator[str]:
    """Flows called in this test run on the session's Prefect server."""
    with temporary_settings(
        updates={
            PREFECT_API_URL: prefect_server.api_url,
            PREFECT_HOME: str(tmp_path / "prefect"),
        }
    ):
        yield prefect_server.api_url
        # The run's logs ship in the background; send them while the server is up.
        APILogWorker.drain_all(timeout=5)
