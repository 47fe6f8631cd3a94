"""The shape of a matching rules file, checked field by field when it is loaded."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from leads.fuzzy.blocking import CUT_TRANSFORMS

# The lead's own columns a rule may read; anything else lives in `custom`.
LEAD_FIELDS = frozenset(
    {
        "first_name",
        "last_name",
        "email",
        "phone",
        "company",
        "job_title",
        "website",
        "street",
        "city",
        "state",
        "postal_code",
        "country",
    }
)
CUSTOM_PREFIX = "custom."

# Options each kind takes besides `field`, `weights` and `swaps_with`.
KIND_OPTIONS: dict[str, frozenset[str]] = {
    "exact": frozenset(),
    "code": frozenset(),
    "name": frozenset({"similar", "partial"}),
    "text": frozenset({"similar", "partial", "ignore_words"}),
    "street": frozenset({"similar", "partial"}),
    "date": frozenset({"similar_days", "near_days"}),
    "phone": frozenset(),
    "email_local": frozenset({"partial"}),
    "email_domain": frozenset(),
}
# Kinds whose prepared value is the value itself, so it can be counted.
FREQUENCY_KINDS = frozenset({"exact", "code", "name", "text"})
_OPTIONS = ("similar", "partial", "similar_days", "near_days", "ignore_words")
KindName = Literal[
    "exact",
    "code",
    "name",
    "text",
    "street",
    "date",
    "phone",
    "email_local",
    "email_domain",
]
Identifier = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)
]
# Short, because every blocking key starts with its rule's name.
RuleName = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=16)
]
Share = Annotated[float, Field(ge=0.0, le=1.0)]


def check_field(name: str) -> str:
    """The field name, if a lead has it or it names a custom field."""
    if name in LEAD_FIELDS:
        return name
    if name.startswith(CUSTOM_PREFIX) and len(name) > len(CUSTOM_PREFIX):
        return name
    raise ValueError(
        f"{name!r} is not a lead field; use one of {sorted(LEAD_FIELDS)} "
        f"or `custom.<name>` for another input column"
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Weights(_Strict):
    """What each level of agreement adds to the score (negative: against a match).

    A level left out is worth what the next weaker level given is worth.
    """

    exact: float
    similar: float | None = None
    partial: float | None = None
    different: float

    @model_validator(mode="after")
    def _weaker_levels_weigh_less(self) -> Weights:
        levels = [self.exact, self.similar, self.partial, self.different]
        given = [weight for weight in levels if weight is not None]
        if given != sorted(given, reverse=True):
            raise ValueError(
                "weights must not grow from exact to similar, partial and different"
            )
        return self

    def by_level(self) -> tuple[float, float, float, float]:
        """The weight of EXACT, SIMILAR, PARTIAL and DIFFERENT, gaps filled."""
        partial = self.different if self.partial is None else self.partial
        similar = partial if self.similar is None else self.similar
        return (self.exact, similar, partial, self.different)


class ComparisonSpec(_Strict):
    """One field compared one way."""

    kind: KindName
    field: str | None = Field(
        default=None, description="the field compared; the comparison's name if unset"
    )
    weights: Weights
    swaps_with: Identifier | None = Field(
        default=None,
        description="another comparison of the same kind whose field may hold this "
        "one's value (first and last name typed the wrong way round)",
    )
    similar: Share | None = None
    partial: Share | None = None
    similar_days: int | None = Field(default=None, ge=0, le=3660)
    near_days: int | None = Field(default=None, ge=0, le=3660)
    ignore_words: tuple[str, ...] | None = None
    frequency_adjusted: bool = Field(
        default=False,
        description="weigh exact agreement by how rare the value is among stored "
        "leads, once the rules are given their frequencies",
    )

    @model_validator(mode="after")
    def _options_fit_the_kind(self) -> ComparisonSpec:
        allowed = KIND_OPTIONS[self.kind]
        for option in _OPTIONS:
            if getattr(self, option) is not None and option not in allowed:
                raise ValueError(
                    f"`{option}` does not apply to kind {self.kind!r} "
                    f"(it takes {sorted(allowed) or 'no options'})"
                )
        if (
            self.similar is not None
            and self.partial is not None
            and self.partial > self.similar
        ):
            raise ValueError("`partial` must not exceed `similar`")
        if (
            self.similar_days is not None
            and self.near_days is not None
            and self.similar_days > self.near_days
        ):
            raise ValueError("`similar_days` must not exceed `near_days`")
        if self.frequency_adjusted and self.kind not in FREQUENCY_KINDS:
            raise ValueError(
                f"`frequency_adjusted` does not apply to kind {self.kind!r} "
                f"(only to {sorted(FREQUENCY_KINDS)})"
            )
        if self.field is not None:
            check_field(self.field)
        return self

    def options(self) -> dict[str, object]:
        """The kind's options that were given, ready for its constructor."""
        given: dict[str, object] = {}
        for option in KIND_OPTIONS[self.kind]:
            value = getattr(self, option)
            if value is None:
                continue
            given[option] = frozenset(value) if option == "ignore_words" else value
        return given


class Thresholds(_Strict):
    """Scores from which a pair is a match, and from which it is a possible match."""

    match: float
    possible: float

    @model_validator(mode="after")
    def _possible_below_match(self) -> Thresholds:
        if self.possible > self.match:
            raise ValueError("`possible` must not exceed `match`")
        return self


class PartSpec(_Strict):
    """One field's contribution to a blocking key."""

    field: str
    transform: Literal[
        "value",
        "prefix",
        "suffix",
        "soundex",
        "digits",
        "email_local",
        "email_domain",
        "work_domain",
    ]
    length: int | None = Field(default=None, ge=1, le=32)

    @model_validator(mode="after")
    def _length_only_when_cut(self) -> PartSpec:
        check_field(self.field)
        cut = self.transform in CUT_TRANSFORMS
        if cut and self.length is None:
            raise ValueError(f"transform {self.transform!r} needs `length`")
        if not cut and self.length is not None:
            raise ValueError(f"`length` does not apply to transform {self.transform!r}")
        return self


class BlockingRuleSpec(_Strict):
    """The parts of one blocking key."""

    parts: tuple[PartSpec, ...] = Field(min_length=1, max_length=4)
    unordered: bool = False


class BlockingSpec(_Strict):
    """Which keys a record gets, and how big a block may grow before it is ignored."""

    max_block_size: int = Field(default=200, ge=1, le=100_000)
    max_candidates: int = Field(default=100, ge=1, le=10_000)
    rules: dict[RuleName, BlockingRuleSpec] = Field(min_length=1)


class RulesSpec(_Strict):
    """A whole rules file."""

    thresholds: Thresholds
    comparisons: dict[Identifier, ComparisonSpec] = Field(min_length=1)
    blocking: BlockingSpec
