"""The matching benchmark's headline figures, built from fabricated outcomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.matching import REPEATS, Outcome, Quality, SideBySide, headlines
from bench.matching_peers import PeerOutcome


def outcome(name: str = "FEBRL 1", f1: float = 0.99, seconds: float = 0.1) -> Outcome:
    return Outcome(
        name=name,
        records=1_000,
        with_possible=Quality(1.0, 0.98, f1),
        without_possible=Quality(1.0, 0.90, f1 - 0.05),
        baseline=Quality(1.0, 0.9, 0.947),
        baseline_name="exact soc_sec_id",
        seconds=seconds,
        comparisons=500,
        match_times=[0.0001, 0.0002],
    )


def peer(name: str, f1: float, seconds: float, lead_s: float) -> PeerOutcome:
    return PeerOutcome(
        name,
        "its tutorial",
        Path(f"{name}.yaml"),
        1_000,
        Quality(1.0, 0.98, f1),
        seconds,
        [lead_s, lead_s, lead_s * 3],
    )


def side(ours: Outcome, *peers: PeerOutcome) -> SideBySide:
    return SideBySide(ours, [0.00004, 0.00005, 0.00006], list(peers))


def by_label(figures) -> dict[str, dict]:
    return {figure.label: figure.as_json() for figure in figures}


class TestHeadlines:
    def test_give_f1_records_per_second_and_one_lead_beside_each_peer(self):
        ours = outcome()
        splink = peer("Splink", 0.98, 2.0, 0.08)
        linkage = peer("recordlinkage", 0.995, 1.0, 0.02)

        figures = by_label(headlines([ours], [side(ours, splink, linkage)], {}))

        f1 = figures["FEBRL 1: F1 (1,000 records)"]
        assert (f1["value"], f1["target"], f1["verdict"]) == (0.99, "≥ 0.95", "met")
        assert f1["note"].startswith("with possible; the fastest of")
        assert [(p["name"], p["value"]) for p in f1["peers"]] == [
            ("Splink", 0.98),
            ("recordlinkage", 0.995),
        ]
        rate = figures["FEBRL 1: records/s, the whole data set"]
        assert rate["runs"] == [pytest.approx(10_000)]
        assert f"fastest of {REPEATS} runs" in rate["note"]
        assert rate["peers"][0] == {
            "name": "Splink",
            "value": 500.0,
            "ratio": pytest.approx(20.0),
        }
        lead = figures["FEBRL 1: one new lead matched against the rest, p50"]
        assert lead["value"] == pytest.approx(0.05)
        assert [p["value"] for p in lead["peers"]] == [
            pytest.approx(80.0),
            pytest.approx(20.0),
        ]

    def test_a_peer_with_the_better_f1_misses_the_set_target_not_the_lead(self):
        ours = outcome()
        linkage = peer("recordlinkage", 0.995, 1.0, 0.02)

        figures = by_label(headlines([ours], [side(ours, linkage)], {}))

        rate = figures["FEBRL 1: records/s, the whole data set"]
        lead = figures["FEBRL 1: one new lead matched against the rest, p50"]
        assert (rate["target"], rate["verdict"]) == (
            "F1 ≥ each peer's, in less time",
            "missed",
        )
        assert (lead["target"], lead["verdict"]) == ("faster than each peer", "met")

    def test_a_slower_set_misses_even_with_the_better_f1(self):
        ours = outcome(seconds=3.0)
        splink = peer("Splink", 0.9, 2.0, 0.08)

        figures = by_label(headlines([ours], [side(ours, splink)], {}))

        assert figures["FEBRL 1: records/s, the whole data set"]["verdict"] == "missed"

    def test_f1_is_the_better_count_against_the_data_sets_goal(self):
        ours = outcome("Splink fake_20000", f1=0.875)
        ours.without_possible = Quality(0.99, 0.9, 0.88)

        figures = by_label(headlines([ours], [side(ours)], {}))

        f1 = figures["Splink fake_20000: F1 (1,000 records)"]
        assert (f1["value"], f1["target"], f1["verdict"]) == (0.88, "≥ 0.90", "missed")
        assert f1["note"].startswith("match only")

    def test_without_peers_nothing_is_compared_and_one_lead_is_skipped(self):
        figures = by_label(headlines([outcome()], [], {}))

        rate = figures["FEBRL 1: records/s, the whole data set"]
        lead = figures["FEBRL 1: one new lead matched against the rest, p50"]
        assert (rate["verdict"], rate["peers"]) == ("no target", [])
        assert "--no-peers" in rate["note"]
        assert (lead["verdict"], lead["reason"]) == (
            "skipped",
            "timed beside the peers only: --no-peers",
        )

    def test_a_missing_data_set_is_skipped_with_its_reason(self):
        figures = headlines([], [], {"chicago": "`data/chicago.csv` not found"})

        (figure,) = [figure.as_json() for figure in figures]
        assert figure["label"] == "Data set `chicago`"
        assert (figure["verdict"], figure["reason"]) == (
            "skipped",
            "`data/chicago.csv` not found",
        )
        assert figure["count"] == 0
