"""Refusals of a whole lead file, each message naming what to change."""

from __future__ import annotations


class ImportFileError(ValueError):
    """Root of every refusal of a lead file; the message says what to change."""


class EncodingError(ImportFileError):
    """The bytes are not text in one of the encodings this reader accepts."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        super().__init__(message)


class HeaderError(ImportFileError):
    """The header line, or the mapping applied to it, cannot name every column."""

    def __init__(self, message: str, columns: tuple[int, ...] = ()) -> None:
        # 1-based, the way a person counts the columns of a spreadsheet.
        self.columns = columns
        super().__init__(message)


class LineTooLongError(ImportFileError):
    """A physical line is too long for a file of leads; reading stopped there."""

    def __init__(self, message: str, line: int) -> None:
        self.line = line
        super().__init__(message)
