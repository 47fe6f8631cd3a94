"""Person names: one line, single spaces, and the case the person typed.

Case is never changed, not even for a name typed all in capitals or all in lower
case. Re-casing has to guess what the capitals hid: `MCDONALD` may be McDonald or
Mcdonald, `DEANDRE` DeAndre or Deandre, `VAN DER BERG` van der Berg or Van Der
Berg, and a wrong guess misspells the person's own name in every e-mail we send
them. A template that wants a display form can choose one when it renders.
"""

from __future__ import annotations

from leads.control_characters import has_control_characters, to_one_line

PERSON_NAME_FIELDS = frozenset({"first_name", "last_name"})


def clean_name(text: str) -> str:
    """A trimmed name with each inner run of white space as one space, case kept.

    Raises:
        ValueError: the name holds a line break, a tab or another control
            character. Nothing is cleaned away: in a name these end up as extra
            header lines of the e-mails that greet the person, so whoever sent
            them is told.
    """
    if has_control_characters(text):
        raise ValueError(
            "a name may not contain line breaks, tabs or other control characters"
        )
    return to_one_line(text)
