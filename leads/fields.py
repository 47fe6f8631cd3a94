"""The lead's field names: what callers may write, and how long each may be."""

# Text fields a caller may set, with the longest value each accepts.
TEXT_FIELDS: dict[str, int] = {
    "email": 320,
    "phone": 64,
    "first_name": 255,
    "last_name": 255,
    "company": 255,
    "job_title": 255,
    "website": 2048,
    "street": 1000,
    "city": 255,
    "state": 255,
    "postal_code": 32,
    "country": 64,
    "timezone": 64,
    "notes": 20_000,
    "source": 255,
}

# Fields the store sets; a caller sending them back (a GET body re-sent as a
# PUT) has them ignored rather than kept in `custom`.
READ_ONLY_FIELDS = frozenset(
    {
        "id",
        "tenant_id",
        "email_display",
        "phone_raw",
        "score",
        "score_reasons",
        "warnings",
        "flags",
        "crm_id",
        "crm_sync_status",
        "crm_sync_reason",
        "crm_synced_at",
        "crm_state",
        "crm_account",
        # Set by unsubscribes, complaints and provider events, never by an edit:
        # an opt-out is the person's own word (`/u/{token}`, `/api/email/events`).
        "email_opt_out",
        "email_state",
        "created_at",
        "updated_at",
        "version",
        "outcome",
    }
)
