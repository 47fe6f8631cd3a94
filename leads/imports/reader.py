"""Streaming the bytes of an uploaded lead file into numbered records."""

from __future__ import annotations

import codecs
import csv
import io
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from leads.imports.charset import Encoding, detect_encoding
from leads.imports.delimiter import NAMES, sniff_delimiter
from leads.imports.errors import HeaderError, LineTooLongError
from leads.imports.headers import match_headers

logger = logging.getLogger(__name__)

# Enough for the header and dozens of records of any lead export.
SAMPLE_BYTES = 64 * 1024

# A longer physical line is not a lead record; refusing it keeps one line from
# holding the whole file in memory.
MAX_LINE_CHARS = 1024 * 1024


class ProblemReason(StrEnum):
    """Why a record was not read; the values are the reason codes reported."""

    TOO_MANY_CELLS = "too_many_cells"
    TOO_FEW_CELLS = "too_few_cells"
    UNTERMINATED_QUOTE = "unterminated_quote"
    MALFORMED_QUOTES = "malformed_quotes"
    VALUE_TOO_LONG = "value_too_long"


@dataclass(frozen=True)
class Record:
    """One data record, numbered from 1 after the header.

    `line` is the physical line (from 1, the header's first line included) the
    record starts on. `values` holds every cell as written, under its column's
    lead field or custom name (see `CsvFile.headers`).
    """

    number: int
    line: int
    values: dict[str, str]


@dataclass(frozen=True)
class RecordProblem:
    """A record that could not be read; it keeps its number, so later ones do too."""

    number: int
    line: int
    reason: ProblemReason
    message: str


class CsvFile:
    """An opened lead file: how it was read, its columns, then its records once.

    Iterating yields a `Record` or a `RecordProblem` for every record, in file
    order, numbered together; blank lines, and rows whose cells are all blank,
    are skipped without a number. The source is released when the records run
    out, or on `close()` (or leaving a `with` block); a file the caller passed
    in is left open.

    Attributes:
        encoding: `utf-8-sig`, `utf-8`, `cp1252` or `latin-1`.
        delimiter: `,`, `;`, a tab or `|`.
        headers: each file header (stripped of surrounding spaces) → the lead
            field or custom name its values go under, in column order.
    """

    def __init__(
        self,
        text: io.TextIOWrapper,
        owns_source: bool,
        encoding: Encoding,
        delimiter: str,
        mapping: Mapping[str, str] | None,
    ) -> None:
        self.encoding = encoding
        self.delimiter = delimiter
        self._text = text
        self._owns_source = owns_source
        self._released = False
        self._started = False
        self._lines_read = 0
        self._at_end = False
        self._bytes_at_close = 0
        self._rows = csv.reader(
            self._lines(), delimiter=delimiter, quotechar='"', strict=True
        )
        try:
            names = self._header_names()
            # A delimiter after the last header (and after every row) only adds
            # an empty, unnamed column.
            self._trailing = len(names) > 1 and not names[-1]
            if self._trailing:
                names.pop()
            self._fields = match_headers(names, mapping)
        except BaseException:
            self.close()
            raise
        self.headers = dict(zip(names, self._fields, strict=True))

    def __enter__(self) -> CsvFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether the source has been released."""
        return self._released

    @property
    def bytes_read(self) -> int:
        """How far into the source reading has got; it reads ahead a block at a time."""
        if self._released:
            return self._bytes_at_close
        return self._text.buffer.tell()

    def close(self) -> None:
        """Releases the source: closes a file opened from a path, else lets go of it."""
        if self._released:
            return
        self._bytes_at_close = self._text.buffer.tell()
        self._released = True
        if self._owns_source:
            self._text.close()
        else:
            # Detached, the wrapper can no longer close the caller's file.
            self._text.detach()

    def __iter__(self) -> Iterator[Record | RecordProblem]:
        if self._started:
            raise RuntimeError(
                "the records of a lead file can be read once; open it again"
            )
        self._started = True
        return self._records()

    def _header_names(self) -> list[str]:
        try:
            cells = next(cells for cells in self._rows if not _blank(cells))
        except StopIteration:
            raise HeaderError(
                "the file has no header line (it is empty or blank); expected a "
                "first line naming the columns, such as email,first_name,last_name"
            ) from None
        except csv.Error as exc:
            raise HeaderError(
                f"the header line cannot be read ({exc}); expected column names "
                f"separated by a {NAMES[self.delimiter]}: close any quote opened "
                "in a name"
            ) from exc
        return [cell.strip() for cell in cells]

    def _lines(self) -> Iterator[str]:
        while True:
            line = self._text.readline(MAX_LINE_CHARS)
            if not line:
                self._at_end = True
                return
            self._lines_read += 1
            if len(line) == MAX_LINE_CHARS and line[-1] not in "\r\n":
                raise LineTooLongError(
                    f"line {self._lines_read} is longer than {MAX_LINE_CHARS:,} "
                    "characters; expected a CSV file of leads with a line break "
                    "after each record: check that this is the right file",
                    line=self._lines_read,
                )
            yield line

    def _records(self) -> Iterator[Record | RecordProblem]:
        number = 0
        try:
            while True:
                line = self._lines_read + 1
                try:
                    cells = next(self._rows)
                except StopIteration:
                    return
                except csv.Error as exc:
                    number += 1
                    yield self._unreadable(number, line, exc)
                    continue
                if _blank(cells):
                    continue
                number += 1
                yield self._record(number, line, cells)
        finally:
            self.close()

    def _record(
        self, number: int, line: int, cells: list[str]
    ) -> Record | RecordProblem:
        width = len(self._fields)
        if self._trailing and len(cells) == width + 1 and not cells[-1].strip():
            cells.pop()
        if len(cells) > width:
            return RecordProblem(
                number,
                line,
                ProblemReason.TOO_MANY_CELLS,
                f"record {number} (line {line}) has {_count(len(cells), 'cell')} "
                f"but the header names {_count(width, 'column')}; a value may hold "
                f"an unquoted {NAMES[self.delimiter]}: quote that value",
            )
        if len(cells) < width:
            return RecordProblem(
                number,
                line,
                ProblemReason.TOO_FEW_CELLS,
                f"record {number} (line {line}) has {_count(len(cells), 'cell')} "
                f"but the header names {_count(width, 'column')}; add the missing "
                "cells (empty ones will do), or quote a value that holds a line "
                "break",
            )
        return Record(number, line, dict(zip(self._fields, cells, strict=True)))

    def _unreadable(self, number: int, line: int, exc: csv.Error) -> RecordProblem:
        if self._at_end:
            return RecordProblem(
                number,
                line,
                ProblemReason.UNTERMINATED_QUOTE,
                f"record {number} (line {line}) opens a quoted value that is never "
                "closed before the end of the file; close the quote, or double it "
                "if it belongs to the value",
            )
        # The csv module's words for a value past csv.field_size_limit().
        if "field limit" in str(exc):
            return RecordProblem(
                number,
                line,
                ProblemReason.VALUE_TOO_LONG,
                f"record {number} (line {line}) holds a value longer than "
                f"{csv.field_size_limit():,} characters; usually a quote opened "
                "and never closed swallows the lines after it: close that quote",
            )
        return RecordProblem(
            number,
            line,
            ProblemReason.MALFORMED_QUOTES,
            f"record {number} (line {line}) has text after the closing quote of a "
            f"value ({exc}); quote the whole value and double every quote inside it",
        )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _blank(cells: list[str]) -> bool:
    return not any(cell.strip() for cell in cells)


def open_records(
    source: BinaryIO | Path, mapping: Mapping[str, str] | None = None
) -> CsvFile:
    """Opens a lead file: finds its encoding and delimiter and reads its header.

    The bytes are read twice, in chunks and never whole: once to find the
    encoding (a byte that is not UTF-8 may sit on the last line), then to read
    the records as the returned `CsvFile` is iterated.

    Args:
        source: a path, or a seekable binary file positioned at the file's first
            byte (the caller's file is left open).
        mapping: file header → lead field or custom name, overriding the
            matching by name for the columns it names.

    Returns:
        The opened file; use it in a `with` block, or iterate it to the end.

    Raises:
        EncodingError: the bytes are not text in an accepted encoding.
        HeaderError: there is no header, a header is empty, the mapping names a
            column the file lacks, or two columns land on one name.
        ValueError: the binary file given cannot seek.
    """
    if isinstance(source, Path):
        binary: BinaryIO = source.open("rb")
        try:
            return _open(binary, True, mapping)
        except BaseException:
            binary.close()
            raise
    return _open(source, False, mapping)


def _open(
    binary: BinaryIO, owns_source: bool, mapping: Mapping[str, str] | None
) -> CsvFile:
    if not binary.seekable():
        raise ValueError(
            "the lead file must be seekable: it is read twice, for its encoding "
            "and then its records; save the upload to a file first"
        )
    start = binary.tell()
    encoding = detect_encoding(binary)

    binary.seek(start)
    head = binary.read(SAMPLE_BYTES)
    complete = len(head) < SAMPLE_BYTES or not binary.read(1)
    sample = codecs.getincrementaldecoder(encoding)().decode(head, final=complete)
    if not complete and "\n" not in sample and "\r" not in sample:
        raise HeaderError(
            f"the first line is longer than {SAMPLE_BYTES:,} bytes; expected a "
            "header line naming the columns: check that this is a CSV file"
        )
    delimiter = sniff_delimiter(sample, complete)

    binary.seek(start)
    text = io.TextIOWrapper(binary, encoding=encoding, newline="")
    opened = CsvFile(text, owns_source, encoding, delimiter, mapping)
    logger.debug(
        "opened a lead file: %s, delimiter %r, %d columns",
        encoding,
        delimiter,
        len(opened.headers),
    )
    return opened
