"""Blocking keys in the store: finding the stored leads a new one is compared with.

Every lead's keys (`leads.fuzzy`) are rows of `lead_match_keys`, indexed by key,
so the candidates of a new lead cost a lookup per key whatever the store's
size. A key more leads share than `max_block_size` (a common surname, a
switchboard phone) picks no candidates: it would cost a comparison with each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, insert, select

from leads.fuzzy import MatchRules
from leads.store.database import TenantScope
from leads.store.leads import IN_LIST_SIZE
from leads.store.tables import Lead, MatchKey


def _parts(keys: Iterable[str]) -> Iterable[list[str]]:
    wanted = sorted(set(keys))
    for start in range(0, len(wanted), IN_LIST_SIZE):
        yield wanted[start : start + IN_LIST_SIZE]


def candidates(
    scope: TenantScope, rules: MatchRules, key_sets: Sequence[frozenset[str]]
) -> list[list[str]]:
    """For each set of keys, the ids of stored leads sharing any, most shared first.

    One pass over the store for all the sets (a chunk of an import costs a few
    statements, not a few per lead). Keys over `max_block_size` are left out;
    each set gets at most `max_candidates` ids.
    """
    everything = set().union(*key_sets) if key_sets else set()
    if not everything:
        return [[] for _ in key_sets]
    sizes: dict[str, int] = {}
    for part in _parts(everything):
        query = (
            select(MatchKey.key, func.count())
            .where(MatchKey.tenant_id == scope.tenant_id, MatchKey.key.in_(part))
            .group_by(MatchKey.key)
        )
        sizes.update((key, size) for key, size in scope.session.execute(query))
    usable = {key for key, size in sizes.items() if size <= rules.max_block_size}

    members: dict[str, list[str]] = {}
    for part in _parts(usable):
        query = select(MatchKey.key, MatchKey.lead_id).where(
            MatchKey.tenant_id == scope.tenant_id, MatchKey.key.in_(part)
        )
        for key, lead_id in scope.session.execute(query):
            members.setdefault(key, []).append(lead_id)

    found = []
    for keys in key_sets:
        shared = Counter(lead for key in keys & usable for lead in members.get(key, ()))
        ranked = sorted(shared, key=lambda lead: (-shared[lead], lead))
        found.append(ranked[: rules.max_candidates])
    return found


def compared_values(
    scope: TenantScope, fields: Iterable[str], ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """What matching reads of the tenant's leads with these ids, by id.

    Only the columns the rules read, as plain values: a candidate is compared,
    and most are let go, so loading whole leads would be wasted.
    """
    names = {field.partition(".")[0] for field in fields} | {"id", "tenant_id"}
    columns = [column for column in Lead.__table__.c if column.key in names]
    found: dict[str, dict[str, Any]] = {}
    for part in _parts(ids):
        # By primary key alone: with `tenant_id` in the WHERE clause, SQLite may
        # walk the tenant's index instead. The tenant is checked on each row.
        query = select(*columns).where(Lead.__table__.c.id.in_(part))
        for row in scope.session.execute(query).mappings():
            if row["tenant_id"] == scope.tenant_id:
                found[row["id"]] = dict(row)
    return found


def add(scope: TenantScope, rows: Iterable[tuple[str, frozenset[str]]]) -> None:
    """Stores the keys of new leads: (lead id, keys) pairs, in one statement."""
    values = [
        {"lead_id": lead_id, "key": key, "tenant_id": scope.tenant_id}
        for lead_id, keys in rows
        for key in keys
    ]
    if values:
        scope.session.execute(insert(MatchKey.__table__), values)


def refresh(scope: TenantScope, lead_id: str, keys: frozenset[str]) -> None:
    """Adds the keys a changed lead has gained.

    Keys its old values had are kept: a later lead spelt the old way should
    still meet it.
    """
    stored = set(
        scope.session.scalars(select(MatchKey.key).where(MatchKey.lead_id == lead_id))
    )
    add(scope, [(lead_id, keys - stored)])
