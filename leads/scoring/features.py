"""Turning stored leads into the one-hot columns a scoring model is fitted on.

Every feature becomes a block of 0/1 columns with exactly one set per lead: a
category's frequent values, `uncommon` and `missing`; a number's quantile bins
and `missing`. One column per feature keeps the model additive, so each
feature's share of a lead's score can be read off and given as a reason.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.base import BaseEstimator, TransformerMixin

from leads.email_domains import FREE_MAIL
from leads.scoring.values import (
    category_key,
    display_text,
    field_value,
    parse_number,
)

Kind = Literal["number", "category"]

# A derived feature: whether the lead's address is at a free mailbox provider,
# read from the `free_mail` flag intake sets.
FREE_MAIL_FEATURE = FREE_MAIL

# Words for where a bin sits in the training leads, by the share of them below
# its middle.
_POSITIONS = ((0.2, "very low"), (0.4, "low"), (0.6, "mid"), (0.8, "high"))


@dataclass(frozen=True)
class Feature:
    """A lead field or custom field a model reads, and how."""

    name: str
    kind: Kind


def feature_value(values: Mapping[str, Any], feature: Feature) -> Any:
    """The lead's raw value for a feature (the free-mail flag as `yes`/`no`)."""
    if feature.name == FREE_MAIL_FEATURE:
        flags = values.get("flags") or ()
        return "yes" if FREE_MAIL in flags else "no"
    return field_value(values, feature.name)


@dataclass
class CategoryBlock:
    """A fitted category feature: a column per frequent value, uncommon, missing."""

    feature: Feature
    columns: dict[str, int]
    uncommon: int
    missing: int

    def column(self, values: Mapping[str, Any]) -> int:
        """The block's column set for this lead."""
        key = category_key(feature_value(values, self.feature))
        if key is None:
            return self.missing
        return self.columns.get(key, self.uncommon)


@dataclass
class NumberBlock:
    """A fitted number feature: a column per quantile bin, and missing.

    Bin `i` holds values above `edges[i - 1]` up to `edges[i]`; the last holds
    values above the last edge.
    """

    feature: Feature
    edges: list[float]
    first: int
    missing: int

    def column(self, values: Mapping[str, Any]) -> int:
        """The block's column set for this lead."""
        number = parse_number(feature_value(values, self.feature))
        if number is None:
            return self.missing
        return self.first + bisect_left(self.edges, number)


Block = CategoryBlock | NumberBlock


class LeadEncoder(TransformerMixin, BaseEstimator):
    """A scikit-learn transformer from stored leads (mappings) to one-hot columns.

    Args:
        features: what to read from each lead.
        bins: most quantile bins per number feature.
        min_count: fewest training leads a category value needs for a column
            of its own; rarer values share the `uncommon` column.
    """

    def __init__(
        self, features: Sequence[Feature] = (), bins: int = 10, min_count: int = 10
    ) -> None:
        self.features = features
        self.bins = bins
        self.min_count = min_count

    def fit(self, X: Sequence[Mapping[str, Any]], y: Any = None) -> LeadEncoder:
        """Learns each category's frequent values and each number's bin edges."""
        self.blocks_: list[Block] = []
        self.labels_: list[str] = []
        for feature in self.features:
            if feature.kind == "number":
                self._fit_number(feature, X)
            else:
                self._fit_category(feature, X)
        counts = np.zeros(len(self.labels_))
        for row in self.active_columns(X):
            counts[row] += 1
        self.frequencies_ = counts / max(len(X), 1)
        return self

    def _fit_category(
        self, feature: Feature, leads: Sequence[Mapping[str, Any]]
    ) -> None:
        keys: Counter[str] = Counter()
        spellings: dict[str, Counter[str]] = {}
        for values in leads:
            value = feature_value(values, feature)
            key = category_key(value)
            if key is not None:
                keys[key] += 1
                spellings.setdefault(key, Counter())[display_text(value)] += 1
        columns: dict[str, int] = {}
        for key, count in keys.most_common():
            if count >= self.min_count:
                columns[key] = self._add(
                    f"{feature.name}={spellings[key].most_common(1)[0][0]}"
                )
        uncommon = self._add(f"{feature.name} uncommon")
        missing = self._add(f"{feature.name} missing")
        self.blocks_.append(CategoryBlock(feature, columns, uncommon, missing))

    def _fit_number(self, feature: Feature, leads: Sequence[Mapping[str, Any]]) -> None:
        found = [parse_number(feature_value(values, feature)) for values in leads]
        numbers = np.sort(np.array([n for n in found if n is not None], dtype=float))
        edges: list[float] = []
        if numbers.size:
            cuts = np.quantile(numbers, np.linspace(0, 1, self.bins + 1)[1:-1])
            # An edge at the top would leave the last bin empty.
            edges = [float(e) for e in np.unique(cuts) if e < numbers[-1]]
        first = len(self.labels_)
        lows = [-np.inf, *edges]
        highs = [*edges, np.inf]
        for low, high in zip(lows, highs, strict=True):
            self._add(f"{feature.name} {_bin_words(numbers, low, high)}")
        missing = self._add(f"{feature.name} missing")
        self.blocks_.append(NumberBlock(feature, edges, first, missing))

    def _add(self, label: str) -> int:
        self.labels_.append(label)
        return len(self.labels_) - 1

    def active_columns(self, X: Sequence[Mapping[str, Any]]) -> list[list[int]]:
        """For each lead, the column set in each block, in block order."""
        return [[block.column(values) for block in self.blocks_] for values in X]

    def transform(self, X: Sequence[Mapping[str, Any]]) -> csr_matrix:
        """The leads as a sparse 0/1 matrix, one row a lead."""
        rows = self.active_columns(X)
        width = len(self.blocks_)
        indices = np.array(rows, dtype=np.int64).reshape(-1)
        data = np.ones(indices.size)
        indptr = np.arange(len(rows) + 1, dtype=np.int64) * width
        return csr_matrix((data, indices, indptr), shape=(len(rows), len(self.labels_)))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Each column's label: `source=Referral`, `visits high`, `city missing`."""
        return np.array(self.labels_, dtype=object)

    def describe(self) -> list[dict[str, Any]]:
        """The fitted features as `model.json` lists them: columns and bin edges."""
        described: list[dict[str, Any]] = []
        for block in self.blocks_:
            entry: dict[str, Any] = {
                "name": block.feature.name,
                "kind": block.feature.kind,
            }
            if isinstance(block, NumberBlock):
                lows = [None, *block.edges]
                highs = [*block.edges, None]
                entry["bins"] = [
                    {"label": self.labels_[block.first + i], "above": lo, "up_to": hi}
                    for i, (lo, hi) in enumerate(zip(lows, highs, strict=True))
                ]
            else:
                entry["values"] = [self.labels_[c] for c in block.columns.values()]
            described.append(entry)
        return described


def _bin_words(numbers: np.ndarray, low: float, high: float) -> str:
    """`high`, `very low`… by where the bin sits; its value when it holds one."""
    if not numbers.size:
        return "any"
    start = int(np.searchsorted(numbers, low, side="right"))
    stop = int(np.searchsorted(numbers, high, side="right"))
    if stop > start and numbers[start] == numbers[stop - 1]:
        return f"{numbers[start]:g}"
    middle = (start + stop) / 2 / max(numbers.size, 1)
    for limit, words in _POSITIONS:
        if middle < limit:
            return words
    return "very high"
