"""Security headers on every answer: JSON, problems, 404s, 413s, 500s, docs, pages."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from api.security_headers import JSON_POLICY
from leads.settings import Settings
from leads.store import Store
from leads.store.schema import upgrade
from tests.conftest import LiveServer, free_port
from tests.docs_pages import Page, directives, sha256_source

COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_secured(response: httpx.Response, *, cached: bool = False) -> None:
    for name, value in COMMON.items():
        assert response.headers.get(name) == value, (name, response.status_code)
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    if cached:
        assert "no-store" not in response.headers.get("cache-control", "")
    else:
        assert response.headers["cache-control"] == "no-store"


def assert_json_secured(response: httpx.Response) -> None:
    assert_secured(response)
    assert response.headers["content-security-policy"] == JSON_POLICY


@pytest.fixture(scope="module")
def store_url(new_store_url) -> str:
    url = new_store_url()
    store = Store(url)
    upgrade(store.engine)
    store.dispose()
    return url


def settings_for(store_url: str, tmp_path, **more) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=store_url,
        prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
        crm="none",
        max_body_bytes=4096,
        **more,
    )


@pytest.fixture
def server(store_url, tmp_path) -> Iterator[LiveServer]:
    """The API, with one route more that fails as no handler expects."""
    live = LiveServer(settings_for(store_url, tmp_path))

    def broken() -> None:
        raise RuntimeError("a bug")

    live.server.config.app.add_api_route("/api/broken", broken)
    live.start()
    yield live
    live.stop()


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


class TestApiAnswers:
    def test_json_answers_carry_them(self, http):
        assert_json_secured(http.get("/api/leads"))
        assert_json_secured(http.post("/api/leads", json={"email": "h@example.com"}))

    def test_problem_answers_carry_them(self, server, http):
        answers = {
            "422": http.post("/api/leads", json={"email": "broken"}),
            "404 lead": http.get("/api/leads/not-a-lead"),
            "404 route": http.get("/api/no-such-thing"),
            "405": http.delete("/api/leads"),
            "401": httpx.get(f"{server.url}/api/leads"),
        }

        for name, answer in answers.items():
            assert answer.headers["content-type"] == "application/problem+json", name
            assert_json_secured(answer)
        assert "strict-transport-security" not in answers["422"].headers

    def test_a_body_refused_before_any_handler_carries_them(self, http):
        answer = http.post(
            "/api/leads",
            content=b"{" + b" " * 5000 + b"}",
            headers={"content-type": "application/json"},
        )

        assert answer.status_code == 413
        assert_json_secured(answer)

    def test_an_error_no_handler_caught_is_a_500_problem_carrying_them(self, http):
        answer = http.get("/api/broken")

        assert answer.status_code == 500
        assert answer.json()["detail"] == (
            "an unexpected error occurred; nothing was written"
        )
        assert_json_secured(answer)
        assert answer.headers["content-type"] == "application/problem+json"

    def test_probes_carry_them(self, server):
        assert_json_secured(httpx.get(f"{server.url}/health"))
        assert_json_secured(httpx.get(f"{server.url}/api/openapi.json"))


class TestPages:
    def test_the_docs_page_may_run_exactly_its_own_scripts(self, server):
        answer = httpx.get(f"{server.url}/api/docs")

        assert answer.status_code == 200
        assert_secured(answer)
        policy = directives(answer.headers["content-security-policy"])
        page = Page(answer.text)
        assert len(page.inline_scripts) == 1
        hashes = [sha256_source(script) for script in page.inline_scripts]
        assert policy["script-src"] == ["'self'", *hashes]
        assert policy["default-src"] == ["'none'"]
        assert policy["connect-src"] == ["'self'"]
        assert "'unsafe-eval'" not in answer.headers["content-security-policy"]
        # The favicon is a data: URL; Swagger UI's icons are data: images.
        assert policy["img-src"] == ["'self'", "data:"]

    def test_every_asset_the_docs_page_names_loads_from_this_origin(self, server):
        page = Page(httpx.get(f"{server.url}/api/docs").text)
        assets = [
            *page.script_sources,
            *(link for link in page.links if not link.startswith("data:")),
        ]
        assert len(assets) == 2

        for path in assets:
            assert path.startswith("/"), path  # same origin: 'self' allows it
            answer = httpx.get(f"{server.url}{path}")
            assert answer.status_code == 200, path
            assert_secured(answer, cached=True)
            # nosniff makes the browser insist on the right type.
            expected = "text/css" if path.endswith(".css") else "javascript"
            assert expected in answer.headers["content-type"], path
        assert "/api/openapi.json" in page.inline_scripts[0]

    def test_unsubscribe_pages_keep_their_own_policy_and_get_the_rest(self, server):
        answer = httpx.get(f"{server.url}/u/not-a-token")

        assert answer.status_code == 404
        assert answer.headers["content-type"].startswith("text/html")
        assert_secured(answer)
        policy = directives(answer.headers["content-security-policy"])
        assert policy["form-action"] == ["'self'"]
        assert policy["default-src"] == ["'none'"]
        assert answer.headers.get_list("content-security-policy") == [
            answer.headers["content-security-policy"]
        ]


def test_https_public_address_adds_strict_transport_security(
    serve_api, store_url, tmp_path
):
    server = serve_api(
        settings_for(store_url, tmp_path, public_base_url="https://crm.example.com")
    )

    for answer in (
        httpx.get(f"{server.url}/health"),
        httpx.get(f"{server.url}/api/leads"),
        httpx.get(f"{server.url}/api/docs"),
    ):
        assert answer.headers["strict-transport-security"] == "max-age=31536000"
