"""Tasks with side effects never reuse a cached result (case PF-03).

With `cache_policy=TASK_SOURCE + INPUTS`, an input Prefect could not hash (a
mailer holding an open SMTP socket) dropped out of the key, and the second
lead of a flow run got the first lead's cached result instead of its e-mail.
Every task here sends, writes or imports, so none may cache; sending at most
once is the store's job.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import pkgutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prefect import Task, flow, runtime
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun
from prefect.states import Failed
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from connectors.email.mailbox import Mailbox, running_mailbox
from connectors.email.smtp import SmtpOutbox
from connectors.email.templates import TemplateRenderer
from leads.intake import submit
from leads.sequences import load_sequences
from leads.store import Store
from leads.store.claims import claim
from leads.store.outbox import SEQUENCE_ENROLMENT
from leads.store.tables import SequenceStep
from tasks.import_chunks import import_chunk
from tasks.sequence_steps import DispatchContext, send_sequence_steps

CASE = json.loads(
    (Path(__file__).parents[1] / "cases" / "PF-03.json").read_text(encoding="utf-8")
)
CONFIG = Path(__file__).parents[2] / "config"
SENDER = "Automation Orchestrator <noreply@localhost>"
# Every module here holds side-effect work; a task defined anywhere in them is ours.
PACKAGES = ("tasks", "flows")
# Tasks Prefect may run again, each for a reason its retry condition states.
RETRIED = {"import chunk"}


def prefect_tasks() -> dict[str, Task]:
    """Every Prefect task defined in `PACKAGES`, by task name."""
    found: dict[str, Task] = {}
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__, f"{package_name}."):
            for value in vars(importlib.import_module(module.name)).values():
                if isinstance(value, Task):
                    found[value.name] = value
    return found


TASKS = prefect_tasks()


class TestEveryTask:
    def test_the_tasks_that_send_write_and_import_are_all_found(self):
        assert {
            "send sequence steps",
            "send one-off emails",
            "upsert leads to the CRM",
            "import chunk",
        } <= set(TASKS)

    @pytest.mark.parametrize("task", TASKS.values(), ids=TASKS.keys())
    def test_never_caches(self, task):
        assert task.cache_policy is NO_CACHE
        assert task.cache_key_fn is None
        assert task.cache_expiration is None
        assert not task.refresh_cache

    @pytest.mark.parametrize("task", TASKS.values(), ids=TASKS.keys())
    def test_is_retried_only_on_a_condition_that_says_why(self, task):
        if task.name not in RETRIED:
            assert task.retries == 0
            return
        assert task.retries > 0
        condition = task.retry_condition_fn
        assert condition is not None, "a retry without a condition repeats a 4xx"
        assert "#" in inspect.getsource(condition), "a comment gives the reason"

    def test_the_retried_ones_are_still_retried(self):
        assert {name for name, task in TASKS.items() if task.retries} == RETRIED


class TestImportChunkRetries:
    """A chunk is one transaction, so running it again after a rollback is safe."""

    def test_retries_a_store_that_was_busy(self):
        locked = OperationalError("INSERT", {}, Exception("database is locked"))

        assert import_chunk.retry_condition_fn(import_chunk, None, Failed(data=locked))

    @pytest.mark.parametrize(
        "error",
        [
            IntegrityError("INSERT", {}, Exception("duplicate key")),
            ValueError("a record the importer cannot read"),
        ],
    )
    def test_does_not_retry_what_would_fail_again(self, error):
        assert not import_chunk.retry_condition_fn(
            import_chunk, None, Failed(data=error)
        )


@pytest.fixture
def mailbox(tmp_path) -> Iterator[Mailbox]:
    with running_mailbox(tmp_path / "mailbox") as running:
        yield running


def task_runs(url: str, flow_run_id: UUID, expected: int) -> list[TaskRun]:
    """The flow run's task runs once all of them are final on the server.

    Task run states reach the server as events, a moment after the flow ends.
    """

    async def read() -> list[TaskRun]:
        async with PrefectClient(api=url) as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )

    deadline = time.monotonic() + 30
    while True:
        runs = asyncio.run(read())
        final = [run for run in runs if run.state is not None and run.state.is_final()]
        if len(final) >= expected or time.monotonic() > deadline:
            return sorted(runs, key=lambda run: str(run.start_time))
        time.sleep(0.5)


@pytest.mark.slow
class TestTwoLeadsInOneFlowRun:
    def test_each_lead_gets_its_own_email_and_no_task_run_is_cached(
        self, store: Store, on_prefect: str, mailbox: Mailbox
    ):
        addresses = CASE["expected"]["emails_sent"]
        lead_ids = [
            submit(
                store, "default", {"email": address}, channel="api", region="US"
            ).lead.id
            for address in addresses
        ]
        # The case's mailer: one SMTP connection, open across both task calls,
        # which no cache key could hash.
        outbox = SmtpOutbox.from_url(mailbox.url, timeout=10)
        context = DispatchContext(
            sequences=load_sequences(CONFIG / "sequences.yaml"),
            renderer=TemplateRenderer(CONFIG / "templates"),
            outbox=outbox,
            sender_address=SENDER,
            unsubscribe_link=lambda tenant, lead: f"http://127.0.0.1:8000/u/{lead}",
        )

        @flow(name="greet-leads-one-by-one")
        def greet_one_by_one(lead_ids: list[str]) -> list[dict[str, int]]:
            owner = str(runtime.flow_run.id)
            counts = []
            with outbox.session():
                for lead_id in lead_ids:
                    claims = claim(
                        store,
                        SEQUENCE_ENROLMENT,
                        owner,
                        limit=10,
                        lease=timedelta(minutes=5),
                        lead_id=lead_id,
                    )
                    counts.append(
                        send_sequence_steps(claims, store=store, context=context)
                    )
            return counts

        first = greet_one_by_one(lead_ids, return_state=True)

        assert first.is_completed(), first
        assert [counts["sent"] for counts in first.result()] == [1, 1]
        received = [rcpt for envelope in mailbox.received for rcpt in envelope.rcpt_tos]
        assert sorted(received) == sorted(addresses)
        assert mailbox.connections == 1, "both sends shared the open connection"
        runs = task_runs(on_prefect, first.state_details.flow_run_id, expected=2)
        assert [run.state.name for run in runs] == CASE["expected"]["task_states"]
        cached = [run for run in runs if run.state.name == "Cached"]
        assert len(cached) == CASE["expected"]["cached_states"]

        again = greet_one_by_one(lead_ids, return_state=True)

        assert again.is_completed(), again
        assert [counts["sent"] for counts in again.result()] == [0, 0]
        assert len(mailbox.received) == 2, "the steps are sent already"
        runs = task_runs(on_prefect, again.state_details.flow_run_id, expected=2)
        assert [run.state.name for run in runs] == ["Completed", "Completed"]
        with store.read("default") as scope:
            sent = scope.session.scalars(
                select(SequenceStep.lead_id).where(SequenceStep.status == "sent")
            ).all()
        assert sorted(sent) == sorted(lead_ids), "one step a lead, once"
