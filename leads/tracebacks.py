"""Tracebacks that say where an error happened but not what it said.

An unexpected error's message may quote what it was working on: a database
error quotes the key it refused (`Key (email)=(ada@example.com)`), a validation
error its input, a vendor error the record. Logs must hold no address, phone
or name, so the tracebacks logged for unexpected errors keep every frame and
every exception's type, and drop the messages.

Prefect logs an error that escapes a task or flow with its message and keeps
the message in the run's state on its server; `withholding` wraps each flow's
and task's function so that what escapes says its type and frames only.
"""

from __future__ import annotations

import functools
import logging
import traceback
import types
from collections.abc import Callable
from typing import ParamSpec, TypeVar

WITHHELD = "message withheld: it may quote personal data"


class PlainMessage:
    """Mixed into an error whose message is written from settings or code only.

    A configuration file's error saying which key is wrong, a parameter's
    saying which parameter: never a record's values. `withholding` lets such
    messages through, as they tell the operator what to fix.
    """


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
    …) or a `PlainMessage`. Frames and source lines are kept, oldest error
    first, as Python prints them.
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
    if isinstance(error, (*_CODE_ERRORS, PlainMessage)):
        return f"{name}: {error}"
    return f"{name} ({WITHHELD})"


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


P = ParamSpec("P")
R = TypeVar("R")


def withholding(function: Callable[P, R]) -> Callable[P, R]:
    """`function`, its errors leaving it without their messages.

    Put under `@flow` and `@task`. What Prefect then logs, and keeps in the
    run's state, is the error's type and frames: the same error where it can
    be (a retry condition or an `except` still knows it, and its attributes
    are there for code to read), every message in its chain withheld as
    `valueless` withholds them.
    """

    calling = _calling(function, without_messages)
    # Prefect reads the function's annotations in the function's `__globals__`;
    # the wrapper reaches what it calls through its closure, so it can take
    # the globals of the module that wrote the flow.
    wrapper = types.FunctionType(
        calling.__code__,
        function.__globals__,
        function.__name__,
        calling.__defaults__,
        calling.__closure__,
    )
    functools.update_wrapper(wrapper, function)
    wrapper.withholds_messages = True  # type: ignore[attr-defined]
    # Prefect keys a task by its function's code: the wrapped one's, not this
    # wrapper's, which every wrapped task shares.
    wrapper.__prefect_task_source__ = function  # type: ignore[attr-defined]
    return wrapper


def _calling(
    function: Callable[P, R], withhold: Callable[[BaseException], BaseException]
) -> Callable[P, R]:
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except Exception as error:
            quiet = withhold(error)
        # Raised outside the handler, so that the error is not chained to itself.
        raise quiet

    return wrapper


class _Withheld:
    """Mixed into an error's own type: it prints no message, and pickles none."""

    def __str__(self) -> str:
        return f"({WITHHELD})"

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}({WITHHELD!r})"

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        # Kept results (Prefect's result storage) get a stand-in of the same
        # name: an error changed in place still holds its arguments and
        # attributes (a database error's parameters), which must not be kept.
        kind = type(self)
        return _stand_in, (kind.__module__, kind.__qualname__)


def _stand_in(module: str, qualname: str) -> BaseException:
    """An error named `module.qualname` that says nothing else (for unpickling)."""
    return _named_stand_in(module, qualname)()


@functools.cache
def _named_stand_in(module: str, qualname: str) -> type[BaseException]:
    return type(
        qualname.rpartition(".")[2],
        (_Withheld, Exception),
        {"__module__": module, "__qualname__": qualname},
    )


def without_messages(error: BaseException) -> BaseException:
    """`error`, and each error that led to it, saying nothing but its type.

    `error` itself, if its class is written in Python, becomes in place an
    instance of a subclass that prints no message: identity, attributes and
    traceback stay, and so do the errors its attributes name (a database
    error's `orig`). One of a built-in class cannot change class, so a new
    instance of such a subclass takes its place, made without its constructor
    (and keeping an `OSError`'s number), or of a class of the same name under
    `Exception` where even that fails.
    The errors that led to it are only printed: each gets such a stand-in of
    the same name. Errors about the code, and Prefect's own, keep their
    messages; the errors behind them are still walked.
    """
    return _without(error, {}, stand_in=False)


def _without(
    error: BaseException, done: dict[int, BaseException], *, stand_in: bool
) -> BaseException:
    if id(error) in done:
        return done[id(error)]
    # Until its stand-in is made: a chain may loop back to it.
    done[id(error)] = _withheld_class(type(error), Exception)()
    if isinstance(error, BaseExceptionGroup):
        parts = [_without(part, done, stand_in=stand_in) for part in error.exceptions]
        quiet: BaseException = BaseExceptionGroup(f"({WITHHELD})", parts)
    elif _speaks_of_code(error):
        quiet = error
    elif stand_in:
        quiet = done[id(error)]
    else:
        quiet = _quiet(error)
    done[id(error)] = quiet
    cause, context = error.__cause__, error.__context__
    if quiet is not error:
        quiet.__traceback__ = error.__traceback__
        quiet.__suppress_context__ = error.__suppress_context__
    if hasattr(quiet, "__notes__"):
        del quiet.__notes__  # notes are text added to the message
    if cause is not None:
        quiet.__cause__ = _without(cause, done, stand_in=True)
    if context is not None:
        quiet.__context__ = _without(context, done, stand_in=True)
    return quiet


def _speaks_of_code(error: BaseException) -> bool:
    # Prefect's own signals (an abort, a pause, a timeout) are told apart by
    # their classes and say what happened to the run, not what it read.
    return (
        isinstance(error, (*_CODE_ERRORS, PlainMessage, _Withheld))
        or type(error).__module__.partition(".")[0] == "prefect"
    )


def _quiet(error: BaseException) -> BaseException:
    kind = type(error)
    try:
        error.__class__ = _withheld_class(kind)
        return error
    except TypeError:  # a built-in class
        pass
    made = _withheld_class(kind)
    try:
        # Made without its constructor, which may want arguments (a
        # UnicodeDecodeError's five): still an instance of its own class.
        quiet = made.__new__(made)
    except TypeError:
        return _withheld_class(kind, Exception)()
    if isinstance(error, OSError) and isinstance(quiet, OSError):
        quiet.errno = error.errno  # a number, which says what failed
    return quiet


@functools.cache
def _withheld_class(
    kind: type[BaseException], base: type[BaseException] | None = None
) -> type[BaseException]:
    """A subclass of `base` (or `kind`) named as `kind` is, printing no message."""
    return type(
        kind.__name__,
        (_Withheld, base or kind),
        {"__module__": kind.__module__, "__qualname__": kind.__qualname__},
    )
