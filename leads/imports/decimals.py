"""Reading a number written with a decimal comma or a decimal point."""

from __future__ import annotations

import re
from decimal import Decimal

# Spaces (with the no-break ones French and Swiss software write) and the
# Swiss apostrophe also separate thousands.
_SPACE_GROUPING = " \u00a0\u202f'\u2019"


def parse_decimal(text: str, decimal_mark: str | None = None) -> Decimal:
    """The exact decimal a person wrote, whichever mark separates its fraction.

    `1.234,50`, `1,234.50` and `1 234,50` are all 1234.50, and `12,5` is 12.5:
    with both marks present the last one is the decimal mark, a mark written
    more than once separates thousands, and a single mark not followed by
    exactly three digits is the decimal mark. Digits after the decimal mark
    are kept, trailing zeros too.

    Args:
        text: the cell's text; surrounding white space and a sign are allowed.
        decimal_mark: `","` or `"."` when the column's decimal mark is known;
            needed for a value such as `1,234`, which may be either.

    Returns:
        The value as a `Decimal`.

    Raises:
        ValueError: the text is not a number, groups its thousands unevenly,
            or is ambiguous and no decimal mark was given.
    """
    if decimal_mark not in (None, ",", "."):
        raise ValueError(f"decimal_mark must be ',' or '.', not {decimal_mark!r}")
    written = text.strip()
    sign = written[:1] if written[:1] in ("+", "-") else ""
    digits = written[len(sign) :]
    mark = decimal_mark or _decimal_mark(written, digits)
    grouping = re.escape(("." if mark == "," else ",") + _SPACE_GROUPING)

    shape = re.fullmatch(
        rf"(?P<whole>[0-9]{{1,3}}(?P<sep>[{grouping}])[0-9]{{3}}"
        rf"(?:(?P=sep)[0-9]{{3}})*|[0-9]*)"
        rf"(?:{re.escape(mark)}(?P<fraction>[0-9]+))?",
        digits,
    )
    if shape is None or not (shape["whole"] or shape["fraction"]):
        raise ValueError(
            f"{text!r} is not a number; expected digits with at most one decimal "
            f"mark ({mark!r}) and any thousands separated in groups of three"
        )

    whole = re.sub("[^0-9]", "", shape["whole"]) or "0"
    fraction = f".{shape['fraction']}" if shape["fraction"] else ""
    return Decimal(f"{'-' if sign == '-' else ''}{whole}{fraction}")


def _decimal_mark(written: str, digits: str) -> str:
    commas, points = digits.count(","), digits.count(".")
    if commas and points:
        return "," if digits.rfind(",") > digits.rfind(".") else "."
    if commas + points != 1:
        # No mark at all, or one mark written several times: that one groups
        # thousands, so the decimal mark is the other.
        return "," if points else "."

    mark = "," if commas else "."
    whole, fraction = digits.split(mark)
    if len(fraction) == 3 and 1 <= len(whole) <= 3 and not whole.startswith("0"):
        other = "." if mark == "," else ","
        raise ValueError(
            f"{written!r} is ambiguous: {mark!r} may be its decimal mark or "
            "separate its thousands; expected a value with both marks, or give "
            f"the column's decimal mark ({mark!r} or {other!r})"
        )
    return mark
