"""Possible duplicates: flagging a new lead, and listing and resolving review items.

A new lead whose mailbox key (`leads.matching`) another lead of the tenant
already has is stored as its own lead, flagged `possible_duplicate_of:<id>`,
and paired with the earlier lead in one `open` review item. Someone then
dismisses the item (two people after all) or merges the pair into the earlier
lead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, select, text

from leads import suppression
from leads.changes import Verdicts, commit_change, jsonable, set_value
from leads.errors import LeadError
from leads.fields import TEXT_FIELDS
from leads.matching import match_reason
from leads.store import audit, timeline
from leads.store.database import TenantScope
from leads.store.paging import page_by_id
from leads.store.tables import DuplicateReview, Lead, utcnow

FLAG_PREFIX = "possible_duplicate_of:"
OPEN, MERGED, DISMISSED = "open", "merged", "dismissed"
STATUSES = (OPEN, MERGED, DISMISSED)

# What a merge takes from the later lead. Not the e-mail (the earlier lead keeps
# its key, so nothing else that points at it moves), not the phone (taken with
# its raw form below), and not `source` or `status`: every lead has them, so a
# later lead's would always win without saying anything new about the person.
MERGED_FIELDS = tuple(
    name for name in TEXT_FIELDS if name not in ("email", "phone", "source")
) + ("captured_at",)


class ReviewNotFound(LeadError, LookupError):
    """No review item with this id in this tenant."""

    def __init__(self, review_id: object) -> None:
        self.review_id = review_id
        super().__init__(f"no duplicate review item with id {review_id!r}")


class ReviewConflict(LeadError):
    """The item cannot be resolved as asked: it was resolved, or a lead is gone."""


def flag_if_duplicate(scope: TenantScope, lead: Lead) -> DuplicateReview | None:
    """Flags a new lead that may be an earlier one, and opens a review item.

    Looks the mailbox key up through its index, so the cost does not grow with
    the store. When several earlier leads share the key, the pair is made with
    the one created first.

    Args:
        scope: the tenant's open write transaction; `lead` is already added.
        lead: the lead being created (never one being updated).

    Returns:
        The new review item, or None when no other lead shares the mailbox.
    """
    if lead.mailbox_key is None:
        return None
    lock_mailboxes(scope, [lead.mailbox_key])
    # The lead needs its id (given at insert) before it can be paired.
    scope.session.flush()
    # By the mailbox key alone, sorted here: with the tenant and an ORDER BY
    # in SQL, SQLite may walk the tenant's (created_at) index to skip a sort,
    # reading every lead the tenant has. One mailbox has a handful of leads.
    sharing = scope.session.scalars(
        select(Lead).where(Lead.mailbox_key == lead.mailbox_key)
    )
    earlier = min(
        (
            other
            for other in sharing
            if other.tenant_id == scope.tenant_id and other.id != lead.id
        ),
        key=lambda other: (other.created_at, other.id),
        default=None,
    )
    if earlier is None or earlier.email is None or lead.email is None:
        return None
    return pair(scope, lead, earlier, match_reason(lead.email, earlier.email))


def pair(scope: TenantScope, lead: Lead, earlier: Lead, reason: str) -> DuplicateReview:
    """Flags `lead` as a possible duplicate of `earlier` and opens their review item.

    Args:
        scope: the tenant's open write transaction; `lead` is already added.
        lead: the lead being created.
        earlier: the stored lead it may be.
        reason: why they were paired, e.g. `email_plus_tag` or `similar_details`.
    """
    scope.session.flush()
    lead.flags = [*(lead.flags or []), FLAG_PREFIX + earlier.id]
    review = DuplicateReview(
        lead_id=lead.id, duplicate_of_id=earlier.id, reason=reason, status=OPEN
    )
    scope.add(review)
    audit.append_decision(
        scope.session,
        scope.tenant_id,
        "lead.possible_duplicate",
        "lead",
        lead.id,
        {"duplicate_of_id": earlier.id, "reason": reason},
    )
    return review


def pair_many(
    scope: TenantScope, pairs: Iterable[tuple[str, str]], reason: str
) -> None:
    """Opens review items for (new lead id, earlier lead id) pairs in one go.

    For leads inserted in bulk already flagged; `pair` for one lead.
    """
    now = utcnow()
    rows = [
        {
            "tenant_id": scope.tenant_id,
            "lead_id": lead_id,
            "duplicate_of_id": earlier_id,
            "reason": reason,
            "status": OPEN,
            "created_at": now,
            "resolved_at": None,
        }
        for lead_id, earlier_id in pairs
    ]
    if rows:
        scope.session.execute(insert(DuplicateReview.__table__), rows)
    audit.append_decisions(
        scope.session,
        scope.tenant_id,
        "lead.possible_duplicate",
        "lead",
        {
            row["lead_id"]: {
                "duplicate_of_id": row["duplicate_of_id"],
                "reason": reason,
            }
            for row in rows
        },
    )


def lock_mailboxes(scope: TenantScope, keys: Iterable[str | None]) -> None:
    """Serialises creates of these mailboxes until the transaction ends.

    Without it, two transactions creating spellings of one mailbox at once on
    PostgreSQL would each find no earlier lead, and neither would be flagged.
    A transaction-scoped advisory lock per (tenant, key), taken in key order so
    two batches cannot deadlock on them; SQLite serialises writers already.
    """
    if scope.session.get_bind().dialect.name != "postgresql":
        return
    wanted = sorted({f"{scope.tenant_id}:{key}" for key in keys if key})
    if not wanted:
        return
    scope.session.execute(
        text(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
            "FROM (SELECT unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS keys"
        ),
        {"keys": wanted},
    )


def get_review(
    scope: TenantScope, review_id: int | str, *, lock: bool = False
) -> DuplicateReview:
    """The tenant's review item with this id.

    Raises:
        ReviewNotFound: no such item here (also for text that is no item id).
    """
    text = str(review_id)
    review = None
    # Ids are 64-bit on PostgreSQL: a larger number names no row.
    if text.isascii() and text.isdigit() and 0 < int(text) < 2**63:
        review = scope.get(DuplicateReview, int(text), lock=lock)
    if review is None:
        raise ReviewNotFound(review_id)
    return review


def page(
    scope: TenantScope, status: str | None, limit: int, cursor: str | None
) -> tuple[list[DuplicateReview], str | None]:
    """One page of review items, oldest first, and the cursor of the next."""
    query = scope.select(DuplicateReview)
    if status is not None:
        query = query.where(DuplicateReview.status == status)
    return page_by_id(scope, query, DuplicateReview.id, limit, cursor)


def dismiss(
    scope: TenantScope, review_id: int | str, *, channel: str
) -> DuplicateReview:
    """Closes the item as two people: the flag leaves the later lead.

    Both leads get a `duplicate.dismissed` event naming the other.

    Raises:
        ReviewNotFound: no such item in this tenant.
        ReviewConflict: the item was already resolved.
    """
    review = _open_review(scope, review_id)
    earlier, later = _pair(scope, review)

    later.flags = [f for f in later.flags or [] if f != FLAG_PREFIX + earlier.id]
    for lead, other in ((earlier, later), (later, earlier)):
        timeline.record(
            scope,
            lead,
            "duplicate.dismissed",
            source=channel,
            detail={"review_id": review.id, "other_lead_id": other.id},
        )
    _resolve(review, DISMISSED)
    audit.append_decision(
        scope.session,
        scope.tenant_id,
        "duplicate.dismissed",
        "review",
        str(review.id),
        {"lead_id": later.id, "duplicate_of_id": earlier.id},
    )
    return review


def merge(scope: TenantScope, review_id: int | str, *, channel: str) -> DuplicateReview:
    """Folds the later lead into the earlier one and deletes the later lead.

    The later lead's non-empty values win, a blank never erases, and `custom`
    is merged key by key. The earlier lead keeps its e-mail; the later address
    is kept on the `lead.merged` event, with the merged id and the fields taken.
    The earlier lead is owed a CRM sync as after any change. The later lead's
    timeline, outbox rows and steps go with it (ON DELETE CASCADE).

    Raises:
        ReviewNotFound: no such item in this tenant.
        ReviewConflict: the item was already resolved.
    """
    review = _open_review(scope, review_id)
    earlier, later = _pair(scope, review)

    before = Verdicts.of(earlier)
    changes = _take_values(earlier, later)
    _keep_email_wishes(scope, earlier, later, source=channel)
    detail: dict[str, Any] = {
        "review_id": review.id,
        "merged_lead_id": later.id,
        "merged_email": later.email_display or later.email,
        "fields": sorted(changes),
        "changes": changes,
    }
    commit_change(
        scope,
        earlier,
        "lead.merged",
        channel=channel,
        detail=detail,
        created=False,
        before=before,
    )
    scope.session.delete(later)
    _resolve(review, MERGED)
    audit.append_decision(
        scope.session,
        scope.tenant_id,
        "duplicate.merged",
        "review",
        str(review.id),
        {
            "kept_lead_id": earlier.id,
            "merged_lead_id": later.id,
            "fields": sorted(changes),
        },
    )
    scope.session.flush()
    return review


def _keep_email_wishes(
    scope: TenantScope, earlier: Lead, later: Lead, *, source: str
) -> None:
    """Carries the merged lead's opt-out and e-mail history over to the survivor.

    One person, so an opt-out on either lead holds for the merged one, each
    e-mail event keeps its newest time, and the merged lead's address (gone
    with it) stays suppressed where it was opted out.
    """
    state = dict(earlier.email_state or {})
    for key, moment in (later.email_state or {}).items():
        if isinstance(moment, str) and (
            not isinstance(state.get(key), str) or moment > state[key]
        ):
            state[key] = moment
    if state != (earlier.email_state or {}):
        earlier.email_state = state
    if later.email_opt_out and not earlier.email_opt_out:
        earlier.email_opt_out = True
    if later.email_opt_out and later.email:
        reason = "complained" if "complained_at" in state else "unsubscribed"
        suppression.suppress(
            scope, address=later.email, reason=reason, lead_id=earlier.id, source=source
        )


def _open_review(scope: TenantScope, review_id: int | str) -> DuplicateReview:
    # Locked, so two people resolving one item at once are answered in turn
    # and the second learns it is no longer open.
    review = get_review(scope, review_id, lock=True)
    if review.status != OPEN:
        raise ReviewConflict(
            f"duplicate review item {review.id} is already {review.status}"
        )
    return review


def _pair(scope: TenantScope, review: DuplicateReview) -> tuple[Lead, Lead]:
    """The earlier and the later lead, locked in that order by every resolution."""
    earlier = scope.get(Lead, review.duplicate_of_id, lock=True)
    later = scope.get(Lead, review.lead_id, lock=True)
    if earlier is None or later is None:
        gone = review.lead_id if later is None else review.duplicate_of_id
        raise ReviewConflict(
            f"lead {gone} of duplicate review item {review.id} no longer exists"
        )
    return earlier, later


def _take_values(earlier: Lead, later: Lead) -> dict[str, Any]:
    """Newer non-empty values win; returns the changes as `{field: {from, to}}`."""
    changes: dict[str, Any] = {}
    for name in MERGED_FIELDS:
        value = getattr(later, name)
        if value is not None and value != "":
            set_value(earlier, name, value, changes)
    if later.phone:
        set_value(earlier, "phone", later.phone, changes)
        set_value(earlier, "phone_raw", None, changes)
    elif later.phone_raw and not earlier.phone:
        # An unreadable phone never displaces a valid one.
        set_value(earlier, "phone_raw", later.phone_raw, changes)

    taken = {k: v for k, v in (later.custom or {}).items() if v not in (None, "")}
    merged = {**(earlier.custom or {}), **taken}
    if merged != earlier.custom:
        changes["custom"] = {"from": jsonable(earlier.custom), "to": jsonable(merged)}
        earlier.custom = merged
    return changes


def _resolve(review: DuplicateReview, status: str) -> None:
    review.status = status
    review.resolved_at = utcnow()
