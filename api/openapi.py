"""The OpenAPI document's error answers: each a problem document, as sent.

Routes declare only the errors that belong to what they do (404 for an
unknown id, 409 for a conflict). The answers any route can give because of
where it sits — a missing key, a body over the limit, a busy store — are
added here once, and every error answer is declared as
`application/problem+json` with the `Problem` schema, so a client (or a
fuzzer) can rely on the document for every status it may get.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

PROBLEM_MEDIA_TYPE = "application/problem+json"
_REF = "#/components/schemas/{model}"
PROBLEM_SCHEMA = _REF.format(model="Problem")
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

# Answers a route gives because of where it sits, each with when it comes.
_WITH_KEY = {
    401: "No API key was sent, or the key is not known or was revoked.",
    403: "The key's scope does not allow this.",
    429: "Too many requests with this key; `Retry-After` says when to retry.",
}
_WITH_BODY = {413: "The body is over the size limit; nothing was read."}
_WITH_JSON_BODY = {415: "The body is not sent as `Content-Type: application/json`."}
_WITH_INPUT = {422: "Invalid; every error names its field; nothing was written."}
_WITH_ID = {404: "Nothing of this id is visible to the caller's tenant."}
_ANYWHERE = {
    503: "The lead store is busy or unreachable, or the API is at its limit of "
    "requests at once; nothing was written. `Retry-After` says when to retry."
}


class ProblemError(BaseModel):
    """One field at fault and why."""

    field: str = Field(description="The field, header or parameter, e.g. `email`.")
    reason: str = Field(description="A stable code, e.g. `invalid_email`.")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document: the body of every 4xx and 5xx answer."""

    type: str = Field(description="`urn:orchestrator:problem:<slug>` or `about:blank`.")
    title: str = Field(description="The status's phrase.")
    status: int
    detail: str = Field(description="What went wrong and what to do.")
    errors: list[ProblemError] = Field(
        description="Each field at fault; empty when none is."
    )


def declare_problems(app: FastAPI) -> None:
    """Makes the app's OpenAPI document declare its error answers as problems.

    Guarantees, for every operation in the document: each 4xx or 5xx answer
    it declares without a schema of its own has the `Problem` schema under
    `application/problem+json`; a keyed operation declares 401, 403 and 429;
    one with a body 413 (and 415 for a JSON body); one with parameters or a
    body 422; one with a path parameter 404; and every operation 503.
    """
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _declare(build())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _declare(document: dict[str, Any]) -> None:
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is not None:
                _declare_operation(path, operation)

    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template=_REF)
    schemas.update(problem.pop("$defs", {}))
    schemas["Problem"] = problem
    # FastAPI's validation models are left unused once its 422s are problems.
    paths = json.dumps(document["paths"])
    if _REF.format(model="HTTPValidationError") not in paths:
        schemas.pop("HTTPValidationError", None)
        if _REF.format(model="ValidationError") not in paths + json.dumps(schemas):
            schemas.pop("ValidationError", None)


def _declare_operation(path: str, operation: dict[str, Any]) -> None:
    common: dict[int, str] = dict(_ANYWHERE)
    body = operation.get("requestBody")
    if operation.get("security"):
        common |= _WITH_KEY
    if body is not None:
        common |= _WITH_BODY
        if "application/json" in body.get("content", {}):
            common |= _WITH_JSON_BODY
    if body is not None or operation.get("parameters"):
        common |= _WITH_INPUT
    if "{" in path:
        common |= _WITH_ID

    responses = operation.setdefault("responses", {})
    for status, description in common.items():
        responses.setdefault(str(status), {"description": description})
    for status, response in responses.items():
        if status.isdigit() and status[0] in "45" and _without_schema(response):
            response["content"] = {
                PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_SCHEMA}}
            }
            if response.get("description") in (None, "", "Additional Response"):
                response["description"] = HTTPStatus(int(status)).phrase


def _without_schema(response: dict[str, Any]) -> bool:
    """Whether the answer's content is FastAPI's default: no schema, or its 422."""
    content = response.get("content")
    if not content:
        return True
    if set(content) != {"application/json"}:
        return False
    schema = content["application/json"].get("schema") or {}
    return not schema or schema.get("$ref") == _REF.format(model="HTTPValidationError")
