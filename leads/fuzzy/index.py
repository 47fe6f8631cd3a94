"""An in-memory block index: which stored leads share a blocking key with a new one."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import TYPE_CHECKING

from leads.fuzzy.profile import Profile

if TYPE_CHECKING:
    from leads.fuzzy.rules import MatchRules


class BlockIndex:
    """Profiles by id, and the ids under each blocking key.

    A block that grows past `max_block_size` is retired: its members are
    dropped and the key is never used to find candidates again. A key that
    many leads share (a common surname's code, a company switchboard number)
    no longer tells them apart, and comparing a new lead with all of them
    would make one lookup cost thousands of comparisons; the lead's other
    keys (its e-mail, phone, date of birth) still find its duplicates. A
    store doing the same counts the leads per key and leaves out the keys
    past the limit from its `key IN (...)` query.

    Of the candidates left, at most `max_candidates` are returned: those
    sharing the most keys with the lead, then those found first.
    """

    def __init__(self, max_block_size: int = 200, max_candidates: int = 100) -> None:
        self.max_block_size = max_block_size
        self.max_candidates = max_candidates
        self._profiles: dict[Hashable, Profile] = {}
        self._blocks: dict[str, list[Hashable]] = {}
        self._retired: set[str] = set()

    @classmethod
    def for_rules(cls, rules: MatchRules) -> BlockIndex:
        """An empty index with the rules' block and candidate limits."""
        return cls(rules.max_block_size, rules.max_candidates)

    def __len__(self) -> int:
        return len(self._profiles)

    def __contains__(self, lead_id: object) -> bool:
        return lead_id in self._profiles

    def add(self, lead_id: Hashable, profile: Profile) -> None:
        """Stores the lead's profile under its keys, replacing any it had."""
        if lead_id in self._profiles:
            self.remove(lead_id)
        self._profiles[lead_id] = profile
        for key in profile.keys:
            if key in self._retired:
                continue
            block = self._blocks.setdefault(key, [])
            block.append(lead_id)
            if len(block) > self.max_block_size:
                del self._blocks[key]
                self._retired.add(key)

    def remove(self, lead_id: Hashable) -> None:
        """Forgets the lead; a retired block stays retired."""
        profile = self._profiles.pop(lead_id)
        for key in profile.keys:
            block = self._blocks.get(key)
            if block is not None:
                block.remove(lead_id)
                if not block:
                    del self._blocks[key]

    def profile(self, lead_id: Hashable) -> Profile:
        """The stored profile of a lead.

        Raises:
            KeyError: no lead with this id is indexed.
        """
        return self._profiles[lead_id]

    def candidates(self, profile: Profile) -> list[Hashable]:
        """The ids of stored leads that share a usable key with this profile."""
        shared: dict[Hashable, int] = {}
        # Sorted, so the same index answers in the same order in every process
        # (set order follows string hashes, which Python salts per process).
        for key in sorted(profile.keys):
            for lead_id in self._blocks.get(key, ()):
                shared[lead_id] = shared.get(lead_id, 0) + 1
        if len(shared) <= self.max_candidates:
            return list(shared)
        # sorted() is stable, so equal counts keep the order they were found in.
        ranked = sorted(shared, key=shared.__getitem__, reverse=True)
        return ranked[: self.max_candidates]

    def candidate_profiles(
        self, profile: Profile
    ) -> Iterator[tuple[Hashable, Profile]]:
        """The candidates with their profiles, ready for `MatchRules.best_match`."""
        for lead_id in self.candidates(profile):
            yield lead_id, self._profiles[lead_id]

    def is_retired(self, key: str) -> bool:
        """Whether the key's block grew too big to be used."""
        return key in self._retired
