"""Values that mean "nothing here" in forms and spreadsheets, and where they apply."""

from __future__ import annotations

# Contact fields only. Names are never checked: `Null`, `None` and `Na` are real
# surnames, and a person's name is not a cell someone left unfilled.
CONTACT_FIELDS = frozenset(
    {
        "email",
        "phone",
        "company",
        "website",
        "job_title",
        "street",
        "city",
        "state",
        "postal_code",
        "country",
    }
)

# Compared case-folded after trimming. In `country` this makes `NA` empty
# rather than Namibia: spreadsheet tools (R, pandas) write `NA` for a missing
# cell far more often than a lead gives Namibia by its code; `NAM` or
# `Namibia` still reach it.
_PLACEHOLDERS = frozenset(
    {
        "-",
        "--",
        "–",
        "—",
        ".",
        "?",
        "n/a",
        "n.a.",
        "na",
        "none",
        "null",
        "unknown",
        "tbd",
        "select",
        # Spreadsheet error values: what a formula leaves when it failed.
        "#n/a",
        "#null!",
        "#value!",
        "#ref!",
        "#name?",
        "#div/0!",
        "#num!",
    }
)


def is_placeholder(text: str) -> bool:
    """Whether trimmed text says "no value" (empty included), whatever its case."""
    return not text or text.casefold() in _PLACEHOLDERS
