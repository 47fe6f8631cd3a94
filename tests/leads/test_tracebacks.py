"""Tracebacks for logs: every frame and type, no message that may quote a record."""

from __future__ import annotations

import io
import logging

import pytest

from leads.tracebacks import ValuelessTracebacks, valueless

ADDRESS = "zq7trace.ada@example.com"


def store_refuses(address: str) -> None:
    raise ValueError(f"Key (tenant_id, email)=(default, {address}) already exists")


def intake(address: str) -> None:
    try:
        store_refuses(address)
    except ValueError as exc:
        raise RuntimeError(f"could not take {address}") from exc


def caught(call, *args) -> BaseException:
    with pytest.raises(BaseException) as info:
        call(*args)
    return info.value


class TestValueless:
    def test_keeps_the_frames_and_the_type_and_drops_the_message(self):
        text = valueless(caught(store_refuses, ADDRESS))

        assert text.startswith("Traceback (most recent call last):\n")
        assert "in store_refuses" in text and "in caught" in text
        assert text.endswith(
            "ValueError (message withheld: it may quote personal data)"
        )
        assert "zq7trace" not in text

    def test_names_every_error_of_a_chain_oldest_first(self):
        text = valueless(caught(intake, ADDRESS))

        first, second = text.split("\nwhich led to:\n")
        assert "ValueError (message withheld" in first and "in store_refuses" in first
        assert "RuntimeError (message withheld" in second and "in intake" in second
        assert "zq7trace" not in text

    def test_an_error_raised_while_handling_another_is_chained_too(self):
        def handling():
            try:
                store_refuses(ADDRESS)
            except ValueError:
                {}[ADDRESS]

        text = valueless(caught(handling))

        assert "ValueError (message" in text and "KeyError (message" in text
        assert "zq7trace" not in text

    def test_a_suppressed_context_is_left_out(self):
        def quiet():
            try:
                store_refuses(ADDRESS)
            except ValueError:
                raise LookupError("not found") from None

        text = valueless(caught(quiet))

        assert "ValueError" not in text and "LookupError (message" in text

    def test_keeps_what_python_says_about_the_code(self):
        text = valueless(caught(lambda: None.email))  # type: ignore[attr-defined]

        assert text.endswith(
            "AttributeError: 'NoneType' object has no attribute 'email'"
        )

    def test_names_a_library_error_by_its_module(self):
        from sqlalchemy.exc import IntegrityError

        error = IntegrityError("INSERT …", {"email": ADDRESS}, Exception(ADDRESS))

        text = valueless(error)

        assert "sqlalchemy.exc.IntegrityError (message withheld" in text
        assert "zq7trace" not in text


class TestTheFilter:
    def test_a_logged_exception_is_written_without_its_message(self):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        logger = logging.getLogger("tests.tracebacks.filtered")
        logger.addHandler(handler)
        logger.addFilter(ValuelessTracebacks())
        logger.propagate = False
        try:
            try:
                intake(ADDRESS)
            except RuntimeError:
                logger.exception("Exception in ASGI application")
        finally:
            logger.removeHandler(handler)

        written = stream.getvalue()
        assert written.startswith("Exception in ASGI application\nTraceback")
        assert "RuntimeError (message withheld" in written
        assert "zq7trace" not in written

    def test_a_record_without_an_exception_is_left_alone(self):
        record = logging.LogRecord(
            "x", logging.INFO, "f", 1, "plain %s", ("text",), None
        )

        assert ValuelessTracebacks().filter(record) is True
        assert record.getMessage() == "plain text" and record.exc_text is None
