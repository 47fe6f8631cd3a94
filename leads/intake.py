"""Intake: the one way a submitted lead enters the store, whatever door it came in by.

Every channel (the API, batches, webhooks and imports later) calls `take_in`.
A lead whose e-mail key is already stored updates that lead: newer non-empty
values win and a blank never erases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from leads import rulebook
from leads.changes import (
    Verdicts,
    commit_change,
    commit_creations,
    jsonable,
    keep_found_warnings,
    require_contact,
    set_value,
)
from leads.errors import FieldError, LeadError, LeadRejected, field_errors
from leads.fuzzy import BlockIndex, Verdict
from leads.matching import mailbox_key
from leads.models import LeadInput, Outcome
from leads.normalise import clean_fields, clean_text
from leads.store import Store, TenantScope, audit, duplicates, match_keys, timeline
from leads.store.leads import find_by_email, stored_addresses
from leads.store.schema import describe_error
from leads.store.statistics import (
    refresh_statistics,
    refresh_statistics_now_and_then,
)
from leads.store.tables import Lead, new_id


class StoreConflict(LeadError):
    """A lead could not be written for a key another writer keeps taking."""

    def __init__(self, reference: str | None, summary: str) -> None:
        self.reference = reference
        where = f" ({reference})" if reference else ""
        super().__init__(
            f"a lead{where} conflicted twice with a concurrent write: {summary}; "
            "send it again"
        )


# The review reason of a pair fuzzy matching found possibly one person.
SIMILAR_DETAILS = "similar_details"


@dataclass(frozen=True)
class IntakeResult:
    lead: Lead
    outcome: Outcome
    changed: tuple[str, ...] = ()


def parse_input(submitted: Mapping[str, Any] | LeadInput) -> LeadInput:
    """The submission as a LeadInput.

    Raises:
        LeadRejected: a field has the wrong type, length or value.
    """
    if isinstance(submitted, LeadInput):
        return submitted
    if not isinstance(submitted, Mapping):
        raise LeadRejected(
            [FieldError("body", "not_an_object", "a lead is a JSON object")]
        )
    try:
        return LeadInput.model_validate(submitted)
    except ValidationError as exc:
        raise LeadRejected(field_errors(exc.errors())) from exc


def prepare(submitted: Mapping[str, Any] | LeadInput, region: str) -> dict[str, Any]:
    """The cleaned column values of a submission, checked; touches no store.

    Raises:
        LeadRejected: with every problem found, each naming its field.
    """
    cleaned = clean_fields(parse_input(submitted).given(), region)
    if cleaned.errors:
        raise LeadRejected(cleaned.errors)
    values = cleaned.values
    require_contact(values.get("email"), values.get("phone"), values.get("phone_raw"))
    return values


def take_in(
    scope: TenantScope,
    submitted: Mapping[str, Any] | LeadInput,
    *,
    channel: str,
    region: str,
    reference: str | None = None,
) -> IntakeResult:
    """Creates the lead, or updates the one with the same e-mail key.

    Writes the lead, its timeline event and its outbox rows in the caller's
    transaction.

    Args:
        scope: the tenant's open write transaction.
        submitted: the lead as sent (a mapping or a parsed LeadInput).
        channel: the door it came in by (`api`, `batch`, `import`,
            `webhook:<source>`); the timeline event's source.
        region: default region for phone numbers without a country prefix.
        reference: the delivery or import record it came from, if any
            (`webhook:<source>:<delivery id>`, `import:<import id>#<record>`),
            kept on the timeline event.

    Raises:
        LeadRejected: the lead is invalid; nothing was written.
    """
    values = prepare(submitted, region)
    return store_prepared(scope, values, channel=channel, reference=reference)


def store_prepared(
    scope: TenantScope,
    values: dict[str, Any],
    *,
    channel: str,
    reference: str | None = None,
) -> IntakeResult:
    """Writes values `prepare` returned: a new lead, or an update by e-mail key."""
    detail: dict[str, Any] = {"channel": channel, "received": jsonable(values)}
    if reference:
        detail["reference"] = reference

    email = values.get("email")
    # Before any row lock, as a batch takes them: the same order everywhere.
    duplicates.lock_mailboxes(scope, [mailbox_key(email)])
    existing = find_by_email(scope, email, lock=True) if email else None
    if existing is None:
        match = find_match(scope, values)
        if match is not None and match.mergeable(email):
            return _merge_into(scope, match, values, channel, detail)
        lead = _new_lead(values, channel)
        scope.add(lead)
        review = duplicates.flag_if_duplicate(scope, lead)
        if review is None and match is not None:
            review = duplicates.pair(scope, lead, match.lead, SIMILAR_DETAILS)
            detail["matched"] = match.describe()
        if review is not None:
            detail["possible_duplicate_of"] = review.duplicate_of_id
        commit_change(
            scope, lead, "lead.created", channel=channel, detail=detail, created=True
        )
        return IntakeResult(lead, "possible_duplicate" if review else "created")

    before = Verdicts.of(existing)
    changes = _merge(existing, values)
    audit.append_decision(
        scope.session,
        scope.tenant_id,
        "lead.merged",
        "lead",
        existing.id,
        {"match": "email_key", "channel": channel, "fields": sorted(changes)},
    )
    if not changes:
        # The same lead sent again: worth a line on its timeline (where and
        # when it came), but nothing changed, so nothing is owed.
        timeline.record(
            scope, existing, "lead.resubmitted", source=channel, detail=detail
        )
        return IntakeResult(existing, "updated")
    detail["changes"] = changes
    commit_change(
        scope,
        existing,
        "lead.updated",
        channel=channel,
        detail=detail,
        created=False,
        before=before,
    )
    return IntakeResult(existing, "updated", tuple(changes))


@dataclass(frozen=True)
class Match:
    """A stored lead that fuzzy matching found like a new one, and the verdict."""

    lead: Lead
    verdict: Verdict

    def mergeable(self, email: str | None) -> bool:
        """Whether the new lead may be folded into this one.

        Only a `match`, and never across two different addresses: a lead keeps
        one e-mail key, so merging would drop one, and two mailboxes can be two
        people sharing a name and a company. Such a pair is flagged instead.
        """
        return _mergeable(self.verdict, email, self.lead.email)

    def describe(self) -> dict[str, Any]:
        """For the timeline: whom it matched, how strongly, and why."""
        return Likeness(self.lead.id, self.verdict).describe()


@dataclass(frozen=True)
class Likeness:
    """A stored lead (by id) a new one is like, and the verdict."""

    lead_id: str
    verdict: Verdict

    def describe(self) -> dict[str, Any]:
        """For the timeline: whom it matched, how strongly, and why."""
        return {
            "lead_id": self.lead_id,
            "decision": self.verdict.decision,
            "score": round(self.verdict.score, 2),
            "reasons": list(self.verdict.reasons),
        }


def _mergeable(verdict: Verdict, email: str | None, other: str | None) -> bool:
    return verdict.decision == "match" and not (email and other and email != other)


def find_match(scope: TenantScope, values: dict[str, Any]) -> Match | None:
    """The stored lead fuzzy matching finds most like `values`, unless none is.

    Candidates come from the blocking keys' index, so the cost grows with them,
    not with the store; None when no rules are configured.
    """
    rules = rulebook.matching_rules()
    if rules is None:
        return None
    profile = rules.profile(values)
    [ids] = match_keys.candidates(scope, rules, [rules.blocking_keys(profile)])
    stored = match_keys.compared_values(scope, rules.fields, ids)
    pairs = ((i, rules.profile(row, keys=False)) for i, row in stored.items())
    best = rules.best_match(profile, pairs)
    if best is None or best[1].decision == "distinct":
        return None
    # Locked and read afresh: another writer may have merged into it (given
    # it an address) or deleted it since the candidates were read, and
    # `mergeable` must judge the row as it now is.
    lead = scope.session.get(
        Lead, str(best[0]), with_for_update=True, populate_existing=True
    )
    if lead is None or lead.tenant_id != scope.tenant_id:
        return None
    return Match(lead, best[1])


def _merge_into(
    scope: TenantScope,
    match: Match,
    values: dict[str, Any],
    channel: str,
    detail: dict[str, Any],
) -> IntakeResult:
    """Folds a new lead into the stored one fuzzy matching says is the same person.

    `match.lead` is locked (see `find_match`). A lead that gains an address
    here is checked against the other spellings of its mailbox like a new one.
    """
    target = match.lead
    before = Verdicts.of(target)
    changes = _merge(target, values)
    audit.append_decision(
        scope.session,
        scope.tenant_id,
        "lead.merged",
        "lead",
        target.id,
        {"match": "fuzzy", "channel": channel, "fields": sorted(changes)}
        | match.describe(),
    )
    detail["matched"] = match.describe()
    detail["changes"] = changes
    if "email" in changes:
        review = duplicates.flag_if_duplicate(scope, target)
        if review is not None:
            detail["possible_duplicate_of"] = review.duplicate_of_id
    commit_change(
        scope,
        target,
        "lead.merged",
        channel=channel,
        detail=detail,
        created=False,
        before=before,
    )
    return IntakeResult(target, "merged", tuple(changes))


def _new_lead(values: dict[str, Any], channel: str) -> Lead:
    lead = Lead(
        score_reasons=[],
        warnings=[],
        flags=[],
        status="new",
        custom={},
        version=1,
        crm_sync_status="pending",
        crm_state={},
    )
    for name, value in values.items():
        setattr(lead, name, getattr(value, "value", value))
    lead.source = lead.source or channel
    lead.custom = lead.custom or {}
    return lead


def store_many(
    scope: TenantScope,
    items: list[tuple[str | None, dict[str, Any]]],
    *,
    channel: str,
    contained: bool = True,
) -> list[IntakeResult | list[FieldError]]:
    """Writes many prepared leads as `store_prepared` would, one at a time, in order.

    A lead that can only be new (its e-mail and mailbox keys are stored nowhere,
    nor earlier in `items`) is inserted with the others like it in one go; the
    rest (updates, possible duplicates, repeats within `items`) go through
    `store_prepared` each in a savepoint, after them. The end state is the same
    as taking the items one by one; the cost is a few statements per chunk
    instead of several per lead.

    Args:
        scope: the tenant's open write transaction.
        items: (reference, values from `prepare`) pairs, in the order to apply.
        channel: the door they came in by.
        contained: whether a conflict of the new leads' insert is settled
            here (in a savepoint, each then taken alone); when False it is
            raised, for a caller that takes the items again another way,
            and two statements are saved.

    Returns:
        For each item, its result, or the errors that refused it in the store
        (a value the database will not take).
    """
    emails = [values["email"] for _, values in items if values.get("email")]
    duplicates.lock_mailboxes(scope, map(mailbox_key, emails))
    # The stored leads these addresses update, locked now in key order: the
    # items are then applied in their own order, and two writers still take
    # row locks in one order (no deadlock on PostgreSQL).
    taken, boxes = stored_addresses(scope, emails)
    fresh: list[int] = []
    later: list[int] = []
    for position, (_, values) in enumerate(items):
        email = values.get("email")
        box = mailbox_key(email)
        if (email and email in taken) or (box and box in boxes):
            later.append(position)
        else:
            fresh.append(position)
        if email:
            taken.add(email)
        if box:
            boxes.add(box)

    fresh, alike, keys, flagged = _without_matches(scope, items, fresh, later)
    later = sorted(later + alike)

    results: list[IntakeResult | list[FieldError]] = [[] for _ in items]

    def create() -> list[Lead]:
        return _create_many(
            scope,
            [items[p] for p in fresh],
            channel,
            [keys.get(p) for p in fresh],
            [flagged.get(p) for p in fresh],
        )

    try:
        if contained:
            with scope.session.begin_nested():
                created = create()
        else:
            created = create()
    except (IntegrityError, DataError):
        if not contained:
            raise
        # A concurrent writer took a key (or deleted a lead one is like), or
        # one value is refused: each item then goes alone, and only the
        # offending one fails.
        later = sorted(fresh + later)
    else:
        for position, lead in zip(fresh, created, strict=True):
            outcome = "possible_duplicate" if position in flagged else "created"
            results[position] = IntakeResult(lead, outcome)
    for position in later:
        reference, values = items[position]
        results[position] = _store_alone(scope, values, channel, reference)
    return results


def _without_matches(
    scope: TenantScope,
    items: list[tuple[str | None, dict[str, Any]]],
    fresh: list[int],
    later: list[int],
) -> tuple[list[int], list[int], dict[int, frozenset[str]], dict[int, Likeness]]:
    """Splits `fresh` into items inserted together and those taken alone.

    An item is compared with its candidates in the store (found for the whole
    chunk at once) and with every earlier item of the chunk, `later` ones
    included. One that would be merged, or is like an earlier item of the
    chunk, is taken alone, in order, after the others are inserted, as a
    sequence of single intakes would. One only possibly like a stored lead
    (or like one with another address) is inserted with the others, flagged.

    Returns:
        The positions inserted together, those taken alone, each item's
        blocking keys (not worked out again to be stored), and the stored lead
        each flagged one is like.
    """
    rules = rulebook.matching_rules()
    if rules is None or not fresh:
        return fresh, [], {}, {}
    profiles = [rules.profile(items[position][1]) for position in fresh]
    found = match_keys.candidates(scope, rules, [p.keys for p in profiles])
    wanted = {i for ids in found for i in ids}
    rows = match_keys.compared_values(scope, rules.fields, wanted)
    stored_profiles = {i: rules.profile(row, keys=False) for i, row in rows.items()}
    earlier = BlockIndex.for_rules(rules)
    unlike, alike = [], []
    flagged: dict[int, Likeness] = {}
    waiting = sorted(later, reverse=True)
    for position, profile, ids in zip(fresh, profiles, found, strict=True):
        while waiting and waiting[-1] < position:
            # Taken alone later, but earlier in the chunk: a fresh item like
            # it must wait for it.
            before = waiting.pop()
            earlier.add(before, rules.profile(items[before][1]))
        candidates = [(i, stored_profiles[i]) for i in ids if i in stored_profiles]
        candidates += earlier.candidate_profiles(profile)
        best = rules.best_match(profile, candidates)
        if best is None or best[1].decision == "distinct":
            unlike.append(position)
        elif isinstance(best[0], str) and not _mergeable(
            best[1], items[position][1].get("email"), rows[best[0]].get("email")
        ):
            unlike.append(position)
            flagged[position] = Likeness(best[0], best[1])
        else:
            alike.append(position)
        earlier.add(position, profile)
    keys = {p: profile.keys for p, profile in zip(fresh, profiles, strict=True)}
    return unlike, alike, keys, flagged


def _create_many(
    scope: TenantScope,
    items: list[tuple[str | None, dict[str, Any]]],
    channel: str,
    keys: list[frozenset[str] | None],
    likeness: list[Likeness | None],
) -> list[Lead]:
    leads, details, pairs = [], [], []
    for (reference, values), like in zip(items, likeness, strict=True):
        lead = _new_lead(values, channel)
        lead.id = new_id()
        leads.append(lead)
        detail: dict[str, Any] = {"channel": channel, "received": values}
        if reference:
            detail["reference"] = reference
        if like is not None:
            lead.flags = [duplicates.FLAG_PREFIX + like.lead_id]
            detail["matched"] = like.describe()
            detail["possible_duplicate_of"] = like.lead_id
            pairs.append((lead.id, like.lead_id))
        details.append(detail)
    commit_creations(scope, leads, details, channel=channel, keys=keys)
    duplicates.pair_many(scope, pairs, SIMILAR_DETAILS)
    return leads


def _store_alone(
    scope: TenantScope,
    values: dict[str, Any],
    channel: str,
    reference: str | None,
) -> IntakeResult | list[FieldError]:
    for attempt in (1, 2):
        try:
            with scope.session.begin_nested():
                result = store_prepared(
                    scope, values, channel=channel, reference=reference
                )
                scope.session.flush()
            return result
        except IntegrityError as exc:
            if attempt == 2:
                # The driver's text names the conflicting key (an address);
                # it must not reach logs or Prefect, which keep no personal data.
                raise StoreConflict(reference, describe_error(exc)) from None
        except DataError as exc:
            # A value the database refuses that our checks let through: this
            # item is refused, the rest stand.
            return [FieldError("body", "refused_by_store", describe_error(exc))]
    raise AssertionError("unreachable")


def _merge(lead: Lead, values: dict[str, Any]) -> dict[str, Any]:
    """Newer non-empty values win; a blank or null never erases what is stored."""
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name in ("custom", "warnings"):
            continue
        if _blank(value):
            continue
        if name == "phone_raw" and lead.phone and not values.get("phone"):
            # An unreadable newer phone does not displace a valid stored one;
            # it stays visible on the timeline as received.
            continue
        set_value(lead, name, value, changes)
    if values.get("phone"):
        set_value(lead, "phone_raw", None, changes)
    keep_found_warnings(lead, values.get("warnings"), changes)
    incoming = {k: v for k, v in (values.get("custom") or {}).items() if not _blank(v)}
    merged = {**(lead.custom or {}), **incoming}
    if merged != lead.custom:
        changes["custom"] = {"from": lead.custom, "to": merged}
        lead.custom = merged
    return changes


def fold(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """Two prepared submissions of one person as one, as `_merge` would store them.

    Newer non-empty values win, a blank never erases, custom fields merge key
    by key and warnings add up; a valid phone is not displaced by a later
    unreadable one.
    """
    folded = dict(earlier)
    for name, value in later.items():
        if name in ("custom", "warnings") or _blank(value):
            continue
        if name == "phone_raw" and folded.get("phone") and not later.get("phone"):
            continue
        folded[name] = value
    if later.get("phone"):
        folded["phone_raw"] = None
    custom = {k: v for k, v in (later.get("custom") or {}).items() if not _blank(v)}
    if custom:
        folded["custom"] = {**(folded.get("custom") or {}), **custom}
    warnings = [
        w for w in later.get("warnings") or [] if w not in folded.get("warnings", [])
    ]
    if warnings:
        folded["warnings"] = [*folded.get("warnings", []), *warnings]
    return folded


def _blank(value: Any) -> bool:
    """Null, white space only, or an empty list or object: nothing to merge."""
    if isinstance(value, str):
        return clean_text(value) is None
    return value is None or value == {} or value == []


def submit(
    store: Store,
    tenant_id: str,
    submitted: Mapping[str, Any] | LeadInput,
    *,
    channel: str,
    region: str,
    reference: str | None = None,
) -> IntakeResult:
    """Takes one lead in its own transaction: all of it is written, or nothing.

    Two requests creating the same new e-mail at once on PostgreSQL both see no
    lead; the loser's unique-key violation is retried once and becomes an update.
    """
    for attempt in (1, 2):
        try:
            with store.write(tenant_id) as scope:
                return take_in(
                    scope,
                    submitted,
                    channel=channel,
                    region=region,
                    reference=reference,
                )
        except IntegrityError as exc:
            if attempt == 2:
                raise StoreConflict(reference, describe_error(exc)) from None
    raise AssertionError("unreachable")


# PostgreSQL's deadlock and serialisation failure.
_LOCK_CONFLICTS = ("40P01", "40001")
# Called inside the transaction with each lead's outcome, to add rows of its own.
AlsoWrite = Callable[[TenantScope, list["IntakeResult | Exception"]], None]


def submit_together(
    store: Store,
    tenant_id: str,
    prepared: list[dict[str, Any]],
    *,
    channel: str,
    also: AlsoWrite | None = None,
) -> list[IntakeResult | Exception]:
    """Takes in leads sent separately at about the same time, in one transaction.

    Each lead's outcome is what `submit` would have given it alone, in some
    order of the sends: they were concurrent, so any order is one they could
    have had. A lead the store refuses gets its own `LeadRejected`. When the
    transaction fails for one lead (a key race `store_many` could not settle),
    every lead is taken in again alone, so one cannot fail the others; when
    the store fails (down, out of space), every lead fails with it.

    Args:
        store: the lead store.
        tenant_id: the tenant all the leads are for.
        prepared: each lead's values from `prepare`.
        channel: the door they came in by.
        also: writes what goes with the outcomes (the calls' audit records),
            committed with them; called once per transaction, with the
            outcomes of the leads that transaction took.

    Returns:
        For each lead in order, its `IntakeResult`, or the error it failed with.
    """
    try:
        # A conflict is settled below, by taking each lead alone: the first
        # try needs no savepoint of its own.
        outcomes = _take_together(
            store, tenant_id, prepared, channel, also, contained=False
        )
    except (StoreConflict, IntegrityError, DataError):
        outcomes = None
    except OperationalError as exc:
        # A deadlock with another group (a fuzzy match's row is locked in the
        # items' order): alone, no lead holds locks another waits for. A store
        # that is down fails the group at once instead.
        if getattr(exc.orig, "sqlstate", None) not in _LOCK_CONFLICTS:
            raise
        outcomes = None
    if outcomes is None:
        outcomes = [_submit_alone(store, tenant_id, v, channel, also) for v in prepared]
    # No batch ends here to analyse the tables after (see `submit_batch`):
    # without fresh statistics PostgreSQL walks a tenant's leads per lookup.
    refresh_statistics_now_and_then(store)
    return outcomes


def _take_together(
    store: Store,
    tenant_id: str,
    prepared: list[dict[str, Any]],
    channel: str,
    also: AlsoWrite | None,
    *,
    contained: bool = True,
) -> list[IntakeResult | Exception]:
    with store.write(tenant_id) as scope:
        items = [(None, values) for values in prepared]
        stored = store_many(scope, items, channel=channel, contained=contained)
        outcomes = [_outcome(result) for result in stored]
        if also is not None:
            also(scope, outcomes)
    return outcomes


def _submit_alone(
    store: Store,
    tenant_id: str,
    values: dict[str, Any],
    channel: str,
    also: AlsoWrite | None,
) -> IntakeResult | Exception:
    try:
        [outcome] = _take_together(store, tenant_id, [values], channel, also)
    except (StoreConflict, IntegrityError, DataError, OperationalError) as exc:
        # This lead's failure only: the leads before it are stored, and those
        # after it are still tried.
        return exc
    return outcome


def _outcome(result: IntakeResult | list[FieldError]) -> IntakeResult | Exception:
    return result if isinstance(result, IntakeResult) else LeadRejected(result)


@dataclass
class ItemResult:
    """The outcome of one item of a batch, in input order."""

    index: int
    outcome: Outcome | str
    lead_id: str | None = None
    errors: list[FieldError] = field(default_factory=list)


def submit_batch(
    store: Store,
    tenant_id: str,
    items: list[Any],
    *,
    channel: str,
    region: str,
) -> list[ItemResult]:
    """Takes in many leads in one transaction, each item standing alone.

    An invalid item is reported and skipped; the valid ones are all written,
    in input order, as if sent one by one (`store_many`). The leads they
    update are locked first in e-mail key order, so concurrent batches cannot
    deadlock on PostgreSQL. An item taken alone runs in a savepoint: a store
    conflict on it (a unique-key race) undoes that item only, and it is tried
    once more.
    """
    results: dict[int, ItemResult] = {}
    prepared: list[tuple[int, dict[str, Any]]] = []
    for index, item in enumerate(items):
        try:
            prepared.append((index, prepare(item, region)))
        except LeadRejected as exc:
            results[index] = ItemResult(index, "rejected", errors=exc.errors)

    with store.write(tenant_id) as scope:
        stored = store_many(
            scope, [(None, values) for _, values in prepared], channel=channel
        )
    for (index, _), result in zip(prepared, stored, strict=True):
        if isinstance(result, IntakeResult):
            results[index] = ItemResult(index, result.outcome, result.lead.id)
        else:
            results[index] = ItemResult(index, "rejected", errors=result)
    refresh_statistics(store)
    return [results[index] for index in range(len(items))]
