"""The sandbox's HubSpot contacts: writes, reads, and the checks HubSpot makes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connectors.sandbox.hubspot.errors import HubSpotError
from connectors.sandbox.hubspot.properties import (
    DEFAULT_PROPERTIES,
    Invalid,
    check_value,
    validation_message,
)

# Every batch endpoint takes at most 100 inputs.
MAX_BATCH_INPUTS = 100
FIRST_ID = 1001


def iso(ms: int) -> str:
    """HubSpot's timestamp format: ISO 8601 in UTC with milliseconds."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Contact:
    """One contact: its writable values (never empty strings) and its timestamps."""

    id: int
    values: dict[str, str]
    created_ms: int
    updated_ms: int

    def value(self, name: str) -> str | None:
        """The property's value as the API shows it; None when it has none."""
        if name == "hs_object_id":
            return str(self.id)
        if name == "createdate":
            return iso(self.created_ms)
        if name == "lastmodifieddate":
            return iso(self.updated_ms)
        return self.values.get(name)

    def as_api(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """The contact in the API's object shape, with `names` (or the defaults)."""
        wanted = DEFAULT_PROPERTIES if names is None else names
        return {
            "id": str(self.id),
            "properties": {name: self.value(name) for name in wanted},
            "createdAt": iso(self.created_ms),
            "updatedAt": iso(self.updated_ms),
            "archived": False,
        }


@dataclass
class Contacts:
    """Every contact, indexed by id and by lower-cased e-mail; safe across threads.

    `version` grows with every change so that cached search results can tell
    when they went stale.
    """

    by_id: dict[int, Contact] = field(default_factory=dict)
    by_email: dict[str, int] = field(default_factory=dict)
    next_id: int = FIRST_ID
    version: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Contact]:
        with self.lock:
            return iter(list(self.by_id.values()))

    def reset(self) -> None:
        with self.lock:
            self.by_id.clear()
            self.by_email.clear()
            self.next_id = FIRST_ID
            self.version += 1

    # -- writes ------------------------------------------------------------------

    def create(self, properties: Mapping[str, object]) -> Contact:
        """`POST /crm/v3/objects/contacts`: a new contact, 409 if its e-mail exists."""
        with self.lock:
            (values,) = self._checked([properties])
            self._refuse_existing([values])
            return self._insert(values)

    def batch_create(self, inputs: list[Mapping[str, Any]]) -> list[Contact]:
        """`…/batch/create`: all or nothing; existing e-mails fail it whole."""
        _check_batch_size(inputs)
        with self.lock:
            checked = self._checked([item.get("properties") or {} for item in inputs])
            emails = [values["email"] for values in checked if values.get("email")]
            if len(set(emails)) != len(emails):
                raise HubSpotError(400, "Duplicate e-mail addresses in batch input.")
            # HubSpot names only the first existing contact (hubspot-api-python#51).
            self._refuse_existing(checked)
            return [self._insert(values) for values in checked]

    def update(
        self, contact_id: str, properties: Mapping[str, object], id_property: str | None
    ) -> Contact:
        """`PATCH /crm/v3/objects/contacts/{id}`, by record id or `idProperty=email`."""
        with self.lock:
            contact = self._find(contact_id, id_property)
            if contact is None:
                raise HubSpotError(404, "resource not found")
            (values,) = self._checked([properties])
            self._refuse_existing([values], but=contact.id)
            self._apply(contact, values)
            return contact

    def batch_update(self, inputs: list[Mapping[str, Any]]) -> list[Contact]:
        """`…/batch/update`: record ids only; unknown ids are skipped without a word.

        That silence is HubSpot's (HS-02, hubspot-api-nodejs#548): e-mails sent
        as ids come back `COMPLETE` with no results, and `idProperty: email`
        is refused.
        """
        _check_batch_size(inputs)
        if any(item.get("idProperty") not in (None, "hs_object_id") for item in inputs):
            raise HubSpotError(
                400, "Unable to perform update/upsert by non-unique 0-1 property"
            )
        ids = [str(item.get("id")) for item in inputs]
        _refuse_duplicates(ids)
        with self.lock:
            checked = self._checked([item.get("properties") or {} for item in inputs])
            updated = []
            for contact_id, values in zip(ids, checked, strict=True):
                contact = self._find(contact_id, None)
                if contact is None:
                    continue
                self._refuse_existing([values], but=contact.id)
                self._apply(contact, values)
                updated.append(contact)
            return updated

    def batch_upsert(
        self, inputs: list[Mapping[str, Any]]
    ) -> list[tuple[Contact, bool]]:
        """`…/batch/upsert` by `idProperty: email`: each (contact, created?) pair.

        The batch fails whole on any invalid value (400 `VALIDATION_ERROR`
        listing every refused value) or on an id given twice (400 "Duplicate IDs
        found in batch input", the answer HubSpot integrations report).
        """
        _check_batch_size(inputs)
        if any(item.get("idProperty") != "email" for item in inputs):
            raise HubSpotError(
                400,
                "Contacts are upserted by a unique property: send idProperty email.",
            )
        ids = [str(item.get("id", "")).strip().lower() for item in inputs]
        _refuse_duplicates(ids)
        merged = [
            dict(item.get("properties") or {}) | {"email": email}
            for item, email in zip(inputs, ids, strict=True)
        ]
        with self.lock:
            checked = self._checked(merged)
            results = []
            for values in checked:
                contact = self._find(values["email"], "email")
                if contact is None:
                    results.append((self._insert(values), True))
                else:
                    self._apply(contact, values)
                    results.append((contact, False))
            return results

    def seed(self, contact_id: int | None, values: dict[str, str], created: int) -> int:
        """Adds a contact as given, without the API's checks; returns its id."""
        with self.lock:
            if contact_id is None:
                contact_id = self.next_id
            self.next_id = max(self.next_id, contact_id + 1)
            self.by_id[contact_id] = Contact(contact_id, values, created, created)
            if values.get("email"):
                self.by_email[values["email"]] = contact_id
            self.version += 1
            return contact_id

    def change(self, contact_id: int, values: Mapping[str, str]) -> Contact | None:
        """Sets values as HubSpot itself does, read-only ones too; None if unknown."""
        with self.lock:
            contact = self.by_id.get(contact_id)
            if contact is not None:
                self._apply(contact, dict(values))
            return contact

    def purge(self, object_id: str, id_property: str | None) -> bool:
        """`POST …/gdpr-delete`: removes the contact for good; False if none matched.

        HubSpot answers 404 for a record id it does not have. For an e-mail it
        does not have it answers 204 and blocklists the address; what a later
        create of that address meets is unverified, so the sandbox keeps no
        blocklist.
        """
        with self.lock:
            contact = self._find(object_id, id_property)
            if contact is None:
                return False
            del self.by_id[contact.id]
            email = contact.values.get("email")
            if email and self.by_email.get(email) == contact.id:
                del self.by_email[email]
            self.version += 1
            return True

    # -- reads -------------------------------------------------------------------

    def get(self, contact_id: str, id_property: str | None) -> Contact:
        with self.lock:
            contact = self._find(contact_id, id_property)
        if contact is None:
            raise HubSpotError(404, "resource not found")
        return contact

    def batch_read(
        self, ids: list[str], id_property: str | None
    ) -> tuple[list[Contact], list[str]]:
        """`…/batch/read`: the contacts found, and the ids that were not."""
        _check_batch_size(ids)
        with self.lock:
            found, missing = [], []
            for contact_id in ids:
                contact = self._find(contact_id, id_property)
                if contact is None:
                    missing.append(contact_id)
                elif contact not in found:
                    found.append(contact)
            return found, missing

    def page(self, limit: int, after: int) -> list[Contact]:
        """`GET /crm/v3/objects/contacts`: contacts by id, those above `after`."""
        with self.lock:
            ids = sorted(i for i in self.by_id if i > after)[:limit]
            return [self.by_id[i] for i in ids]

    # -- internals ---------------------------------------------------------------

    def _find(self, key: str, id_property: str | None) -> Contact | None:
        if id_property == "email":
            contact_id = self.by_email.get(key.strip().lower())
            return None if contact_id is None else self.by_id.get(contact_id)
        if id_property not in (None, "hs_object_id"):
            raise HubSpotError(400, f"Unknown idProperty {id_property!r}.")
        return self.by_id.get(int(key)) if key.isdigit() else None

    def _checked(self, many: list[Mapping[str, object]]) -> list[dict[str, str]]:
        """Each input's values as stored; 400 listing every refusal if any.

        A `null` value is left out: HubSpot leaves the property unchanged.
        """
        problems: list[Invalid] = []
        checked = []
        for properties in many:
            values = {}
            for name, value in properties.items():
                if value is None:
                    continue
                result = check_value(name, value)
                if isinstance(result, Invalid):
                    problems.append(result)
                else:
                    values[name] = result
            checked.append(values)
        if problems:
            raise HubSpotError(
                400,
                validation_message(problems),
                errors=[
                    {
                        "message": p.message,
                        "code": p.code,
                        "context": {"propertyName": [p.name]},
                    }
                    for p in problems
                ],
            )
        return checked

    def _refuse_existing(
        self, many: list[dict[str, str]], but: int | None = None
    ) -> None:
        for values in many:
            existing = self.by_email.get(values.get("email") or "")
            if existing is not None and existing != but:
                raise HubSpotError(
                    409, f"Contact already exists. Existing ID: {existing}"
                )

    def _insert(self, values: dict[str, str]) -> Contact:
        at = now_ms()
        contact = Contact(
            self.next_id, {k: v for k, v in values.items() if v != ""}, at, at
        )
        self.next_id += 1
        self.by_id[contact.id] = contact
        if contact.values.get("email"):
            self.by_email[contact.values["email"]] = contact.id
        self.version += 1
        return contact

    def _apply(self, contact: Contact, values: dict[str, str]) -> None:
        old_email = contact.values.get("email")
        for name, value in values.items():
            if value == "":
                contact.values.pop(name, None)
            else:
                contact.values[name] = value
        new_email = contact.values.get("email")
        if old_email != new_email:
            self.by_email.pop(old_email or "", None)
            if new_email:
                self.by_email[new_email] = contact.id
        contact.updated_ms = max(now_ms(), contact.updated_ms + 1)
        self.version += 1


def _check_batch_size(inputs: list[Any]) -> None:
    if len(inputs) > MAX_BATCH_INPUTS:
        raise HubSpotError(
            400,
            f"Batch input of {len(inputs)} items is too large: "
            f"at most {MAX_BATCH_INPUTS} are allowed.",
        )


def _refuse_duplicates(ids: list[str]) -> None:
    seen: set[str] = set()
    repeated = [i for i in ids if i in seen or seen.add(i)]
    if repeated:
        raise HubSpotError(
            400,
            f"Duplicate IDs found in batch input: [{', '.join(repeated)}]. "
            "IDs must be unique",
            context={"ids": repeated},
        )
