"""Liveness and the service's status."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.engine import make_url

from api.deps import ContextDep, SettingsDep, StoreDep
from api.openapi import PROBLEM_MEDIA_TYPE, PROBLEM_SCHEMA
from api.problems import problem
from leads.store import leads as lead_queries
from leads.store import outbox
from leads.store.schema import schema_state

router = APIRouter(tags=["health"])

VERSION = version("automation-orchestrator")


@router.get("/", include_in_schema=False)
def root(settings: SettingsDep) -> dict[str, str]:
    """Where to go from here."""
    return {
        "docs": "/api/docs",
        "status": "/api/status",
        "prefect_ui": settings.prefect_ui,
    }


@router.get(
    "/health",
    responses={503: {"description": "The store is unreachable or not migrated."}},
)
def health(store: StoreDep) -> Any:
    """Answers 200 while the API runs and its store answers at the code's schema."""
    state = schema_state(store.engine)
    if not state.current:
        return problem(
            503,
            f"the lead store is {state.label.replace('_', ' ')}",
            slug="store-unavailable",
            headers={"Retry-After": "5"},
        )
    return {"status": "ok"}


def prefect_state(prefect_url: str, prefect_ui: str | None = None) -> dict[str, Any]:
    """Whether the Prefect server answers, and each served deployment's readiness.

    A deployment is READY while a flow runner polls for its runs.
    """
    state: dict[str, Any] = {"url": prefect_url, "reachable": False}
    try:
        with httpx.Client(base_url=prefect_url, timeout=2) as client:
            client.get("/health").raise_for_status()
            state["reachable"] = True
            found = client.post("/deployments/filter", json={"limit": 200})
            found.raise_for_status()
    except httpx.HTTPError as exc:
        state["error"] = exc.__class__.__name__
        return state
    deployments = {d["name"]: d.get("status") for d in found.json()}
    state["ui_url"] = prefect_ui or prefect_url.removesuffix("/api")
    state["flow_runner"] = {
        "state": "up" if "READY" in deployments.values() else "down",
        "deployments": deployments,
    }
    return state


@router.get(
    "/api/status",
    responses={
        503: {
            "description": "The store is unreachable or not migrated: the status "
            "says so; or a problem, when the store fails while it is read.",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                PROBLEM_MEDIA_TYPE: {"schema": {"$ref": PROBLEM_SCHEMA}},
            },
        }
    },
)
def status(store: StoreDep, settings: SettingsDep, context: ContextDep) -> JSONResponse:
    """Version, the store's state, lead and outbox counts, Prefect and the runner."""
    state = schema_state(store.engine)
    body: dict[str, Any] = {
        "version": VERSION,
        "store": {
            "backend": store.backend,
            "url": make_url(store.url).render_as_string(hide_password=True),
            "state": state.label,
            "revision": state.revision,
            "head": state.head,
        },
    }
    body["prefect"] = prefect_state(settings.prefect_url, settings.prefect_ui)
    if state.current:
        with store.read(context.tenant_id) as scope:
            by_status = lead_queries.count_by_status(scope)
            body["leads"] = {"total": sum(by_status.values()), "by_status": by_status}
            body["outbox"] = outbox.count_by_status(scope)
    return JSONResponse(body, status_code=200 if state.current else 503)
