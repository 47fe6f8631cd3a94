"""Countries as ISO 3166-1 alpha-2 codes, read from codes, names and common variants."""

from __future__ import annotations

import gettext
import unicodedata
from collections.abc import Iterator
from functools import cache
from typing import Any

import pycountry

UNKNOWN_COUNTRY = "unknown_country"

# Written forms that ISO 3166 and its translations do not hold. Dots and case
# do not matter (`U.S.A.` is `usa`), so each form is listed once.
_VARIANTS: dict[str, tuple[str, ...]] = {
    "AE": ("UAE", "Emirates"),
    "BN": ("Brunei",),
    "CD": ("DRC", "DR Congo", "Congo-Kinshasa"),
    "CG": ("Congo-Brazzaville",),
    "CI": ("Ivory Coast",),
    "CV": ("Cape Verde",),
    "FM": ("Micronesia",),
    "GB": (
        "UK",
        "Great Britain",
        "Britain",
        "England",
        "Scotland",
        "Wales",
        "Northern Ireland",
    ),
    "MK": ("Macedonia",),
    "MM": ("Burma",),
    "NL": ("Holland",),
    "PS": ("Palestine",),
    "RU": ("Russia", "Россия"),
    "SZ": ("Swaziland",),
    "TR": ("Turkey",),
    "US": ("USA", "America"),
    "VA": ("Vatican", "Vatican City", "Holy See"),
}

# Languages whose country names are read too (pycountry ships the translations),
# so `Deutschland`, `España` or `Brasil` are known. A name two countries share
# in different languages is left out of the index rather than guessed.
_LOCALES = (
    "cs",
    "da",
    "de",
    "el",
    "es",
    "fi",
    "fr",
    "hu",
    "it",
    "ja",
    "ko",
    "nb_NO",
    "nl",
    "pl",
    "pt",
    "pt_BR",
    "ro",
    "ru",
    "sv",
    "tr",
    "uk",
    "zh_CN",
)


def country_code(text: str) -> str | None:
    """The ISO 3166-1 alpha-2 code of the country the text names, or None.

    Codes (alpha-2 and alpha-3), English names, the translations of `_LOCALES`
    and the common variants in `_VARIANTS` are known; case, accents, dots and
    a leading "the" are ignored.
    """
    return _index().get(_key(text))


def is_country_code(value: str) -> bool:
    """Whether the value is an assigned ISO 3166-1 alpha-2 code, in capitals."""
    return (
        len(value) == 2
        and value.isupper()
        and pycountry.countries.get(alpha_2=value) is not None
    )


def _key(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.casefold().replace("&", " and "))
    kept = []
    for char in folded:
        if unicodedata.combining(char) or char in ".'’":
            continue
        kept.append(char if char.isalnum() else " ")
    words = "".join(kept).split()
    if words[:1] == ["the"]:
        words = words[1:]
    return " ".join(words)


def _english_names(country: Any) -> Iterator[str]:
    for attribute in ("name", "official_name", "common_name"):
        name = getattr(country, attribute, None)
        if not name:
            continue
        yield name
        # ISO writes some names inverted: "Korea, Republic of".
        head, comma, tail = name.partition(", ")
        if comma:
            yield f"{tail} {head}"


@cache
def _index() -> dict[str, str]:
    translated: dict[str, str | None] = {}
    for locale in _LOCALES:
        # A locale a later pycountry drops falls back to the English names.
        catalogue = gettext.translation(
            "iso3166-1", pycountry.LOCALES_DIR, languages=[locale], fallback=True
        )
        for country in pycountry.countries:
            for name in _english_names(country):
                key = _key(catalogue.gettext(name))
                if translated.setdefault(key, country.alpha_2) != country.alpha_2:
                    translated[key] = None

    index = {key: code for key, code in translated.items() if code}
    for country in pycountry.countries:
        for name in (country.alpha_2, country.alpha_3, *_english_names(country)):
            index[_key(name)] = country.alpha_2
    for code, forms in _VARIANTS.items():
        for form in forms:
            index[_key(form)] = code
    return index
