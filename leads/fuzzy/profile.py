"""A lead's profile: its values prepared once for comparing, and its blocking keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Profile:
    """The precomputed form of one lead under one set of rules.

    Build it with `MatchRules.profile`; a profile only compares with profiles
    made by the same rules.

    Attributes:
        values: one prepared value per comparison, in the rules' order (None
            where the lead has no value).
        keys: the lead's blocking keys.
        rarity: per comparison, the bits an exact agreement on this lead's
            value adds or takes away for its rarity (0 without frequencies).
    """

    values: tuple[Any, ...]
    keys: frozenset[str]
    rarity: tuple[float, ...]
