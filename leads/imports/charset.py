"""Finding the text encoding of a lead file from all of its bytes, chunk by chunk."""

from __future__ import annotations

import codecs
from typing import BinaryIO, Literal

from leads.imports.errors import EncodingError

Encoding = Literal["utf-8-sig", "utf-8", "cp1252", "latin-1"]

CHUNK_BYTES = 64 * 1024

# Windows-1252 leaves these five bytes undefined and Python's cp1252 codec
# refuses them; Latin-1 maps every byte, so a file holding one still reads.
_CP1252_UNDEFINED = (b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d")

# The UTF-16 LE mark is also the start of the UTF-32 LE one.
_UTF16_MARKS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)

_RESAVE = "save the sheet again as “CSV UTF-8 (comma delimited)”"


def detect_encoding(source: BinaryIO) -> Encoding:
    """Reads the source to its end and names the encoding of its bytes.

    A UTF-8 byte-order mark gives `utf-8-sig` (whose decoder drops the mark);
    bytes that are valid UTF-8 give `utf-8`; anything else is Windows-1252
    (`cp1252`), or `latin-1` when one of the bytes Windows-1252 leaves
    undefined occurs. Only one chunk of the file is held at a time.

    Args:
        source: a binary file positioned at its first byte; left at its end.

    Returns:
        The name of a Python codec that decodes every byte of the file.

    Raises:
        EncodingError: the file is UTF-16 or UTF-32 text, holds a NUL byte (a
            workbook or other binary file), or starts with a UTF-8 byte-order
            mark but is not UTF-8 throughout.
    """
    chunk = source.read(CHUNK_BYTES)
    if chunk.startswith(_UTF16_MARKS):
        raise EncodingError(
            "the file is UTF-16 or UTF-32 text (it starts with that byte-order "
            f"mark); expected UTF-8 or Windows-1252 text: {_RESAVE}",
            offset=0,
        )
    marked = chunk.startswith(codecs.BOM_UTF8)
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8 = True
    undefined = False
    offset = 0

    while chunk:
        nul = chunk.find(b"\x00")
        if nul >= 0:
            raise EncodingError(
                f"the file holds a NUL byte at offset {offset + nul}, so it is not "
                "a text CSV (a workbook, or UTF-16 text?); expected a CSV file: "
                f"{_RESAVE}",
                offset=offset + nul,
            )
        if utf8:
            utf8 = _still_utf8(decoder, chunk, offset, marked)
        undefined = undefined or any(byte in chunk for byte in _CP1252_UNDEFINED)
        offset += len(chunk)
        chunk = source.read(CHUNK_BYTES)

    if utf8:
        utf8 = _still_utf8(decoder, b"", offset, marked, final=True)
    if utf8:
        return "utf-8-sig" if marked else "utf-8"
    return "latin-1" if undefined else "cp1252"


def _still_utf8(
    decoder: codecs.IncrementalDecoder,
    chunk: bytes,
    offset: int,
    marked: bool,
    final: bool = False,
) -> bool:
    pending = decoder.getstate()[0]
    try:
        decoder.decode(chunk, final=final)
    except UnicodeDecodeError as exc:
        if not marked:
            return False
        # The decoder's offsets count the bytes it held back from the last chunk.
        at = offset - len(pending) + exc.start
        raise EncodingError(
            "the file starts with a UTF-8 byte-order mark but the byte "
            f"0x{exc.object[exc.start]:02X} at offset {at} is not UTF-8; expected "
            f"one encoding throughout: {_RESAVE}",
            offset=at,
        ) from exc
    return True
