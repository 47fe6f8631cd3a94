"""Folded text: the form two spellings of one value share before they are compared."""

from __future__ import annotations

import re
import unicodedata

# Letters NFKD leaves whole because Unicode does not treat them as a base
# letter plus a mark; people type the plain letters for them on most keyboards.
_WHOLE_LETTERS = str.maketrans(
    {
        "ø": "o",
        "æ": "ae",
        "œ": "oe",
        "ł": "l",
        "đ": "d",
        "ð": "d",
        "þ": "th",
        "ı": "i",
    }
)
# Apostrophes and the marks typed for them join a name's parts (O'Neil is
# ONeil); every other run of punctuation separates words.
_APOSTROPHES = re.compile(r"['’‘`´ʼ]")
_SEPARATORS = re.compile(r"[^0-9a-z]+")
_NOT_DIGITS = re.compile(r"[^0-9]+")


def fold(text: str | None) -> str | None:
    """Lower-case words of ASCII letters and digits, single-spaced; None when empty.

    Accents are dropped (`Zoë` → `zoe`), apostrophes vanish (`O'Neil` →
    `oneil`) and any other punctuation or line break becomes a space
    (`Smith-Jones` → `smith jones`).
    """
    if not text:
        return None
    plain = text.lower()
    if not plain.isascii():
        decomposed = unicodedata.normalize("NFKD", text.casefold())
        plain = "".join(c for c in decomposed if not unicodedata.combining(c))
        plain = plain.translate(_WHOLE_LETTERS)
    words = _SEPARATORS.sub(" ", _APOSTROPHES.sub("", plain)).strip()
    return words or None


def digits(text: str | None) -> str | None:
    """Only the digits of the text, or None when it has none."""
    if not text:
        return None
    return _NOT_DIGITS.sub("", text) or None
