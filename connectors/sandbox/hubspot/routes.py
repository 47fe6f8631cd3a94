"""The sandbox's HubSpot routes: CRM v3, subscriptions, OAuth, and its controls."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from connectors.sandbox.hubspot.access import (
    DEFAULT_DAILY,
    DEFAULT_PER_TEN_SECONDS,
    DEFAULT_SEARCH_PER_SECOND,
)
from connectors.sandbox.hubspot.contacts import now_ms
from connectors.sandbox.hubspot.errors import HubSpotError
from connectors.sandbox.hubspot.properties import CONTACT_PROPERTIES
from connectors.sandbox.hubspot.state import Received, State

CONTACTS = "/crm/v3/objects/contacts"
PREFERENCES = "/communication-preferences/v3"
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _route_class(state: State, *, guarded: bool) -> type[APIRoute]:
    """Routes that log each request and, when `guarded`, check token and limits.

    Every guarded response, success or error, carries HubSpot's rate-limit
    headers, and a `HubSpotError` raised in a handler becomes HubSpot's body.
    """

    class HubSpotRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()
            route = self.path_format

            async def serve(request: Request) -> Response:
                body = await request.body()
                search_after = None
                if route.endswith("/search"):
                    search_after = _search_after(body)
                state.requests.record(
                    Received(
                        request.method,
                        route,
                        request.url.path,
                        request.url.query,
                        body.decode("utf-8", "replace"),
                    ),
                    search_after,
                )
                headers: dict[str, str] = {}
                try:
                    if guarded:
                        state.tokens.check(request.headers.get("authorization"))
                        headers = state.limits.admit(search=route.endswith("/search"))
                    response = await handler(request)
                except HubSpotError as exc:
                    response = exc.response()
                response.headers.update(headers)
                return response

            return serve

    return HubSpotRoute


def _search_after(body: bytes) -> int | None:
    try:
        return int(json.loads(body or b"{}").get("after") or 0)
    except (ValueError, AttributeError, TypeError):
        return None


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        raise HubSpotError(400, f"Invalid input JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise HubSpotError(400, "Invalid input JSON: expected an object.")
    return body


def _inputs(body: dict[str, Any]) -> list[Any]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise HubSpotError(400, "Invalid input JSON: `inputs` must be a list.")
    return inputs


def _batch(results: list[dict[str, Any]], status: int = 200, **extra: Any) -> Response:
    started = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    body = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    } | extra
    return JSONResponse(body, status_code=status)


def _names(request: Request) -> list[str] | None:
    names = [
        n for v in request.query_params.getlist("properties") for n in v.split(",")
    ]
    return [n for n in names if n] or None


def _api_router(state: State) -> APIRouter:
    api = APIRouter(route_class=_route_class(state, guarded=True), tags=["HubSpot"])
    contacts = state.contacts

    @api.post(CONTACTS, summary="Create a contact")
    async def create(request: Request) -> Response:
        """Creates a contact; 409 when its e-mail already belongs to one."""
        body = await _json(request)
        contact = contacts.create(body.get("properties") or {})
        return JSONResponse(contact.as_api(), status_code=201)

    @api.get(CONTACTS, summary="List contacts")
    async def get_page(request: Request) -> Response:
        """Pages through contacts in id order."""
        limit = int(request.query_params.get("limit", "10"))
        after = int(request.query_params.get("after", "0"))
        page = contacts.page(min(limit, 100), after)
        body: dict[str, Any] = {"results": [c.as_api(_names(request)) for c in page]}
        if page and len(page) == min(limit, 100):
            body["paging"] = {"next": {"after": str(page[-1].id)}}
        return JSONResponse(body)

    @api.get(CONTACTS + "/{contact_id}", summary="Read a contact")
    async def get_by_id(contact_id: str, request: Request) -> Response:
        """Reads one contact by record id or by `idProperty=email`."""
        contact = contacts.get(contact_id, request.query_params.get("idProperty"))
        return JSONResponse(contact.as_api(_names(request)))

    @api.patch(CONTACTS + "/{contact_id}", summary="Update a contact")
    async def update(contact_id: str, request: Request) -> Response:
        """Updates one contact by record id or by `idProperty=email`."""
        body = await _json(request)
        contact = contacts.update(
            contact_id,
            body.get("properties") or {},
            request.query_params.get("idProperty"),
        )
        return JSONResponse(contact.as_api([*(body.get("properties") or {})]))

    @api.post(CONTACTS + "/batch/create", summary="Create a batch of contacts")
    async def batch_create(request: Request) -> Response:
        """Creates up to 100 contacts, all or none."""
        inputs = _inputs(await _json(request))
        created = contacts.batch_create(inputs)
        return _batch([c.as_api() for c in created], status=201)

    @api.post(CONTACTS + "/batch/update", summary="Update a batch of contacts")
    async def batch_update(request: Request) -> Response:
        """Updates up to 100 contacts by record id; unknown ids are skipped."""
        inputs = _inputs(await _json(request))
        updated = contacts.batch_update(inputs)
        return _batch([c.as_api() for c in updated])

    @api.post(CONTACTS + "/batch/upsert", summary="Upsert a batch of contacts")
    async def batch_upsert(request: Request) -> Response:
        """Creates or updates up to 100 contacts by e-mail."""
        inputs = _inputs(await _json(request))
        written = contacts.batch_upsert(inputs)
        results = []
        for (contact, new), item in zip(written, inputs, strict=True):
            names = ["email", *(item.get("properties") or {})]
            results.append(contact.as_api(dict.fromkeys(names)) | {"new": new})
        return _batch(results)

    @api.post(CONTACTS + "/batch/read", summary="Read a batch of contacts")
    async def batch_read(request: Request) -> Response:
        """Reads up to 100 contacts; 207 naming the ids not found."""
        body = await _json(request)
        ids = [str(item.get("id", "")) for item in _inputs(body)]
        found, missing = contacts.batch_read(ids, body.get("idProperty"))
        names = body.get("properties") or None
        results = [c.as_api(names) for c in found]
        if not missing:
            return _batch(results)
        error = {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": "Could not get some CONTACT objects, they may be deleted or "
            "not exist. Check that ids are valid.",
            "context": {"ids": missing},
            "errors": [],
            "links": {},
        }
        return _batch(results, status=207, numErrors=1, errors=[error])

    @api.post(CONTACTS + "/gdpr-delete", summary="Permanently delete a contact")
    async def gdpr_delete(request: Request) -> Response:
        """Deletes a contact by record id or `idProperty=email`; 204, no body."""
        body = await _json(request)
        object_id = body.get("objectId")
        if not isinstance(object_id, str) or not object_id.strip():
            raise HubSpotError(
                400,
                "Invalid input JSON on line 1: objectId is required.",
                errors=[{"message": "objectId is required", "in": "objectId"}],
            )
        id_property = body.get("idProperty")
        deleted = contacts.purge(object_id, id_property)
        if not deleted and id_property != "email":
            raise HubSpotError(
                404,
                "Object not found.  objectId are usually numeric.",
                context={"id": [object_id]},
            )
        return Response(status_code=204)

    @api.post(CONTACTS + "/search", summary="Search contacts")
    async def search(request: Request) -> Response:
        """Searches contacts with filter groups, one sort, and paging."""
        return JSONResponse(state.searcher.search(await _json(request)))

    @api.get("/crm/v3/properties/contacts", summary="List contact properties")
    async def properties() -> Response:
        """Every contact property with its type, options and read-only flag."""
        return JSONResponse(
            {"results": [p.as_api() for p in CONTACT_PROPERTIES.values()]}
        )

    @api.get("/crm/v3/properties/contacts/{name}", summary="Read a contact property")
    async def contact_property(name: str) -> Response:
        """One contact property."""
        prop = CONTACT_PROPERTIES.get(name)
        if prop is None:
            raise HubSpotError(404, f"Unable to find property {name}")
        return JSONResponse(prop.as_api())

    @api.get(PREFERENCES + "/definitions", summary="List subscription types")
    async def definitions() -> Response:
        """Every active e-mail subscription type of the account."""
        return JSONResponse({"subscriptionDefinitions": state.subscriptions.listed()})

    @api.post(PREFERENCES + "/unsubscribe", summary="Unsubscribe an address")
    async def unsubscribe(request: Request) -> Response:
        """Unsubscribes an address from one type; 400 if it already left it."""
        return JSONResponse(state.unsubscribe(await _json(request)))

    @api.get(
        PREFERENCES + "/status/email/{email_address}",
        summary="Read an address's subscription statuses",
    )
    async def email_status(email_address: str) -> Response:
        """The address's status in each active subscription type."""
        return JSONResponse(state.subscriptions.statuses(email_address))

    return api


def _oauth_router(state: State) -> APIRouter:
    oauth = APIRouter(route_class=_route_class(state, guarded=False), tags=["HubSpot"])

    @oauth.post("/oauth/v1/token", summary="Issue an OAuth access token")
    async def token(request: Request) -> Response:
        """Grants a token for a refresh token, an authorization code or client id."""
        form = dict(parse_qsl((await request.body()).decode("utf-8")))
        return JSONResponse(state.tokens.grant(form))

    return oauth


class LimitSettings(BaseModel):
    """The sandbox account's rate limits."""

    per_ten_seconds: int = Field(DEFAULT_PER_TEN_SECONDS, ge=1)
    daily: int = Field(DEFAULT_DAILY, ge=0)
    search_per_second: int | None = Field(
        DEFAULT_SEARCH_PER_SECOND, ge=1, description="None lifts the search limit."
    )


class OAuthSettings(BaseModel):
    """How long the OAuth access tokens issued from now on live."""

    access_token_lifetime_seconds: int = Field(ge=1, le=86_400)


class SeedContact(BaseModel):
    """One contact to add as given, with an id and `createdate` of our choosing."""

    id: int | None = Field(None, ge=1)
    properties: dict[str, str]
    createdate: datetime | None = None


class SeedRange(BaseModel):
    """`count` generated contacts, their `createdate`s spread over `[start, end)`."""

    count: int = Field(ge=1, le=100_000)
    start: datetime
    end: datetime
    email_domain: str = "seed.example.com"


class ContactChange(BaseModel):
    """Values to set as HubSpot itself would, read-only ones too.

    `hs_email_optout` is read-only through the API: HubSpot sets it when the
    person unsubscribes.
    """

    properties: dict[str, str]


# Computed by HubSpot from the record itself; nothing sets them.
COMPUTED_PROPERTIES = frozenset({"hs_object_id", "createdate", "lastmodifieddate"})


class SeedRequest(BaseModel):
    contacts: list[SeedContact] = Field(default_factory=list)
    ranges: list[SeedRange] = Field(default_factory=list)


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _control_router(state: State) -> APIRouter:
    control = APIRouter(prefix="/_sandbox/hubspot", tags=["sandbox: HubSpot"])

    @control.put("/limits", summary="Set HubSpot rate limits")
    def set_limits(settings: LimitSettings) -> dict[str, Any]:
        """Sets the ten-secondly, daily and search limits and resets their counters."""
        state.limits.configure(**settings.model_dump())
        return settings.model_dump()

    @control.put("/oauth", summary="Set the OAuth token lifetime")
    def set_oauth(settings: OAuthSettings) -> dict[str, Any]:
        """Sets `expires_in` for the access tokens issued from now on."""
        state.tokens.lifetime_seconds = settings.access_token_lifetime_seconds
        return settings.model_dump()

    @control.post("/oauth/expire", summary="Expire every issued OAuth token")
    def expire_tokens() -> dict[str, int]:
        """Makes every access token issued so far answer 401 EXPIRED_AUTHENTICATION."""
        return {"expired": state.tokens.expire_all()}

    @control.post("/contacts/seed", status_code=201, summary="Add contacts directly")
    def seed(request: SeedRequest) -> dict[str, Any]:
        """Adds contacts without the API's checks or rate limits, for big fixtures."""
        ids = []
        for item in request.contacts:
            values = {
                k: v.lower() if k == "email" else v for k, v in item.properties.items()
            }
            created = _ms(item.createdate) if item.createdate else now_ms()
            ids.append(state.contacts.seed(item.id, values, created))
        generated = 0
        for spread in request.ranges:
            start, end = _ms(spread.start), _ms(spread.end)
            step = (end - start) / spread.count
            for i in range(spread.count):
                contact_id = state.contacts.next_id
                email = f"seed-{contact_id}@{spread.email_domain}".lower()
                values = {
                    "email": email,
                    "firstname": "Seed",
                    "lastname": str(contact_id),
                }
                state.contacts.seed(None, values, start + int(i * step))
            generated += spread.count
        return {"ids": ids, "generated": generated, "total": len(state.contacts)}

    @control.patch("/contacts/{contact_id}", summary="Change a contact directly")
    def change(contact_id: int, request: ContactChange) -> dict[str, Any]:
        """Sets values the API refuses (an unsubscribe's `hs_email_optout`, say).

        Moves `lastmodifieddate`, as any change in HubSpot does, so searches for
        recently modified contacts find it.
        """
        refused = sorted(
            name
            for name in request.properties
            if name not in CONTACT_PROPERTIES or name in COMPUTED_PROPERTIES
        )
        if refused:
            raise HTTPException(
                422, f"cannot set {', '.join(refused)}: unknown or computed"
            )
        values = {
            name: value.strip().lower() if name == "email" else value
            for name, value in request.properties.items()
        }
        contact = state.contacts.change(contact_id, values)
        if contact is None:
            raise HTTPException(404, f"no contact {contact_id}")
        return contact.as_api([*values, "lastmodifieddate"])

    @control.get("/subscriptions", summary="Addresses unsubscribed")
    def unsubscribed() -> list[dict[str, Any]]:
        """Every unsubscribe received: address, subscription type, legal basis."""
        return state.subscriptions.records()

    @control.get("/requests", summary="What the HubSpot routes received")
    def requests() -> dict[str, Any]:
        """Counts per route, every search `after`, and the latest requests in full."""
        return state.requests.as_json()

    @control.delete("/requests", status_code=204, summary="Forget received requests")
    def clear_requests() -> None:
        """Starts the request counts afresh."""
        state.requests.clear()

    return control


def router(state: State) -> APIRouter:
    """Every HubSpot route the sandbox serves, and its `/_sandbox/hubspot` controls."""
    combined = APIRouter()
    combined.include_router(_api_router(state))
    combined.include_router(_oauth_router(state))
    combined.include_router(_control_router(state))
    return combined
