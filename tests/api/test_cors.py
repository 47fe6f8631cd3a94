"""CORS: the origins ORCH_CORS_ORIGINS names get it, others get no CORS header."""

from __future__ import annotations

import httpx
import pytest

from api.app import create_app
from leads.settings import Settings
from leads.store import Store
from leads.store.schema import upgrade
from tests.conftest import free_port

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {
        name: value
        for name, value in response.headers.items()
        if name.startswith("access-control-")
    }


def preflight(
    server, origin: str, method: str = "POST", headers: str | None = None
) -> httpx.Response:
    asked = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        asked["Access-Control-Request-Headers"] = headers
    return httpx.options(f"{server.url}/api/leads", headers=asked)


@pytest.fixture(scope="module")
def store_url(new_store_url) -> str:
    url = new_store_url()
    store = Store(url)
    upgrade(store.engine)
    store.dispose()
    return url


@pytest.fixture
def serve(serve_api, store_url, tmp_path):
    def start(origins: list[str], **more):
        return serve_api(
            Settings(
                data_dir=tmp_path,
                database_url=store_url,
                prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
                crm="none",
                cors_origins=origins,
                **more,
            )
        )

    return start


class TestAllowedOrigin:
    def test_a_preflight_allows_the_api_s_headers_and_methods(self, serve):
        # Written with a trailing slash and capitals: still the same origin.
        server = serve(["https://App.example.com/"])

        answer = preflight(
            server,
            ALLOWED,
            headers="authorization, content-type, idempotency-key, x-api-key",
        )

        assert answer.status_code == 200
        headers = cors_headers(answer)
        assert headers["access-control-allow-origin"] == ALLOWED
        allowed = {
            h.strip().lower()
            for h in headers["access-control-allow-headers"].split(",")
        }
        assert {
            "authorization",
            "x-api-key",
            "content-type",
            "idempotency-key",
        } <= allowed
        methods = set(headers["access-control-allow-methods"].split(", "))
        assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= methods
        assert "access-control-allow-credentials" not in headers

    def test_a_preflight_asking_for_another_header_is_refused(self, serve):
        server = serve([ALLOWED])

        answer = preflight(server, ALLOWED, headers="x-something-else")

        assert answer.status_code == 400

    def test_answers_name_the_origin_and_expose_what_scripts_need(self, serve):
        server = serve([ALLOWED])

        with server.client() as http:
            answer = http.post(
                "/api/leads",
                json={"email": "cors@example.com"},
                headers={"Origin": ALLOWED},
            )

        assert answer.status_code in (200, 201)
        headers = cors_headers(answer)
        assert headers["access-control-allow-origin"] == ALLOWED
        exposed = set(headers["access-control-expose-headers"].split(", "))
        assert {
            "Location",
            "Retry-After",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
        } <= exposed
        assert "Origin" in answer.headers["vary"]

    def test_a_refusal_can_be_read_by_the_script(self, serve):
        server = serve([ALLOWED], rate_limit_per_minute=1)

        with server.client() as http:
            http.get("/api/leads", headers={"Origin": ALLOWED})
            answer = http.get("/api/leads", headers={"Origin": ALLOWED})

        assert answer.status_code == 429
        assert cors_headers(answer)["access-control-allow-origin"] == ALLOWED


class TestOtherOrigins:
    def test_get_no_cors_header_at_all(self, serve):
        server = serve([ALLOWED])

        with server.client() as http:
            answer = http.get("/api/leads", headers={"Origin": OTHER})

        assert answer.status_code == 200
        assert cors_headers(answer) == {}
        assert "Origin" in answer.headers["vary"]

    def test_their_preflight_is_a_plain_405_without_cors_headers(self, serve):
        server = serve([ALLOWED])

        answer = preflight(server, OTHER, headers="authorization")

        assert answer.status_code == 405
        assert answer.headers["content-type"] == "application/problem+json"
        assert cors_headers(answer) == {}

    def test_with_no_origins_configured_nobody_gets_cors(self, serve):
        server = serve([])

        with server.client() as http:
            answer = http.get("/api/leads", headers={"Origin": ALLOWED})

        assert cors_headers(answer) == {}
        assert cors_headers(preflight(server, ALLOWED)) == {}


def test_a_wildcard_allows_every_origin_and_never_credentials(serve):
    server = serve(["*"])

    with server.client() as http:
        answer = http.get("/api/leads", headers={"Origin": OTHER})
    asked = preflight(server, OTHER, headers="authorization")

    assert cors_headers(answer)["access-control-allow-origin"] == "*"
    assert asked.status_code == 200
    assert "access-control-allow-credentials" not in cors_headers(answer)
    assert "access-control-allow-credentials" not in cors_headers(asked)


@pytest.mark.parametrize(
    "entry",
    ["app.example.com", "https://app.example.com/path", "ftp://app.example.com", ""],
)
def test_an_entry_that_is_not_an_origin_stops_the_app_from_being_made(entry, tmp_path):
    settings = Settings(data_dir=tmp_path, cors_origins=[ALLOWED, entry])

    with pytest.raises(ValueError, match="ORCH_CORS_ORIGINS") as caught:
        create_app(settings)

    assert repr(entry) in str(caught.value)
