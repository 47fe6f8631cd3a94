"""E-mail sequences as `config/sequences.yaml` defines them, loaded and checked.

A sequence is an ordered list of steps. Each step has a stable `id` (what "this
lead already had this step" is judged by, so editing a sequence never re-sends
a step), a template, a subject, a delay from enrolment or from the previous
step, and a send window in the lead's own time. Enrolment rules choose which
leads enter; stop conditions end a lead's sequence at send time.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from leads.local_time import Delay, SendWindow, parse_delay, parse_window
from leads.store.steps import SETTLED
from leads.store.tables import Lead
from leads.tracebacks import PlainMessage

# Names a deployment and fills the 64-character `sequence` column of a step.
SequenceName = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
]
# A file stem in the templates folder: no separators, so no way out of it.
TemplateName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=128)
]
StepId = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=64)
]
Category = Literal["marketing", "transactional"]
# The doors a lead comes in by, which enrolment rules name. Intake's channel
# says more: `batch` is the API's batch route, `webhook:<source>` a webhook.
Channel = Literal["api", "import", "webhook"]
DOORS: dict[str, Channel] = {"batch": "api"}
# Stop conditions with a name; a lead field condition is a `FieldCondition`.
NamedCondition = Literal[
    "replied", "unsubscribed", "bounced", "converted", "lifecycle_stage_changed"
]
DEFAULT_STOPS: tuple[NamedCondition, ...] = (
    "replied",
    "unsubscribed",
    "bounced",
    "converted",
    "lifecycle_stage_changed",
)
# Step statuses after which nothing more happens to a step by itself.
SETTLED_STATUSES = frozenset(str(status) for status in SETTLED)
# `window: anytime` on a step sends it as soon as it is due.
ANYTIME = "anytime"
LEAD_FIELDS = frozenset(Lead.__table__.columns.keys())
# Lead columns holding JSON documents a condition may reach into (`custom.plan`).
DOCUMENT_FIELDS = frozenset({"custom", "crm_state", "email_state"})


class SequenceConfigError(PlainMessage, ValueError):
    """The sequences file cannot be read or is wrong; the message says where."""


class Window(BaseModel):
    """Hours of the lead's day (and days of its week) a step may go out in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hours: str = Field(description="`09:00-17:00`, the end exclusive.")
    days: str | list[str] = Field(
        "every day",
        description="`weekdays`, `weekends`, `every day`, `mon-fri`, `[mon, wed]`.",
    )

    @model_validator(mode="after")
    def _parses(self) -> Window:
        self.parsed()
        return self

    def parsed(self) -> SendWindow:
        """The window as the scheduler uses it."""
        return parse_window(self.hours, self.days)


class FieldCondition(BaseModel):
    """Stops the sequence when a lead field holds (or stops holding) a value."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str = Field(
        description="A lead field, or a key inside `custom`, `crm_state`, "
        "`email_state` (`crm_state.lifecycle_stage`)."
    )
    is_in: tuple[Any, ...] | None = Field(None, alias="in")
    not_in: tuple[Any, ...] | None = None
    at_least: float | None = None
    below: float | None = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, field: str) -> str:
        head, _, rest = field.partition(".")
        if head not in LEAD_FIELDS:
            raise ValueError(f"{head!r} is not a lead field")
        if rest and head not in DOCUMENT_FIELDS:
            raise ValueError(
                f"only {', '.join(sorted(DOCUMENT_FIELDS))} have keys; got {field!r}"
            )
        return field

    @model_validator(mode="after")
    def _one_test(self) -> FieldCondition:
        given = [
            name
            for name in ("is_in", "not_in", "at_least", "below")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "a field condition needs exactly one of `in`, `not_in`, `at_least`, "
                f"`below`; got {len(given)}"
            )
        return self

    def holds(self, lead: Lead) -> bool:
        """Whether the lead meets the condition now (a missing value never does)."""
        value = field_value(lead, self.field)
        if value is None:
            return False
        if self.is_in is not None:
            return value in self.is_in
        if self.not_in is not None:
            return value not in self.not_in
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        if self.at_least is not None:
            return value >= self.at_least
        return self.below is not None and value < self.below

    def describe(self) -> str:
        """The condition in words, for the timeline's stop reason."""
        for name, words in (
            ("is_in", "in"),
            ("not_in", "not in"),
            ("at_least", "at least"),
            ("below", "below"),
        ):
            value = getattr(self, name)
            if isinstance(value, tuple):
                value = list(value)
            if value is not None:
                return f"{self.field} {words} {value}"
        return self.field


StopCondition = NamedCondition | FieldCondition


class Enrolment(BaseModel):
    """Which leads enter the sequence by themselves (all others only on request)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: tuple[Channel, ...] = Field(
        ("api", "import", "webhook"), description="Doors a lead may come in by."
    )
    sources: tuple[str, ...] = Field(
        (), description="Lead `source` values let in; empty lets every source in."
    )
    min_score: int | None = Field(
        None, ge=0, le=100, description="Lowest score let in; unscored leads are not."
    )

    def admits(self, lead: Lead, channel: str) -> bool:
        """Whether the lead, changed through `channel`, enters the sequence."""
        if not lead.email or door(channel) not in self.channels:
            return False
        if self.sources and lead.source not in self.sources:
            return False
        if self.min_score is None:
            return True
        return lead.score is not None and lead.score >= self.min_score


class Step(BaseModel):
    """One e-mail of a sequence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: StepId = Field(
        description="Stable name of the step: what a lead's history is kept by, "
        "so a step keeps its id when its template, subject or place changes."
    )
    template: TemplateName = Field(
        description=(
            "Stem of `<template>.txt.j2` and `<template>.html.j2` in the "
            "templates folder."
        )
    )
    subject: str = Field(
        min_length=1, description="Subject line, a Jinja template over `lead`."
    )
    delay: str = Field("0", description="`0`, `30m`, `2h`, `3d`, `1w`, `1d12h`.")
    after: Literal["previous", "enrolment"] = Field(
        "previous",
        description="What the delay counts from; the first step's previous is "
        "the enrolment.",
    )
    window: Window | Literal["anytime"] | None = Field(
        None,
        description="When in the lead's week the step may go; unset: the "
        "sequence's window; `anytime`: as soon as it is due.",
    )

    @field_validator("delay", mode="before")
    @classmethod
    def _delay_parses(cls, delay: Any) -> str:
        text = str(delay)
        parse_delay(text)
        return text

    @property
    def parsed_delay(self) -> Delay:
        return parse_delay(self.delay)


class Sequence(BaseModel):
    """A named series of e-mails, sent one after another to each enrolled lead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    category: Category = Field(
        "marketing",
        description="Marketing e-mail stops at an unsubscribe; transactional only "
        "at a hard bounce.",
    )
    enrol: Enrolment | None = Field(
        None, description="Who enters by themselves; unset: only on request."
    )
    stop_when: tuple[StopCondition, ...] = Field(
        DEFAULT_STOPS, description="Conditions that end a lead's sequence."
    )
    window: Window | None = Field(
        None, description="The send window of every step that names none."
    )
    steps: tuple[Step, ...]

    @field_validator("steps")
    @classmethod
    def _has_distinct_steps(cls, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        # Checked after the steps themselves, so that a list of broken steps is
        # reported as broken steps, not also as empty.
        if not steps:
            raise ValueError("a sequence needs at least one step")
        seen: set[str] = set()
        for number, step in enumerate(steps, start=1):
            if step.id in seen:
                raise ValueError(
                    f"step {number} has the id {step.id!r} of an earlier step; "
                    "give each step its own `id`"
                )
            seen.add(step.id)
        return steps

    @model_validator(mode="after")
    def _transactional_ignores_opt_outs(self) -> Sequence:
        # A marketing opt-out must not stop transactional e-mail (a meeting
        # confirmation, a receipt); only a hard bounce does, and the
        # suppression list applies that to every category.
        if self.category != "transactional" or "unsubscribed" not in self.stop_when:
            return self
        if "stop_when" in self.model_fields_set:
            raise ValueError(
                "a transactional sequence cannot stop on `unsubscribed`: marketing "
                "opt-outs do not apply to it; remove it from `stop_when`"
            )
        kept = tuple(c for c in self.stop_when if c != "unsubscribed")
        object.__setattr__(self, "stop_when", kept)
        return self

    def window_of(self, step: Step) -> SendWindow | None:
        """The send window the step goes out in; None: any time."""
        if step.window == ANYTIME:
            return None
        chosen = step.window if isinstance(step.window, Window) else self.window
        return chosen.parsed() if chosen is not None else None

    def current_index(self, statuses: Mapping[str, str]) -> int | None:
        """The step a lead is at, given its steps' statuses by id; None: all done.

        It is the first step after the last one the lead had (sent, skipped or
        unknown), so a sequence edited since enrolment never sends a step again
        and a step added before the lead's place is not sent to it.
        """
        last_done = -1
        for index, step in enumerate(self.steps):
            if statuses.get(step.id) in SETTLED_STATUSES:
                last_done = index
        following = last_done + 1
        return following if following < len(self.steps) else None


class _SequencesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sequences: dict[SequenceName, Sequence]


def load_sequences(path: Path | str) -> dict[str, Sequence]:
    """Reads and checks a sequences file.

    Args:
        path: the YAML file, normally `config/sequences.yaml`.

    Returns:
        Each sequence by name, in the file's order.

    Raises:
        SequenceConfigError: the file cannot be read, is not YAML, or does not
            have the expected shape; the message names the file and, for each
            problem, the sequence, the step (1-based) and the field.
    """
    parsed = load_model(
        Path(path),
        _SequencesFile,
        SequenceConfigError,
        "a mapping with a `sequences` key",
        _describe,
    )
    return dict(parsed.sequences)


def enrolling(sequences: Mapping[str, Sequence], lead: Lead, channel: str) -> list[str]:
    """The sequences the lead, just created or changed through `channel`, enters."""
    return [
        name
        for name, sequence in sequences.items()
        if sequence.enrol is not None and sequence.enrol.admits(lead, channel)
    ]


def door(channel: str) -> str:
    """The door an intake channel is: `webhook:typeform` is `webhook`, `batch` `api`."""
    name = channel.partition(":")[0]
    return DOORS.get(name, name)


def field_value(lead: Lead, field: str) -> Any:
    """A lead field's value, or a key's inside one of its JSON documents."""
    head, _, key = field.partition(".")
    value = getattr(lead, head, None)
    if key:
        return (value or {}).get(key) if isinstance(value, dict | None) else None
    return value


def _describe(error: Any) -> str:
    """One validation problem as `sequence 'x', step 2, field 'subject': msg`."""
    location = list(error["loc"])
    where: list[str] = []
    if location[:1] == ["sequences"] and len(location) > 1:
        name, rest = location[1], location[2:]
        if rest == ["[key]"]:
            where.append(f"sequence name {name!r}")
            rest = []
        else:
            where.append(f"sequence {name!r}")
        if rest[:1] == ["steps"] and len(rest) > 1 and isinstance(rest[1], int):
            where.append(f"step {rest[1] + 1}")
            rest = rest[2:]
    else:
        rest = location
    # pydantic names the branches of a union it tried (`function-after[...]`,
    # `literal['replied', ...]`); a reader wants the field's own path.
    rest = [part for part in rest if not (isinstance(part, str) and "[" in part)]
    if rest:
        where.append("field " + repr(".".join(str(part) for part in rest)))
    return f"{', '.join(where) or 'the file'}: {error['msg']}"
