"""A small SOQL engine: SELECT … FROM Lead|Account, WHERE, ORDER BY, LIMIT, OFFSET."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from connectors.sandbox.salesforce.fields import (
    SOBJECTS,
    TEXT_TYPES,
    FieldDef,
    SObjectType,
    parse_datetime,
)

TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<op>!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),])
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    """,
    re.VERBOSE,
)
# Escapes SOQL allows in any string literal; `\%` and `\_` only inside LIKE
# (https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_quotedstringescapes.htm).
ESCAPES = {
    "'": "'",
    '"': '"',
    "\\": "\\",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
}
LIKE_ESCAPES = {"%", "_"}
KEYWORDS = {
    "select",
    "from",
    "where",
    "and",
    "or",
    "not",
    "in",
    "like",
    "order",
    "by",
    "asc",
    "desc",
    "nulls",
    "first",
    "last",
    "limit",
    "offset",
    "true",
    "false",
    "null",
}


class SoqlError(Exception):
    """A query Salesforce would refuse; `code` is its errorCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    at: int


@dataclass(frozen=True)
class Query:
    """A parsed SELECT."""

    sobject: SObjectType
    fields: tuple[FieldDef, ...]
    where: Callable[[dict[str, Any]], bool] | None
    order: tuple[tuple[FieldDef, bool, bool], ...]
    limit: int | None
    offset: int


def _tokens(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None:
            raise SoqlError(
                "MALFORMED_QUERY",
                f"unexpected token: '{text[position : position + 20]}' "
                f"at column {position + 1}",
            )
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(Token(kind, match.group(), position))
        position = match.end()
    return tokens


def _unescape(raw: str, *, like: bool) -> list[tuple[str, bool]]:
    """A literal's characters, each flagged True when it was escaped."""
    chars: list[tuple[str, bool]] = []
    index = 0
    while index < len(raw):
        char = raw[index]
        if char != "\\":
            chars.append((char, False))
            index += 1
            continue
        escaped = raw[index + 1]
        if escaped in ESCAPES:
            chars.append((ESCAPES[escaped], True))
        elif like and escaped in LIKE_ESCAPES:
            chars.append((escaped, True))
        else:
            raise SoqlError(
                "MALFORMED_QUERY",
                f"Invalid string literal '{raw}'. Illegal character sequence "
                f"'\\{escaped}' in string literal.",
            )
        index += 2
    return chars


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.index = 0
        self.sobject: SObjectType | None = None

    def peek(self, offset: int = 0) -> Token | None:
        position = self.index + offset
        return self.tokens[position] if position < len(self.tokens) else None

    def is_word(self, *words: str) -> bool:
        token = self.peek()
        return (
            token is not None and token.kind == "word" and token.text.lower() in words
        )

    def take(self, kind: str | None = None, word: str | None = None) -> Token:
        token = self.peek()
        if token is None:
            wanted = word or kind or "more"
            raise SoqlError("MALFORMED_QUERY", f"unexpected end of query, {wanted}")
        if (kind and token.kind != kind) or (
            word and (token.kind != "word" or token.text.lower() != word)
        ):
            raise SoqlError(
                "MALFORMED_QUERY",
                f"unexpected token: '{token.text}' at column {token.at + 1}",
            )
        self.index += 1
        return token

    def parse(self) -> Query:
        self.take(word="select")
        names = [self.take("word").text]
        while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
            self.take("punct")
            names.append(self.take("word").text)
        self.take(word="from")
        entity = self.take("word").text
        sobject = SOBJECTS.get(entity.lower())
        if sobject is None:
            raise SoqlError(
                "INVALID_TYPE", f"sObject type '{entity}' is not supported."
            )
        self.sobject = sobject
        fields = tuple(self.field(name) for name in names)
        where = None
        if self.is_word("where"):
            self.take()
            where = self.disjunction()
        order: list[tuple[FieldDef, bool, bool]] = []
        if self.is_word("order"):
            self.take()
            self.take(word="by")
            order.append(self.order_item())
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.take("punct")
                order.append(self.order_item())
        limit = None
        if self.is_word("limit"):
            self.take()
            limit = int(self.take("number").text)
        offset = 0
        if self.is_word("offset"):
            self.take()
            offset = int(self.take("number").text)
        token = self.peek()
        if token is not None:
            raise SoqlError(
                "MALFORMED_QUERY",
                f"unexpected token: '{token.text}' at column {token.at + 1}",
            )
        return Query(sobject, fields, where, tuple(order), limit, offset)

    def field(self, name: str) -> FieldDef:
        assert self.sobject is not None
        field = self.sobject.field(name)
        if field is None or name.lower() in KEYWORDS:
            raise SoqlError(
                "INVALID_FIELD",
                f"No such column '{name}' on entity '{self.sobject.name}'.",
            )
        return field

    def order_item(self) -> tuple[FieldDef, bool, bool]:
        field = self.field(self.take("word").text)
        descending = False
        if self.is_word("asc", "desc"):
            descending = self.take().text.lower() == "desc"
        # Salesforce sorts nulls first in ascending order, last in descending.
        nulls_first = not descending
        if self.is_word("nulls"):
            self.take()
            nulls_first = self.take("word").text.lower() == "first"
        return field, descending, nulls_first

    def disjunction(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self.conjunction()]
        while self.is_word("or"):
            self.take()
            parts.append(self.conjunction())
        if len(parts) == 1:
            return parts[0]
        return lambda record: any(part(record) for part in parts)

    def conjunction(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self.negation()]
        while self.is_word("and"):
            self.take()
            parts.append(self.negation())
        if len(parts) == 1:
            return parts[0]
        return lambda record: all(part(record) for part in parts)

    def negation(self) -> Callable[[dict[str, Any]], bool]:
        if self.is_word("not"):
            self.take()
            inner = self.negation()
            return lambda record: not inner(record)
        token = self.peek()
        if token is not None and token.text == "(":
            self.take("punct")
            inner = self.disjunction()
            self.take("punct")
            return inner
        return self.condition()

    def condition(self) -> Callable[[dict[str, Any]], bool]:
        field = self.field(self.take("word").text)
        if self.is_word("like"):
            self.take()
            pattern = _like_pattern(self.take("string").text[1:-1])
            return lambda record: (
                _text(record.get(field.name)) is not None
                and bool(pattern.fullmatch(_text(record.get(field.name)) or ""))
            )
        negate = False
        if self.is_word("not"):
            self.take()
            negate = True
        if self.is_word("in"):
            self.take()
            self.take("punct")
            values = [self.value(field)]
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.take("punct")
                values.append(self.value(field))
            self.take("punct")
            wanted = {_key(field, value) for value in values}
            return lambda record: (
                (_key(field, _stored(field, record.get(field.name))) in wanted)
                != negate
            )
        if negate:
            raise SoqlError("MALFORMED_QUERY", "expecting IN after NOT")
        operator = self.take("op").text
        value = self.value(field)
        return _comparison(field, operator, value)

    def value(self, field: FieldDef) -> Any:
        token = self.take()
        if token.kind == "string":
            text = "".join(char for char, _ in _unescape(token.text[1:-1], like=False))
            if field.type in TEXT_TYPES:
                return text
            return _convert_literal(field, text)
        if token.kind == "datetime":
            return parse_datetime(token.text)
        if token.kind == "date":
            return date.fromisoformat(token.text)
        if token.kind == "number":
            return float(token.text)
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true"
        if token.kind == "word" and token.text.lower() == "null":
            return None
        raise SoqlError(
            "MALFORMED_QUERY",
            f"unexpected token: '{token.text}' at column {token.at + 1}",
        )


def _convert_literal(field: FieldDef, text: str) -> Any:
    raise SoqlError(
        "INVALID_QUERY_FILTER_OPERATOR",
        f"value of filter criterion for field '{field.name}' must be of type "
        f"{field.type} and should not be enclosed in quotes",
    )


def _like_pattern(raw: str) -> re.Pattern[str]:
    parts = []
    for char, escaped in _unescape(raw, like=True):
        if escaped:
            parts.append(re.escape(char))
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    # LIKE is case-blind in Salesforce, as are text comparisons.
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _stored(field: FieldDef, value: Any) -> Any:
    """A stored value in the type comparisons use."""
    if value is None:
        return None
    if field.type == "datetime":
        return parse_datetime(value)
    if field.type == "date":
        return date.fromisoformat(value)
    return value


def _key(field: FieldDef, value: Any) -> Any:
    """A value folded for equality: text compares case-blind in Salesforce."""
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, datetime) and field.type == "date":
        return value.date()
    return value


def _comparison(
    field: FieldDef, operator: str, value: Any
) -> Callable[[dict[str, Any]], bool]:
    wanted = _key(field, value)
    if (
        field.type == "datetime"
        and isinstance(value, date)
        and not isinstance(value, datetime)
    ):
        raise SoqlError(
            "INVALID_QUERY_FILTER_OPERATOR",
            f"value of filter criterion for field '{field.name}' must be of type "
            "dateTime and should not be enclosed in quotes",
        )

    def matches(record: dict[str, Any]) -> bool:
        have = _key(field, _stored(field, record.get(field.name)))
        if operator == "=":
            return have == wanted
        if operator in ("!=", "<>"):
            return have != wanted
        if have is None or wanted is None:
            return False
        try:
            if operator == "<":
                return bool(have < wanted)
            if operator == "<=":
                return bool(have <= wanted)
            if operator == ">":
                return bool(have > wanted)
            return bool(have >= wanted)
        except TypeError as exc:
            raise SoqlError(
                "INVALID_QUERY_FILTER_OPERATOR",
                f"invalid operator on field '{field.name}'",
            ) from exc

    return matches


def parse(text: str) -> Query:
    """`text` parsed.

    Raises:
        SoqlError: MALFORMED_QUERY, INVALID_FIELD or INVALID_TYPE, as Salesforce.
    """
    return _Parser(text).parse()


def run(query: Query, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records `query` selects, filtered, sorted and cut; not yet projected."""
    rows = [record for record in records if query.where is None or query.where(record)]
    for field, descending, nulls_first in reversed(query.order):
        present = [row for row in rows if row.get(field.name) is not None]
        missing = [row for row in rows if row.get(field.name) is None]
        present.sort(
            key=lambda row, field=field: _key(field, _stored(field, row[field.name])),
            reverse=descending,
        )
        rows = missing + present if nulls_first else present + missing
    rows = rows[query.offset :]
    if query.limit is not None:
        rows = rows[: query.limit]
    return rows
