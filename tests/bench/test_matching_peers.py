"""The side-by-side matching benchmark's glue: held-out records, scoring, each peer."""

from __future__ import annotations

import sys

import pytest

from bench.matching import (
    DATA_SETS,
    RULES_DIR,
    DataSet,
    Quality,
    Record,
    held_out,
    pairwise_quality,
    run_data_set,
    run_peers,
)
from bench.matching_peers import PEERS, load_settings, peer_rows, settings_path
from leads.fuzzy import load_rules

# Invented people in FEBRL's columns: the first two are one person, typed twice.
_COLUMNS = [
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
    "soc_sec_id",
]
_PEOPLE = [
    "mitchell|green|7|wallaby place|delmar|cleveland|2119|sa|19560409|1804974",
    "mitchell|greene|7|wallaby pl|delmar|cleveland|2119|sa|19560409|1804974",
    "harley|mccarthy|177|pridham street|milton|marsden|3165|nsw|19080419|6089216",
    "olivia|white|12|banks road||perth|6000|wa|19810203|2239841",
    "jack|nguyen|3|ocean drive|unit 4|hobart|7000|tas|19700515|9912034",
    "sophie|brown|88|king street||newtown|2042|nsw|19921130|5530127",
]
_ENTITIES = [0, 0, 1, 2, 3, 4]


def six_people() -> DataSet:
    records = []
    for number, (line, entity) in enumerate(zip(_PEOPLE, _ENTITIES, strict=True)):
        row = dict(zip(_COLUMNS, line.split("|"), strict=True))
        values = {
            "first_name": row["given_name"],
            "last_name": row["surname"],
            "street": f"{row['street_number']} {row['address_1']}",
            "city": row["suburb"],
            "postal_code": row["postcode"],
            "custom": {
                "date_of_birth": row["date_of_birth"],
                "soc_sec_id": row["soc_sec_id"],
            },
        }
        records.append(Record(str(number), values, entity, row["soc_sec_id"], row))
    return DataSet("six people", "febrl", "exact soc_sec_id", records)


class TestScoring:
    def test_joining_the_one_true_pair_is_perfect(self):
        truth = {"a": 1, "b": 1, "c": 2}

        assert pairwise_quality({"a": "x", "b": "x", "c": "y"}, truth) == Quality(
            1.0, 1.0, 1.0
        )

    def test_joining_everyone_finds_the_pair_among_three(self):
        truth = {"a": 1, "b": 1, "c": 2}

        quality = pairwise_quality({"a": "x", "b": "x", "c": "x"}, truth)

        assert (quality.precision, quality.recall) == (pytest.approx(1 / 3), 1.0)


class TestHeldOut:
    def test_deduplication_holds_records_out_of_the_rest(self):
        data = six_people()

        existing, new = held_out(data, 2)

        assert [r.record_id for r in new] == ["1", "4"]
        assert [r.record_id for r in existing] == ["0", "2", "3", "5"]

    def test_linkage_keeps_the_indexed_file_whole(self):
        people = six_people().records
        data = DataSet("linked", "febrl", "exact soc_sec_id", people[:3], people[3:])

        existing, new = held_out(data, 2)

        assert existing == people[:3]
        assert [r.record_id for r in new] == ["3", "4"]


class TestSettings:
    @pytest.mark.parametrize("key", sorted(DATA_SETS))
    @pytest.mark.parametrize("peer", sorted(PEERS))
    def test_every_peer_has_settings_for_every_data_set_naming_their_source(
        self, peer, key
    ):
        settings = load_settings(peer.lower(), key)

        assert settings_path(peer.lower(), key).is_file()
        assert settings["followed"].strip()
        assert settings["columns"]

    def test_peer_columns_are_stripped_and_a_blank_is_missing(self):
        record = Record(7, {}, 7, None, {"Site name": "  Little Ones ", "Zip": " "})

        rows = peer_rows([record], {"site_name": "Site name", "zip": "Zip"})

        assert rows == {"unique_id": ["7"], "site_name": ["Little Ones"], "zip": [None]}


class TestPeers:
    @pytest.mark.parametrize("peer", sorted(PEERS))
    def test_each_peer_finds_the_obvious_duplicate_among_six(self, peer):
        pytest.importorskip(
            peer.lower(),
            reason=f"{peer} is in the bench extra only: pip install -e '.[bench]'",
        )

        outcome = PEERS[peer]("febrl1", six_people(), 2)

        assert outcome.quality == Quality(1.0, 1.0, 1.0)
        assert outcome.records == 6
        assert len(outcome.lookup_times) == 2

    def test_a_peer_that_does_not_import_is_a_skip_line_and_ours_still_runs(
        self, monkeypatch
    ):
        monkeypatch.setitem(sys.modules, "recordlinkage", None)
        data = six_people()
        rules = load_rules(RULES_DIR / "febrl.yaml")

        side = run_peers(
            "febrl1", data, rules, run_data_set(rules, data), ["recordlinkage"]
        )

        assert side.peers == []
        assert side.skipped[0].startswith("recordlinkage on six people: recordlinkage")
        assert "does not import" in side.skipped[0]
        assert len(side.our_lookups) == 3
        assert side.ours.with_possible == Quality(1.0, 1.0, 1.0)
