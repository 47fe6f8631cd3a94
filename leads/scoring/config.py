"""The scoring settings `config/scoring.yaml` holds, loaded and checked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from leads.config_files import load_model
from leads.countries import is_country_code
from leads.scoring.errors import ScoringConfigError

CONFIG_FILE = "scoring.yaml"

Points = Annotated[int, Field(ge=-100, le=100)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
# A version folder's name: no separators, so it cannot point out of the folder.
VersionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][\w.-]*$")]

Combine = Literal["model_plus_fit", "model_plus_rules", "model", "rules"]


def rule_key(text: str) -> str:
    """A source or value as rules compare it: `Demo Request` is `demo_request`."""
    return re.sub(r"[^0-9a-z]+", "_", text.casefold()).strip("_")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """Points for a number from `min` to `max`, both included; either may be open."""

    min: float | None = None
    max: float | None = None
    points: Points
    label: Name | None = Field(
        default=None,
        description="What the reason calls the range; `51-200` by default.",
    )

    @model_validator(mode="after")
    def _bounded(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self

    @property
    def name(self) -> str:
        """The label, or the range written out: `51-200`, `1001+`, `<=10`."""
        if self.label:
            return self.label
        if self.max is None:
            return f"{self.min:g}+"
        if self.min is None:
            return f"<={self.max:g}"
        return f"{self.min:g}-{self.max:g}"


class NumberRule(_Strict):
    """Points by the range a number field falls in; the first range holding it."""

    name: Name | None = Field(
        default=None,
        description="What reasons call the rule; the section's name by default.",
    )
    fields: tuple[Name, ...] = Field(
        min_length=1,
        description=(
            "Custom fields to read, the first with a value wins; matched "
            "ignoring case, spaces and punctuation."
        ),
    )
    ranges: tuple[Range, ...] = Field(min_length=1)


class SeniorityLevel(_Strict):
    """A level of seniority read from the job title, by words or patterns."""

    level: Name
    points: Points
    keywords: tuple[Name, ...] = Field(
        default=(),
        description="Whole words or phrases, any case: `vp`, `vice president`.",
    )
    patterns: tuple[str, ...] = Field(
        default=(), description="Regular expressions searched in the title, any case."
    )

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for number, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"pattern {number + 1} ({pattern!r}) is not a regular "
                    f"expression: {exc}"
                ) from exc
        return patterns

    @model_validator(mode="after")
    def _matches_something(self) -> SeniorityLevel:
        if not self.keywords and not self.patterns:
            raise ValueError("give keywords, patterns or both")
        return self


class IndustryRule(_Strict):
    """Points when a custom industry field holds one of the listed values."""

    fields: tuple[Name, ...] = Field(default=("industry",), min_length=1)
    points: Points
    values: tuple[Name, ...] = Field(min_length=1)


class CountryRule(_Strict):
    """Points when the lead's country is one of the listed ISO 3166-1 codes."""

    points: Points
    codes: tuple[str, ...] = Field(min_length=1)

    @field_validator("codes", mode="before")
    @classmethod
    def _no_booleans(cls, codes: Any) -> Any:
        if isinstance(codes, list | tuple):
            for number, code in enumerate(codes):
                if isinstance(code, bool):
                    raise ValueError(
                        f"code {number + 1} is {str(code).lower()}: YAML reads an "
                        "unquoted NO (Norway) or YES as a boolean; quote it: 'NO'"
                    )
        return codes

    @field_validator("codes")
    @classmethod
    def _iso_codes(cls, codes: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(code.strip().upper() for code in codes)
        unknown = [code for code in upper if not is_country_code(code)]
        if unknown:
            raise ValueError(
                f"not ISO 3166-1 alpha-2 codes: {', '.join(unknown)}; expected "
                "codes such as US, GB, DE"
            )
        return upper


class FitRules(_Strict):
    """Who the lead is: seniority, company, industry, country, mailbox."""

    title_seniority: tuple[SeniorityLevel, ...] = ()
    company_size: NumberRule | None = None
    industry: IndustryRule | None = None
    country: CountryRule | None = None
    free_mail: Points = Field(
        default=0,
        description="Points when the lead's e-mail is at a free mailbox provider.",
    )


class IntentRules(_Strict):
    """What the lead did: where they came from, how active they were."""

    source: dict[Name, Points] = Field(
        default_factory=dict,
        description="Points by source, compared as `demo_request` whatever its case.",
    )
    activity: tuple[NumberRule, ...] = ()

    @field_validator("source")
    @classmethod
    def _distinct_sources(cls, points: dict[str, int]) -> dict[str, int]:
        seen: dict[str, str] = {}
        for source in points:
            key = rule_key(source)
            if not key:
                raise ValueError(f"source {source!r} has no letters or digits")
            if key in seen:
                raise ValueError(
                    f"sources {seen[key]!r} and {source!r} are the same source "
                    f"({key}); keep one"
                )
            seen[key] = source
        return points

    @field_validator("activity")
    @classmethod
    def _named(cls, rules: tuple[NumberRule, ...]) -> tuple[NumberRule, ...]:
        for number, rule in enumerate(rules):
            if rule.name is None:
                raise ValueError(f"activity rule {number + 1} needs a name")
        return rules


class RulesConfig(_Strict):
    """The rules: a base, plus the points of every rule that fires."""

    base: int = Field(default=0, ge=0, le=100)
    fit: FitRules = FitRules()
    intent: IntentRules = IntentRules()


class ModelConfig(_Strict):
    """Which trained model scores, and how many of its reasons each lead gets."""

    version: VersionName | None = None
    reasons: int = Field(default=3, ge=0, le=10)


class ScoringConfig(_Strict):
    """Everything `scoring.yaml` sets."""

    combine: Combine = "model_plus_fit"
    model: ModelConfig = ModelConfig()
    rules: RulesConfig = RulesConfig()


def load_config(path: Path) -> ScoringConfig:
    """Reads and checks a scoring file.

    Args:
        path: the YAML file, normally `config/scoring.yaml`.

    Raises:
        ScoringConfigError: the file cannot be read, is not YAML, or is wrong;
            the message names the file and, for each problem, its key path
            (`rules.fit.title_seniority[2].patterns`) and what is wrong.
    """
    return load_model(
        path,
        ScoringConfig,
        ScoringConfigError,
        "a mapping of settings (combine, model, rules)",
    )
