"""The lead as callers send it and as the store returns it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from leads.fields import READ_ONLY_FIELDS, TEXT_FIELDS
from leads.names import clean_name
from leads.normalise import clean_text, parse_email
from leads.placeholders import is_placeholder


class LeadStatus(StrEnum):
    NEW = "new"
    WORKING = "working"
    QUALIFIED = "qualified"
    UNQUALIFIED = "unqualified"
    CONVERTED = "converted"
    UNSUBSCRIBED = "unsubscribed"


# The standard lead statuses of the CRMs users export from, as `header_key`-like
# keys (case-folded, letters only): Salesforce's Lead Status picklist and
# HubSpot's `hs_lead_status`. Anything else is refused with the values we take.
CRM_STATUSES = {
    "opennotcontacted": LeadStatus.NEW,
    "workingcontacted": LeadStatus.WORKING,
    "closedconverted": LeadStatus.CONVERTED,
    "closednotconverted": LeadStatus.UNQUALIFIED,
    "open": LeadStatus.NEW,
    "inprogress": LeadStatus.WORKING,
    "attemptedtocontact": LeadStatus.WORKING,
    "connected": LeadStatus.WORKING,
    "opendeal": LeadStatus.QUALIFIED,
    "badtiming": LeadStatus.UNQUALIFIED,
}


def _status_key(value: str) -> str:
    return "".join(char for char in value.casefold() if char.isalpha())


Outcome = Literal["created", "updated", "merged", "possible_duplicate"]


class LeadInput(BaseModel):
    """A lead as a caller submits it; fields not named here are kept in `custom`."""

    model_config = ConfigDict(
        extra="allow",
        # Phones and postal codes often arrive as JSON numbers.
        coerce_numbers_to_str=True,
        json_schema_extra={
            "example": {
                "email": "ada@example.com",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "company": "Analytical Engines Ltd",
                "phone": "+1 415 555 0100",
                "source": "webform",
                "utm_campaign": "spring",
            }
        },
    )

    email: str | None = Field(None, max_length=TEXT_FIELDS["email"])
    phone: str | None = Field(None, max_length=TEXT_FIELDS["phone"])
    first_name: str | None = Field(None, max_length=TEXT_FIELDS["first_name"])
    last_name: str | None = Field(None, max_length=TEXT_FIELDS["last_name"])
    company: str | None = Field(None, max_length=TEXT_FIELDS["company"])
    job_title: str | None = Field(None, max_length=TEXT_FIELDS["job_title"])
    website: str | None = Field(None, max_length=TEXT_FIELDS["website"])
    street: str | None = Field(None, max_length=TEXT_FIELDS["street"])
    city: str | None = Field(None, max_length=TEXT_FIELDS["city"])
    state: str | None = Field(None, max_length=TEXT_FIELDS["state"])
    postal_code: str | None = Field(None, max_length=TEXT_FIELDS["postal_code"])
    country: str | None = Field(None, max_length=TEXT_FIELDS["country"])
    timezone: str | None = Field(None, max_length=TEXT_FIELDS["timezone"])
    notes: str | None = Field(None, max_length=TEXT_FIELDS["notes"])
    source: str | None = Field(None, max_length=TEXT_FIELDS["source"])
    status: LeadStatus | None = None
    captured_at: AwareDatetime | None = Field(
        None, description="When the lead was captured at its source, with a zone."
    )
    custom: dict[str, Any] | None = Field(
        None, description="Extra fields; unknown top-level fields land here too."
    )

    @field_validator("email", mode="before")
    @classmethod
    def _email_is_text(cls, value: Any) -> Any:
        # Numbers become text for the other fields (phones, postal codes); no
        # number is an address, and e-mail-validator's word on "5" would not
        # say what was wrong.
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise PydanticCustomError(
                "invalid_email",
                "an e-mail address is text such as ada@example.com, not the number "
                "{number}",
                {"number": value},
            )
        return value

    @field_validator("email")
    @classmethod
    def _valid_email(cls, value: str | None) -> str | None:
        # Checked here, not only when cleaning, so that one answer lists every
        # bad field at once.
        text = clean_text(value)
        if text is not None and not is_placeholder(text):
            try:
                parse_email(text)
            except ValueError as exc:
                raise PydanticCustomError("invalid_email", str(exc)) from exc
        return value

    @field_validator("status", mode="before")
    @classmethod
    def _crm_status(cls, value: Any) -> Any:
        # Files exported from a CRM carry its own status words.
        if not isinstance(value, str):
            return value
        text = clean_text(value)
        if text is None or is_placeholder(text):
            return None
        return CRM_STATUSES.get(_status_key(text), text.lower())

    @field_validator("first_name", "last_name")
    @classmethod
    def _one_line_name(cls, value: str | None) -> str | None:
        # A line break in a name would become a header line of the e-mails
        # that greet the person; refused here too, so one answer lists it
        # beside every other bad field. NUL keeps its own reason, given when
        # the fields are cleaned.
        text = clean_text(value)
        if text is not None and "\x00" not in text:
            try:
                clean_name(text)
            except ValueError as exc:
                raise PydanticCustomError("control_characters", str(exc)) from exc
        return value

    def given(self) -> dict[str, Any]:
        """The fields the caller actually sent, extras folded into `custom`.

        A field sent as `null` is included (as None); a field left out is not.
        """
        values: dict[str, Any] = {}
        for name in self.model_fields_set - {"custom"}:
            if name in type(self).model_fields:
                values[name] = getattr(self, name)
        extras = {
            k: v
            for k, v in (self.model_extra or {}).items()
            if k not in READ_ONLY_FIELDS
        }
        if "custom" in self.model_fields_set or extras:
            custom = (
                dict(self.custom or {}) if "custom" in self.model_fields_set else {}
            )
            custom.update(extras)
            values["custom"] = custom if custom or self.custom is not None else None
        return values


class LeadView(BaseModel):
    """A stored lead."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str | None = Field(description="Normalised key: trimmed, lower-cased.")
    email_display: str | None = Field(description="The address as it was typed.")
    phone: str | None = Field(description="E.164.")
    phone_raw: str | None = Field(description="The phone as given, when not valid.")
    first_name: str | None
    last_name: str | None
    company: str | None
    job_title: str | None
    website: str | None
    street: str | None
    city: str | None
    state: str | None
    postal_code: str | None
    country: str | None
    timezone: str | None
    notes: str | None
    source: str | None
    status: LeadStatus
    score: int | None
    score_reasons: list[str]
    warnings: list[str]
    flags: list[str]
    crm_id: str | None
    crm_sync_status: str
    crm_sync_reason: str | None
    crm_synced_at: datetime | None
    crm_state: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "What the CRM last said of the lead: converted, lifecycle stage, "
            "opted out, replied."
        ),
    )
    email_opt_out: bool = Field(
        False,
        description="The person unsubscribed from (or complained about) marketing "
        "e-mail; the CRM's opt-out follows on the next sync.",
    )
    email_state: dict[str, Any] = Field(
        default_factory=dict,
        description="When e-mail events last happened: `unsubscribed_at`, "
        "`complained_at`, `bounced_at`, `replied_at`.",
    )
    custom: dict[str, Any]
    captured_at: datetime | None
    created_at: datetime
    updated_at: datetime


class LeadResult(LeadView):
    """A lead just written, and what the write did."""

    outcome: Outcome


class TimelineEventView(BaseModel):
    """One entry of a lead's timeline."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    occurred_at: datetime
    kind: str
    source: str | None
    flow_run_id: str | None
    detail: dict[str, Any]
