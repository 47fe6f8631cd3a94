"""`ORCH_INTAKE_LINGER_MS`: single leads coming fast share a transaction."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import LiveServer

# Leads posted at once first, so the key's pace is quick (see `GroupCommit`).
PACE_LEADS = 12
# The second lead comes this long after the first: long after a lone lead is
# written, well within the linger.
SECOND_AFTER_S = 0.1


def _two_leads_apart(server: LiveServer) -> tuple[str, str]:
    """Posts PACE_LEADS leads at once, then two SECOND_AFTER_S apart; their
    `created_at`, which the leads written in one transaction share."""
    with server.client(scope="write") as http, ThreadPoolExecutor(PACE_LEADS) as pool:
        pace = [
            pool.submit(http.post, "/api/leads", json={"email": f"p{n}@example.com"})
            for n in range(PACE_LEADS)
        ]
        assert [f.result().status_code for f in pace] == [201] * PACE_LEADS
        first = pool.submit(http.post, "/api/leads", json={"email": "a@example.com"})
        time.sleep(SECOND_AFTER_S)
        second = http.post("/api/leads", json={"email": "b@example.com"})
        answers = [first.result(), second]
    assert [a.status_code for a in answers] == [201, 201]
    return answers[0].json()["created_at"], answers[1].json()["created_at"]


@pytest.mark.parametrize(("linger_ms", "together"), [(1000, True), (0, False)])
def test_a_lead_waits_for_the_next_only_while_the_api_lingers(
    serve_api_on_new_store, linger_ms, together
):
    server = serve_api_on_new_store(intake_linger_ms=linger_ms)

    first, second = _two_leads_apart(server)

    assert (first == second) is together
