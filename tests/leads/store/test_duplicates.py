"""Possible duplicates on a real store: flagging at intake, review items, merges."""

from __future__ import annotations

import threading

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, select, text

from leads.edits import patch
from leads.intake import submit, submit_batch
from leads.store import duplicates
from leads.store.database import create_store_engine
from leads.store.schema import MIGRATIONS
from leads.store.tables import (
    DuplicateReview,
    Lead,
    OutboxItem,
    SequenceStep,
    TimelineEvent,
)
from leads.suppression import blocked_reason, unsubscribe


def take(store, data, tenant="default"):
    return submit(store, tenant, data, channel="api", region="US").lead


def reviews(store, tenant="default", status=None) -> list[DuplicateReview]:
    with store.read(tenant) as scope:
        rows, _ = duplicates.page(scope, status, 100, None)
        return rows


def lead(store, lead_id, tenant="default") -> Lead | None:
    with store.read(tenant) as scope:
        return scope.get(Lead, lead_id)


def kinds(store, lead_id) -> list[str]:
    with store.read("default") as scope:
        rows = scope.session.scalars(
            scope.select(TimelineEvent)
            .where(TimelineEvent.lead_id == lead_id)
            .order_by(TimelineEvent.id)
        )
        return [row.kind for row in rows]


def rows_of(store, model, lead_id) -> int:
    with store.engine.connect() as connection:
        query = select(func.count()).select_from(model).where(model.lead_id == lead_id)
        return connection.execute(query).scalar_one()


class TestFlagging:
    def test_the_lead_created_second_is_flagged_and_paired_once(self, store):
        first = take(store, {"email": "jane.roe+webinar@example.com"})
        second = take(store, {"email": "jane.roe@example.com"})

        assert f"possible_duplicate_of:{first.id}" in second.flags
        assert not any(f.startswith("possible_duplicate") for f in first.flags)
        [item] = reviews(store)
        assert (item.lead_id, item.duplicate_of_id) == (second.id, first.id)
        assert (item.reason, item.status) == ("email_plus_tag", "open")

    def test_two_tags_of_one_mailbox_are_paired(self, store):
        first = take(store, {"email": "sam+a@example.com"})
        second = take(store, {"email": "sam+b@example.com"})

        [item] = reviews(store)
        assert (item.lead_id, item.duplicate_of_id) == (second.id, first.id)

    def test_gmail_addresses_differing_by_dots_are_paired(self, store):
        take(store, {"email": "jane.roe@gmail.com"})
        take(store, {"email": "janeroe@gmail.com"})

        assert [r.reason for r in reviews(store)] == ["gmail_dots"]

    def test_dots_elsewhere_are_another_mailbox_left_to_fuzzy_matching(self, store):
        # Outside Gmail the dot makes another mailbox, so the mailbox rule stays
        # silent; the fuzzy rules still find the addresses alike enough to ask.
        take(store, {"email": "jane.roe@example.com"})
        take(store, {"email": "janeroe@example.com"})

        assert [item.reason for item in reviews(store)] == ["similar_details"]

    def test_an_update_by_the_same_key_opens_no_item(self, store):
        take(store, {"email": "jane+a@example.com"})
        take(store, {"email": "jane@example.com"})
        take(store, {"email": "JANE@example.com", "company": "Roe Ltd"})

        assert len(reviews(store)) == 1

    def test_a_third_spelling_is_paired_with_the_first_lead(self, store):
        first = take(store, {"email": "jane@example.com"})
        take(store, {"email": "jane+a@example.com"})
        third = take(store, {"email": "jane+b@example.com"})

        assert third.flags == [f"possible_duplicate_of:{first.id}"]
        assert [r.duplicate_of_id for r in reviews(store)] == [first.id, first.id]

    def test_the_created_event_names_the_earlier_lead(self, store):
        first = take(store, {"email": "jane@example.com"})
        second = take(store, {"email": "jane+x@example.com"})

        with store.read("default") as scope:
            event = scope.session.scalars(
                scope.select(TimelineEvent).where(TimelineEvent.lead_id == second.id)
            ).one()
        assert event.detail["possible_duplicate_of"] == first.id

    def test_a_batch_pairs_spellings_within_itself(self, store):
        results = submit_batch(
            store,
            "default",
            [{"email": "ops+alerts@example.com"}, {"email": "ops@example.com"}],
            channel="api",
            region="US",
        )

        [item] = reviews(store)
        assert {item.lead_id, item.duplicate_of_id} == {r.lead_id for r in results}

    def test_a_new_address_given_by_patch_gets_its_mailbox_key(self, store):
        made = take(store, {"email": "old@example.com"})

        with store.write("default") as scope:
            patch(
                scope,
                made.id,
                {"email": "new+x@example.com"},
                channel="api",
                region="US",
            )

        assert lead(store, made.id).mailbox_key == "new@example.com"

    def test_leads_of_another_tenant_are_never_paired(self, store):
        take(store, {"email": "jane@example.com"}, tenant="other")
        second = take(store, {"email": "jane+x@example.com"})

        assert second.flags == []
        assert reviews(store) == reviews(store, tenant="other") == []


@pytest.fixture
def pair(store):
    """An earlier lead and a later spelling of its mailbox, paired by an item."""
    earlier = take(
        store,
        {
            "email": "jane.roe@example.com",
            "first_name": "Jane",
            "company": "Roe Ltd",
            "city": "Leeds",
            "utm_source": "ads",
            "utm_campaign": "spring",
        },
    )
    later = take(
        store,
        {
            "email": "jane.roe+webinar@example.com",
            "first_name": "Janet",
            "company": "",
            "phone": "+44 20 7946 0958",
            "utm_campaign": "webinar",
        },
    )
    [item] = reviews(store)
    return earlier, later, item


class TestDismiss:
    def test_closes_the_item_and_takes_the_flag_off(self, store, pair):
        earlier, later, item = pair

        with store.write("default") as scope:
            duplicates.dismiss(scope, item.id, channel="api")

        [closed] = reviews(store)
        assert closed.status == "dismissed"
        assert closed.resolved_at is not None
        assert lead(store, later.id).flags == []
        assert kinds(store, earlier.id)[-1] == "duplicate.dismissed"
        assert kinds(store, later.id)[-1] == "duplicate.dismissed"

    def test_twice_is_a_conflict(self, store, pair):
        item = pair[2]
        with store.write("default") as scope:
            duplicates.dismiss(scope, item.id, channel="api")

        with pytest.raises(duplicates.ReviewConflict), store.write("default") as scope:
            duplicates.dismiss(scope, item.id, channel="api")


class TestMerge:
    def test_leaves_one_lead_with_the_newer_non_empty_values(self, store, pair):
        earlier, later, item = pair

        with store.write("default") as scope:
            duplicates.merge(scope, item.id, channel="api")

        assert lead(store, later.id) is None
        kept = lead(store, earlier.id)
        assert kept.email == "jane.roe@example.com"
        assert kept.first_name == "Janet"
        assert kept.company == "Roe Ltd", "a blank never erases"
        assert kept.city == "Leeds"
        assert kept.phone == "+442079460958"
        assert kept.custom == {"utm_source": "ads", "utm_campaign": "webinar"}
        assert kept.version == earlier.version + 1

    def test_records_the_merge_on_the_surviving_lead(self, store, pair):
        earlier, later, item = pair

        with store.write("default") as scope:
            duplicates.merge(scope, item.id, channel="api")

        with store.read("default") as scope:
            event = scope.session.scalars(
                scope.select(TimelineEvent)
                .where(TimelineEvent.lead_id == earlier.id)
                .order_by(TimelineEvent.id.desc())
            ).first()
        assert event.kind == "lead.merged"
        assert event.detail["merged_lead_id"] == later.id
        assert event.detail["merged_email"] == "jane.roe+webinar@example.com"
        assert event.detail["fields"] == ["custom", "first_name", "phone"]

    def test_an_opt_out_on_the_merged_lead_holds_for_the_one_left(self, store, pair):
        earlier, later, item = pair
        with store.write("default") as scope:
            unsubscribe(scope, scope.get(Lead, later.id), source="test")
            replied = {"replied_at": "2026-12-01T10:00:00+00:00"}
            scope.get(Lead, earlier.id).email_state = replied

        with store.write("default") as scope:
            duplicates.merge(scope, item.id, channel="api")

        kept = lead(store, earlier.id)
        assert kept.email_opt_out is True
        assert kept.email_state["replied_at"] == "2026-12-01T10:00:00+00:00"
        assert "unsubscribed_at" in kept.email_state
        with store.read("default") as scope:
            for address in (kept.email, later.email):
                reason = blocked_reason(
                    scope, lead=None, address=address, category="marketing"
                )
                assert reason == "unsubscribed", address

    def test_leaves_no_rows_of_the_merged_lead_behind(self, store, pair):
        earlier, later, item = pair

        with store.write("default") as scope:
            duplicates.merge(scope, item.id, channel="api")

        for model in (TimelineEvent, OutboxItem, SequenceStep):
            assert rows_of(store, model, later.id) == 0, model.__tablename__
        [closed] = reviews(store)
        assert (closed.status, closed.lead_id) == ("merged", later.id)

    def test_owes_the_surviving_lead_a_crm_sync_again(self, store, pair):
        earlier, _, item = pair
        with store.write("default") as scope:
            sync = scope.session.scalars(
                scope.select(OutboxItem).where(
                    OutboxItem.lead_id == earlier.id, OutboxItem.topic == "crm_sync"
                )
            ).one()
            sync.status = "done"

        with store.write("default") as scope:
            duplicates.merge(scope, item.id, channel="api")

        with store.read("default") as scope:
            sync = scope.session.scalars(
                scope.select(OutboxItem).where(
                    OutboxItem.lead_id == earlier.id, OutboxItem.topic == "crm_sync"
                )
            ).one()
        assert (sync.status, sync.generation) == ("pending", 2)

    def test_after_a_dismissal_is_a_conflict_and_changes_nothing(self, store, pair):
        earlier, later, item = pair
        with store.write("default") as scope:
            duplicates.dismiss(scope, item.id, channel="api")

        with pytest.raises(duplicates.ReviewConflict), store.write("default") as scope:
            duplicates.merge(scope, item.id, channel="api")

        assert lead(store, later.id) is not None
        assert lead(store, earlier.id).first_name == "Jane"


class TestReviewItems:
    def test_another_tenant_cannot_see_or_resolve_them(self, store, pair):
        item = pair[2]

        assert reviews(store, tenant="other") == []
        with pytest.raises(duplicates.ReviewNotFound), store.write("other") as scope:
            duplicates.merge(scope, item.id, channel="api")
        assert reviews(store)[0].status == "open"

    @pytest.mark.parametrize("review_id", ["0", "abc", "1.5", " 1", str(2**63)])
    def test_text_that_is_no_item_id_is_not_found(self, store, review_id):
        with pytest.raises(duplicates.ReviewNotFound), store.read("default") as scope:
            duplicates.get_review(scope, review_id)

    def test_pages_oldest_first_filtered_by_status(self, store):
        for tag in "abcde":
            take(store, {"email": f"sam+{tag}@example.com"})
        with store.write("default") as scope:
            duplicates.dismiss(scope, reviews(store)[0].id, channel="api")

        with store.read("default") as scope:
            first, cursor = duplicates.page(scope, "open", 2, None)
            second, last = duplicates.page(scope, "open", 2, cursor)

        assert [r.status for r in first + second] == ["open"] * 3
        ids = [r.id for r in first + second]
        assert ids == sorted(ids)
        assert last is None


def test_the_migration_gives_stored_leads_their_mailbox_key(new_store_url, backend):
    engine = create_store_engine(new_store_url(backend))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        connection.execute(
            text(
                "INSERT INTO leads (id, tenant_id, email, status, score_reasons,"
                " warnings, flags, crm_sync_status, custom, created_at, updated_at,"
                " version) VALUES (:id, 'default', :email, 'new', '[]', '[]', '[]',"
                " 'pending', '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"
            ),
            [
                {
                    "id": "00000000-0000-4000-8000-000000000001",
                    "email": "a+x@gmail.com",
                },
                {"id": "00000000-0000-4000-8000-000000000002", "email": None},
            ],
        )
        command.upgrade(config, "head")
        keys = connection.execute(
            text("SELECT mailbox_key FROM leads ORDER BY id")
        ).scalars()
        assert list(keys) == ["a@gmail.com", None]
    engine.dispose()


class TestConcurrentCreates:
    def test_two_spellings_of_one_mailbox_created_at_once_are_paired(self, store):
        # On PostgreSQL both transactions would otherwise find no earlier lead.
        rounds = 15
        for number in range(rounds):
            spellings = [
                {"email": f"pat{number}+a@example.com"},
                [{"email": f"pat{number}@example.com"}],
            ]
            start = threading.Barrier(2)

            def create(given, start=start):
                start.wait()
                if isinstance(given, list):
                    submit_batch(store, "default", given, channel="api", region="US")
                else:
                    submit(store, "default", given, channel="api", region="US")

            threads = [threading.Thread(target=create, args=(s,)) for s in spellings]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)

        items = reviews(store)
        assert len(items) == rounds
        assert {lead(store, item.lead_id).email.split("@")[0] for item in items} <= {
            f"pat{n}{tag}" for n in range(rounds) for tag in ("", "+a")
        }
