"""Splink and recordlinkage on the matching benchmark's data, set up as their docs do.

Each peer reads its settings for a data set from
`bench/matching_peers/<peer>-<data set>.yaml`, which name the tutorial or
example followed. A peer deduplicates the whole data set (or links FEBRL 4b to
4a) and its links are clustered and scored exactly as ours are; then it
matches a few dozen held-out records, one at a time, against the rest.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import yaml

from bench.matching import (
    Clusters,
    DataSet,
    Quality,
    Record,
    held_out,
    pairwise_quality,
)

SETTINGS_DIR = Path(__file__).parent / "matching_peers"
# What the report names the versions of: the peers and what they run on.
PACKAGES = ("splink", "duckdb", "recordlinkage", "pandas")


class PeerUnavailableError(RuntimeError):
    """A peer's package is not installed or does not import."""


@dataclass(frozen=True)
class PeerOutcome:
    """What one peer measured on one data set."""

    peer: str
    followed: str
    settings: Path
    records: int
    quality: Quality
    seconds: float
    lookup_times: list[float]

    @property
    def throughput(self) -> float:
        return self.records / self.seconds if self.seconds else math.inf


def settings_path(peer: str, key: str) -> Path:
    """Where a peer's settings for the data set `key` (as in `DATA_SETS`) live."""
    return SETTINGS_DIR / f"{peer}-{key}.yaml"


def load_settings(peer: str, key: str) -> dict[str, Any]:
    """A peer's settings for a data set, as committed."""
    return yaml.safe_load(settings_path(peer, key).read_text(encoding="utf-8"))


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PeerUnavailableError(
            f"{module} does not import ({exc}); install the bench extra: "
            "pip install -e '.[bench]'"
        ) from exc


def peer_rows(
    records: list[Record], columns: dict[str, str]
) -> dict[str, list[str | None]]:
    """The records' source columns under the peer's names, as columns of strings.

    Values are stripped of surrounding blanks and an empty one is missing;
    nothing else is cleaned, as the peers' tutorials clean nothing else.
    """
    table: dict[str, list[str | None]] = {"unique_id": []}
    table.update({name: [] for name in columns})
    for record in records:
        table["unique_id"].append(str(record.record_id))
        for name, source in columns.items():
            value = (record.source.get(source) or "").strip()
            table[name].append(value or None)
    return table


def _score(data: DataSet, cluster_of: dict[str, Hashable]) -> tuple[int, Quality]:
    everyone = data.records + (data.queries or [])
    truth = {record.record_id: record.entity for record in everyone}
    predicted = {
        record.record_id: cluster_of.get(
            str(record.record_id), ("alone", record.record_id)
        )
        for record in everyone
    }
    return len(everyone), pairwise_quality(predicted, truth)


def _time_lookups(
    data: DataSet, count: int, lookup: Callable[[list[Record]], Callable[[Record], Any]]
) -> list[float]:
    existing, queries = held_out(data, count)
    match = lookup(existing)
    times = []
    for record in queries:
        begun = perf_counter()
        match(record)
        times.append(perf_counter() - begun)
    return times


def run_splink(key: str, data: DataSet, lookups: int) -> PeerOutcome:
    """Splink (DuckDB) trained and run as `splink-<key>.yaml` says, then timed."""
    settings = load_settings("splink", key)
    _require("splink")
    pyarrow = _require("pyarrow")
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    def rule(spec: dict[str, Any]) -> Any:
        return block_on(*spec["block_on"]) if "block_on" in spec else spec["sql"]

    def comparison(spec: dict[str, Any]) -> Any:
        function = getattr(cl, spec["function"])
        made = function(
            spec["column"], *spec.get("arguments", []), **spec.get("options", {})
        )
        if spec.get("term_frequency_adjustments"):
            made = made.configure(term_frequency_adjustments=True)
        return made

    def table(records: list[Record]) -> Any:
        return pyarrow.table(peer_rows(records, settings["columns"]))

    training = settings["training"]
    started = perf_counter()
    database = DuckDBAPI()
    inputs = [data.records] if data.queries is None else [data.records, data.queries]
    frames = [database.register(table(records)) for records in inputs]
    linker = Linker(
        frames[0] if len(frames) == 1 else frames,
        SettingsCreator(
            link_type=settings["link_type"],
            unique_id_column_name="unique_id",
            comparisons=[comparison(spec) for spec in settings["comparisons"]],
            blocking_rules_to_generate_predictions=[
                rule(spec)
                for spec in settings["blocking_rules_to_generate_predictions"]
            ],
            retain_intermediate_calculation_columns=False,
        ),
    )
    linker.training.estimate_probability_two_random_records_match(
        [rule(spec) for spec in training["deterministic_rules"]],
        recall=training["deterministic_recall"],
    )
    linker.training.estimate_u_using_random_sampling(
        max_pairs=training["u_max_pairs"], seed=training["u_seed"]
    )
    for spec in training["em_blocking_rules"]:
        linker.training.estimate_parameters_using_expectation_maximisation(
            rule(spec),
            estimate_without_term_frequencies=training[
                "em_estimate_without_term_frequencies"
            ],
        )
    predictions = linker.inference.predict(
        threshold_match_probability=settings["predict_threshold_match_probability"]
    )
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions,
        threshold_match_probability=settings["cluster_threshold_match_probability"],
    )
    cluster_of = {
        row["unique_id"]: row["cluster_id"] for row in clusters.as_record_list()
    }
    seconds = perf_counter() - started
    records, quality = _score(data, cluster_of)

    def lookup(existing: list[Record]) -> Callable[[Record], Any]:
        known = database.register(table(existing))
        for spec in settings["comparisons"]:
            if spec.get("term_frequency_adjustments"):
                linker.table_management.compute_tf_table(spec["column"])

        def match(record: Record) -> list[dict[str, Any]]:
            found = linker.inference.predict_between(
                known,
                database.register(table([record])),
                link_type="dedupe_only",
                # Said once for the whole data set's predictions already.
                warning_mode="never",
                threshold_match_probability=settings[
                    "predict_threshold_match_probability"
                ],
            )
            return found.as_record_list()

        return match

    return PeerOutcome(
        "Splink",
        settings["followed"],
        settings_path("splink", key),
        records,
        quality,
        seconds,
        _time_lookups(data, lookups, lookup),
    )


def run_recordlinkage(key: str, data: DataSet, lookups: int) -> PeerOutcome:
    """recordlinkage run as `recordlinkage-<key>.yaml` says, then timed."""
    settings = load_settings("recordlinkage", key)
    recordlinkage = _require("recordlinkage")
    pandas = _require("pandas")

    def frame(records: list[Record]) -> Any:
        rows = peer_rows(records, settings["columns"])
        return pandas.DataFrame(rows).set_index("unique_id")

    indexer = recordlinkage.Index()
    for spec in settings["index"]:
        indexer.block(left_on=spec["block"])
    comparer = recordlinkage.Compare()
    for spec in settings["compare"]:
        column = spec["column"]
        if spec["method"] == "exact":
            comparer.exact(column, column, label=column)
        else:
            comparer.string(
                column,
                column,
                method=spec.get("algorithm", "levenshtein"),
                threshold=spec["threshold"],
                label=column,
            )

    def links(*frames: Any) -> Any:
        features = comparer.compute(indexer.index(*frames), *frames)
        return features.index[features.sum(axis=1) > settings["sum_above"]]

    started = perf_counter()
    inputs = [data.records] if data.queries is None else [data.records, data.queries]
    clusters = Clusters()
    for one, other in links(*(frame(records) for records in inputs)):
        clusters.join(one, other)
    everyone = data.records + (data.queries or [])
    cluster_of = {
        str(record.record_id): clusters.root(str(record.record_id))
        for record in everyone
    }
    seconds = perf_counter() - started
    records, quality = _score(data, cluster_of)

    def lookup(existing: list[Record]) -> Callable[[Record], Any]:
        known = frame(existing)
        return lambda record: list(links(known, frame([record])))

    return PeerOutcome(
        "recordlinkage",
        settings["followed"],
        settings_path("recordlinkage", key),
        records,
        quality,
        seconds,
        _time_lookups(data, lookups, lookup),
    )


# Each peer's name in the report and its runner.
PEERS: dict[str, Callable[[str, DataSet, int], PeerOutcome]] = {
    "Splink": run_splink,
    "recordlinkage": run_recordlinkage,
}
