"""The Salesforce routes: OAuth, sObjects, SOQL, Collections, Bulk API 2.0, controls."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from connectors.sandbox.salesforce import bulk, soql
from connectors.sandbox.salesforce.fields import (
    LEAD,
    SOBJECTS,
    FieldError,
    RecordRefused,
    SObjectType,
)
from connectors.sandbox.salesforce.oauth import token_endpoint
from connectors.sandbox.salesforce.state import MultipleMatches, State

VERSION = re.compile(r"^v\d{2,3}\.\d$")
DATA = "/services/data/{version}"
# sObject Collections take at most 200 records a request
# (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_sobjects_collections.htm).
COLLECTION_LIMIT = 200
ROLLED_BACK = FieldError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was "
    "using AllOrNone header",
)
STATUS_CODES = {
    400: "MALFORMED_QUERY",
    401: "INVALID_SESSION_ID",
    403: "REQUEST_LIMIT_EXCEEDED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    415: "UNSUPPORTED_MEDIA_TYPE",
    503: "SERVER_UNAVAILABLE",
}


def error_response(status: int, message: str) -> Response:
    """Salesforce's error body for `status`: `[{message, errorCode, fields}]`."""
    code = STATUS_CODES.get(status, "UNKNOWN_EXCEPTION")
    if status == 401:
        message = f"Session expired or invalid: {message}"
    elif status == 403:
        # The daily allocation's wording; clients tell it from the concurrent
        # long-request limit (`ConcurrentPerOrgLongTxn Limit exceeded`) by it.
        message = f"TotalRequests Limit exceeded. {message}"
    return JSONResponse(
        [{"message": message, "errorCode": code, "fields": []}], status_code=status
    )


class ApiError(Exception):
    """A refusal a route raises; becomes Salesforce's error array."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body

    def response(self) -> Response:
        return JSONResponse(self.body, status_code=self.status)


def _fail(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, [{"message": message, "errorCode": code, "fields": []}])


def _refused(exc: RecordRefused) -> ApiError:
    return ApiError(400, [error.as_rest() | exc.extra for error in exc.errors])


def _collection_errors(exc: RecordRefused | MultipleMatches) -> list[dict[str, Any]]:
    if isinstance(exc, MultipleMatches):
        return [
            {
                "statusCode": "DUPLICATE_EXTERNAL_ID",
                "message": f"Upsert failed. {len(exc.ids)} records match: "
                + ", ".join(exc.ids),
                "fields": [],
            }
        ]
    return [error.as_collection() | exc.extra for error in exc.errors]


def _sobject(name: str) -> SObjectType:
    sobject = SOBJECTS.get(name.lower())
    if sobject is None:
        raise _fail(404, "NOT_FOUND", "The requested resource does not exist")
    return sobject


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise _fail(
            400, "JSON_PARSER_ERROR", f"The request body is not JSON: {exc}"
        ) from exc


async def _json_object(request: Request) -> dict[str, Any]:
    body = await _json(request)
    if not isinstance(body, dict):
        raise _fail(400, "JSON_PARSER_ERROR", "Expected a JSON object")
    return body


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "oauth") else None


def _metered(state: State) -> type[APIRoute]:
    """A route class that checks the session and allocation and reports usage."""

    class MeteredRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            handler = super().get_route_handler()
            kind = self.name

            async def metered(request: Request) -> Response:
                state.count(kind)
                if not VERSION.match(request.path_params.get("version", "")):
                    response = error_response(404, "unknown API version")
                elif not state.session_valid(_bearer(request)):
                    response = error_response(401, "the token is unknown or expired")
                elif not state.spend():
                    response = error_response(403, "")
                else:
                    try:
                        response = await handler(request)
                    except ApiError as exc:
                        response = exc.response()
                used, allocation = state.api_usage()
                # Every Salesforce REST response reports the rolling usage.
                response.headers["Sforce-Limit-Info"] = f"api-usage={used}/{allocation}"
                return response

            return metered

    return MeteredRoute


def _records_api(state: State) -> APIRouter:
    api = APIRouter(route_class=_metered(state))

    @api.get(DATA + "/limits/", summary="Org limits")
    def limits() -> dict[str, Any]:
        """The org's limits, of which the sandbox keeps the daily API requests."""
        used, allocation = state.api_usage()
        return {
            "DailyApiRequests": {"Max": allocation, "Remaining": allocation - used},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DataStorageMB": {"Max": 5, "Remaining": 5},
        }

    @api.get(DATA + "/sobjects/{sobject}/describe", summary="Describe an sObject")
    def describe(sobject: str, version: str) -> dict[str, Any]:
        """Every field of the sObject with its type, length and rules."""
        return _sobject(sobject).describe(version.removeprefix("v"))

    @api.post(DATA + "/sobjects/{sobject}/", summary="Create a record")
    async def create(sobject: str, request: Request) -> Response:
        """Creates one record; 201 with its id."""
        kind = _sobject(sobject)
        values = await _json_object(request)
        [result] = state.write([state.create(kind, values)], sobject=kind)
        if isinstance(result, RecordRefused):
            raise _refused(result)
        return JSONResponse(
            {"id": result, "success": True, "errors": []}, status_code=201
        )

    @api.get(DATA + "/sobjects/{sobject}/{record_id}", summary="Get a record")
    def get(sobject: str, record_id: str, version: str, request: Request) -> Any:
        """One record by id, with all fields or those in `fields`."""
        kind = _sobject(sobject)
        record = state.table(kind).get(record_id)
        if record is None:
            raise _fail(404, "NOT_FOUND", "The requested resource does not exist")
        return state.as_rest(
            kind, record, _chosen(kind, request), version.removeprefix("v")
        )

    @api.patch(DATA + "/sobjects/{sobject}/{record_id}", summary="Update a record")
    async def update(sobject: str, record_id: str, request: Request) -> Response:
        """Updates one record by id; 204."""
        kind = _sobject(sobject)
        values = await _json_object(request)
        if record_id not in state.table(kind):
            raise _fail(404, "NOT_FOUND", "The requested resource does not exist")
        [result] = state.write([state.update(kind, record_id, values)], sobject=kind)
        if isinstance(result, RecordRefused):
            raise _refused(result)
        return Response(status_code=204)

    @api.delete(DATA + "/sobjects/{sobject}/{record_id}", summary="Delete a record")
    def delete(sobject: str, record_id: str) -> Response:
        """Moves one record to the recycle bin; 204, or 404 if gone or never there."""
        kind = _sobject(sobject)
        if not state.delete(kind, record_id):
            if record_id in state.deleted:
                raise _fail(404, "ENTITY_IS_DELETED", "entity is deleted")
            raise _fail(404, "NOT_FOUND", "The requested resource does not exist")
        return Response(status_code=204)

    @api.get(
        DATA + "/sobjects/{sobject}/{field}/{value:path}",
        summary="Get a record by external id",
    )
    def get_by_external_id(
        sobject: str, field: str, version: str, request: Request
    ) -> Any:
        """One record by an external-id field's value (percent-encoded in the path)."""
        kind = _sobject(sobject)
        key_field, value = _external_id(kind, field, request)
        matches = [
            record
            for record in state.table(kind).values()
            if isinstance(record.get(key_field.name), str)
            and record[key_field.name].casefold() == value.casefold()
        ]
        if not matches:
            raise _fail(404, "NOT_FOUND", "The requested resource does not exist")
        if len(matches) > 1:
            return _several(kind, matches, version)
        return state.as_rest(
            kind, matches[0], _chosen(kind, request), version.removeprefix("v")
        )

    @api.patch(
        DATA + "/sobjects/{sobject}/{field}/{value:path}",
        summary="Upsert a record by external id",
    )
    async def upsert(
        sobject: str, field: str, version: str, request: Request
    ) -> Response:
        """Creates (201) or updates (200) the record an external id names."""
        kind = _sobject(sobject)
        key_field, value = _external_id(kind, field, request)
        values = await _json_object(request)
        [result] = state.write(
            [state.upsert(kind, key_field, value, values)], sobject=kind
        )
        if isinstance(result, MultipleMatches):
            return _several(
                kind,
                [state.table(kind)[record_id] for record_id in result.ids],
                version,
            )
        if isinstance(result, RecordRefused):
            raise _refused(result)
        record_id, created = result
        return JSONResponse(
            {"id": record_id, "success": True, "errors": [], "created": created},
            status_code=201 if created else 200,
        )

    def _several(
        kind: SObjectType, records: list[dict[str, Any]], version: str
    ) -> Response:
        # Salesforce answers 300 with the URLs of every matching record.
        return JSONResponse(
            [
                f"/services/data/{version}/sobjects/{kind.name}/{record['Id']}"
                for record in records
            ],
            status_code=300,
        )

    @api.get(DATA + "/query/", summary="Run a SOQL query")
    def query(q: str, version: str) -> dict[str, Any]:
        """The first page of a SOQL query's records."""
        return _first_page(state, q, version, "query", include_deleted=False)

    @api.get(DATA + "/queryAll/", summary="Run a SOQL query, deleted records too")
    def query_all(q: str, version: str) -> dict[str, Any]:
        """The first page of a SOQL query that also sees the recycle bin."""
        return _first_page(state, q, version, "queryAll", include_deleted=True)

    @api.get(DATA + "/query/{locator}", summary="Next page of a query")
    def query_more(locator: str, version: str) -> dict[str, Any]:
        """A later page, by the locator `nextRecordsUrl` gave."""
        return _later_page(state, locator, version, "query")

    @api.get(DATA + "/queryAll/{locator}", summary="Next page of a queryAll")
    def query_all_more(locator: str, version: str) -> dict[str, Any]:
        """A later page of a queryAll, by its locator."""
        return _later_page(state, locator, version, "queryAll")

    @api.post(DATA + "/composite/sobjects", summary="Create up to 200 records")
    async def composite_create(request: Request) -> Any:
        """Creates records; one result per record in request order."""
        all_or_none, records = await _collection(request)
        kind = _record_type(records)
        operations = [state.create(kind, _without_attributes(r)) for r in records]
        results = state.write(operations, sobject=kind, all_or_none=all_or_none)
        return _collection_results(results, all_or_none, created=True)

    @api.patch(DATA + "/composite/sobjects", summary="Update up to 200 records")
    async def composite_update(request: Request) -> Any:
        """Updates records by Id; one result per record in request order."""
        all_or_none, records = await _collection(request)
        kind = _record_type(records)
        operations = [
            state.update(kind, str(values.pop("Id", "") or ""), values)
            for values in (_without_attributes(record) for record in records)
        ]
        results = state.write(operations, sobject=kind, all_or_none=all_or_none)
        ids = [str(record.get("Id") or "") for record in records]
        return _collection_results(results, all_or_none, created=None, ids=ids)

    @api.patch(
        DATA + "/composite/sobjects/{sobject}/{field}",
        summary="Upsert up to 200 records by external id",
    )
    async def composite_upsert(sobject: str, field: str, request: Request) -> Any:
        """Upserts records by an external id; one result per record in order."""
        kind = _sobject(sobject)
        key_field = _external_field(kind, field)
        all_or_none, records = await _collection(request)
        operations = []
        for record in records:
            values = _without_attributes(record)
            value = next(
                (v for k, v in values.items() if k.lower() == key_field.name.lower()),
                None,
            )
            operations.append(state.upsert(kind, key_field, str(value or ""), values))
        results = state.write(operations, sobject=kind, all_or_none=all_or_none)
        return _collection_results(results, all_or_none, created=None)

    @api.post(DATA + "/jobs/ingest", summary="Create a Bulk API 2.0 ingest job")
    async def bulk_create(request: Request) -> Any:
        """Opens an ingest job for CSV data."""
        body = await _json_object(request)
        try:
            job = bulk.create_job(state, _sobject(str(body.get("object", ""))), body)
        except bulk.JobRefused as exc:
            raise _fail(exc.status, exc.code, exc.message) from exc
        return job.info(_version(request))

    @api.put(DATA + "/jobs/ingest/{job_id}/batches", summary="Upload job data")
    async def bulk_upload(job_id: str, request: Request) -> Response:
        """Takes the job's CSV, which must be UTF-8 bytes (SF-07)."""
        job = _job(state, job_id)
        if not request.headers.get("content-type", "").startswith("text/csv"):
            raise _fail(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be text/csv")
        try:
            bulk.upload(job, await request.body())
        except bulk.JobRefused as exc:
            raise _fail(exc.status, exc.code, exc.message) from exc
        return Response(status_code=201)

    @api.patch(DATA + "/jobs/ingest/{job_id}", summary="Close or abort a job")
    async def bulk_close(job_id: str, request: Request) -> Any:
        """`UploadComplete` runs the job (the sandbox does it at once)."""
        job = _job(state, job_id)
        wanted = (await _json_object(request)).get("state")
        if wanted not in ("UploadComplete", "Aborted") or job.state != "Open":
            raise _fail(
                400, "INVALIDJOBSTATE", f"Cannot move job from {job.state} to {wanted}"
            )
        job.state = wanted
        info = job.info(_version(request))
        if wanted == "UploadComplete":
            bulk.process(state, job)
        return info

    @api.get(DATA + "/jobs/ingest/{job_id}", summary="Job info")
    def bulk_info(job_id: str, request: Request) -> Any:
        """The job's state and counts."""
        return _job(state, job_id).info(_version(request))

    @api.get(DATA + "/jobs/ingest/{job_id}/{kind}", summary="Job results")
    def bulk_results(job_id: str, kind: str) -> Response:
        """successfulResults, failedResults or unprocessedrecords, as CSV."""
        job = _job(state, job_id)
        # The documentation spells `unprocessedrecords`, simple-salesforce
        # `unprocessedRecords`; both are served.
        kind = {name.lower(): name for name in bulk.RESULT_FILES}.get(kind.lower(), "")
        if not kind:
            raise _fail(404, "NOT_FOUND", "The requested resource does not exist")
        # Salesforce's documentation names no charset for these files, so the
        # sandbox sends none: a client must decode them as UTF-8 itself.
        return Response(
            bulk.results_csv(job, kind), headers={"Content-Type": "text/csv"}
        )

    @api.delete(DATA + "/jobs/ingest/{job_id}", summary="Delete a job")
    def bulk_delete(job_id: str) -> Response:
        """Forgets a job."""
        _job(state, job_id)
        state.jobs.pop(job_id, None)
        return Response(status_code=204)

    return api


def _version(request: Request) -> str:
    return str(request.path_params.get("version", "v59.0")).removeprefix("v")


def _job(state: State, job_id: str) -> bulk.BulkJob:
    job = state.jobs.get(job_id)
    if job is None:
        raise _fail(404, "NOT_FOUND", "The requested resource does not exist")
    return job


def _chosen(kind: SObjectType, request: Request) -> list[Any] | None:
    names = request.query_params.get("fields")
    if not names:
        return None
    chosen = []
    for name in names.split(","):
        field = kind.field(name.strip())
        if field is None:
            raise _fail(400, "INVALID_FIELD", f"No such column '{name}' on {kind.name}")
        chosen.append(field)
    return chosen


def _external_field(kind: SObjectType, name: str) -> Any:
    field = kind.field(name)
    if field is None or not (field.external_id or field.name == "Id"):
        raise _fail(
            404,
            "NOT_FOUND",
            f"Provided external ID field does not exist or is not accessible: {name}",
        )
    return field


def _external_id(kind: SObjectType, name: str, request: Request) -> tuple[Any, str]:
    """The external-id field and value, read from the raw (still encoded) path.

    The value must arrive percent-encoded as one path segment: an unencoded `/`
    makes another segment and the path names no record, as in Salesforce.
    """
    field = _external_field(kind, name)
    raw = request.scope.get("raw_path", b"").decode("ascii", "replace")
    segments = raw.split("/")
    # ['', 'services', 'data', 'v59.0', 'sobjects', 'Lead', '<field>', '<value>']
    if len(segments) != 8 or not segments[7]:
        raise _fail(404, "NOT_FOUND", "The requested resource does not exist")
    return field, unquote(segments[7])


async def _collection(request: Request) -> tuple[bool, list[dict[str, Any]]]:
    body = await _json_object(request)
    records = body.get("records")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise _fail(400, "JSON_PARSER_ERROR", "records must be a list of objects")
    if len(records) > COLLECTION_LIMIT:
        raise _fail(
            400,
            "EXCEEDED_ID_LIMIT",
            f"record limit reached. cannot submit more than {COLLECTION_LIMIT} "
            "records into this call",
        )
    return bool(body.get("allOrNone", False)), records


def _record_type(records: list[dict[str, Any]]) -> SObjectType:
    types = {
        str((record.get("attributes") or {}).get("type", "")).lower()
        for record in records
    }
    if len(types) > 1 or (types and not types <= set(SOBJECTS)):
        raise _fail(400, "INVALID_TYPE", "Every record needs one known attributes.type")
    return SOBJECTS[types.pop()] if types else LEAD


def _without_attributes(record: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in record.items() if name != "attributes"}


def _collection_results(
    results: list[Any],
    all_or_none: bool,
    *,
    created: bool | None,
    ids: list[str] | None = None,
) -> list[dict[str, Any]]:
    rolled_back = all_or_none and any(
        isinstance(result, RecordRefused | MultipleMatches) for result in results
    )
    replies: list[dict[str, Any]] = []
    for index, result in enumerate(results):
        reply: dict[str, Any]
        if isinstance(result, RecordRefused | MultipleMatches):
            reply = {"success": False, "errors": _collection_errors(result)}
        elif rolled_back:
            reply = {"success": False, "errors": [ROLLED_BACK.as_collection()]}
        elif isinstance(result, tuple):
            reply = {
                "id": result[0],
                "success": True,
                "errors": [],
                "created": result[1],
            }
        else:
            reply = {"id": result, "success": True, "errors": []}
        if ids is not None and ids[index]:
            reply = {"id": ids[index], **reply}
        replies.append(reply)
    return replies


def _first_page(
    state: State, text: str, version: str, endpoint: str, *, include_deleted: bool
) -> dict[str, Any]:
    try:
        parsed = soql.parse(text)
    except soql.SoqlError as exc:
        raise _fail(400, exc.code, exc.message) from exc
    table = list(state.table(parsed.sobject).values())
    if include_deleted and parsed.sobject is LEAD:
        table += list(state.deleted.values())
    try:
        rows = soql.run(parsed, table)
    except soql.SoqlError as exc:
        raise _fail(400, exc.code, exc.message) from exc
    records = [
        state.as_rest(parsed.sobject, row, parsed.fields, version.removeprefix("v"))
        for row in rows
    ]
    locator = state.new_id("01g")
    state.cursors[locator] = records
    return _page(state, locator, 0, version, endpoint)


def _later_page(
    state: State, locator: str, version: str, endpoint: str
) -> dict[str, Any]:
    cursor, _, offset = locator.rpartition("-")
    if cursor not in state.cursors or not offset.isdigit():
        raise _fail(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
    return _page(state, cursor, int(offset), version, endpoint)


def _page(
    state: State, locator: str, offset: int, version: str, endpoint: str
) -> dict[str, Any]:
    records = state.cursors[locator]
    size = state.settings.page_size
    page = records[offset : offset + size]
    done = offset + size >= len(records)
    body: dict[str, Any] = {"totalSize": len(records), "done": done}
    if done:
        state.cursors.pop(locator, None)
    else:
        body["nextRecordsUrl"] = (
            f"/services/data/{version}/{endpoint}/{locator}-{offset + size}"
        )
    body["records"] = page
    return body


class SettingsChange(BaseModel):
    """Sandbox knobs to turn; unset ones stay as they are."""

    duplicate_rule: bool | None = Field(
        None, description="Block creating a Lead whose e-mail another Lead has."
    )
    daily_allocation: int | None = Field(
        None, ge=0, description="Requests allowed per rolling 24 hours."
    )
    api_usage: int | None = Field(
        None, ge=0, description="Pretend this many requests were spent already."
    )
    page_size: int | None = Field(
        None, ge=1, le=2000, description="Records per SOQL page."
    )
    bulk_fail_after: int | None = Field(
        None, ge=0, description="Bulk jobs fail after this many rows (-1 clears)."
    )


class ExpireSessions(BaseModel):
    """Which sessions to expire."""

    include_new: bool = Field(
        False, description="Also expire every session issued from now on."
    )


class JwtKey(BaseModel):
    """A public key JWT bearer assertions may be signed for."""

    public_key: str = Field(description="RSA public key, PEM.")


def _controls(state: State) -> APIRouter:
    controls = APIRouter(prefix="/_sandbox/salesforce", tags=["sandbox: salesforce"])

    @controls.get("/settings", summary="Salesforce sandbox settings")
    def settings() -> dict[str, Any]:
        """The duplicate rule, allocation, page size and bulk failure settings."""
        used, allocation = state.api_usage()
        return {
            "duplicate_rule": state.settings.duplicate_rule,
            "daily_allocation": allocation,
            "api_usage": used,
            "page_size": state.settings.page_size,
            "bulk_fail_after": state.settings.bulk_fail_after,
        }

    @controls.patch("/settings", summary="Change Salesforce sandbox settings")
    def change_settings(change: SettingsChange) -> dict[str, Any]:
        """Turns the given knobs and returns every setting."""
        if change.duplicate_rule is not None:
            state.settings.duplicate_rule = change.duplicate_rule
        if change.daily_allocation is not None:
            state.settings.daily_allocation = change.daily_allocation
        if change.api_usage is not None:
            state.set_usage(change.api_usage)
        if change.page_size is not None:
            state.settings.page_size = change.page_size
        if "bulk_fail_after" in change.model_fields_set:
            state.settings.bulk_fail_after = change.bulk_fail_after
        return settings()

    @controls.post("/sessions/expire", summary="Expire every session")
    def expire(body: ExpireSessions) -> dict[str, int]:
        """Makes every issued access token answer 401 INVALID_SESSION_ID."""
        return {"expired": state.expire_sessions(include_new=body.include_new)}

    @controls.get("/requests", summary="Requests served, by kind")
    def requests() -> dict[str, int]:
        """How many requests each route served (`token`, `composite_upsert`, …)."""
        return dict(state.requests)

    @controls.delete("/requests", status_code=204, summary="Reset request counts")
    def reset_requests() -> None:
        """Sets every request count back to zero."""
        state.requests.clear()

    @controls.post("/records/{sobject}", status_code=201, summary="Seed records")
    def seed(sobject: str, records: list[dict[str, Any]]) -> dict[str, list[str]]:
        """Stores records exactly as given, past every rule; returns their ids."""
        kind = SOBJECTS.get(sobject.lower())
        if kind is None:
            raise HTTPException(404, f"unknown sObject {sobject}")
        try:
            return {"ids": [state.seed(kind, record) for record in records]}
        except RecordRefused as exc:
            raise HTTPException(422, str(exc)) from exc

    @controls.post("/jwt-keys", status_code=201, summary="Trust a JWT signing key")
    def add_jwt_key(key: JwtKey) -> dict[str, int]:
        """Accepts JWT bearer assertions signed by the matching private key."""
        state.jwt_keys.append(key.public_key)
        return {"keys": len(state.jwt_keys)}

    return controls


def router(state: State) -> APIRouter:
    """Every Salesforce route over `state`, with the sandbox's control routes."""
    combined = APIRouter()

    @combined.post("/services/oauth2/token", summary="OAuth 2.0 token")
    async def token(request: Request) -> Response:
        """Issues an access token for any of the four supported grant types."""
        return await token_endpoint(state, request)

    combined.include_router(_records_api(state))
    combined.include_router(_controls(state))
    return combined
