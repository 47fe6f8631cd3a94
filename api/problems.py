"""RFC 9457 problem details for every error the API answers with."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from api.auth import KeyProblem
from api.openapi import declare_problems
from leads.errors import (
    FieldError,
    LeadConflict,
    LeadNotFound,
    LeadRejected,
    field_errors,
)
from leads.intake import StoreConflict
from leads.tracebacks import ValuelessTracebacks, valueless

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "urn:orchestrator:problem:"
# FastAPI's words when the body cannot be decoded at all.
_FASTAPI_PARSE_FAILURE = "There was an error parsing the body"
# The types of refusals raised as HTTPException, by a middleware, a dependency
# or a route: a body over a limit, a body not sent as JSON. Starlette's own
# 404 and 405 name no problem of ours, and stay `about:blank`.
STATUS_SLUGS = {413: "body-too-large", 415: "unsupported-media-type"}


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem-details response; `errors` names each field and its reason."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + slug if slug else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    # Always present, so clients read one shape; empty when no field is at fault.
    body["errors"] = [error.as_dict() for error in errors or []]
    return JSONResponse(
        body, status_code=status, headers=headers, media_type="application/problem+json"
    )


def _key_problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KeyProblem)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    slug = "unauthorized" if exc.status == 401 else "forbidden"
    return problem(
        exc.status, exc.detail, slug=slug, errors=[exc.error], headers=headers
    )


def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(list(exc.errors()), skip=1, document=exc.body)
    return _rejected(errors)


def _rejected(errors: list[FieldError]) -> JSONResponse:
    fields = ", ".join(dict.fromkeys(e.field for e in errors))
    return problem(
        422, f"invalid value in: {fields}", slug="invalid-request", errors=errors
    )


def _lead_rejected(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LeadRejected)
    return _rejected(exc.errors)


def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return problem(404, str(exc), slug="lead-not-found")


def _conflict(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LeadConflict)
    error = FieldError(
        exc.field, f"duplicate_{exc.field}", f"lead {exc.other_id} already has it"
    )
    return problem(409, str(exc), slug="lead-conflict", errors=[error])


def _store_conflict(_: Request, exc: Exception) -> JSONResponse:
    return problem(503, str(exc), slug="store-conflict", headers={"Retry-After": "1"})


def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == _FASTAPI_PARSE_FAILURE:
        # Invalid UTF-8, or JSON nested or sized past what the parser takes.
        return _rejected(
            [FieldError("body", "invalid_json", "the body is not valid UTF-8 JSON")]
        )
    if exc.status_code == 400 and isinstance(exc.__context__, MultiPartException):
        # Starlette's answer to a form it cannot parse: an unreadable body is
        # invalid input here, as an unreadable JSON body is.
        return _rejected([FieldError("body", "invalid_multipart", str(exc.detail))])
    detail = (
        exc.detail
        if isinstance(exc.detail, str)
        else HTTPStatus(exc.status_code).phrase
    )
    return problem(
        exc.status_code,
        detail,
        slug=STATUS_SLUGS.get(exc.status_code),
        headers=exc.headers,
    )


def _store_down(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SQLAlchemyError)
    text = str(getattr(exc, "orig", exc))
    if isinstance(exc, PoolTimeout) or "database is locked" in text:
        detail = "the lead store is busy; nothing was written, try again"
    elif "no such table" in text:
        detail = "the lead store is not migrated; run `orchestrator db upgrade`"
    else:
        detail = "the lead store cannot be reached; nothing was written, try again"
    logger.error("lead store unavailable: %s", exc.__class__.__name__)
    return problem(503, detail, slug="store-unavailable", headers={"Retry-After": "5"})


def _programming(request: Request, exc: Exception) -> JSONResponse:
    # PostgreSQL's "relation does not exist" (42P01) means an unmigrated store;
    # any other programming error is ours, and a 500.
    if getattr(getattr(exc, "orig", None), "sqlstate", None) == "42P01":
        return problem(
            503,
            "the lead store is not migrated; run `orchestrator db upgrade`",
            slug="store-unavailable",
            headers={"Retry-After": "5"},
        )
    return _unexpected(request, exc)


def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # Without the error's message, which may quote the request's values.
    logger.error("unhandled error\n%s", valueless(exc))
    return problem(500, "an unexpected error occurred; nothing was written")


def install(app: FastAPI) -> None:
    """Registers the problem-details handlers, and declares them in the document."""
    declare_problems(app)
    app.add_exception_handler(KeyProblem, _key_problem)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(LeadRejected, _lead_rejected)
    app.add_exception_handler(LeadNotFound, _not_found)
    app.add_exception_handler(LeadConflict, _conflict)
    app.add_exception_handler(StoreConflict, _store_conflict)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(OperationalError, _store_down)
    app.add_exception_handler(PoolTimeout, _store_down)
    app.add_exception_handler(ProgrammingError, _programming)
    app.add_exception_handler(Exception, _unexpected)
    # Starlette raises the error on after `_unexpected` answered, and uvicorn
    # logs it again, message and all.
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, ValuelessTracebacks) for f in uvicorn_errors.filters):
        uvicorn_errors.addFilter(ValuelessTracebacks())
