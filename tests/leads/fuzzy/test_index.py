"""The in-memory block index: candidates by shared keys, oversized blocks retired."""

from __future__ import annotations

from leads.fuzzy import BlockIndex, Profile


def _profile(*keys: str) -> Profile:
    return Profile(values=(), keys=frozenset(keys), rarity=())


class TestCandidates:
    def test_leads_sharing_a_key_are_candidates(self):
        index = BlockIndex()
        index.add("a", _profile("names:j500|r000"))
        index.add("b", _profile("names:p360|r000"))

        assert index.candidates(_profile("names:j500|r000", "phone:5550100")) == ["a"]

    def test_candidates_sharing_more_keys_come_first(self):
        index = BlockIndex(max_candidates=1)
        index.add("one_key", _profile("k1"))
        index.add("two_keys", _profile("k1", "k2"))

        assert index.candidates(_profile("k1", "k2")) == ["two_keys"]

    def test_a_lead_added_again_is_found_by_its_new_keys_only(self):
        index = BlockIndex()
        index.add("a", _profile("old"))
        index.add("a", _profile("new"))

        assert index.candidates(_profile("old")) == []
        assert index.candidates(_profile("new")) == ["a"]
        assert len(index) == 1


class TestOversizedBlocks:
    def test_a_block_past_the_limit_is_retired_and_finds_nothing(self):
        index = BlockIndex(max_block_size=3)
        for number in range(4):
            index.add(number, _profile("surname:s530", f"phone:{number}"))

        assert index.is_retired("surname:s530")
        assert index.candidates(_profile("surname:s530")) == []
        assert index.candidates(_profile("surname:s530", "phone:2")) == [2]

    def test_a_block_at_the_limit_is_still_used(self):
        index = BlockIndex(max_block_size=3)
        for number in range(3):
            index.add(number, _profile("surname:s530"))

        assert not index.is_retired("surname:s530")
        assert index.candidates(_profile("surname:s530")) == [0, 1, 2]

    def test_a_retired_block_stays_retired_as_leads_are_added(self):
        index = BlockIndex(max_block_size=1)
        index.add(1, _profile("switchboard"))
        index.add(2, _profile("switchboard"))
        index.add(3, _profile("switchboard"))

        assert index.candidates(_profile("switchboard")) == []

    def test_one_lookup_compares_at_most_max_candidates(self):
        index = BlockIndex(max_block_size=10_000, max_candidates=50)
        for number in range(5_000):
            index.add(number, _profile("company:acme"))

        assert len(index.candidates(_profile("company:acme"))) == 50
