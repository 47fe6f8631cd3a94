"""Everything the sandbox's HubSpot account holds, in memory."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.sandbox.hubspot.access import RateLimits, Tokens
from connectors.sandbox.hubspot.contacts import Contact, Contacts
from connectors.sandbox.hubspot.search import Searcher
from connectors.sandbox.hubspot.subscriptions import Subscriptions

# Requests kept with their bodies for tests to inspect; counts are kept for all.
LOGGED_REQUESTS = 2_000


@dataclass(frozen=True)
class Received:
    """One request the HubSpot routes served (after any injected fault)."""

    method: str
    route: str
    path: str
    query: str
    body: str

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "route": self.route,
            "path": self.path,
            "query": self.query,
            "body": self.body,
        }


class RequestLog:
    """How many requests each route received, and the latest ones in full."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.latest: deque[Received] = deque(maxlen=LOGGED_REQUESTS)
        self.search_afters: list[int] = []

    def record(self, received: Received, search_after: int | None = None) -> None:
        with self._lock:
            self.counts[f"{received.method} {received.route}"] += 1
            self.latest.append(received)
            if search_after is not None:
                self.search_afters.append(search_after)

    def clear(self) -> None:
        with self._lock:
            self.counts.clear()
            self.latest.clear()
            self.search_afters.clear()

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counts": dict(self.counts),
                "search_afters": list(self.search_afters),
                "latest": [r.as_json() for r in self.latest],
            }


class State:
    """The sandbox's HubSpot account: its records, tokens, limits and requests."""

    def __init__(self) -> None:
        self.contacts = Contacts()
        self.searcher = Searcher(self.contacts)
        self.subscriptions = Subscriptions()
        self.tokens = Tokens()
        self.limits = RateLimits()
        self.requests = RequestLog()

    def reset(self) -> None:
        """Forgets every contact, unsubscribe, token and call; default limits."""
        self.contacts.reset()
        self.subscriptions.reset()
        self.tokens.reset()
        self.limits.configure()
        self.requests.clear()

    def unsubscribe(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Unsubscribes an address (see `Subscriptions.unsubscribe`).

        The address's contact, if it has one, shows the opt-out in
        `hs_email_optout`, with its `lastmodifieddate` moved as by any change,
        so that a search for recent changes (reconciliation) reads it back.
        HubSpot's property means "Unsubscribed from all email" (its label);
        the sandbox sets it for any unsubscribe, its one marketing type being
        all a lead is sent.
        """
        status = self.subscriptions.unsubscribe(body)
        email = str(body["emailAddress"]).strip().lower()
        with self.contacts.lock:
            contact_id = self.contacts.by_email.get(email)
            if contact_id is not None:
                self.contacts.change(contact_id, {"hs_email_optout": "true"})
        return status

    def snapshot(self) -> list[dict[str, Any]]:
        """Every contact in the API's object shape, with every property it has."""
        with self.contacts.lock:
            return [
                contact.as_api(
                    ["createdate", "hs_object_id", "lastmodifieddate", *contact.values]
                )
                for contact in sorted(self.contacts, key=lambda c: c.id)
            ]

    @property
    def version(self) -> int:
        """Grows with every change to contacts or unsubscribes, so a saver can tell."""
        return self.contacts.version + self.subscriptions.version

    def records(self) -> dict[str, Any]:
        """What outlives a restart: contacts, timestamps, next id, unsubscribes."""
        with self.contacts.lock:
            contacts = [
                {
                    "id": contact.id,
                    "values": dict(contact.values),
                    "created_ms": contact.created_ms,
                    "updated_ms": contact.updated_ms,
                }
                for contact in sorted(self.contacts, key=lambda c: c.id)
            ]
            next_id = self.contacts.next_id
        return {
            "next_id": next_id,
            "contacts": contacts,
            "subscriptions": self.subscriptions.records(),
        }

    def restore(self, records: Mapping[str, Any]) -> None:
        """Replaces every contact and unsubscribe with those `records()` gave."""
        self.subscriptions.restore(records["subscriptions"])
        contacts = [
            Contact(
                saved["id"],
                dict(saved["values"]),
                saved["created_ms"],
                saved["updated_ms"],
            )
            for saved in records["contacts"]
        ]
        with self.contacts.lock:
            self.contacts.reset()
            for contact in contacts:
                self.contacts.by_id[contact.id] = contact
                if contact.values.get("email"):
                    self.contacts.by_email[contact.values["email"]] = contact.id
            # Never below an id in use, even if the file was edited by hand.
            self.contacts.next_id = max(
                [records["next_id"], *(contact.id + 1 for contact in contacts)]
            )
            self.contacts.version += 1
