"""Tracebacks that say where an error happened but not what it said.

An unexpected error's message may quote what it was working on: a database
error quotes the key it refused (`Key (email)=(ada@example.com)`), a validation
error its input, a vendor error the record. Logs must hold no address, phone
or name, so the tracebacks logged for unexpected errors keep every frame and
every exception's type, and drop the messages.
"""

# TODO(#8): an error that escapes a task or flow is logged by Prefect with its
# message, and its message is kept in the run's state on the server. The flows
# catch what they expect at one place each and log it through `valueless`; an
# unforeseen error elsewhere (in a CRM erasure, say) still reaches Prefect whole.

from __future__ import annotations

import logging
import traceback

# Messages Python itself writes about the code (names of types, attributes,
# arguments), never about the data: kept, as they say what the bug is.
_CODE_ERRORS = (
    AttributeError,
    ImportError,
    NameError,
    RecursionError,
    TypeError,
    ZeroDivisionError,
)


def valueless(error: BaseException) -> str:
    """The traceback of `error` and of the errors that led to it, without messages.

    Each exception is named by its type; its message is left out unless it is
    one of the built-in errors about the code (`AttributeError`, `TypeError`,
    …). Frames and source lines are kept, oldest error first, as Python
    prints them.
    """
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    parts: list[str] = []
    for number, item in enumerate(reversed(chain)):
        if number:
            parts.append("\nwhich led to:\n\n")
        parts.append("Traceback (most recent call last):\n")
        parts.extend(traceback.format_list(traceback.extract_tb(item.__traceback__)))
        parts.append(_named(item) + "\n")
    return "".join(parts).rstrip("\n")


def _named(error: BaseException) -> str:
    kind = type(error)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    if isinstance(error, _CODE_ERRORS):
        return f"{name}: {error}"
    return f"{name} (message withheld: it may quote personal data)"


class ValuelessTracebacks(logging.Filter):
    """Logs a record's exception as `valueless` gives it, for loggers we do not own.

    Installed on a logger (uvicorn's, which logs every unhandled error again
    after the app has answered), it applies to that logger's own records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = valueless(record.exc_info[1])
            record.exc_info = None
        return True
