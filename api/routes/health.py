"""Liveness and the service's status."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.engine import make_url

from api.deps import ContextDep, StoreDep
from api.problems import problem
from leads.store import leads as lead_queries
from leads.store import outbox
from leads.store.schema import schema_state

router = APIRouter(tags=["health"])

VERSION = version("automation-orchestrator")


@router.get("/health", responses={503: {"description": "The store is unreachable."}})
def health(store: StoreDep) -> Any:
    """Answers 200 while the API runs and its store answers, 503 otherwise."""
    state = schema_state(store.engine)
    if not state.reachable:
        return problem(
            503, "the lead store cannot be reached", slug="store-unavailable"
        )
    return {"status": "ok"}


@router.get("/api/status")
def status(store: StoreDep, context: ContextDep) -> JSONResponse:
    """Version, the store's state, and lead and outbox counts."""
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
    if state.current:
        with store.read(context.tenant_id) as scope:
            by_status = lead_queries.count_by_status(scope)
            body["leads"] = {"total": sum(by_status.values()), "by_status": by_status}
            body["outbox"] = outbox.count_by_status(scope)
    return JSONResponse(body, status_code=200 if state.current else 503)
