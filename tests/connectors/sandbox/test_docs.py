"""The sandbox's docs page: Swagger UI from files it serves itself, no other host."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from connectors.sandbox.docs import page_policy
from connectors.sandbox.server import running_sandbox
from tests.docs_pages import Page, directives, sha256_source

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ANY_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s\"'<>`)]+", re.IGNORECASE)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[httpx.Client]:
    with running_sandbox() as (base_url, _state):
        http = httpx.Client(base_url=base_url, timeout=10)
        yield http
        http.close()


class TestSandboxDocs:
    def test_the_docs_page_names_no_other_host(self, sandbox):
        answer = sandbox.get("/_sandbox/docs")

        assert answer.status_code == 200
        assert "Swagger" in answer.text
        elsewhere = [
            url
            for url in ANY_URL.findall(answer.text)
            if urlsplit(url).hostname not in LOOPBACK
        ]
        assert elsewhere == []

    def test_every_file_the_docs_page_fetches_is_served_by_the_sandbox(self, sandbox):
        page = Page(sandbox.get("/_sandbox/docs").text)
        files = [url for url in page.fetched if not url.startswith("data:")]
        assert len(files) == 2  # Swagger UI's script and style sheet

        for path in files:
            # One slash: this origin's path, not a protocol-relative other host.
            assert path.startswith("/") and not path.startswith("//"), path
            answer = sandbox.get(path)
            assert answer.status_code == 200, path
            expected = "text/css" if path.endswith(".css") else "javascript"
            assert expected in answer.headers["content-type"], path
        assert "'/_sandbox/openapi.json'" in page.inline_scripts[0]
        assert sandbox.get("/_sandbox/openapi.json").status_code == 200

    def test_the_docs_page_may_run_only_its_own_scripts(self, sandbox):
        answer = sandbox.get("/_sandbox/docs")

        policy = directives(answer.headers["content-security-policy"])
        page = Page(answer.text)
        assert len(page.inline_scripts) == 1
        assert policy["default-src"] == ["'none'"]
        assert policy["script-src"] == ["'self'", sha256_source(page.inline_scripts[0])]
        assert policy["connect-src"] == ["'self'"]

    def test_no_redoc_page_is_served_as_fastapis_loads_from_a_cdn(self, sandbox):
        assert sandbox.get("/redoc").status_code == 404


def test_a_page_policy_hashes_each_inline_script_and_no_external_one():
    html = (
        '<script src="/a.js"></script><script>one()</script>'
        "<SCRIPT type='module'>two()</SCRIPT>"
    )

    script_src = directives(page_policy(html))["script-src"]

    assert script_src == ["'self'", sha256_source("one()"), sha256_source("two()")]
