"""Blocking keys in the store: finding the stored leads a new one is compared with.

Every lead's keys (`leads.fuzzy`) are rows of `lead_match_keys`, indexed by key,
so the candidates of a new lead cost a lookup per key whatever the store's
size. A key more leads share than `max_block_size` (a common surname, a
switchboard phone) picks no candidates: it would cost a comparison with each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, bindparam, func, insert, select

from leads.fuzzy import MatchRules
from leads.store.database import TenantScope
from leads.store.leads import IN_LIST_SIZE
from leads.store.tables import Lead, MatchKey


def _parts(keys: Iterable[str], size: int = IN_LIST_SIZE) -> Iterable[list[str]]:
    wanted = sorted(set(keys))
    for start in range(0, len(wanted), size):
        yield wanted[start : start + size]


def candidates(
    scope: TenantScope, rules: MatchRules, key_sets: Sequence[frozenset[str]]
) -> list[list[str]]:
    """For each set of keys, the ids of stored leads sharing any, most shared first.

    One statement over the store for all the sets (a chunk of an import, or a
    group of posted leads, costs one round trip, not one per lead). Keys over
    `max_block_size` are left out; each set gets at most `max_candidates` ids.
    """
    everything = set().union(*key_sets) if key_sets else set()
    if not everything:
        return [[] for _ in key_sets]
    # Leads added in this transaction count too (an ORM query would flush).
    scope.session.flush()
    members: dict[str, list[str]] = {}
    # `_MEMBERS` binds each key twice: half a list stays within SQLite's
    # parameter limit.
    for part in _parts(everything, IN_LIST_SIZE // 2):
        rows = scope.session.connection().execute(
            _MEMBERS,
            {
                "tenant_id": scope.tenant_id,
                "keys": part,
                "most": rules.max_block_size,
            },
        )
        for key, lead_id in rows:
            members.setdefault(key, []).append(lead_id)

    found = []
    for keys in key_sets:
        shared = Counter(lead for key in keys for lead in members.get(key, ()))
        ranked = sorted(shared, key=lambda lead: (-shared[lead], lead))
        found.append(ranked[: rules.max_candidates])
    return found


_KEYS = MatchKey.__table__
# The members of the asked keys that no more than `most` leads share: the
# sizes are counted in the index, and an oversized block's members are never
# read. Core columns: no ORM work on a statement run for every intake.
_MEMBERS = select(_KEYS.c.key, _KEYS.c.lead_id).where(
    _KEYS.c.tenant_id == bindparam("tenant_id"),
    _KEYS.c.key.in_(bindparam("keys", expanding=True)),
    _KEYS.c.key.in_(
        select(_KEYS.c.key)
        .where(
            _KEYS.c.tenant_id == bindparam("tenant_id"),
            _KEYS.c.key.in_(bindparam("keys", expanding=True)),
        )
        .group_by(_KEYS.c.key)
        .having(func.count() <= bindparam("most"))
    ),
)


def compared_values(
    scope: TenantScope, fields: Iterable[str], ids: Iterable[str]
) -> dict[str, dict[str, Any]]:
    """What matching reads of the tenant's leads with these ids, by id.

    Only the columns the rules read, as plain values: a candidate is compared,
    and most are let go, so loading whole leads would be wasted.
    """
    query = _values_of(frozenset(field.partition(".")[0] for field in fields))
    connection = scope.session.connection()
    found: dict[str, dict[str, Any]] = {}
    for part in _parts(ids):
        result = connection.execute(query, {"ids": part})
        names = list(result.keys())
        # Plain tuples made into dicts here: a row mapping costs more per row
        # than the comparison most candidates end with.
        for row in result:
            values = dict(zip(names, row, strict=True))
            if values["tenant_id"] == scope.tenant_id:
                found[values["id"]] = values
    return found


@lru_cache(maxsize=8)
def _values_of(wanted: frozenset[str]) -> Select[Any]:
    """The statement reading the `wanted` columns of leads by id, built once.

    By primary key alone: with `tenant_id` in the WHERE clause, SQLite may walk
    the tenant's index instead. The tenant is checked on each row.
    """
    names = wanted | {"id", "tenant_id"}
    columns = [column for column in Lead.__table__.c if column.key in names]
    return select(*columns).where(
        Lead.__table__.c.id.in_(bindparam("ids", expanding=True))
    )


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
