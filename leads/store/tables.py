"""The lead store's tables: leads, their timeline, the outbox, steps and reviews."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates

from leads import clock, matching

JsonDocument = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias).
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, aware and in UTC, by the process's clock (`leads.clock`)."""
    return clock.now()


def new_id() -> str:
    """A new random lead id."""
    return str(uuid.uuid4())


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; store aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Lead(Base):
    """One person, keyed per tenant by the normalised e-mail address."""

    __tablename__ = "leads"
    __table_args__ = (
        # The selective column leads each index: PostgreSQL plans against
        # estimates, and before its first ANALYZE a (tenant_id, …) index ties
        # with every other one on cost, so it may scan a whole tenant.
        UniqueConstraint("email", "tenant_id", name="uq_leads_email_tenant"),
        Index("ix_leads_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_leads_status", "status", "tenant_id"),
        Index("ix_leads_crm_status", "crm_sync_status", "tenant_id"),
        Index("ix_leads_phone", "phone", "tenant_id"),
        Index("ix_leads_mailbox", "mailbox_key", "tenant_id"),
        Index("ix_leads_email_hash", "email_hash", "tenant_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320))
    email_display: Mapped[str | None] = mapped_column(String(320))
    # Shared by the spellings of one mailbox (`+tag`, Gmail's dots): finds
    # possible duplicates through an index. Kept by `_keep_address_keys`.
    mailbox_key: Mapped[str | None] = mapped_column(String(320))
    # The address's digest, as an address unsubscribe link or a suppression
    # names it: finds the lead such a link was for. Kept by `_keep_address_keys`.
    email_hash: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(32))
    phone_raw: Mapped[str | None] = mapped_column(String(64))
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    company: Mapped[str | None] = mapped_column(String(255))
    job_title: Mapped[str | None] = mapped_column(String(255))
    website: Mapped[str | None] = mapped_column(String(2048))
    street: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str | None] = mapped_column(String(255))
    postal_code: Mapped[str | None] = mapped_column(String(32))
    country: Mapped[str | None] = mapped_column(String(64))
    timezone: Mapped[str | None] = mapped_column(String(64))
    notes: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), default="new")
    score: Mapped[int | None] = mapped_column(Integer)
    score_reasons: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    warnings: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    flags: Mapped[list[str]] = mapped_column(JsonDocument, default=list)
    crm_id: Mapped[str | None] = mapped_column(String(64))
    crm_sync_status: Mapped[str] = mapped_column(String(32), default="pending")
    crm_sync_reason: Mapped[str | None] = mapped_column(String(255))
    crm_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Which CRM account `crm_id` belongs to (its budget key): a tenant moving
    # to another account has its leads written there too.
    crm_account: Mapped[str | None] = mapped_column(String(128))
    # What reconciliation last read back from the CRM: `converted`,
    # `lifecycle_stage`, `opted_out`, `replied_at`, `status` (the e-mail stop
    # conditions read it).
    crm_state: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    # The person asked for no more marketing e-mail (an unsubscribe or a spam
    # complaint); the CRM's opt-out field follows on the next sync.
    email_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    # When e-mail events last happened to this lead, as ISO times:
    # `unsubscribed_at`, `complained_at`, `bounced_at`, `replied_at` (the
    # sequences' stop conditions read it).
    email_state: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    custom: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    captured_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )
    # Bumped on every change: lets a drain tell whether it synced the latest.
    version: Mapped[int] = mapped_column(Integer, default=1)

    @validates("email")
    def _keep_address_keys(self, _name: str, email: str | None) -> str | None:
        # Every write of the address (intake, PUT, PATCH) passes here, so the
        # key never lags behind the e-mail it was derived from.
        self.mailbox_key = matching.mailbox_key(email)
        self.email_hash = matching.address_digest(email)
        return email


class TimelineEvent(Base):
    """Something that happened to a lead, in order, with where it came from."""

    __tablename__ = "lead_events"
    __table_args__ = (Index("ix_lead_events_lead", "lead_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    lead_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("leads.id", ondelete="CASCADE")
    )
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(255))
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)


class OutboxItem(Base):
    """Work a flow owes a lead (a CRM sync, a sequence enrolment), claimed by lease.

    One row per (topic, key): re-queueing a lead whose row is still pending
    bumps `generation` instead of adding a row, so a burst of changes costs one
    sync, and a drain that finishes an older generation leaves the row pending.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("tenant_id", "topic", "key", name="uq_outbox_topic_key"),
        Index("ix_outbox_claim", "topic", "status", "available_at"),
        Index("ix_outbox_lead", "lead_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    topic: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    # None only for work owed to no lead: a one-off e-mail to a bare address.
    lead_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("leads.id", ondelete="CASCADE")
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    generation: Mapped[int] = mapped_column(Integer, default=1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )


class SequenceStep(Base):
    """One step of a sequence owed to one lead, and how far its e-mail got.

    `pending` → `sending` (just before the message is handed over) → `sent`; a
    step a later run finds still `sending` lost its sender mid-send and becomes
    `unknown`, never re-sent by itself. `skipped` and `failed` say why nothing
    went out.
    """

    __tablename__ = "sequence_steps"
    __table_args__ = (
        # Led by lead_id so that the index also serves the foreign key: deleting
        # a lead finds its steps without scanning the table.
        UniqueConstraint(
            "lead_id",
            "sequence",
            "step_key",
            "tenant_id",
            name="uq_sequence_steps_key",
        ),
        # Provider events name the message they are about.
        Index("ix_sequence_steps_message_id", "message_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    lead_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("leads.id", ondelete="CASCADE")
    )
    sequence: Mapped[str] = mapped_column(String(64))
    # 1-based, where the step stood in the sequence when its row was made.
    step: Mapped[int] = mapped_column(Integer)
    # The step's `id` in the configuration: what "already had this step" is
    # judged by, so reordering or inserting steps never re-sends one.
    step_key: Mapped[str] = mapped_column(String(64))
    template: Mapped[str | None] = mapped_column(String(128))
    # The SHA-256 of the address the message went to (`leads.suppression`), so
    # a bounce reported later is held against that address, not the lead's
    # current one.
    recipient_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str | None] = mapped_column(String(255))
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )


class DuplicateReview(Base):
    """A pair of leads that may be one person, waiting for someone to decide.

    `lead_id` is the lead created second (it carries the flag), `duplicate_of_id`
    the earlier one. `open` → `merged` (the later lead folded into the earlier
    one and deleted) or `dismissed` (two people after all).
    """

    __tablename__ = "duplicate_reviews"
    __table_args__ = (
        UniqueConstraint(
            "lead_id", "duplicate_of_id", "tenant_id", name="uq_duplicate_reviews_pair"
        ),
        # Serves the foreign key too: deleting a lead finds its items by index.
        Index("ix_duplicate_reviews_earlier", "duplicate_of_id"),
        Index("ix_duplicate_reviews_status", "status", "tenant_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    # No foreign key: a merged item outlives the lead merged away, as the
    # record of what became of it.
    lead_id: Mapped[str] = mapped_column(String(36))
    duplicate_of_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("leads.id", ondelete="CASCADE")
    )
    reason: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LeadImport(Base):
    """An uploaded lead file and how far its import got.

    `queued` → `running` → `finished` (or `failed`, with the reason). Chunks of
    records are committed one at a time together with `records_done` and the
    counts, so a run that dies resumes after the last committed chunk and ends
    with the counts of an uninterrupted run. A run holds the import by lease.
    """

    __tablename__ = "imports"
    __table_args__ = (Index("ix_imports_tenant_created", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    # Where the uploaded bytes are kept until the import has finished.
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mapping: Mapped[dict[str, str]] = mapped_column(JsonDocument, default=dict)
    dry_run: Mapped[bool] = mapped_column(default=False)
    chunk_size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    encoding: Mapped[str | None] = mapped_column(String(16))
    delimiter: Mapped[str | None] = mapped_column(String(8))
    # [file header, lead field or custom name] pairs in file order (a list: a
    # JSONB object would not keep the order).
    columns: Mapped[list[list[str]]] = mapped_column(JsonDocument, default=list)
    # The number of the last record of the last committed chunk.
    records_done: Mapped[int] = mapped_column(Integer, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    counts: Mapped[dict[str, int]] = mapped_column(JsonDocument, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )


class ImportReject(Base):
    """A record of an import that was not taken in, with why and what it held."""

    __tablename__ = "import_rejects"
    __table_args__ = (
        UniqueConstraint("import_id", "record", name="uq_import_rejects_record"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    import_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("imports.id", ondelete="CASCADE")
    )
    # Numbered from 1 after the header; `line` is where it starts in the file.
    record: Mapped[int] = mapped_column(Integer)
    line: Mapped[int] = mapped_column(Integer)
    errors: Mapped[list[dict[str, str]]] = mapped_column(JsonDocument, default=list)
    # The cells as read, under the file's own headers, for a corrected re-import.
    values: Mapped[dict[str, str]] = mapped_column(JsonDocument, default=dict)


class MatchKey(Base):
    """A blocking key of a lead: leads sharing one are compared when matching."""

    __tablename__ = "lead_match_keys"
    __table_args__ = (Index("ix_lead_match_keys_key", "key", "tenant_id"),)

    lead_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))


class CrmAccount(Base):
    """The CRM a tenant's leads are synced to, set through `POST /api/crm/config`.

    Secrets (tokens, passwords, keys) are kept encrypted with the secret key in
    `secrets`; everything else is plain JSON in `settings`. A tenant without a
    row uses the CRM the environment names (`ORCH_CRM`).
    """

    __tablename__ = "crm_accounts"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    settings: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)
    secrets: Mapped[str | None] = mapped_column(Text)
    # The mapping document (as the YAML file would hold it); None: the shipped one.
    mapping: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    mode: Mapped[str] = mapped_column(String(16), default="upsert")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )


class CrmSyncTarget(Base):
    """The CRM account a tenant's leads were last synced to.

    When the tenant's account changes (the sandbox swapped for a real CRM, a
    HubSpot portal for Salesforce), every lead is queued to be written to the
    new one.
    """

    __tablename__ = "crm_sync_targets"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account: Mapped[str] = mapped_column(String(128))
    since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CrmReconciliation(Base):
    """How far reconciliation has read one tenant's CRM account's changes."""

    __tablename__ = "crm_reconciliations"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Every change the CRM made before this instant has been pulled.
    reconciled_until: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )


class RateBudgetRow(Base):
    """A token bucket for one CRM account, shared by every worker that calls it.

    `tokens` refill at `capacity / window_seconds` a second up to `capacity`;
    the vendor's headers correct it. `blocked_until` is set when the daily
    allowance is spent: nothing is called before it.
    """

    __tablename__ = "crm_rate_budgets"

    account: Mapped[str] = mapped_column(String(128), primary_key=True)
    capacity: Mapped[float] = mapped_column(Float)
    window_seconds: Mapped[float] = mapped_column(Float)
    tokens: Mapped[float] = mapped_column(Float)
    refilled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    daily_limit: Mapped[int | None] = mapped_column(Integer)
    daily_remaining: Mapped[int | None] = mapped_column(Integer)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)


class EmailSend(Base):
    """A one-off e-mail (`POST /api/email/send`) and how far it got.

    Its sending states are those of a sequence step: `pending` → `sending` →
    `sent`, or `unknown`, `failed`, `refused` (suppressed at send time). The
    outbox row that carries it has the same id as its key.
    """

    __tablename__ = "email_sends"
    __table_args__ = (
        UniqueConstraint(
            "idempotency_key", "tenant_id", name="uq_email_sends_idempotency"
        ),
        Index("ix_email_sends_lead", "lead_id"),
        Index("ix_email_sends_message_id", "message_id"),
        Index("ix_email_sends_tenant_created", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(64))
    lead_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("leads.id", ondelete="CASCADE")
    )
    # Only for a send to a bare address; a lead's address is read at send time.
    recipient: Mapped[str | None] = mapped_column(String(320))
    category: Mapped[str] = mapped_column(String(16))
    template: Mapped[str | None] = mapped_column(String(128))
    subject: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    message_id: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )


class EmailSuppression(Base):
    """An address no more e-mail of a category goes to, and why.

    Kept by a hash of the normalised address, so it outlives the person's
    erasure without keeping the address. `scope` is `marketing` (an
    unsubscribe, a complaint) or `all` (a hard bounce: the mailbox is gone).
    """

    __tablename__ = "email_suppressions"
    __table_args__ = (
        UniqueConstraint(
            "address_hash", "tenant_id", "reason", name="uq_email_suppressions"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    address_hash: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(String(16))
    # No foreign key: the entry outlives the lead it was made for.
    lead_id: Mapped[str | None] = mapped_column(String(36))
    source: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EmailEvent(Base):
    """A delivery event a provider reported (`POST /api/email/events`), once.

    The provider's event id is unique per tenant, so a callback delivered
    again is recorded once and applied once.
    """

    __tablename__ = "email_events"
    __table_args__ = (
        UniqueConstraint("event_id", "tenant_id", name="uq_email_events_event"),
        Index("ix_email_events_lead", "lead_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    lead_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("leads.id", ondelete="CASCADE")
    )
    address_hash: Mapped[str | None] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(String(255))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # `applied`, or why not (`no_such_recipient`, `older_than_state`, …).
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)


class SequencePlan(Base):
    """The configuration a sequence was last dispatched with, as a fingerprint.

    When `config/sequences.yaml` changes a sequence, the dispatcher wakes every
    enrolment waiting in it, so new delays and windows apply from the next run
    rather than at the time the old configuration had set.
    """

    __tablename__ = "sequence_plans"

    sequence: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )


class WebhookDelivery(Base):
    """One webhook event as it arrived, kept before anything is done with it.

    The sender's delivery id is unique per tenant and source, so a redelivery
    is counted (`receipts`) and never applied twice. `status` is `pending`
    until processed, then `applied`, `stale` (older than an event already
    applied to the same lead and subject), `ignored` (an event type this
    source does not act on) or `rejected` (with `reasons`).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint(
            "source", "delivery_id", "tenant_id", name="uq_webhook_deliveries"
        ),
        # One signature is one delivery, whatever id an unsigned header gives
        # it: a captured request replayed under new ids is a redelivery.
        UniqueConstraint(
            "source",
            "signature_digest",
            "tenant_id",
            name="uq_webhook_deliveries_signature",
        ),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_lead", "lead_id", "subject", "occurred_at"),
        Index("ix_webhook_deliveries_listing", "tenant_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    delivery_id: Mapped[str] = mapped_column(String(255))
    # SHA-256 of the signature header; None where one signature covers many
    # events (HubSpot's batches) or the source sends a token.
    signature_digest: Mapped[str | None] = mapped_column(String(64))
    event_type: Mapped[str | None] = mapped_column(String(128))
    # What the event is about within its lead (a HubSpot property), so that
    # ordering is kept per subject; None for a whole lead.
    subject: Mapped[str | None] = mapped_column(String(128))
    # The bytes as received (for HubSpot, this event of the batch), so a
    # delivery can be processed again after a crash or a config change.
    body: Mapped[bytes] = mapped_column(LargeBinary)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    receipts: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reasons: Mapped[list[dict[str, str]]] = mapped_column(JsonDocument, default=list)
    # No foreign key: the delivery stays as evidence when a lead is merged.
    lead_id: Mapped[str | None] = mapped_column(String(36))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    flow_run_id: Mapped[str | None] = mapped_column(String(36))


class ApiKey(Base):
    """A key a caller sends to act for one tenant with one scope.

    Only a SHA-256 digest of the key's secret part is kept: keys are 256-bit
    random values, so a digest cannot be guessed back and needs no slow hash.
    A revoked key stays, so its audit records still name it.
    """

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128), default="")
    secret_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """One mutating call or automated decision, appended and never changed.

    `actor` is the API key's id, or `system` with the flow run for automated
    decisions. Records name objects by id and hold no personal data, so they
    outlive an erasure. The database refuses UPDATE and DELETE on this table.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_tenant", "tenant_id", "id"),
        Index("ix_audit_events_target", "tenant_id", "target_type", "target_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    # `request` for an API call, `decision` for what the product decided.
    kind: Mapped[str] = mapped_column(String(16))
    # `POST /api/leads/{lead_id}` for calls (the route's template, no values);
    # `lead.merged`, `crm.parked`, `email.suppressed`, … for decisions.
    action: Mapped[str] = mapped_column(String(128))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)
    flow_run_id: Mapped[str | None] = mapped_column(String(36))
    # Ids, counts and reason codes only.
    detail: Mapped[dict[str, Any]] = mapped_column(JsonDocument, default=dict)


class TriggerKey(Base):
    """An `Idempotency-Key` a workflow trigger holds, shared by every API replica.

    The first request with a key inserts this row and holds it while it takes
    the lead in and starts the run; a concurrent request with the same key
    waits for the hold to end, then answers with that run. `lead_id` is the
    lead the first request took in, so a request that takes over from one
    that died does not take it in again.
    """

    __tablename__ = "trigger_keys"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    holder: Mapped[str] = mapped_column(String(32))
    held_until: Mapped[datetime] = mapped_column(UTCDateTime)
    lead_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DrainPresence(Base):
    """A drain run polling its outbox now, so new rows need no run of their own.

    The run renews `until` every few seconds while it polls and deletes the
    row before its last look at the outbox: a row committed while the API saw
    this one is always found by that run. A run that died stops counting once
    `until` has passed. System work, across tenants: it holds no one's data.
    """

    __tablename__ = "drain_presence"

    # The deployment the run drains for, e.g. `crm_sync`.
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    until: Mapped[datetime] = mapped_column(UTCDateTime)
