"""Blocking keys: the short strings two records must share to be compared at all.

A blocking rule joins a few transformed field values into one key, prefixed
by the rule's name (`name:j500|s530`). Only records sharing at least one key
are compared, so a lookup costs what its blocks hold, not the whole store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from leads.email_domains import is_free_mail
from leads.fuzzy.folding import digits, fold

# The integrator's key column is this wide; a longer key is replaced by a
# digest of itself, which blocks the same records.
MAX_KEY_LENGTH = 64

# American Soundex codes (the National Archives' rules): letters that sound
# alike share a digit; vowels and h, w, y have none.
_SOUNDEX_CODES = {
    **dict.fromkeys("bfpv", "1"),
    **dict.fromkeys("cgjkqsxz", "2"),
    **dict.fromkeys("dt", "3"),
    "l": "4",
    **dict.fromkeys("mn", "5"),
    "r": "6",
}


def soundex(text: str) -> str | None:
    """The four-character Soundex code of a folded word (`robert` → `r163`)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return None
    code = [letters[0]]
    previous = _SOUNDEX_CODES.get(letters[0], "")
    for letter in letters[1:]:
        digit = _SOUNDEX_CODES.get(letter, "")
        if digit and digit != previous:
            code.append(digit)
            if len(code) == 4:
                break
        # h and w do not separate two letters of one code; vowels do.
        if letter not in "hw":
            previous = digit
    return "".join(code).ljust(4, "0")


def _email_local(text: str) -> str | None:
    if "@" not in text:
        return None
    local = text.rpartition("@")[0].lower().split("+", 1)[0].replace(".", "")
    return local or None


def _email_domain(text: str) -> str | None:
    if "@" not in text:
        return None
    return text.rpartition("@")[2].lower() or None


def _work_domain(text: str) -> str | None:
    # A free-mail domain (gmail.com) is shared by millions of unrelated people:
    # as part of a key it narrows nothing, and only fills blocks.
    domain = _email_domain(text)
    return None if domain is None or is_free_mail(domain) else domain


def _folded(text: str) -> str | None:
    folded = fold(text)
    return folded.replace(" ", "") if folded else None


def _soundex(text: str) -> str | None:
    folded = fold(text)
    return soundex(folded.replace(" ", "")) if folded else None


TRANSFORMS: dict[str, Callable[[str], str | None]] = {
    "value": _folded,
    "soundex": _soundex,
    "digits": digits,
    "email_local": _email_local,
    "email_domain": _email_domain,
    "work_domain": _work_domain,
}
# Transforms that keep only part of the result, `length` characters of it.
CUT_TRANSFORMS = frozenset({"prefix", "suffix"})


@dataclass(frozen=True)
class Part:
    """One field's contribution to a key."""

    field: str
    transform: str
    length: int | None = None

    def apply(self, value: str) -> str | None:
        if self.transform == "prefix":
            folded = _folded(value)
            return folded[: self.length] if folded else None
        if self.transform == "suffix":
            found = _folded(value)
            return found[-self.length :] if found else None
        return TRANSFORMS[self.transform](value)


@dataclass(frozen=True)
class BlockingRule:
    """A named recipe for one key.

    Attributes:
        name: the key's prefix, so keys of different rules never collide.
        parts: what each field contributes; a record lacking any part has no
            key under this rule.
        unordered: sort the parts before joining, so swapped fields (first
            and last name) give the same key.
    """

    name: str
    parts: tuple[Part, ...]
    unordered: bool = False

    def key(self, fields: dict[str, str]) -> str | None:
        """This rule's key for a record's text fields; None when a part is missing."""
        values = []
        for part in self.parts:
            value = fields.get(part.field)
            found = part.apply(value) if value else None
            if not found:
                return None
            values.append(found)
        if self.unordered:
            values.sort()
        key = f"{self.name}:{'|'.join(values)}"
        if len(key) <= MAX_KEY_LENGTH:
            return key
        digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        return f"{self.name}#{digest}"
