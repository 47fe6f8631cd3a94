"""A batch ends as its items taken one by one, in input order, whatever they match."""

from __future__ import annotations

import random

from sqlalchemy import select

from leads.intake import submit, submit_batch
from leads.store.tables import (
    DuplicateReview,
    Lead,
    MatchKey,
    OutboxItem,
    TimelineEvent,
)

PEOPLE = [
    {"first_name": "Robert", "last_name": "O'Neil", "phone": "+1 415 555 0100"},
    {"first_name": "Ann", "last_name": "Lee", "phone": "+1 212 555 0199"},
    {"first_name": "Maria", "last_name": "Garcia", "phone": "+34 612 345 678"},
]
ADDRESSES = [
    "bob@acme.example",
    "bob+news@acme.example",
    "robert.oneil@gmail.com",
    "ann@x.example",
    "maria@y.example",
    None,
]
TITLES = ["CTO", "CEO", "VP Sales", None]


def random_items(seed: int, count: int) -> list[dict]:
    chooser = random.Random(seed)
    items = []
    for _ in range(count):
        person = dict(chooser.choice(PEOPLE))
        email = chooser.choice(ADDRESSES)
        if email:
            person["email"] = email
        if email and chooser.random() < 0.5:
            person.pop("phone")
        title = chooser.choice(TITLES)
        if title:
            person["job_title"] = title
        items.append(person)
    return items


def flags(lead: Lead) -> list[str]:
    # Without the ids of the leads they point at, which differ run to run.
    return [flag.split(":")[0] for flag in lead.flags]


def snapshot(store) -> tuple:
    with store.read("default") as scope:
        leads = sorted(
            repr((lead.email, lead.phone, lead.first_name, lead.job_title, flags(lead)))
            for lead in scope.session.scalars(select(Lead))
        )
        reviews = scope.session.query(DuplicateReview).count()
    return leads, reviews


def wipe(store) -> None:
    with store.engine.begin() as connection:
        for model in (DuplicateReview, MatchKey, OutboxItem, TimelineEvent, Lead):
            connection.execute(model.__table__.delete())


def test_random_batches_end_as_their_items_taken_one_by_one(store):
    for seed in range(12):
        items = random_items(seed, 8)
        outcomes = [
            submit(store, "default", item, channel="api", region="US").outcome
            for item in items
        ]
        one_by_one = snapshot(store)
        wipe(store)

        results = submit_batch(store, "default", items, channel="api", region="US")

        assert [r.outcome for r in results] == outcomes, f"seed {seed}"
        assert snapshot(store) == one_by_one, f"seed {seed}"
        wipe(store)
