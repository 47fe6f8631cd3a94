"""Past its limit of requests in flight, the API answers 503 at once, not late."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from leads.settings import Settings
from leads.store import Store
from leads.store.schema import upgrade
from tests.conftest import LiveServer, free_port

IN_FLIGHT = 2
PERSON = {"email": "shed@example.com", "first_name": "Shed"}


@pytest.fixture
def server(serve_api, new_store_url, tmp_path) -> LiveServer:
    url = new_store_url()
    store = Store(url)
    upgrade(store.engine)
    store.dispose()
    return serve_api(
        Settings(
            data_dir=tmp_path,
            database_url=url,
            max_requests_in_flight=IN_FLIGHT,
            prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
            crm="none",
        )
    )


@contextmanager
def unfinished_posts(server: LiveServer, count: int) -> Iterator[None]:
    """`count` requests whose bodies never finish arriving: in flight until closed."""
    key = server.key()
    sockets = []
    try:
        for _ in range(count):
            connection = socket.create_connection(("127.0.0.1", server.port))
            connection.sendall(
                b"POST /api/leads HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: application/json\r\n"
                + f"Authorization: Bearer {key}\r\n".encode()
                + b"Content-Length: 1000\r\n\r\n{"
            )
            sockets.append(connection)
        # The server calls the app once a request's head has arrived.
        time.sleep(0.3)
        yield
    finally:
        for connection in sockets:
            connection.close()


def test_a_request_past_the_limit_is_refused_at_once_with_retry_after(server):
    with server.client() as http, unfinished_posts(server, IN_FLIGHT):
        refused = http.post("/api/leads", json=PERSON)

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith(":overloaded")
    assert "ORCH_MAX_REQUESTS_IN_FLIGHT" in problem["detail"]


def test_health_is_answered_whatever_the_load(server):
    with server.client() as http, unfinished_posts(server, IN_FLIGHT):
        assert http.get("/health").status_code == 200


def test_once_requests_finish_new_ones_are_taken_again(server):
    with server.client() as http:
        with unfinished_posts(server, IN_FLIGHT):
            assert http.post("/api/leads", json=PERSON).status_code == 503
        deadline = time.monotonic() + 10
        answer = http.post("/api/leads", json=PERSON)
        while answer.status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.05)
            answer = http.post("/api/leads", json=PERSON)

    assert answer.status_code == 201, answer.text
