"""Reading uploaded lead files (CSV) into numbered records; no store, no Prefect."""

from leads.imports.decimals import parse_decimal
from leads.imports.errors import (
    EncodingError,
    HeaderError,
    ImportFileError,
    LineTooLongError,
)
from leads.imports.headers import (
    LEAD_FIELDS,
    ColumnMapping,
    header_key,
    match_headers,
    read_mapping,
)
from leads.imports.reader import (
    CsvFile,
    ProblemReason,
    Record,
    RecordProblem,
    open_records,
)

__all__ = [
    "LEAD_FIELDS",
    "ColumnMapping",
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
    "read_mapping",
]
