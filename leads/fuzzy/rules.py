"""Matching rules: loaded from YAML, they profile leads, block them and compare them.

The score of a pair is a sum of weights, one per compared field, chosen by how
well the field agrees (exact, similar, partial, different); a field missing on
either side adds nothing. Weights are meant as Fellegi–Sunter log-likelihood
ratios (log2 of how much likelier the agreement is between records of one
person than between records of two), so a score is evidence in bits.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from leads.fuzzy.blocking import BlockingRule, Part
from leads.fuzzy.comparison import DIFFERENT, EXACT, KINDS, Kind
from leads.fuzzy.frequency import MAX_ADJUSTMENT, Frequencies
from leads.fuzzy.profile import Profile
from leads.fuzzy.schema import CUSTOM_PREFIX, RulesSpec
from leads.fuzzy.verdict import Decision, Verdict
from leads.tracebacks import PlainMessage


class RulesError(PlainMessage, ValueError):
    """A rules file that cannot be used; `key` names the offending setting.

    Attributes:
        source: the file (or other origin) the rules came from.
        key: the dotted path of the setting, such as `comparisons.phone.kind`.
        reason: what is wrong with it.
    """

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        super().__init__(f"{source}: {key}: {reason}")


@dataclass(frozen=True, slots=True)
class _Comparison:
    name: str
    field: str
    kind: Kind
    kind_name: str
    weights: tuple[float, float, float, float]
    adjusted: bool


@dataclass(frozen=True, slots=True)
class _Step:
    """One comparison, or a pair whose fields may hold each other's values."""

    first: int
    second: int | None
    best: float


def _lookup(values: Mapping[str, Any], field: str) -> Any:
    if field.startswith(CUSTOM_PREFIX):
        custom = values.get("custom")
        if not isinstance(custom, Mapping):
            return None
        return custom.get(field.removeprefix(CUSTOM_PREFIX))
    return values.get(field)


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, date):
        return value.isoformat()
    return value if isinstance(value, str) else str(value)


# Stored leads' profiles kept per rules (see `MatchRules._stored_profile`): a
# few tens of megabytes at most.
_REMEMBERED_PROFILES = 20_000


class MatchRules:
    """Compiled matching rules; build them with `load_rules` or `parse_rules`.

    Attributes:
        match_at: the score from which a pair is a match.
        possible_at: the score from which a pair is a possible match.
        max_block_size: a block holding more records than this is not used to
            find candidates (see `BlockIndex`).
        max_candidates: at most this many candidates are compared per lookup.
    """

    def __init__(
        self,
        spec: RulesSpec,
        source: str = "<rules>",
        frequencies: Mapping[int, Frequencies] | None = None,
    ) -> None:
        self._spec = spec
        self._source = source
        self._frequencies = dict(frequencies or {})
        names = list(spec.comparisons)
        self._comparisons = tuple(
            _Comparison(
                name=name,
                field=item.field or name,
                kind=KINDS[item.kind](**item.options()),
                kind_name=item.kind,
                weights=item.weights.by_level(),
                adjusted=item.frequency_adjusted,
            )
            for name, item in spec.comparisons.items()
        )
        self._steps = _plan(spec, names, self._comparisons, source)
        self._blocking = tuple(
            BlockingRule(
                name=name,
                parts=tuple(
                    Part(part.field, part.transform, part.length) for part in rule.parts
                ),
                unordered=rule.unordered,
            )
            for name, rule in spec.blocking.rules.items()
        )
        self._blocking_fields = frozenset(
            part.field for rule in self._blocking for part in rule.parts
        )
        self.match_at = spec.thresholds.match
        self.possible_at = spec.thresholds.possible
        self.max_block_size = spec.blocking.max_block_size
        self.max_candidates = spec.blocking.max_candidates
        self._best_total = sum(step.best for step in self._steps)
        self._fast = tuple(_unrolled(step, self._comparisons) for step in self._steps)
        self._no_rarity = (0.0,) * len(self._comparisons)
        self._remembered: dict[tuple[Any, ...], Profile] = {}
        self._remembering = threading.Lock()
        if self.match_at > self._best_total:
            raise RulesError(
                source,
                "thresholds.match",
                f"{self.match_at} is more than all comparisons agreeing exactly "
                f"can score ({self._best_total})",
            )

    @property
    def fields(self) -> frozenset[str]:
        """The columns comparing and blocking read (`custom.x` for custom ones)."""
        return self._blocking_fields | {item.field for item in self._comparisons}

    def profile(self, values: Mapping[str, Any], *, keys: bool = True) -> Profile:
        """The lead's values prepared for comparing, with its blocking keys.

        Args:
            values: the lead's columns as stored (`first_name`, `email`, …,
                with other input columns in a `custom` mapping); a column that
                is absent counts as missing.
            keys: False leaves the blocking keys out (empty), for a stored
                lead that is only compared.
        """
        looked_up = tuple(_lookup(values, item.field) for item in self._comparisons)
        if not keys:
            return self._stored_profile(looked_up)
        texts = {}
        for field in self._blocking_fields:
            text = _as_text(_lookup(values, field))
            if text:
                texts[field] = text
        found = frozenset(
            key for rule in self._blocking if (key := rule.key(texts)) is not None
        )
        return self._profile(looked_up, found)

    def _stored_profile(self, looked_up: tuple[Any, ...]) -> Profile:
        """A profile without keys, remembered by the values it was made of.

        A stored lead is a candidate of every new lead in its blocks, so the
        same values are prepared again and again; a profile depends on nothing
        else, so a remembered one is never stale.
        """
        if not all(value is None or type(value) is str for value in looked_up):
            # Only texts are remembered: 1, 1.0 and True are equal keys to a
            # dict but prepare differently, and a list or mapping is no key.
            return self._profile(looked_up, frozenset())
        found = self._remembered.get(looked_up)
        if found is not None:
            return found
        made = self._profile(looked_up, frozenset())
        with self._remembering:
            # Writer threads share these rules: one evicts at a time.
            while len(self._remembered) >= _REMEMBERED_PROFILES:
                # The oldest first: dicts keep insertion order.
                del self._remembered[next(iter(self._remembered))]
            self._remembered[looked_up] = made
        return made

    def _profile(self, looked_up: tuple[Any, ...], found: frozenset[str]) -> Profile:
        prepared = tuple(
            item.kind.prepare(value)
            for item, value in zip(self._comparisons, looked_up, strict=True)
        )
        rarity = self._no_rarity
        if self._frequencies:
            rarity = tuple(
                table.adjustment(prepared[index])
                if (table := self._frequencies.get(index))
                else 0.0
                for index in range(len(prepared))
            )
        return Profile(prepared, found, rarity)

    def with_frequencies(self, leads: Iterable[Mapping[str, Any]]) -> MatchRules:
        """These rules, weighing agreement by how rare a value is among `leads`.

        Only comparisons marked `frequency_adjusted` change. Profiles made by
        the rules without frequencies must be made again.

        Args:
            leads: stored leads' values (all, or a fair sample of them).
        """
        adjusted = [
            index for index, item in enumerate(self._comparisons) if item.adjusted
        ]
        columns: dict[int, list[Any]] = {index: [] for index in adjusted}
        for values in leads:
            for index in adjusted:
                item = self._comparisons[index]
                columns[index].append(item.kind.prepare(_lookup(values, item.field)))
        tables = {index: Frequencies(found) for index, found in columns.items()}
        return MatchRules(self._spec, self._source, tables)

    def blocking_keys(self, profile: Profile) -> frozenset[str]:
        """The short keys (at most 64 characters) under which to store and look up."""
        return profile.keys

    def compare(self, new: Profile, stored: Profile) -> Verdict:
        """Whether two leads are one person, with the score and its reasons."""
        found = self._score(new, stored, floor=None)
        assert found is not None, "without a floor every pair is scored"
        return self._verdict(*found)

    def best_match(
        self, new: Profile, candidates: Iterable[tuple[Hashable, Profile]]
    ) -> tuple[Hashable, Verdict] | None:
        """The candidate most like the new lead, unless every one is distinct.

        Ties go to the candidate met first.
        """
        best_id: Hashable = None
        best: Profile | None = None
        floor = self.possible_at
        for candidate_id, stored in candidates:
            points = self._points(new, stored, floor)
            if points is not None and (best is None or points > floor):
                best_id, best, floor = candidate_id, stored, points
        if best is None:
            return None
        # The reasons only for the one kept: most candidates are let go.
        found = self._score(new, best, floor=None)
        assert found is not None, "without a floor every pair is scored"
        return best_id, self._verdict(*found)

    def _points(self, new: Profile, stored: Profile, floor: float) -> float | None:
        """The pair's score as `_score` sums it, without the reasons; None once
        it cannot reach `floor`.

        Every candidate of every lookup comes through here, so the steps are
        unrolled into plain tuples (see `_Fast`) and no reasons are written.
        """
        a, b, rarity = new.values, stored.values, new.rarity
        score = 0.0
        remaining = self._best_total
        for i, j, best, grade, weights, other_grade, other_weights in self._fast:
            remaining -= best
            x, y = a[i], b[i]
            if j is None:
                if x is not None and y is not None:
                    level = grade(x, y)
                    score += (
                        weights[level] + rarity[i] if level == EXACT else weights[level]
                    )
            else:
                u, v = a[j], b[j]
                one = None if x is None or y is None else grade(x, y)
                two = None if u is None or v is None else other_grade(u, v)
                total = _points(weights, one, rarity[i]) + _points(
                    other_weights, two, rarity[j]
                )
                if one != EXACT or two != EXACT:
                    # The two fields the other way round (`_score_pair`).
                    one = None if x is None or v is None else grade(x, v)
                    two = None if u is None or y is None else other_grade(u, y)
                    crossed = _points(weights, one, rarity[i]) + _points(
                        other_weights, two, rarity[j]
                    )
                    if crossed > total:
                        total = crossed
                score += total
            if score + remaining < floor:
                return None
        return score if score >= floor else None

    def _verdict(self, score: float, evidence: list[tuple[float, str]]) -> Verdict:
        decision: Decision
        if score >= self.match_at:
            decision = "match"
        elif score >= self.possible_at:
            decision = "possible"
        else:
            decision = "distinct"
        evidence.sort(key=lambda item: -abs(item[0]))
        return Verdict(decision, score, tuple(code for _, code in evidence))

    def _score(
        self, new: Profile, stored: Profile, floor: float | None
    ) -> tuple[float, list[tuple[float, str]]] | None:
        """The score and its evidence; None once `floor` is out of reach.

        Steps run strongest first, so most unlike pairs are given up after a
        field or two rather than compared in full.
        """
        comparisons = self._comparisons
        a, b = new.values, stored.values
        score = 0.0
        remaining = self._best_total
        evidence: list[tuple[float, str]] = []
        for step in self._steps:
            remaining -= step.best
            first = comparisons[step.first]
            if step.second is None:
                level = _level(first, a[step.first], b[step.first])
                if level is not None:
                    weight = first.weights[level]
                    if level == EXACT:
                        weight += new.rarity[step.first]
                    score += weight
                    evidence.append((weight, _reason(first.name, level)))
            else:
                score += self._score_pair(step, new, stored, evidence)
            if floor is not None and score + remaining < floor:
                return None
        if floor is not None and score < floor:
            return None
        return score, evidence

    def _score_pair(
        self,
        step: _Step,
        new: Profile,
        stored: Profile,
        evidence: list[tuple[float, str]],
    ) -> float:
        i, j = step.first, step.second
        assert j is not None, "a pair step has two comparisons"
        one, other = self._comparisons[i], self._comparisons[j]
        a, b, rarity = new.values, stored.values, new.rarity
        direct = (_level(one, a[i], b[i]), _level(other, a[j], b[j]))
        direct_weight = _weight(one, direct[0], rarity[i]) + _weight(
            other, direct[1], rarity[j]
        )
        crossed = None
        if direct != (EXACT, EXACT):
            crossed = (_level(one, a[i], b[j]), _level(other, a[j], b[i]))
            crossed_weight = _weight(one, crossed[0], rarity[i]) + _weight(
                other, crossed[1], rarity[j]
            )
        if crossed is None or crossed_weight <= direct_weight:
            levels, total = direct, direct_weight
        else:
            levels, total = crossed, crossed_weight
            swap = "names" if one.kind_name == "name" else one.name
            evidence.append((0.0, f"{swap}_swapped"))
        for index, item, level in ((i, one, levels[0]), (j, other, levels[1])):
            if level is not None:
                weight = _weight(item, level, rarity[index])
                evidence.append((weight, _reason(item.name, level)))
        return total


# A step as `MatchRules._points` reads it: the first comparison's index, the
# second's (None when alone), the step's best, then each comparison's grading
# method and weights.
_Fast = tuple[int, int | None, float, Any, tuple[float, ...], Any, tuple[float, ...]]


def _unrolled(step: _Step, comparisons: tuple[_Comparison, ...]) -> _Fast:
    first = comparisons[step.first]
    second = comparisons[step.second] if step.second is not None else first
    return (
        step.first,
        step.second,
        step.best,
        first.kind.level,
        first.weights,
        second.kind.level,
        second.weights,
    )


def _level(item: _Comparison, a: Any, b: Any) -> int | None:
    if a is None or b is None:
        return None
    return item.kind.level(a, b)


def _points(
    weights: tuple[float, float, float, float], level: int | None, rarity: float
) -> float:
    """`_weight` for the fast path: a level's weight, with rarity when exact."""
    if level is None:
        return 0.0
    return weights[level] + rarity if level == EXACT else weights[level]


def _weight(item: _Comparison, level: int | None, rarity: float) -> float:
    if level is None:
        return 0.0
    return item.weights[level] + rarity if level == EXACT else item.weights[level]


def _reason(name: str, level: int) -> str:
    if level == EXACT:
        return f"same_{name}"
    if level == DIFFERENT:
        return f"different_{name}"
    return f"{name}_similar"


def _best_weight(item: _Comparison) -> float:
    return item.weights[EXACT] + (MAX_ADJUSTMENT if item.adjusted else 0.0)


def _plan(
    spec: RulesSpec,
    names: list[str],
    comparisons: tuple[_Comparison, ...],
    source: str,
) -> tuple[_Step, ...]:
    """The comparisons in the order they are scored, swap partners as one step."""
    partners: dict[str, str] = {}
    for name, item in spec.comparisons.items():
        if item.swaps_with is None:
            continue
        key = f"comparisons.{name}.swaps_with"
        partner = spec.comparisons.get(item.swaps_with)
        if item.swaps_with == name:
            raise RulesError(source, key, "a comparison cannot swap with itself")
        if partner is None:
            raise RulesError(
                source, key, f"there is no comparison named {item.swaps_with!r}"
            )
        if partner.kind != item.kind:
            raise RulesError(
                source,
                key,
                f"{item.swaps_with!r} is of kind {partner.kind!r}, not {item.kind!r}",
            )
        for one, other in ((name, item.swaps_with), (item.swaps_with, name)):
            taken = partners.get(one)
            if taken is not None and taken != other:
                raise RulesError(source, key, f"{one!r} already swaps with {taken!r}")
        partners[name] = item.swaps_with
        partners[item.swaps_with] = name

    steps = []
    done: set[str] = set()
    for index, name in enumerate(names):
        if name in done:
            continue
        partner = partners.get(name)
        if partner is None:
            steps.append(_Step(index, None, max(_best_weight(comparisons[index]), 0)))
            done.add(name)
            continue
        other = names.index(partner)
        best = _best_weight(comparisons[index]) + _best_weight(comparisons[other])
        steps.append(_Step(index, other, max(best, 0)))
        done.update((name, partner))
    steps.sort(key=lambda step: -step.best)
    return tuple(steps)


def parse_rules(document: Any, source: str = "<rules>") -> MatchRules:
    """Rules from an already parsed document (the mapping a YAML file holds).

    Raises:
        RulesError: a setting is missing, unknown or invalid; the error names
            the setting's dotted path and the reason.
    """
    if not isinstance(document, Mapping):
        raise RulesError(source, "(top level)", "expected a mapping of settings")
    try:
        spec = RulesSpec.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        raise RulesError(source, key, error["msg"]) from exc
    return MatchRules(spec, source)


def load_rules(path: Path) -> MatchRules:
    """Rules from a YAML file.

    Raises:
        RulesError: the file cannot be read or parsed, or a setting is
            invalid; the error names the setting and the reason.
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RulesError(str(path), "(file)", f"cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RulesError(str(path), "(file)", f"is not valid YAML: {exc}") from exc
    return parse_rules(document, str(path))
