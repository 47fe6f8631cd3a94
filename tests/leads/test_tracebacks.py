"""Tracebacks for logs: every frame and type, no message that may quote a record."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import io
import logging
import pickle
import sqlite3
import time
import traceback
from pathlib import Path
from uuid import UUID

import cloudpickle
import pytest
from prefect import Flow, State, Task, flow, task
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogWorker
from sqlalchemy import Connection, create_engine
from sqlalchemy.exc import OperationalError

from leads.sequences import SequenceConfigError
from leads.store.database import is_transient
from leads.tracebacks import (
    WITHHELD,
    ValuelessTracebacks,
    valueless,
    withholding,
    without_messages,
)
from tasks.import_chunks import _store_busy as store_busy

ROOT = Path(__file__).resolve().parents[2]

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


def database_refuses(address: str) -> None:
    """A busy SQLite file, as SQLAlchemy raises it, with a record in its text."""
    try:
        raise sqlite3.OperationalError(f"database is locked while writing {address}")
    except sqlite3.OperationalError as exc:
        raise OperationalError("INSERT INTO leads", {"email": address}, exc) from exc


def printed(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + str(error)


class TestWithholding:
    def test_an_error_leaves_with_its_type_and_frames_and_without_its_message(self):
        error = caught(withholding(store_refuses), ADDRESS)

        assert isinstance(error, ValueError)
        text = printed(error)
        assert ADDRESS not in text
        assert "in store_refuses" in text
        assert f"ValueError: ({WITHHELD})" in text

    def test_each_error_of_the_chain_is_withheld(self):
        error = caught(withholding(intake), ADDRESS)

        assert isinstance(error, RuntimeError)
        assert isinstance(error.__cause__, Exception)
        text = printed(error)
        assert ADDRESS not in text
        assert f"ValueError: ({WITHHELD})" in text
        assert f"RuntimeError: ({WITHHELD})" in text
        assert "direct cause" in text

    def test_a_library_error_stays_itself_for_retry_conditions_to_read(self):
        try:
            database_refuses(ADDRESS)
        except OperationalError as raised:
            original = raised

        error = caught(withholding(database_refuses), ADDRESS)
        same = without_messages(original)

        assert same is original, "a class written in Python changes in place"
        for each in (error, same):
            assert isinstance(each, OperationalError)
            assert is_transient(each), "its `orig` is untouched"
            assert isinstance(each.orig, sqlite3.OperationalError)
            assert ADDRESS not in printed(each)
            assert "sqlite3.OperationalError" in printed(each)
            assert "sqlalchemy.exc.OperationalError" in printed(each)

    def test_an_error_whose_class_needs_arguments_is_still_named(self):
        def decode(address: str) -> None:
            address.encode().decode("ascii", errors="strict")
            raise UnicodeDecodeError("ascii", address.encode(), 0, 1, address)

        error = caught(withholding(decode), ADDRESS)

        assert ADDRESS not in printed(error)
        assert f"UnicodeDecodeError: ({WITHHELD})" in printed(error)

    def test_a_built_in_error_needing_arguments_keeps_its_class(self):
        error = without_messages(
            UnicodeDecodeError("utf-8", ADDRESS.encode(), 0, 1, ADDRESS)
        )
        refused = without_messages(ConnectionRefusedError(111, ADDRESS))

        assert isinstance(error, UnicodeDecodeError) and isinstance(error, ValueError)
        assert isinstance(refused, ConnectionRefusedError)
        assert refused.errno == 111, "a number, saying what failed"
        assert ADDRESS not in printed(error) + printed(refused)

    def test_a_withheld_error_pickles_without_its_message_or_attributes(self):
        try:
            database_refuses(ADDRESS)
        except OperationalError as raised:
            quiet = without_messages(raised)

        for kept in (pickle.dumps(quiet), cloudpickle.dumps(quiet)):
            assert ADDRESS.encode() not in kept
            again = pickle.loads(kept)
            assert type(again).__qualname__ == "OperationalError"
            assert type(again).__module__ == "sqlalchemy.exc"
            assert WITHHELD in str(again)

    def test_a_chain_looping_through_a_group_is_withheld_throughout(self):
        inner = ValueError(ADDRESS)
        group = ExceptionGroup(f"group of {ADDRESS}", [inner])
        inner.__cause__ = group

        assert ADDRESS not in printed(without_messages(group))

    def test_notes_and_groups_are_withheld_too(self):
        def grouped(address: str) -> None:
            inner = ValueError(address)
            inner.add_note(f"while reading {address}")
            raise ExceptionGroup(
                f"two failed for {address}", [inner, KeyError(address)]
            )

        error = caught(withholding(grouped), ADDRESS)

        assert isinstance(error, ExceptionGroup)
        assert ADDRESS not in printed(error)
        assert "ValueError" in printed(error) and "KeyError" in printed(error)

    @pytest.mark.parametrize(
        "error",
        [
            TypeError("send() got an unexpected keyword argument 'bcc'"),
            SequenceConfigError("no sequence 'nope' in sequences.yaml; known: welcome"),
        ],
        ids=["about-the-code", "plain-message"],
    )
    def test_what_speaks_of_code_or_settings_passes_whole(self, error):
        def fails() -> None:
            raise error

        assert caught(withholding(fails)) is error
        assert str(error) in printed(error)

    def test_a_withheld_function_is_still_itself_to_its_callers(self):
        def add(a: int, b: int = 2) -> int:
            """Adds."""
            return a + b

        wrapped = withholding(add)

        assert wrapped(1) == 3
        assert wrapped.__doc__ == "Adds." and wrapped.__name__ == "add"
        assert wrapped.__globals__ is add.__globals__
        assert inspect.signature(wrapped) == inspect.signature(add)


def product_runs() -> list[object]:
    """Every flow and task the product's modules define."""
    found = []
    for package in ("flows", "tasks"):
        for path in sorted((ROOT / package).glob("*.py")):
            module = importlib.import_module(f"{package}.{path.stem}")
            found += [
                value
                for value in vars(module).values()
                if isinstance(value, Flow | Task)
                and value.fn.__module__ == module.__name__
            ]
    return found


@pytest.mark.parametrize("run", product_runs(), ids=lambda run: run.name)
def test_every_flow_and_task_of_the_product_withholds(run):
    assert getattr(run.fn, "withholds_messages", False)


def test_the_product_has_flows_and_tasks_to_check():
    names = {run.name for run in product_runs()}
    assert {"crm-sync", "lead-import", "import chunk", "send sequence steps"} <= names


def refuse(address: str) -> None:
    raise ValueError(f"Key (tenant_id, email)=(default, {address}) already exists")


@task(name="refusing-test-task", retries=0)
@withholding
def refusing_task(lead_id: str) -> None:
    refuse(f"{lead_id}.{ADDRESS}")


@flow(name="refusing-test-flow")
@withholding
def refusing_flow(lead_id: str) -> None:
    refusing_task(lead_id)


@task(name="leaking-test-task", retries=0)
def leaking_task(lead_id: str) -> None:
    refuse(f"{lead_id}.{ADDRESS}")


@flow(name="leaking-test-flow")
def leaking_flow(lead_id: str) -> None:
    leaking_task(lead_id)


def what_prefect_keeps(url: str, flow_run_id: UUID) -> str:
    """The flow run's and its task run's states and logs, as the server has them.

    Task run states arrive as events a moment after the flow ends: read until
    the one task run is final.
    """
    APILogWorker.drain_all(timeout=10)

    async def read() -> tuple[list[State], list[str]]:
        async with PrefectClient(api=url) as client:
            run = await client.read_flow_run(flow_run_id)
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
        states = [each.state for each in (run, *tasks) if each.state is not None]
        return states, [log.message for log in logs]

    deadline = time.monotonic() + 30
    while True:
        states, logs = asyncio.run(read())
        if len(states) == 2 and all(state.is_final() for state in states):
            break
        assert time.monotonic() < deadline, f"task run not final: {states}"
        time.sleep(0.5)
    return "\n".join([state.model_dump_json() for state in states] + logs)


@pytest.mark.slow
def test_prefect_keeps_the_error_s_type_and_frames_and_not_its_message(on_prefect):
    leaked = leaking_flow("lead-1", return_state=True)
    withheld = refusing_flow("lead-2", return_state=True)

    assert leaked.is_failed() and withheld.is_failed()
    # What the same error leaves on the server when nothing withholds it: the
    # search below can find the address.
    assert f"lead-1.{ADDRESS}" in what_prefect_keeps(
        on_prefect, leaked.state_details.flow_run_id
    )
    kept = what_prefect_keeps(on_prefect, withheld.state_details.flow_run_id)
    assert ADDRESS not in kept
    assert "ValueError" in kept and WITHHELD in kept
    assert "in refuse\n" in kept, "the frames are logged"


# The lock another connection holds on each test file, and the attempts made.
HELD: dict[str, Connection] = {}
ATTEMPTS: dict[str, int] = {}


@task(
    name="retried-test-task",
    retries=2,
    retry_delay_seconds=0,
    retry_condition_fn=store_busy,
)
@withholding
def write_to(path: str, statement: str) -> int:
    ATTEMPTS[path] = ATTEMPTS.get(path, 0) + 1
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(statement)
    finally:
        engine.dispose()
        held = HELD.pop(path, None)
        if held is not None:
            held.rollback()  # free for the next try
            held.close()
    return ATTEMPTS[path]


@flow(name="retrying-test-flow")
@withholding
def write_through_prefect(path: str, statement: str) -> int:
    return write_to(path, statement)


@pytest.mark.slow
class TestRetriesThroughPrefect:
    """The import's retry condition still reads a withheld database error."""

    def test_a_busy_store_is_tried_again(self, on_prefect, tmp_path):
        path = str(tmp_path / "busy.db")
        engine = create_engine(f"sqlite:///{path}")
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (a TEXT)")
        holder = engine.connect()
        holder.exec_driver_sql("BEGIN IMMEDIATE")
        HELD[path] = holder

        state = write_through_prefect(
            path, "INSERT INTO t VALUES ('x')", return_state=True
        )

        assert state.is_completed(), state
        assert ATTEMPTS[path] == 2
        engine.dispose()

    def test_a_missing_table_is_not(self, on_prefect, tmp_path):
        path = str(tmp_path / "empty.db")

        state = write_through_prefect(
            path, f"INSERT INTO missing VALUES ('{ADDRESS}')", return_state=True
        )

        assert state.is_failed()
        assert ATTEMPTS[path] == 1
        assert "OperationalError" in state.message
        assert ADDRESS not in state.message
