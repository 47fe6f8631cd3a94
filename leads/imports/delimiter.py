"""Choosing the delimiter of a lead file from its header line and first records."""

from __future__ import annotations

import csv
import io

# In the order preferred when the sample cannot tell them apart, as in a file
# of one column.
CANDIDATES = (",", ";", "\t", "|")

NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}

# Records after the header that are compared with it.
SAMPLE_RECORDS = 50


def sniff_delimiter(sample: str, complete: bool) -> str:
    """The candidate that splits the header and keeps the records as wide as it.

    A candidate that splits the header into several columns beats one that
    does not; then the larger share of records as wide as the header wins, then
    the wider header. A file of one column gets the first candidate that leaves
    every sampled record whole, so a comma inside a value stays in it.

    Args:
        sample: the start of the decoded file (the header and first records).
        complete: whether the sample is the whole file; when it is not, its
            last record may be cut short and is left out.

    Returns:
        One of `CANDIDATES`.
    """
    return max(CANDIDATES, key=lambda candidate: _fit(sample, complete, candidate))


def _fit(sample: str, complete: bool, delimiter: str) -> tuple[bool, float, int]:
    widths = _widths(sample, complete, delimiter)
    if not widths:
        return (False, 0.0, 0)
    header, rows = widths[0], widths[1:]
    agreeing = sum(width == header for width in rows) / len(rows) if rows else 1.0
    return (header > 1, agreeing, header)


def _widths(sample: str, complete: bool, delimiter: str) -> list[int]:
    reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter)
    widths: list[int] = []
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                widths.append(len(cells))
            if len(widths) > SAMPLE_RECORDS + 1:
                break
    except csv.Error:
        # The sample ends where this candidate's parse broke down; what came
        # before still counts.
        pass
    if len(widths) > SAMPLE_RECORDS + 1 or not complete:
        widths = widths[:-1]
    return widths
