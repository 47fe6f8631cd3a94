"""Comparison kinds: how two prepared values of one field agree, as a level.

Every kind turns a stored value into a prepared form once (`prepare`), and
grades two prepared values into one of four levels (`level`). What a level is
worth is not the kind's business: the rules give each comparison a weight per
level. A value that is missing on either side is never graded, so missing
never counts as disagreement.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from rapidfuzz import fuzz
from rapidfuzz.distance import OSA, Hamming, JaroWinkler

from leads.email_domains import is_free_mail
from leads.fuzzy.folding import digits, fold

EXACT = 0
SIMILAR = 1
PARTIAL = 2
DIFFERENT = 3
LEVELS = ("exact", "similar", "partial", "different")
# Pairs of values whose level a kind remembers (see `Graded`): with the names
# they hold alive, about 200 bytes each, so a few megabytes per kind. More
# helps little: the pairs that recur are those of the commonest names.
REMEMBERED_LEVELS = 20_000


class Kind(Protocol):
    """A way of comparing one field."""

    def prepare(self, value: Any) -> Any | None:
        """The precomputed form of a stored value, or None when there is none."""
        ...

    def level(self, a: Any, b: Any) -> int:
        """How two prepared values agree: EXACT, SIMILAR, PARTIAL or DIFFERENT."""
        ...


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _one_typo(a: str, b: str) -> bool:
    """Whether one wrong, missing or extra character or one swap parts them."""
    return OSA.distance(a, b, score_cutoff=1) <= 1


class Graded(dict[tuple[str, str], int]):
    """Levels already graded, by the pair of values, for a kind slow to grade.

    Names and company names recur (a few are very common), and a stored lead
    is compared with every new lead in its blocks, so the same pair is graded
    again and again. When full it starts again empty: a dict's get and set
    need no lock, and a clear at worst costs another thread a grading.
    """

    def keep(self, pair: tuple[str, str], level: int) -> int:
        if len(self) >= REMEMBERED_LEVELS:
            self.clear()
        self[pair] = level
        return level


@dataclass(frozen=True)
class ExactKind:
    """Agree only when the folded values are equal (state, country, an id)."""

    def prepare(self, value: Any) -> str | None:
        return fold(_text(value))

    def level(self, a: str, b: str) -> int:
        return EXACT if a == b else DIFFERENT


@dataclass(frozen=True)
class CodeKind:
    """Codes typed by hand (postal codes, id numbers): one typo is still similar."""

    def prepare(self, value: Any) -> str | None:
        folded = fold(_text(value))
        return folded.replace(" ", "") if folded else None

    def level(self, a: str, b: str) -> int:
        if a == b:
            return EXACT
        # On a one- or two-character code one edit is most of the code.
        if min(len(a), len(b)) >= 3 and _one_typo(a, b):
            return SIMILAR
        return DIFFERENT


@dataclass(frozen=True)
class NameKind:
    """A person's name part: typos, initials, spacing and punctuation forgiven.

    Attributes:
        similar: Jaro-Winkler similarity from which two names are similar.
        partial: Jaro-Winkler similarity from which two names are partly alike.
    """

    similar: float = 0.92
    partial: float = 0.8
    _graded: Graded = field(
        default_factory=Graded, init=False, repr=False, compare=False
    )

    def prepare(self, value: Any) -> Name | None:
        folded = fold(_text(value))
        return Name(folded) if folded else None

    def level(self, a: str, b: str) -> int:
        if a == b:
            return EXACT
        pair = (a, b)
        found = self._graded.get(pair)
        if found is None:
            found = self._graded.keep(pair, self._grade(Name.of(a), Name.of(b)))
        return found

    def _grade(self, a: Name, b: Name) -> int:
        if a.joined == b.joined:
            return EXACT
        shortest = min(len(a.joined), len(b.joined))
        if shortest >= 3 and _one_typo(a.joined, b.joined):
            return SIMILAR
        similarity = JaroWinkler.similarity(a, b)
        if similarity >= self.similar:
            return SIMILAR
        # Letters typed out of order (`Rbeort`) keep the name's letters; all
        # but one of them kept is a weaker sign.
        if shortest >= 4 and a.letters == b.letters:
            return SIMILAR
        if (
            _initial_of(a, b)
            or _shares_a_word(a, b)
            or similarity >= self.partial
            or (shortest >= 5 and _one_typo(a.letters, b.letters))
        ):
            return PARTIAL
        return DIFFERENT


class Name(str):
    """A folded name part, with the forms `NameKind.level` compares made once.

    It is the folded text itself to everything else (equal, hashed and
    counted as that text): a stored lead's name is compared with many.

    Attributes:
        joined: the name without its spaces (`mary ann` → `maryann`).
        letters: the joined name's letters in sorted order.
    """

    joined: str
    letters: str

    def __new__(cls, folded: str) -> Name:
        name = super().__new__(cls, folded)
        name.joined = folded.replace(" ", "")
        name.letters = "".join(sorted(name.joined))
        return name

    @classmethod
    def of(cls, value: str) -> Name:
        """`value` as a Name (made now when it is a plain string)."""
        return value if isinstance(value, Name) else cls(value)


def _initial_of(a: str, b: str) -> bool:
    """Whether one name is the initial of the other (`j` and `john`)."""
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    return len(short) == 1 and long.startswith(short)


def _shares_a_word(a: str, b: str) -> bool:
    """Whether a multi-word name holds the other's word (`mary ann` and `ann`)."""
    if " " not in a and " " not in b:
        return False
    return bool(set(a.split()) & set(b.split()))


@dataclass(frozen=True)
class Words:
    """Folded text without the words that carry no identity, and its word set."""

    text: str
    words: frozenset[str]


@dataclass(frozen=True)
class TextKind:
    """Free text such as a company or a city: word order and extra words forgiven.

    Attributes:
        similar: similarity (0–1) from which two texts are similar: the better
            of Jaro-Winkler and the ratio of the sorted words.
        partial: share (0–1) of the shorter text's words found in the other
            (rapidfuzz's token-set ratio) from which they are partly alike.
        ignore_words: words dropped before comparing (`inc`, `ltd`, `the`).
    """

    similar: float = 0.9
    partial: float = 0.75
    ignore_words: frozenset[str] = frozenset()
    _graded: Graded = field(
        default_factory=Graded, init=False, repr=False, compare=False
    )

    def prepare(self, value: Any) -> Words | None:
        folded = fold(_text(value))
        if folded is None:
            return None
        kept = [word for word in folded.split() if word not in self.ignore_words]
        if not kept:
            return None
        return Words(" ".join(kept), frozenset(kept))

    def level(self, a: Words, b: Words) -> int:
        if a.text == b.text:
            return EXACT
        # The text is the words joined: it stands for both.
        pair = (a.text, b.text)
        found = self._graded.get(pair)
        if found is None:
            found = self._graded.keep(pair, self._grade(a, b))
        return found

    def _grade(self, a: Words, b: Words) -> int:
        if a.words == b.words:
            return EXACT
        cutoff = self.similar * 100
        if (
            fuzz.token_sort_ratio(a.text, b.text, score_cutoff=cutoff)
            or JaroWinkler.similarity(a.text, b.text) >= self.similar
        ):
            return SIMILAR
        if fuzz.token_set_ratio(a.text, b.text, score_cutoff=self.partial * 100):
            return PARTIAL
        return DIFFERENT


# The words of a street address written out and abbreviated alike; the
# abbreviation is the form kept (USPS Publication 28 and Australia Post use
# these same short forms).
_STREET_WORDS = {
    "street": "st",
    "avenue": "ave",
    "av": "ave",
    "road": "rd",
    "drive": "dr",
    "boulevard": "blvd",
    "lane": "ln",
    "place": "pl",
    "court": "ct",
    "crescent": "cres",
    "circuit": "cct",
    "terrace": "tce",
    "highway": "hwy",
    "parkway": "pkwy",
    "square": "sq",
    "apartment": "apt",
    "suite": "ste",
    "north": "n",
    "south": "s",
    "east": "e",
    "west": "w",
    "first": "1st",
    "second": "2nd",
    "third": "3rd",
}


@dataclass(frozen=True)
class Street:
    """A street address split into its house number and its other words."""

    number: str | None
    text: str


@dataclass(frozen=True)
class StreetKind:
    """A street address: abbreviations forgiven, another house number is not.

    Attributes:
        similar: sorted-word ratio (0–1) from which two streets are similar.
        partial: token-set ratio (0–1) from which they are partly alike.
    """

    similar: float = 0.9
    partial: float = 0.75

    def prepare(self, value: Any) -> Street | None:
        folded = fold(_text(value))
        if folded is None:
            return None
        number = None
        words = []
        for word in folded.split():
            if number is None and word[0].isdigit():
                number = word
            else:
                words.append(_STREET_WORDS.get(word, word))
        return Street(number, " ".join(words))

    def level(self, a: Street, b: Street) -> int:
        if a.number and b.number and a.number != b.number:
            return DIFFERENT
        if a.text == b.text:
            return EXACT if a.number == b.number else SIMILAR
        if fuzz.token_sort_ratio(a.text, b.text, score_cutoff=self.similar * 100):
            return SIMILAR
        if fuzz.token_set_ratio(a.text, b.text, score_cutoff=self.partial * 100):
            return PARTIAL
        return DIFFERENT


@dataclass(frozen=True)
class Day:
    """A date as its eight digits (YYYYMMDD) and, when it is a real day, its ordinal."""

    digits: str
    ordinal: int | None


def _day(text: str) -> Day | None:
    compact = digits(text)
    if compact is None or len(compact) != 8:
        return None
    try:
        ordinal = date(
            int(compact[:4]), int(compact[4:6]), int(compact[6:])
        ).toordinal()
    except ValueError:
        # A day that cannot exist (a typo such as month 13) still compares
        # digit by digit.
        ordinal = None
    return Day(compact, ordinal)


@dataclass(frozen=True)
class DateKind:
    """A date such as a date of birth, written YYYY-MM-DD or YYYYMMDD.

    Similar: day and month swapped, one digit wrong or two adjacent digits
    swapped, or no more than `similar_days` apart. Partly alike: no more than
    `near_days` apart.

    Attributes:
        similar_days: days apart that still count as similar (0: none).
        near_days: days apart that still count as partly alike (0: none).
    """

    similar_days: int = 0
    near_days: int = 0

    def prepare(self, value: Any) -> Day | None:
        if isinstance(value, datetime):
            value = value.date()
        if isinstance(value, date):
            return Day(value.strftime("%Y%m%d"), value.toordinal())
        text = _text(value)
        return _day(text) if text else None

    def level(self, a: Day, b: Day) -> int:
        if a.digits == b.digits:
            return EXACT
        year, month, day = a.digits[:4], a.digits[4:6], a.digits[6:]
        if b.digits == f"{year}{day}{month}" or _one_typo(a.digits, b.digits):
            return SIMILAR
        if a.ordinal is None or b.ordinal is None:
            return DIFFERENT
        apart = abs(a.ordinal - b.ordinal)
        if apart <= self.similar_days:
            return SIMILAR
        if apart <= self.near_days:
            return PARTIAL
        return DIFFERENT


# Fewer digits than this is an extension or a fragment, not a number to match on.
_PHONE_MIN_DIGITS = 7


@dataclass(frozen=True)
class PhoneKind:
    """A phone number in E.164: one wrong digit, or a missing prefix, is similar."""

    def prepare(self, value: Any) -> str | None:
        found = digits(_text(value))
        return found if found and len(found) >= _PHONE_MIN_DIGITS else None

    def level(self, a: str, b: str) -> int:
        if a == b:
            return EXACT
        if len(a) == len(b):
            if Hamming.distance(a, b, score_cutoff=1) <= 1 or _one_typo(a, b):
                return SIMILAR
            return DIFFERENT
        # The same subscriber number with and without its country or area code.
        short, long = (a, b) if len(a) < len(b) else (b, a)
        return SIMILAR if long.endswith(short) else DIFFERENT


# Local parts that name a role, not a person: two leads from `info@` at two
# companies, or two people using one `sales@`, are not one person.
_ROLE_MAILBOXES = frozenset(
    {
        "admin",
        "billing",
        "contact",
        "enquiries",
        "hello",
        "help",
        "hr",
        "info",
        "inquiries",
        "mail",
        "marketing",
        "office",
        "reception",
        "sales",
        "support",
        "team",
    }
)


# A local part this short is initials (`jd@`, `j.d@`), which many people share.
_SHORT_LOCAL = 3
# What is not a letter or digit (as `str.isalnum` says): `\w` is those and `_`.
_NOT_ALNUM = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class Mailbox:
    """An e-mail local part without its `+tag`, and that part without dots.

    `vague` marks a local part that names no one person: a role mailbox
    (`info@`, `sales@`) or one made of initials.
    """

    local: str
    undotted: str
    vague: bool


@dataclass(frozen=True)
class EmailLocalKind:
    """The e-mail address's local part: tags, dots and one typo forgiven.

    A role mailbox (`info`, `sales`) or initials (`jd`, `j.d`) agree at most
    partly: they say where someone works, or a little of their name, not who
    they are.

    Attributes:
        partial: Jaro-Winkler similarity from which two local parts are partly alike.
    """

    partial: float = 0.88

    def prepare(self, value: Any) -> Mailbox | None:
        text = _text(value)
        if not text or "@" not in text:
            return None
        local = text.rpartition("@")[0].lower().split("+", 1)[0]
        if not local:
            return None
        undotted = local.replace(".", "")
        vague = local in _ROLE_MAILBOXES or (
            len(_NOT_ALNUM.sub("", local)) <= _SHORT_LOCAL
        )
        return Mailbox(local, undotted, vague)

    def level(self, a: Mailbox, b: Mailbox) -> int:
        if a.local == b.local or a.undotted == b.undotted:
            return PARTIAL if a.vague else EXACT
        if a.vague or b.vague:
            return DIFFERENT
        if _one_typo(a.undotted, b.undotted):
            return SIMILAR
        if JaroWinkler.similarity(a.undotted, b.undotted) >= self.partial:
            return PARTIAL
        return DIFFERENT


@dataclass(frozen=True)
class Domain:
    """An e-mail domain and whether anyone can sign up for a mailbox there."""

    name: str
    free: bool


@dataclass(frozen=True)
class EmailDomainKind:
    """The e-mail address's domain: exact for one organisation's own domain,
    similar for one free-mail provider (millions share gmail.com)."""

    def prepare(self, value: Any) -> Domain | None:
        text = _text(value)
        if not text or "@" not in text:
            return None
        domain = text.rpartition("@")[2].lower()
        return Domain(domain, is_free_mail(domain)) if domain else None

    def level(self, a: Domain, b: Domain) -> int:
        if a.name != b.name:
            return DIFFERENT
        return SIMILAR if a.free else EXACT


KINDS: dict[str, Callable[..., Kind]] = {
    "exact": ExactKind,
    "code": CodeKind,
    "name": NameKind,
    "text": TextKind,
    "street": StreetKind,
    "date": DateKind,
    "phone": PhoneKind,
    "email_local": EmailLocalKind,
    "email_domain": EmailDomainKind,
}
