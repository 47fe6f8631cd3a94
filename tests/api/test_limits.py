"""Size limits on every way a body comes in: declared, chunked, multipart, batches."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from api.problems import problem
from leads.settings import MIB, Settings
from leads.store import Store
from leads.store.schema import upgrade
from leads.store.tables import Lead, LeadImport, WebhookDelivery
from tests.conftest import LiveServer, free_port

BODY_LIMIT = 4096
BATCH_LIMIT = 5
BOUNDARY = "limit-test-boundary"
TOO_LARGE = "urn:orchestrator:problem:body-too-large"


def assert_too_large(response: httpx.Response) -> dict:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 413
    return body


def chunked(total: int, piece: bytes = b" " * 1024) -> Iterator[bytes]:
    """`total` bytes sent without a Content-Length (chunked transfer coding)."""
    sent = 0
    while sent < total:
        yield piece
        sent += len(piece)


def multipart(content: bytes) -> tuple[bytes, str]:
    body = (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="leads.csv"\r\n'
            "Content-Type: text/csv\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={BOUNDARY}"


def count(store_url: str, model: type) -> int:
    store = Store(store_url)
    try:
        with store.read_across_tenants() as session:
            return session.scalar(select(func.count()).select_from(model)) or 0
    finally:
        store.dispose()


@pytest.fixture
def store_url(new_store_url) -> str:
    url = new_store_url()
    store = Store(url)
    upgrade(store.engine)
    store.dispose()
    return url


@pytest.fixture
def server(serve_api, store_url, tmp_path) -> LiveServer:
    return serve_api(
        Settings(
            data_dir=tmp_path,
            database_url=store_url,
            max_body_bytes=BODY_LIMIT,
            max_batch_leads=BATCH_LIMIT,
            max_import_bytes=MIB,
            prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
            crm="none",
        )
    )


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


class TestAnswers:
    def test_a_declared_body_over_the_limit_is_a_problem_like_every_other(self, http):
        response = http.post(
            "/api/leads",
            content=b"{" + b" " * BODY_LIMIT + b"}",
            headers={"content-type": "application/json"},
        )

        body = assert_too_large(response)
        assert body["type"] == TOO_LARGE
        assert f"{BODY_LIMIT:,}-byte limit" in body["detail"]
        assert response.headers["connection"] == "close"
        written = problem(413, body["detail"], slug="body-too-large")
        assert response.content == written.body

    def test_a_streamed_body_over_the_limit_is_the_same_problem(self, http):
        response = http.post(
            "/api/leads",
            content=chunked(BODY_LIMIT * 2),
            headers={"content-type": "application/json"},
        )

        body = assert_too_large(response)
        assert body["type"] == TOO_LARGE
        assert f"{BODY_LIMIT:,}-byte limit" in body["detail"]


class TestBatches:
    @pytest.mark.parametrize("shape", ["list", "object"])
    def test_the_limit_holds_for_both_shapes_and_nothing_is_written(
        self, http, store_url, shape
    ):
        items = [{"phone": f"+1415555010{i}"} for i in range(BATCH_LIMIT + 1)]
        payload = items if shape == "list" else {"leads": items}

        body = assert_too_large(http.post("/api/leads/batch", json=payload))

        assert f"{BATCH_LIMIT + 1:,} leads sent" in body["detail"]
        assert body["type"] == TOO_LARGE
        assert count(store_url, Lead) == 0

    @pytest.mark.parametrize("shape", ["list", "object"])
    def test_a_full_batch_of_either_shape_is_taken(self, http, shape):
        items = [{"email": f"{shape}{i}@example.com"} for i in range(BATCH_LIMIT)]
        payload = items if shape == "list" else {"leads": items}

        response = http.post("/api/leads/batch", json=payload)

        assert response.status_code == 200
        assert len(response.json()["results"]) == BATCH_LIMIT

    def test_a_streamed_batch_over_the_byte_limit_is_413(self, http, store_url):
        items = json.dumps([{"email": "s@example.com", "notes": "x" * 900}] * 5)

        response = http.post(
            "/api/leads/batch",
            content=(items[i : i + 512].encode() for i in range(0, len(items), 512)),
            headers={"content-type": "application/json"},
        )

        assert_too_large(response)
        assert count(store_url, Lead) == 0


class TestUploads:
    def test_a_declared_upload_past_the_envelope_allowance_is_refused_unread(
        self, http, server, store_url
    ):
        content, media = multipart(b"email\r\n" + b"x" * (MIB + 100 * 1024))

        response = http.post(
            "/api/imports", content=content, headers={"content-type": media}
        )

        assert f"{MIB + 64 * 1024:,}-byte limit" in assert_too_large(response)["detail"]
        assert count(store_url, LeadImport) == 0

    def test_a_chunked_upload_past_the_limit_is_413_and_keeps_nothing(
        self, http, server, store_url
    ):
        head, media = multipart(b"")
        head = head.split(b"\r\n--" + BOUNDARY.encode() + b"--")[0]

        def stream() -> Iterator[bytes]:
            yield head + b"email\r\n"
            yield from chunked(MIB + 100 * 1024, b"a@example.com\r\n" * 4096)

        response = http.post(
            "/api/imports", content=stream(), headers={"content-type": media}
        )

        assert_too_large(response)
        assert count(store_url, LeadImport) == 0
        imports = server.settings.import_dir
        assert not imports.exists() or list(imports.iterdir()) == []


class TestKeylessRoutes:
    def test_a_declared_webhook_body_over_the_limit_is_refused_unread(
        self, server, store_url
    ):
        response = httpx.post(
            f"{server.url}/api/webhooks/forms",
            content=b"{" + b" " * BODY_LIMIT + b"}",
            headers={"content-type": "application/json"},
        )

        assert_too_large(response)
        assert count(store_url, WebhookDelivery) == 0

    def test_a_chunked_webhook_body_over_the_limit_is_413_and_kept_nowhere(
        self, server, store_url
    ):
        response = httpx.post(
            f"{server.url}/api/webhooks/forms",
            content=chunked(BODY_LIMIT * 2),
            headers={"content-type": "application/json"},
        )

        assert_too_large(response)
        assert count(store_url, WebhookDelivery) == 0

    def test_a_declared_unsubscribe_body_over_the_limit_is_refused_unread(self, server):
        response = httpx.post(
            f"{server.url}/u/some-token",
            content=b"List-Unsubscribe=One-Click&" + b"x" * BODY_LIMIT,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )

        assert_too_large(response)
