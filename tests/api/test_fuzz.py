"""The API fuzzed from its own OpenAPI document, over real HTTP.

Every operation the document lists gets requests Schemathesis makes from its
schema, valid and invalid ones, a fixed number each from a fixed seed, so a
run is repeatable. No answer may be a server error, and every answer must be
one the document declares: its status, its content type and its body.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from connectors.sandbox.server import running_sandbox
from leads.settings import Settings
from tests.conftest import LiveServer, free_port

CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Statuses that say a dependency is down (the Prefect server, a CRM), not that
# the API failed: accepted where the operation documents them, as designed
# answers; any other 5xx, and a 500 always, is a failure.
DEPENDENCY_DOWN = {502, 503}
# Examples per operation: enough to reach each branch of validation, few
# enough that both store backends are fuzzed within a few minutes.
VALID_EXAMPLES = 20
INVALID_EXAMPLES = 10
SCOPE_EXAMPLES = 4
# Every operation in the document is fuzzed; none is left out. Only bodies
# that would make the API call out are bent back to loopback (see
# `_stay_on_loopback`).


@dataclass
class Findings:
    """The first failure of each kind per operation, with how to reproduce it."""

    seen: dict[tuple[str, str], str] = field(default_factory=dict)
    statuses: dict[str, set[int]] = field(default_factory=dict)
    requests: int = 0

    def add(self, operation: str, kind: str, text: str) -> None:
        self.seen.setdefault((operation, kind), text)

    def report(self) -> str:
        return "\n\n".join(
            f"{operation} [{kind}]\n{text}"
            for (operation, kind), text in sorted(self.seen.items())
        )


@dataclass
class Fuzzer:
    """Sends each operation's generated requests to a live API and checks them."""

    schema: Any
    base_url: str
    session: requests.Session
    findings: Findings = field(default_factory=Findings)
    # A closed loopback port: where a CRM the API is asked to test would be.
    nowhere: str = field(default_factory=lambda: f"http://127.0.0.1:{free_port()}")

    def operations(self) -> Iterator[tuple[str, Any]]:
        for result in self.schema.get_all_operations():
            operation = result.ok()
            yield f"{operation.method.upper()} {operation.path}", operation

    def fuzz(
        self,
        headers: dict[str, str],
        mode: GenerationMode,
        examples: int,
        *,
        path_parameters: dict[str, str] | None = None,
        only: set[str] | None = None,
    ) -> None:
        """Runs `examples` generated requests of `mode` against each operation.

        With `path_parameters`, only operations whose every path parameter is
        given are run, with those values.
        """
        for label, operation in self.operations():
            if only is not None and label not in only:
                continue
            given_ids = None
            if path_parameters is not None:
                names = {p.name for p in operation.path_parameters}
                if not names or not names <= set(path_parameters):
                    continue
                given_ids = {name: path_parameters[name] for name in names}
            strategy = operation.as_strategy(
                generation_mode=mode, path_parameters=given_ids
            ).map(self._stay_on_loopback)
            try:
                self._runner(label, strategy, headers, examples)()
            except Unsatisfiable:
                # Nothing of the operation can be made invalid (no parameter,
                # no body): its valid requests were fuzzed already.
                assert mode is GenerationMode.NEGATIVE, label

    def _stay_on_loopback(self, case: Any) -> Any:
        """Points a CRM account's host and token URL at a closed loopback port.

        `POST /api/crm/config` tests the account it is sent by calling it, at
        the vendor's own host when the credentials name none: every account
        generated here names a closed port on this machine instead.
        """
        body = case.body
        credentials = body.get("credentials") if isinstance(body, dict) else None
        if isinstance(credentials, dict):
            credentials.update(host=self.nowhere, token_url=f"{self.nowhere}/token")
        return case

    def _runner(
        self, label: str, strategy: Any, headers: dict[str, str], examples: int
    ) -> Any:
        findings = self.findings

        @settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            response = case.call(
                base_url=self.base_url,
                session=self.session,
                headers=headers,
                timeout=30,
            )
            findings.requests += 1
            findings.statuses.setdefault(label, set()).add(response.status_code)
            checks = list(CONFORMANCE)
            if not _documented_outage(case, response.status_code):
                checks.append(not_a_server_error)
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except FailureGroup as group:
                for failure in group.exceptions:
                    findings.add(
                        label,
                        type(failure).__name__,
                        f"{failure}\n{case.as_curl_command(headers=headers)}\n"
                        f"-> {response.status_code} {response.text[:400]}",
                    )

        return run


def _documented_outage(case: Any, status: int) -> bool:
    declared = case.operation.definition.raw.get("responses", {})
    return status in DEPENDENCY_DOWN and str(status) in declared


@pytest.fixture
def api(serve_api, store, tmp_path, prefect_server) -> LiveServer:
    """The API on the backend's store and the session's Prefect server.

    A real Prefect server, so the workflow and CRM sync routes answer as they
    do in production instead of waiting out a client's retries; no rate limit
    worth the name, so every generated request reaches its route.
    """
    return serve_api(
        Settings(
            data_dir=tmp_path,
            database_url=store.url,
            max_body_bytes=64 * 1024,
            prefect_api_url=prefect_server.api_url,
            crm="none",
            rate_limit_per_minute=1_000_000,
        )
    )


@pytest.fixture
def fuzzer(api) -> Iterator[Fuzzer]:
    document = httpx.get(f"{api.url}/api/openapi.json", timeout=30).json()
    with requests.Session() as session:
        yield Fuzzer(schemathesis.openapi.from_dict(document), api.url, session)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def stored_ids(api: LiveServer, key: str) -> dict[str, str]:
    """Ids of a lead with a possible duplicate, its review item and a send."""
    with httpx.Client(base_url=api.url, headers=bearer(key), timeout=30) as http:
        first = http.post("/api/leads", json={"email": "ada@example.com"}).json()
        http.post("/api/leads", json={"email": "ada+fuzz@example.com"})
        [review] = http.get("/api/duplicates").json()["data"]
        send = http.post(
            "/api/email/send",
            json={
                "category": "transactional",
                "lead_id": first["id"],
                "subject": "Hello",
                "text": "Hello.",
            },
        ).json()
    return {
        "lead_id": first["id"],
        "review_id": str(review["id"]),
        "send_id": send["id"],
    }


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_operation_answers_as_documented(api, fuzzer):
    admin = bearer(api.key(scope="admin"))

    fuzzer.fuzz(admin, GenerationMode.POSITIVE, VALID_EXAMPLES)
    fuzzer.fuzz(admin, GenerationMode.NEGATIVE, INVALID_EXAMPLES)
    # Stored objects, so that edits, merges and reads get past the lookup.
    ids = stored_ids(api, api.key(scope="admin"))
    fuzzer.fuzz(admin, GenerationMode.POSITIVE, VALID_EXAMPLES, path_parameters=ids)

    assert fuzzer.findings.requests > 1000
    assert not fuzzer.findings.seen, fuzzer.findings.report()


@pytest.mark.slow
def test_keys_without_the_scope_or_without_a_key_get_the_documented_answers(
    api, fuzzer
):
    keyed = {
        label
        for label, operation in fuzzer.operations()
        if operation.definition.raw.get("security")
    }
    writes = {label for label in keyed if not label.startswith("GET ")}

    fuzzer.fuzz({}, GenerationMode.POSITIVE, SCOPE_EXAMPLES, only=keyed)
    without_key = fuzzer.findings.statuses
    fuzzer.findings.statuses = {}
    read = bearer(api.key(scope="read"))
    fuzzer.fuzz(read, GenerationMode.POSITIVE, SCOPE_EXAMPLES, only=writes)

    assert not fuzzer.findings.seen, fuzzer.findings.report()
    assert {label for label in keyed if 401 not in without_key[label]} == set()
    # A body the API cannot read is 422 before the key's scope is looked at.
    assert {
        label for label in writes if 403 not in fuzzer.findings.statuses[label]
    } == set()


def test_every_answer_declares_its_body_and_errors_are_problems(live_api):
    document = httpx.get(f"{live_api.url}/api/openapi.json", timeout=30).json()
    problem = {"$ref": "#/components/schemas/Problem"}
    answers = [
        (f"{method.upper()} {path} {status}", status, response)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
    ]

    not_problems = [
        label
        for label, status, response in answers
        if status[0] in "45"
        and response.get("content", {})
        .get("application/problem+json", {})
        .get("schema")
        != problem
    ]
    without_body = [
        label
        for label, status, response in answers
        if status[0] == "2" and status != "204" and not response.get("content")
    ]

    assert not_problems == []
    assert without_body == []
    assert "HTTPValidationError" not in document["components"]["schemas"]
    keyed = document["paths"]["/api/leads"]["get"]["responses"]
    assert {"401", "403", "422", "429", "503"} <= set(keyed)
    assert {"413", "415"} <= set(document["paths"]["/api/leads"]["post"]["responses"])


class TestFoundByFuzzing:
    def test_an_unreadable_multipart_body_is_422_naming_the_body(self, client):
        # Starlette's parser answered 400, which no route declares.
        response = client.post(
            "/api/imports",
            content=b"--b\r\nno headers, no end",
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )

        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"] == "body"
        assert response.json()["errors"][0]["reason"] == "invalid_multipart"

    def test_a_lead_id_no_lead_can_have_matches_nothing(
        self, serve_api, store, tmp_path
    ):
        # PostgreSQL refused the NUL character in a query: a 500.
        nul = "\u0000"
        with running_sandbox() as (sandbox, _state):
            api = serve_api(
                Settings(
                    data_dir=tmp_path,
                    database_url=store.url,
                    crm="sandbox",
                    sandbox_port=int(sandbox.rsplit(":", 1)[1]),
                    prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
                )
            )
            with api.client() as http:
                retry = http.post("/api/crm/retry", json={"lead_ids": [nul]})
                preview = http.post("/api/crm/preview", json={"lead_ids": [nul, "x"]})

        # Requeued nothing, then found no Prefect to start a sync on.
        assert retry.status_code == 503, retry.text
        assert retry.json()["type"].endswith(":prefect-unavailable")
        assert preview.status_code == 200, preview.text
        assert preview.json()["data"] == []

    def test_an_empty_patch_of_a_lead_without_an_e_mail_changes_nothing(self, client):
        # Answered 500: the e-mail the lead does not have was taken as re-sent.
        lead = client.post("/api/leads", json={"phone": "+14155550100"}).json()

        response = client.patch(f"/api/leads/{lead['id']}", json={})

        assert response.status_code == 200, response.text
        assert response.json()["phone"] == lead["phone"]
        assert response.json()["email"] is None
