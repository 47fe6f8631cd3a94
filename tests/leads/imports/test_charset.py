"""Finding a lead file's encoding from all of its bytes."""

from __future__ import annotations

import pytest

from leads.imports import EncodingError
from leads.imports.charset import CHUNK_BYTES, detect_encoding


@pytest.fixture
def detect(tmp_path):
    """Writes the bytes to a file and detects its encoding."""

    def run(data: bytes) -> str:
        path = tmp_path / "leads.csv"
        path.write_bytes(data)
        with path.open("rb") as source:
            return detect_encoding(source)

    return run


@pytest.mark.parametrize(
    ("data", "encoding"),
    [
        (b"", "utf-8"),
        (b"email\na@example.com\n", "utf-8"),
        (b"\xef\xbb\xbfemail\n", "utf-8-sig"),
        ("name\nZoë\n".encode(), "utf-8"),
        ("name\nZoë O’Neil\n".encode("cp1252"), "cp1252"),
        (b"name\nCaf\xe9\x8d\n", "latin-1"),
    ],
)
def test_names_the_encoding_of_the_bytes(detect, data, encoding):
    assert detect(data) == encoding


def test_a_character_split_between_chunks_is_still_utf8(detect):
    data = b"a\n" + b"x" * (CHUNK_BYTES - 3) + "é".encode()

    assert data[CHUNK_BYTES - 1 : CHUNK_BYTES + 1] == "é".encode()
    assert detect(data) == "utf-8"


def test_a_character_cut_off_at_the_end_is_not_utf8(detect):
    assert detect(b"name\nZo\xc3") == "cp1252"


def test_an_undefined_cp1252_byte_after_the_first_chunk_gives_latin_1(detect):
    data = b"name\n" + b"x" * CHUNK_BYTES + b"\xe9\n" + b"y" * CHUNK_BYTES + b"\x90"

    assert detect(data) == "latin-1"


def test_a_utf8_continuation_byte_undefined_in_cp1252_gives_latin_1(detect):
    # "Á" is C3 81 in UTF-8; once a later byte rules UTF-8 out, that 0x81
    # must still be decodable.
    assert detect("Á\n".encode() + b"\x92") == "latin-1"


def test_the_offset_of_the_first_bad_byte_after_a_bom_is_reported(detect):
    data = b"\xef\xbb\xbf" + b"a\n" * CHUNK_BYTES + b"\x92"

    with pytest.raises(EncodingError) as caught:
        detect(data)

    assert caught.value.offset == len(data) - 1


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_utf16_and_utf32_are_refused(detect, encoding):
    with pytest.raises(EncodingError, match="UTF-16 or UTF-32"):
        detect("\ufeffemail\n".encode(encoding))
