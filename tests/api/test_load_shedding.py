"""Past its limit of requests in flight, the API answers 503 at once, not late."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from api.load_shedding import LoadShedding
from tests.conftest import LiveServer

IN_FLIGHT = 2
PERSON = {"email": "shed@example.com", "first_name": "Shed"}


@pytest.fixture
def server(serve_api_on_new_store) -> LiveServer:
    return serve_api_on_new_store(max_requests_in_flight=IN_FLIGHT)


@contextmanager
def store_held(store_url: str) -> Iterator[None]:
    """The leads table locked by another session: a lead written waits for it."""
    url = make_url(store_url)
    if url.get_backend_name() == "sqlite":
        holder = sqlite3.connect(url.database, isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE leads IN ACCESS EXCLUSIVE MODE")
        yield
        holder.rollback()


def load_shedding_of(server: LiveServer) -> LoadShedding:
    """The server's LoadShedding layer, to see how many requests it counts."""
    layer = server.server.config.app.middleware_stack
    while not isinstance(layer, LoadShedding):
        layer = layer.app
    return layer


@contextmanager
def posts_in_flight(server: LiveServer, http: httpx.Client) -> Iterator[list[Future]]:
    """`IN_FLIGHT` leads posted while the store is held: each waits in the API."""
    # The pool is left last: its posts finish once the store is let go.
    with ThreadPoolExecutor(IN_FLIGHT) as pool, store_held(server.settings.store_url):
        waiting = [
            pool.submit(http.post, "/api/leads", json={"email": f"w{n}@example.com"})
            for n in range(IN_FLIGHT)
        ]
        shedding = load_shedding_of(server)
        deadline = time.monotonic() + 20
        while shedding.in_flight < IN_FLIGHT:
            assert time.monotonic() < deadline, "the posts never got in flight"
            time.sleep(0.02)
        yield waiting


def test_a_request_past_the_limit_is_refused_at_once_with_retry_after(server):
    with server.client() as http, posts_in_flight(server, http) as waiting:
        refused = http.post("/api/leads", json=PERSON)

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith(":overloaded")
    assert "ORCH_MAX_REQUESTS_IN_FLIGHT" in problem["detail"]
    # The ones in flight were answered once the store was free.
    assert [answer.result().status_code for answer in waiting] == [201, 201]


def test_health_is_answered_whatever_the_load(server):
    with server.client() as http, posts_in_flight(server, http):
        assert http.get("/health").status_code == 200


def test_a_request_waiting_for_its_body_holds_no_slot(server):
    key = server.key()
    sockets = []
    try:
        for _ in range(IN_FLIGHT + 1):
            connection = socket.create_connection(("127.0.0.1", server.port))
            connection.sendall(
                b"POST /api/leads HTTP/1.1\r\nHost: test\r\n"
                b"Content-Type: application/json\r\n"
                + f"Authorization: Bearer {key}\r\n".encode()
                + b"Content-Length: 1000\r\n\r\n{"
            )
            sockets.append(connection)
        shedding = load_shedding_of(server)
        deadline = time.monotonic() + 20
        while shedding.taken < IN_FLIGHT + 1:
            assert time.monotonic() < deadline, "the slow posts never arrived"
            time.sleep(0.02)
        with server.client() as http:
            answer = http.post("/api/leads", json=PERSON)
    finally:
        for connection in sockets:
            connection.close()

    assert answer.status_code == 201, answer.text


def test_once_requests_finish_new_ones_are_taken_again(server):
    with server.client() as http:
        with posts_in_flight(server, http):
            assert http.post("/api/leads", json=PERSON).status_code == 503
        answer = http.post("/api/leads", json=PERSON)

    assert answer.status_code == 201, answer.text
