"""The sandbox's web app: both vendors' routes, fault injection, and a records view."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from connectors.sandbox import hubspot, salesforce
from connectors.sandbox.docs import serve_docs
from connectors.sandbox.faults import FaultRegistry, FaultSpec
from connectors.sandbox.state_file import StateFile

# Paths each vendor's official client calls; everything else is the sandbox's own.
HUBSPOT_PREFIXES = ("/crm/", "/oauth/", "/communication-preferences/", "/integrations/")
SALESFORCE_PREFIXES = ("/services/",)


@dataclass
class SandboxState:
    """Everything the sandbox holds, in memory; a `StateFile` may keep the records."""

    hubspot: hubspot.State = field(default_factory=hubspot.State)
    salesforce: salesforce.State = field(default_factory=salesforce.State)
    faults: FaultRegistry = field(default_factory=FaultRegistry)

    def reset(self) -> None:
        self.hubspot.reset()
        self.salesforce.reset()
        self.faults.clear()


def vendor_of(path: str) -> str | None:
    """Which vendor's API a request path belongs to, if any."""
    if path.startswith(HUBSPOT_PREFIXES):
        return "hubspot"
    if path.startswith(SALESFORCE_PREFIXES):
        return "salesforce"
    return None


def create_app(
    state: SandboxState | None = None, state_file: Path | None = None
) -> FastAPI:
    """The sandbox app over `state` (a fresh, empty one when not given).

    With `state_file`, the records are loaded from it at startup and saved to it
    while serving and at shutdown; without, they are gone when the app stops.
    """
    state = state or SandboxState()
    saved = None if state_file is None else StateFile(state_file, state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if saved is None:
            yield
            return
        saved.load()
        saver = asyncio.create_task(saved.keep_saved())
        try:
            yield
        finally:
            saver.cancel()
            await asyncio.wait([saver])
            saved.save()

    kept = (
        "Records live in memory only."
        if saved is None
        else f"Records live in memory and are saved to {saved.path}."
    )
    app = FastAPI(
        title="CRM sandbox",
        description=f"A local stand-in for HubSpot and Salesforce, for demos and "
        f"tests. {kept}",
        # FastAPI's own pages load from a CDN (ReDoc's fonts from Google's):
        # serve_docs below serves Swagger UI from packaged files, and no ReDoc.
        docs_url=None,
        redoc_url=None,
        openapi_url="/_sandbox/openapi.json",
        lifespan=lifespan,
    )
    app.state.sandbox = state

    @app.middleware("http")
    async def inject_faults(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        vendor = vendor_of(request.url.path)
        if vendor is None:
            return await call_next(request)
        fault = state.faults.take(vendor, request.method, request.url.path)
        if fault is None:
            return await call_next(request)
        if fault.delay_seconds:
            await asyncio.sleep(fault.delay_seconds)
        if fault.status is None:
            response = await call_next(request)
            if fault.answer_delay_seconds:
                await asyncio.sleep(fault.answer_delay_seconds)
            return response
        if fault.body is None:
            module = hubspot if vendor == "hubspot" else salesforce
            response = module.error_response(
                fault.status, "fault injected by the sandbox"
            )
        else:
            response = JSONResponse(fault.body, status_code=fault.status)
        response.headers.update(fault.headers)
        return response

    app.include_router(hubspot.router(state.hubspot))
    app.include_router(salesforce.router(state.salesforce))
    serve_docs(app, page="/_sandbox/docs", assets="/_sandbox/docs/assets")

    @app.get("/", summary="What the sandbox holds")
    def overview() -> dict[str, Any]:
        """Record counts per vendor, where to see them, and whether they are kept."""
        return {
            "docs": "/_sandbox/docs",
            "persistence": (
                {"file": None, "saves": "never: records are gone when it stops"}
                if saved is None
                else saved.describe()
            ),
            "hubspot": {
                "contacts": len(state.hubspot.contacts),
                "records": "/_sandbox/hubspot/contacts",
                "unsubscribes": len(state.hubspot.subscriptions.unsubscribed),
                "unsubscribed": "/_sandbox/hubspot/subscriptions",
            },
            "salesforce": {
                "leads": len(state.salesforce.leads),
                "records": "/_sandbox/salesforce/leads",
            },
            "faults": state.faults.pending(),
        }

    @app.get("/_sandbox/hubspot/contacts", summary="HubSpot contacts held")
    def hubspot_contacts() -> list[dict[str, Any]]:
        """Every HubSpot contact, as the API would return it."""
        return state.hubspot.snapshot()

    @app.get("/_sandbox/salesforce/leads", summary="Salesforce leads held")
    def salesforce_leads() -> list[dict[str, Any]]:
        """Every Salesforce Lead, as the API would return it."""
        return state.salesforce.snapshot()

    @app.post("/_sandbox/faults", status_code=201, summary="Arm a fault")
    def add_fault(spec: FaultSpec) -> dict[str, Any]:
        """Makes the next matching requests fail or stall as described."""
        try:
            state.faults.add(spec)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {"armed": state.faults.pending()}

    @app.delete("/_sandbox/faults", status_code=204, summary="Disarm every fault")
    def clear_faults() -> None:
        """Removes every armed fault."""
        state.faults.clear()

    @app.post("/_sandbox/reset", status_code=204, summary="Forget everything")
    def reset() -> None:
        """Empties both vendors' records, counters and faults; the state file too."""
        state.reset()

    return app
