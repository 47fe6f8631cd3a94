"""Line breaks, tabs and other control characters: refused, flattened or kept."""

from __future__ import annotations

import re
import unicodedata

# Fields whose text may span lines; every other text field is one line.
MULTI_LINE_FIELDS = frozenset({"street", "notes"})

# U+2028 and U+2029 are not in category Cc, but mail clients, JSON readers and
# `str.splitlines` all break lines on them.
_LINE_SEPARATORS = "\u2028\u2029"

# `\s` already covers tab, CR, LF, VT, FF, the C1 NEL and the separators above.
_ONE_LINE_RUN = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")
_LINE_BREAK = re.compile(r"\r\n?|[\x85\u2028\u2029]")


def _is_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc" or char in _LINE_SEPARATORS


def has_control_characters(text: str) -> bool:
    """Whether the text holds a line break, a tab or another control character."""
    return any(_is_control(char) for char in text)


def to_one_line(text: str) -> str:
    """The text with every run of white space and control characters as one space."""
    return _ONE_LINE_RUN.sub(" ", text)


def keep_line_breaks(text: str) -> str:
    """Multi-line text with LF line ends; a tab becomes a space, other controls go.

    A tab is spacing, so it turns into a space rather than joining two words.
    """
    text = _LINE_BREAK.sub("\n", text).replace("\t", " ")
    return "".join(char for char in text if char == "\n" or not _is_control(char))
