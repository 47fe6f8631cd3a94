"""Reading uploaded lead files (CSV) into numbered records; no store, no Prefect."""

from leads.imports.decimals import parse_decimal
from leads.imports.errors import (
    EncodingError,
    HeaderError,
    ImportFileError,
    LineTooLongError,
)
from leads.imports.headers import LEAD_FIELDS, header_key, match_headers
from leads.imports.reader import (
    CsvFile,
    ProblemReason,
    Record,
    RecordProblem,
    open_records,
)

__all__ = [
    "LEAD_FIELDS",
    "CsvFile",
    "EncodingError",
    "HeaderError",
    "ImportFileError",
    "LineTooLongError",
    "ProblemReason",
    "Record",
    "RecordProblem",
    "header_key",
    "match_headers",
    "open_records",
    "parse_decimal",
]
