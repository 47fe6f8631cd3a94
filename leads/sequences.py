"""E-mail sequences as `config/sequences.yaml` defines them, loaded and checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from leads.config_files import load_model

# Names a deployment and fills the 64-character `sequence` column of a step.
SequenceName = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
]
# A file stem in the templates folder: no separators, so no way out of it.
TemplateName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=128)
]


class SequenceConfigError(ValueError):
    """The sequences file cannot be read or is wrong; the message says where."""


class Step(BaseModel):
    """One e-mail of a sequence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: TemplateName = Field(
        description=(
            "Stem of `<template>.txt.j2` and `<template>.html.j2` in the "
            "templates folder."
        )
    )
    subject: str = Field(
        min_length=1, description="Subject line, a Jinja template over `lead`."
    )


class Sequence(BaseModel):
    """A named series of e-mails; step 1 goes out when a lead is enrolled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: tuple[Step, ...]

    @field_validator("steps")
    @classmethod
    def _has_steps(cls, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        # Checked after the steps themselves, so that a list of broken steps is
        # reported as broken steps, not also as empty.
        if not steps:
            raise ValueError("a sequence needs at least one step")
        return steps


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
    if rest:
        where.append("field " + repr(".".join(str(part) for part in rest)))
    return f"{', '.join(where) or 'the file'}: {error['msg']}"
