"""The scoring rules, compiled once and applied to each lead: points with reasons.

A rule that fires gives its points and a reason naming it and them, such as
`title_seniority:director +15` or `free_mail -10`; a rule worth 0 points fires
silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from leads.email_domains import FREE_MAIL
from leads.scoring.config import NumberRule, RulesConfig, SeniorityLevel, rule_key
from leads.scoring.values import category_key, field_value, parse_number

# A rule that fired: its reason and its points.
Hit = tuple[str, int]


@lru_cache(maxsize=4096)
def _source_key(source: str) -> str:
    return rule_key(source)


def _reason(name: str, points: int) -> str:
    return f"{name} {points:+d}"


def _level_pattern(level: SeniorityLevel) -> re.Pattern[str]:
    # Lookarounds rather than \b, so that keywords starting or ending in
    # punctuation (`co-founder`, `c-level`) still need a whole word.
    words = [
        r"(?<!\w)" + r"\s+".join(map(re.escape, keyword.split())) + r"(?!\w)"
        for keyword in level.keywords
    ]
    return re.compile("|".join([*words, *level.patterns]), re.IGNORECASE)


class _NumberRule:
    def __init__(self, rule: NumberRule, name: str) -> None:
        self.fields = rule.fields
        self.ranges = [
            (
                -float("inf") if span.min is None else span.min,
                float("inf") if span.max is None else span.max,
                span.points,
                _reason(f"{name}:{span.name}", span.points),
            )
            for span in rule.ranges
        ]

    def apply(self, values: Mapping[str, Any], hits: list[Hit]) -> None:
        for field in self.fields:
            number = parse_number(field_value(values, field))
            if number is not None:
                break
        else:
            return
        for low, high, points, reason in self.ranges:
            if low <= number <= high:
                if points:
                    hits.append((reason, points))
                return


class Rules:
    """The rules of a `RulesConfig`, ready to score leads.

    Attributes:
        base: the points every lead starts from when no model is used.
    """

    def __init__(self, config: RulesConfig) -> None:
        fit, intent = config.fit, config.intent
        self.base = config.base
        self._levels = [
            (
                _level_pattern(level),
                level.points,
                _reason(f"title_seniority:{level.level}", level.points),
            )
            for level in fit.title_seniority
        ]
        self._company_size = (
            _NumberRule(fit.company_size, fit.company_size.name or "company_size")
            if fit.company_size
            else None
        )
        self._industry_fields: Sequence[str] = ()
        self._industries: dict[str, Hit] = {}
        if fit.industry and fit.industry.points:
            self._industry_fields = fit.industry.fields
            self._industries = {
                str(category_key(value)): (
                    _reason(f"industry:{value}", fit.industry.points),
                    fit.industry.points,
                )
                for value in fit.industry.values
            }
        self._countries: dict[str, Hit] = {}
        if fit.country and fit.country.points:
            self._countries = {
                code: (
                    _reason(f"country:{code}", fit.country.points),
                    fit.country.points,
                )
                for code in fit.country.codes
            }
        self._free_mail = (
            (_reason(FREE_MAIL, fit.free_mail), fit.free_mail)
            if fit.free_mail
            else None
        )
        self._sources = {
            rule_key(source): (_reason(f"source:{rule_key(source)}", points), points)
            for source, points in intent.source.items()
            if points
        }
        self._activity = [
            _NumberRule(rule, rule.name or "activity") for rule in intent.activity
        ]

    def fit(self, values: Mapping[str, Any]) -> list[Hit]:
        """The fit rules that fire for a lead: who they are."""
        hits: list[Hit] = []
        title = values.get("job_title")
        if isinstance(title, str) and title:
            for pattern, points, reason in self._levels:
                if pattern.search(title):
                    if points:
                        hits.append((reason, points))
                    break
        if self._company_size:
            self._company_size.apply(values, hits)
        for field in self._industry_fields:
            key = category_key(field_value(values, field))
            if key is not None:
                if key in self._industries:
                    hits.append(self._industries[key])
                break
        country = values.get("country")
        if self._countries and isinstance(country, str):
            hit = self._countries.get(country.strip().upper())
            if hit:
                hits.append(hit)
        if self._free_mail and FREE_MAIL in (values.get("flags") or ()):
            hits.append(self._free_mail)
        return hits

    def intent(self, values: Mapping[str, Any]) -> list[Hit]:
        """The intent rules that fire for a lead: what they did."""
        hits: list[Hit] = []
        source = values.get("source")
        if self._sources and isinstance(source, str):
            hit = self._sources.get(_source_key(source))
            if hit:
                hits.append(hit)
        for rule in self._activity:
            rule.apply(values, hits)
        return hits
