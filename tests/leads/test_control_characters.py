"""Control characters: found anywhere, flattened in one-line text, tamed in notes."""

from __future__ import annotations

import pytest

from leads.control_characters import (
    has_control_characters,
    keep_line_breaks,
    to_one_line,
)


@pytest.mark.parametrize(
    "text", ["Ola\r\nBcc: x", "a\tb", "a\x07b", "a\x85b", "a\u2028b", "a\x1bb"]
)
def test_line_breaks_tabs_and_other_controls_are_found(text):
    assert has_control_characters(text)


@pytest.mark.parametrize("text", ["O'Neil", "Zo\u00eb", "a\u00a0b", "\U0001f469\u200d"])
def test_ordinary_text_has_no_control_characters(text):
    assert not has_control_characters(text)


class TestOneLine:
    def test_a_line_break_becomes_one_space(self):
        assert to_one_line("Berg & Co\nX-Priority: 1") == "Berg & Co X-Priority: 1"

    def test_a_run_of_breaks_spaces_and_controls_becomes_one_space(self):
        assert to_one_line("Acme \r\n\t\x07 Inc") == "Acme Inc"

    def test_runs_of_spaces_and_no_break_spaces_collapse(self):
        assert to_one_line("Acme\u00a0\u00a0  Inc") == "Acme Inc"


class TestMultiLine:
    def test_crlf_and_cr_become_lf(self):
        assert keep_line_breaks("1 Main St\r\nApt 2\rBack") == "1 Main St\nApt 2\nBack"

    def test_unicode_line_separators_become_lf(self):
        assert keep_line_breaks("a\u2028b\x85c") == "a\nb\nc"

    def test_other_controls_are_removed_and_a_tab_is_a_space(self):
        assert keep_line_breaks("a\x07b\x00c\td") == "abc d"
