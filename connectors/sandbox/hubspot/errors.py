"""HubSpot's error body, and the one exception the sandbox's HubSpot code raises."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse

# The `category` HubSpot sends with each status (its v3 error shape).
CATEGORIES = {
    400: "VALIDATION_ERROR",
    401: "INVALID_AUTHENTICATION",
    403: "MISSING_SCOPES",
    404: "OBJECT_NOT_FOUND",
    409: "CONFLICT",
    429: "RATE_LIMITS",
}


class HubSpotError(Exception):
    """An error answer, raised wherever it is found and sent as HubSpot would."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        category: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.category = category
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> Response:
        response = error_response(
            self.status, self.message, category=self.category, extra=self.extra
        )
        response.headers.update(self.headers)
        return response


def error_response(
    status: int,
    message: str,
    *,
    category: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """A response in HubSpot's error shape.

    `{status: "error", message, correlationId, category}`, plus what the
    status adds: a 429 carries `errorType` and `policyName` (the ten-secondly
    policy unless `policyName` is given), and `extra` may add `context`,
    `errors` or `subCategory`, or replace a field (the OAuth endpoint puts its
    code in `status`).
    """
    if category is None:
        category = CATEGORIES.get(status, "INTERNAL_ERROR" if status >= 500 else "")
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }
    if status == 429:
        body["errorType"] = "RATE_LIMIT"
        body["policyName"] = "TEN_SECONDLY_ROLLING"
    body.update(extra or {})
    return JSONResponse(body, status_code=status)
