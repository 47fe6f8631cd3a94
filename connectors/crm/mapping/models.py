"""A CRM mapping file (`config/crm/<crm>.yaml`): its model, and loading it."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from connectors.crm.errors import CrmConfigError
from connectors.crm.mapping.transforms import (
    CONVERTERS,
    FieldPlan,
    MappedLead,
    map_lead,
)
from connectors.crm.protocol import CrmField
from leads.config_files import describe, load_model
from leads.store.tables import Lead

Transform = Literal["text", "number", "boolean", "date", "datetime", "picklist"]
Policy = Literal["always", "if_empty", "never_overwrite", "if_true"]
# What `POST /communication-preferences/v3/unsubscribe` takes as `legalBasis`
# (hubspot-api-client 12, PublicUpdateSubscriptionStatusRequest).
LegalBasis = Literal[
    "LEGITIMATE_INTEREST_PQL",
    "LEGITIMATE_INTEREST_CLIENT",
    "PERFORMANCE_OF_CONTRACT",
    "CONSENT_WITH_NOTICE",
    "NON_GDPR",
    "PROCESS_AND_STORE",
    "LEGITIMATE_INTEREST_OTHER",
]

LEAD_FIELDS = frozenset(Lead.__table__.columns.keys())
CUSTOM_PREFIX = "custom."
# The name an opt-out's source is read under; never sent as a field.
OPT_OUT_FIELD = "opt_out"
# What a constant or fallback may be: what `CrmRecord.fields` holds (a
# datetime is a date).
_VALUE_TYPES = (str, bool, int, float, date)


class MappingFileError(CrmConfigError):
    """A mapping file cannot be read or is wrong; the message lists every problem."""


class FieldRule(BaseModel):
    """How one CRM field gets its value from a lead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | None = Field(
        default=None,
        description="The lead field read: a column of `Lead`, or `custom.<name>`.",
    )
    constant: Any = Field(
        default=None,
        description='A fixed value written instead of a lead\'s; `""` clears.',
    )
    transform: Transform = Field(
        default="text", description="How the lead's value becomes the CRM's."
    )
    values: dict[str, str] | None = Field(
        default=None,
        description="Picklist: the lead's words (any case) → the CRM's options.",
    )
    default: str | None = Field(
        default=None,
        description="Picklist: the option for a word `values` does not hold.",
    )
    fallback: Any = Field(
        default=None,
        description="Written when the lead has no usable value for the field.",
    )
    truncate: bool | int | None = Field(
        default=None,
        description="Text: `true` cuts at the CRM field's length, a number at that.",
    )
    policy: Policy = Field(
        default="always",
        description="When the CRM's value may be replaced: always, if_empty, "
        "never_overwrite, or if_true (a boolean written only when true).",
    )

    @field_validator("values", mode="before")
    @classmethod
    def _words_are_text(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        words: dict[str, Any] = {}
        for word, option in values.items():
            if word is None or not str(word).strip():
                raise ValueError("a word to map is blank: remove it")
            if isinstance(word, bool):
                raise ValueError(
                    f"the word {word!r} was read by YAML as true/false: quote words "
                    "such as 'yes', 'no', 'on' and 'off'"
                )
            if isinstance(option, bool):
                raise ValueError(
                    f"the option for {word!r} was read by YAML as true/false: quote it"
                )
            if not isinstance(option, str) or not option.strip():
                raise ValueError(f"the option for {word!r} must be non-blank text")
            words[str(word) if isinstance(word, int | float) else word] = option
        folded = [str(word).strip().casefold() for word in words]
        repeated = sorted({word for word in folded if folded.count(word) > 1})
        if repeated:
            raise ValueError(
                f"{', '.join(map(repr, repeated))} appear more than once (words "
                "match in any case, so keep one of each)"
            )
        return words

    @field_validator("truncate", mode="before")
    @classmethod
    def _truncate_is_a_length(cls, truncate: Any) -> Any:
        if truncate is None or isinstance(truncate, bool):
            return truncate
        if isinstance(truncate, int) and truncate > 0:
            return truncate
        raise ValueError(
            f"expected true (the CRM field's length) or a number of characters "
            f"above 0, got {truncate!r}"
        )

    @model_validator(mode="after")
    def _coherent(self) -> FieldRule:
        given = self.model_fields_set
        if "constant" in given:
            reasons = _constant_problems(self)
        elif self.source is None:
            reasons = [
                "give `source` (a lead field such as first_name, or custom.<name>) "
                "or `constant` (a fixed value)"
            ]
        else:
            reasons = _source_problems(self)
        if self.policy == "if_true" and (
            self.has_constant or self.transform != "boolean"
        ):
            reasons.append(
                "`policy: if_true` writes a lead's boolean only when it is true, "
                "so it needs a `source` with `transform: boolean`"
            )
        if reasons:
            raise ValueError(", and ".join(reasons))
        return self

    @property
    def has_constant(self) -> bool:
        """Whether the field is a fixed value rather than read from the lead."""
        return "constant" in self.model_fields_set

    @property
    def can_be_empty(self) -> bool:
        """Whether some lead leaves the field out or clears it (no value is sure)."""
        if self.has_constant:
            return self.constant == ""
        return self.fallback is None


class OptOut(BaseModel):
    """How a lead's e-mail opt-out reaches HubSpot: an unsubscribe by address.

    HubSpot's `hs_email_optout` is read-only; an opt-out is written through the
    communication-preferences API, which unsubscribes an e-mail address from
    one subscription type
    (https://developers.hubspot.com/docs/api-reference/legacy/communication-preferences/v3/unsubscribe-contact).
    Salesforce needs none of this: its opt-out is the Lead field
    `HasOptedOutOfEmail`, mapped like any other.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        default="email_opt_out",
        description="The lead field that says the person opted out: a column of "
        "`Lead`, or `custom.<name>`; read as a boolean.",
    )
    subscription_id: str | None = Field(
        default=None,
        min_length=1,
        description="The subscription type to unsubscribe from (its `id` in "
        "`GET /communication-preferences/v3/definitions`). When not given, the "
        "account's one active marketing subscription type.",
    )
    legal_basis: LegalBasis | None = Field(
        default=None,
        description="Sent as `legalBasis`; HubSpot requires it in accounts with "
        "data privacy settings turned on.",
    )
    legal_basis_explanation: str | None = Field(
        default=None,
        min_length=1,
        description="Sent as `legalBasisExplanation`, with `legal_basis`.",
    )
    _reader: FieldPlan | None = PrivateAttr(default=None)

    @field_validator("subscription_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # HubSpot's ids are digits, which YAML reads as a number unless quoted.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        reasons = _unknown_source(source)
        if reasons:
            raise ValueError(", and ".join(reasons))
        return source

    @model_validator(mode="after")
    def _explained_basis(self) -> OptOut:
        if (self.legal_basis is None) != (self.legal_basis_explanation is None):
            raise ValueError(
                "give `legal_basis` and `legal_basis_explanation` together (HubSpot "
                "accounts with data privacy settings turned on need both) or neither"
            )
        return self

    def model_post_init(self, context: Any) -> None:
        self._reader = _plan(
            OPT_OUT_FIELD, FieldRule(source=self.source, transform="boolean")
        )

    def applies_to(self, lead: Mapping[str, Any]) -> bool:
        """Whether the lead opted out: its `source` reads as true."""
        assert self._reader is not None
        mapped = map_lead((self._reader,), lead, "UTC", None)
        return mapped.fields.get(OPT_OUT_FIELD) is True


class CrmMapping(BaseModel):
    """Everything a mapping file says: the CRM, and how each CRM field is filled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["hubspot", "salesforce"]
    fields: dict[str, FieldRule] = Field(
        description="CRM field name (as the CRM's API spells it) → its rule."
    )
    opt_out: OptOut | None = Field(
        default=None,
        description="HubSpot only: which subscription type an e-mail opt-out "
        "unsubscribes the lead from. Salesforce takes the opt-out as the Lead "
        "field HasOptedOutOfEmail.",
    )
    _plans: tuple[FieldPlan, ...] = PrivateAttr(default=())
    _unsubscribes: OptOut | None = PrivateAttr(default=None)

    @field_validator("fields")
    @classmethod
    def _named_fields(cls, fields: dict[str, FieldRule]) -> dict[str, FieldRule]:
        if not fields:
            raise ValueError("map at least one CRM field")
        for name in fields:
            if not name.strip() or any(part.isspace() for part in name):
                raise ValueError(
                    f"{name!r} is not a CRM field name: use the name the CRM's API "
                    "gives (firstname, LastName, Lead_Score__c), not its label"
                )
        return fields

    @model_validator(mode="after")
    def _opt_out_in_hubspot(self) -> CrmMapping:
        if self.provider == "salesforce" and self.opt_out is not None:
            raise ValueError(
                "opt_out: Salesforce keeps an opt-out in the Lead field "
                "HasOptedOutOfEmail; remove `opt_out` and map `HasOptedOutOfEmail: "
                "{source: email_opt_out, transform: boolean, policy: if_true}`"
            )
        return self

    def model_post_init(self, context: Any) -> None:
        self._plans = tuple(_plan(name, rule) for name, rule in self.fields.items())
        # HubSpot accounts write opt-outs even when the mapping says nothing of
        # them: a mapping saved before `opt_out` existed still passes them on.
        if self.provider == "hubspot":
            self._unsubscribes = self.opt_out or OptOut()

    @property
    def unsubscribes(self) -> OptOut | None:
        """How opt-outs are written outside the fields; None where they are fields.

        HubSpot's: the mapping's `opt_out`, or the default one when it has none.
        """
        return self._unsubscribes

    @property
    def needs_current_record(self) -> bool:
        """Whether a policy needs the CRM's current record read before writing."""
        return bool(self.fields_to_read)

    @property
    def fields_to_read(self) -> tuple[str, ...]:
        """The CRM fields to read first: each field whose policy compares with it.

        `if_empty` needs the field's value; `never_overwrite` only needs to know
        whether the record exists, which reading any field of it tells.
        `always` and `if_true` go by the lead alone.
        """
        return tuple(
            name
            for name, rule in self.fields.items()
            if rule.policy in ("if_empty", "never_overwrite")
        )

    def apply(
        self,
        lead: Mapping[str, Any],
        *,
        default_zone: str = "UTC",
        crm_fields: Mapping[str, CrmField] | None = None,
    ) -> MappedLead:
        """The lead as CRM fields, with a warning for each value changed or left out.

        Args:
            lead: every column of the stored lead, by name (`custom` a dict).
            default_zone: the IANA zone a date is taken in when the lead has no
                `timezone` of its own.
            crm_fields: the CRM's fields by name, from `list_fields`; gives the
                lengths `truncate: true` cuts at and the picklist options a
                value may pass through as. Without it, `truncate: true` cuts
                nothing and an unmapped picklist word without a default is left
                out.

        Raises:
            ValueError: `default_zone` is not a time zone name.
        """
        return map_lead(self._plans, lead, default_zone, crm_fields)


def load_mapping(path: Path | str) -> CrmMapping:
    """Reads and checks a mapping file.

    Args:
        path: the YAML file, normally `config/crm/hubspot.yaml` or
            `config/crm/salesforce.yaml`.

    Raises:
        MappingFileError: the file cannot be read, is not YAML, or is wrong; the
            message names the file and, for each problem, the CRM field
            (`fields.LeadSource`) and what is wrong.
    """
    return load_model(
        Path(path),
        CrmMapping,
        MappingFileError,
        "a mapping with `provider` and `fields` keys",
        _explain,
    )


def load_mapping_document(document: Any, *, origin: str) -> CrmMapping:
    """Checks a mapping given as data (a saved or posted one) like a file.

    Raises:
        MappingFileError: the document is wrong; the message names `origin`
            and, for each problem, the CRM field and what is wrong.
    """
    if not isinstance(document, dict):
        raise MappingFileError(
            f"{origin}: expected a mapping with `provider` and `fields` keys, "
            f"got {type(document).__name__}"
        )
    try:
        return CrmMapping.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(map(_explain, exc.errors()))
        raise MappingFileError(f"{origin}: {problems}") from exc


def _explain(problem: Any) -> str:
    location = problem["loc"]
    if location[:1] == ("fields",) and len(location) >= 2:
        name = location[1]
        if problem["type"] in ("model_type", "model_attributes_type"):
            return (
                f"fields.{name}: expected a mapping such as {{source: first_name}} "
                "or {constant: lead}"
            )
        if problem["type"] == "extra_forbidden" and len(location) == 3:
            return (
                f"fields.{name}: unknown key {location[2]!r} (a field takes "
                f"{', '.join(FieldRule.model_fields)})"
            )
    return describe(problem)


def _unknown_source(source: str) -> list[str]:
    if source.startswith(CUSTOM_PREFIX) or source == "custom":
        if not source.removeprefix("custom").removeprefix(".").strip():
            return ["name the custom field: custom.<name>"]
    elif source not in LEAD_FIELDS:
        close = difflib.get_close_matches(source, sorted(LEAD_FIELDS), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        return [
            f"unknown lead field {source!r}{hint}: use a lead field or custom.<name>"
        ]
    return []


def _source_problems(rule: FieldRule) -> list[str]:
    reasons = _unknown_source(rule.source or "")
    given = rule.model_fields_set
    picklist = rule.transform == "picklist"
    if rule.values is not None and not picklist:
        reasons.append(
            "`values` is a picklist map and needs `transform: picklist` "
            f"(the transform is {rule.transform})"
        )
    if rule.default is not None and not picklist:
        reasons.append(
            "`default` is the picklist option for unmapped words and needs "
            f"`transform: picklist` (the transform is {rule.transform}). Use "
            "`fallback` for a value when the lead has none"
        )
    if rule.default is not None and not rule.default.strip():
        reasons.append("`default` must be non-blank text")
    if rule.truncate and rule.transform != "text":
        reasons.append(f"`truncate` cuts text and does not apply to {rule.transform}")
    if "fallback" in given:
        reasons.extend(_value_problems("fallback", rule.fallback))
        if isinstance(rule.fallback, str) and not rule.fallback.strip():
            reasons.append(
                "a blank fallback would clear the CRM's value, which a lead's blank "
                'never does. Remove it, or use `constant: ""` to clear on purpose'
            )
    return reasons


def _constant_problems(rule: FieldRule) -> list[str]:
    reasons: list[str] = []
    if rule.source is not None:
        reasons.append("give `source` or `constant`, not both")
    if rule.constant is None:
        reasons.append(
            '`constant: null` writes nothing. Use `constant: ""` to clear the '
            "CRM's value, or remove the field"
        )
    else:
        reasons.extend(_value_problems("constant", rule.constant))
    extras = [
        key
        for key in ("transform", "values", "default", "fallback", "truncate")
        if key in rule.model_fields_set
    ]
    if extras:
        reasons.append(
            f"{', '.join(f'`{key}`' for key in extras)} apply to a `source` (a "
            "constant is written as given)"
        )
    return reasons


def _value_problems(key: str, value: Any) -> list[str]:
    if value is None:
        return [f"`{key}: null` gives no value: remove it"]
    if not isinstance(value, _VALUE_TYPES):
        return [
            f"`{key}` must be text, a number, true/false, a date or a date-time, "
            f"not a {type(value).__name__}"
        ]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"`{key}` must be a finite number"]
    if isinstance(value, datetime) and value.utcoffset() is None:
        return [
            f"`{key}` {value.isoformat()} has no time zone: write it with one "
            "(2024-03-10T09:00:00Z)"
        ]
    return []


def _plan(name: str, rule: FieldRule) -> FieldPlan:
    convert = CONVERTERS[rule.transform]
    if rule.has_constant:
        return FieldPlan(name, convert, has_constant=True, constant=rule.constant)
    source = rule.source or ""
    from_custom = source.startswith(CUSTOM_PREFIX)
    choices = (
        {word.strip().casefold(): option for word, option in rule.values.items()}
        if rule.values
        else None
    )
    return FieldPlan(
        name,
        convert,
        source=source.removeprefix(CUSTOM_PREFIX) if from_custom else source,
        from_custom=from_custom,
        fallback=rule.fallback,
        truncate=rule.truncate,
        choices=choices,
        default=rule.default,
    )
