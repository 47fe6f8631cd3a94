"""The verdict on a pair of leads: match, possible or distinct, with its reasons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Decision = Literal["match", "possible", "distinct"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What comparing a new lead with a stored one concluded.

    Attributes:
        decision: `match` (the same person), `possible` (ask a person) or
            `distinct`.
        score: the summed weight of evidence; higher is more alike. Only
            scores under one set of rules are comparable.
        reasons: short codes for what agreed and disagreed (`same_phone`,
            `name_similar`, `different_date_of_birth`, `names_swapped`),
            strongest evidence first.
    """

    decision: Decision
    score: float
    reasons: tuple[str, ...]
