"""Possible duplicates: the review items that pair leads, and resolving them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.auth import KEYED
from api.deps import ContextDep, PendingDep, StoreDep
from api.problems import problem
from leads.store import duplicates

router = APIRouter(prefix="/api/duplicates", tags=["duplicates"], dependencies=KEYED)

CHANNEL = "api"
ReviewId = Annotated[str, Path(description="The review item's id.")]
ReviewStatus = Literal["open", "merged", "dismissed"]


class ReviewView(BaseModel):
    """One pair of leads that may be one person."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    lead_id: str = Field(description="The lead created second; it carries the flag.")
    duplicate_of_id: str = Field(description="The earlier lead.")
    reason: str = Field(description="`email_plus_tag` or `gmail_dots`.")
    status: ReviewStatus
    created_at: datetime
    resolved_at: datetime | None


class ReviewPage(BaseModel):
    data: list[ReviewView]
    next_cursor: str | None


_RESOLVE_RESPONSES: dict[int | str, dict[str, str]] = {
    404: {"description": "No such review item."},
    409: {"description": "The item is no longer open, or one of its leads is gone."},
}


@router.get("", response_model=ReviewPage)
def list_reviews(
    store: StoreDep,
    context: ContextDep,
    status: ReviewStatus | None = None,
    limit: Annotated[
        int, Query(ge=1, le=500, description="Most items on one page.")
    ] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the last page.")
    ] = None,
) -> ReviewPage:
    """Lists review items oldest first, optionally of one status."""
    with store.read(context.tenant_id) as scope:
        rows, next_cursor = duplicates.page(scope, status, limit, cursor)
        return ReviewPage(
            data=[ReviewView.model_validate(row) for row in rows],
            next_cursor=next_cursor,
        )


@router.post(
    "/{review_id}/dismiss", response_model=ReviewView, responses=_RESOLVE_RESPONSES
)
def dismiss_review(
    review_id: ReviewId, store: StoreDep, context: ContextDep
) -> ReviewView | JSONResponse:
    """Keeps both leads as two people and takes the flag off the later one."""
    try:
        with store.write(context.tenant_id) as scope:
            review = duplicates.dismiss(scope, review_id, channel=CHANNEL)
            return ReviewView.model_validate(review)
    except duplicates.ReviewNotFound as exc:
        return problem(404, str(exc), slug="duplicate-review-not-found")
    except duplicates.ReviewConflict as exc:
        return problem(409, str(exc), slug="duplicate-review-conflict")


@router.post(
    "/{review_id}/merge", response_model=ReviewView, responses=_RESOLVE_RESPONSES
)
def merge_review(
    review_id: ReviewId, store: StoreDep, context: ContextDep, pending: PendingDep
) -> ReviewView | JSONResponse:
    """Merges the later lead into the earlier one and deletes the later lead."""
    try:
        with store.write(context.tenant_id) as scope:
            review = duplicates.merge(scope, review_id, channel=CHANNEL)
            view = ReviewView.model_validate(review)
    except duplicates.ReviewNotFound as exc:
        return problem(404, str(exc), slug="duplicate-review-not-found")
    except duplicates.ReviewConflict as exc:
        return problem(409, str(exc), slug="duplicate-review-conflict")
    # The surviving lead is owed a CRM sync.
    pending.notify()
    return view
