"""Training a scoring model on a user's converted/lost history, with its honest AUC.

The history is read with the import reader and cleaned as intake cleans a
lead, so the model is fitted on the same field names and values (countries as
ISO codes, `Select` as missing) that it later scores.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from leads.email_domains import email_flags
from leads.fields import READ_ONLY_FIELDS
from leads.imports import (
    LEAD_FIELDS,
    ImportFileError,
    Record,
    header_key,
    open_records,
)
from leads.normalise import clean_fields
from leads.scoring.errors import TrainingError
from leads.scoring.features import (
    FREE_MAIL_FEATURE,
    Feature,
    LeadEncoder,
    feature_value,
)
from leads.scoring.values import category_key, display_text, parse_number
from leads.scoring.versions import save_model

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

# Fields that say who a lead is, not how likely they are to buy: as features
# they would only let the model memorise people. `status` is the sales team's
# verdict, set after contact, so it leaks the outcome.
UNSCORED_FIELDS = frozenset(
    {
        "email",
        "phone",
        "first_name",
        "last_name",
        "street",
        "postal_code",
        "website",
        "notes",
        "status",
    }
)

# Label values read as converted, and as not, when `positive` is not given.
_CONVERTED = frozenset({"1", "true", "yes", "y", "won", "converted", "closed won"})
_NOT_CONVERTED = frozenset(
    {"0", "false", "no", "n", "lost", "not converted", "closed lost"}
)

# A column counts as numbers when nearly all its values read as one; the rest
# (`n/a`, `unknown`…) are then missing.
NUMBER_SHARE = 0.95
# A text column with a new value on most rows names leads (an id, a free-text
# note) rather than describing them.
DISTINCT_SHARE = 0.5
DISTINCT_FLOOR = 50

# Chosen by cross-validated AUC on the benchmark's real leads: C (smaller
# regularises more) is flat from 0.1 to 1; 16 bins beat 10 by 0.003 and more
# gain nothing; the fewest rows a value needs for a column changes nothing
# from 5 to 20.
REGULARISATION = 0.3
BINS = 16
MIN_COUNT = 10
SEED = 0

# Only phones and postal codes read the region, and neither is a feature.
_REGION = "US"


@dataclass(frozen=True)
class History:
    """A converted/lost history: its leads as intake stores them, and outcomes.

    Attributes:
        path: the file read.
        label: the outcome column, as the file names it.
        positive: the outcome value that means converted, as written.
        excluded: the columns left out at the caller's request.
        leads: each labelled row as stored columns, custom fields in `custom`.
        outcomes: 1 for converted, 0 for not, one per lead.
        features: what the model reads.
        ignored: columns not used as features, with why.
        skipped: rows not used: unreadable, or without an outcome.
    """

    path: Path
    label: str
    positive: str
    excluded: tuple[str, ...]
    leads: list[dict[str, Any]]
    outcomes: np.ndarray
    features: tuple[Feature, ...]
    ignored: dict[str, str]
    skipped: int

    @property
    def converted(self) -> int:
        """How many leads converted."""
        return int(self.outcomes.sum())


@dataclass(frozen=True)
class TrainedModel:
    """A model just trained and saved, and how well it scored unseen leads."""

    version: str
    path: Path
    history: History
    fold_aucs: tuple[float, ...]
    cv_seconds: float
    fit_seconds: float

    @property
    def auc_mean(self) -> float:
        """Mean AUC over the folds."""
        return float(np.mean(self.fold_aucs))

    @property
    def auc_spread(self) -> float:
        """Standard deviation of the AUC over the folds."""
        return float(np.std(self.fold_aucs))


def read_history(
    path: Path,
    *,
    label: str,
    exclude: Sequence[str] = (),
    positive: str | None = None,
) -> History:
    """Reads a history file of leads and their outcomes.

    Args:
        path: a CSV file the import reader accepts.
        label: the outcome column, by its header (or the lead field it maps to).
        exclude: columns to leave out, such as ones filled in after contact.
        positive: the outcome value meaning converted; by default `1`, `true`,
            `yes`, `won` or `converted`, when the column's values say so.

    Raises:
        TrainingError: the file cannot be read, a named column is absent, the
            outcome has one value, or there are too few rows or no features.
    """
    try:
        with open_records(path) as file:
            headers = dict(file.headers)
            label_name = _column(headers, label, "label")
            excluded = [_column(headers, name, "excluded") for name in exclude]
            if label_name in excluded:
                raise TrainingError(
                    f"the label column {label!r} is also excluded; keep it in"
                )
            candidates = [
                name
                for name in headers.values()
                if name != label_name and name not in excluded
            ]
            dropped = {label_name, *excluded}
            leads: list[dict[str, Any]] = []
            outcomes: list[str] = []
            spellings: dict[str, Counter[str]] = {}
            skipped = 0
            for record in file:
                key = None
                if isinstance(record, Record):
                    key = category_key(record.values[label_name])
                if not isinstance(record, Record) or key is None:
                    skipped += 1
                    continue
                outcomes.append(key)
                written = display_text(record.values[label_name])
                spellings.setdefault(key, Counter())[written] += 1
                leads.append(_as_stored(record.values, dropped))
    except ImportFileError as exc:
        raise TrainingError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise TrainingError(f"{path} cannot be read: {exc}") from exc

    positive_key = _positive(label, spellings, positive)
    y = np.array([key == positive_key for key in outcomes], dtype=np.int64)
    converted = spellings[positive_key].most_common(1)[0][0]
    _check_outcomes(label, converted, y)

    if "email" in candidates and FREE_MAIL_FEATURE not in candidates:
        candidates.append(FREE_MAIL_FEATURE)
    features, ignored = _choose_features(candidates, leads)
    if not features:
        raise TrainingError(
            f"{path}: no column is left to learn from ("
            + "; ".join(f"{name}: {why}" for name, why in ignored.items())
            + "); expected form or activity columns besides the label"
        )
    return History(
        path=path,
        label=label,
        positive=converted,
        excluded=tuple(exclude),
        leads=leads,
        outcomes=y,
        features=features,
        ignored=ignored,
        skipped=skipped,
    )


def _column(headers: Mapping[str, str], wanted: str, role: str) -> str:
    """The name a header's values go under, found by header or by that name."""
    for header, name in headers.items():
        if wanted in (header, name):
            return name
    alike = [
        name
        for header, name in headers.items()
        if header_key(header) == header_key(wanted) and header_key(wanted)
    ]
    if len(alike) == 1:
        return alike[0]
    columns = ", ".join(repr(header) for header in headers)
    raise TrainingError(
        f"the {role} column {wanted!r} is not in the file; its columns are {columns}"
    )


def _as_stored(values: Mapping[str, str], dropped: set[str]) -> dict[str, Any]:
    """A row as intake would store it: lead fields cleaned, the rest in `custom`."""
    given: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for name, text in values.items():
        if name in dropped:
            continue
        if name in LEAD_FIELDS:
            if name == "email" or name not in UNSCORED_FIELDS:
                given[name] = text
        else:
            custom[name] = text
    # A value cleaning refuses is left out, as intake would refuse it. Custom
    # values pass through cleaning unchanged, so they skip it: it checks each
    # character, which is most of the time reading a wide file takes.
    stored = clean_fields(given, _REGION).values
    stored["custom"] = custom
    stored["flags"] = email_flags(stored.get("email"))
    return stored


def _positive(
    label: str, spellings: Mapping[str, Counter[str]], positive: str | None
) -> str:
    """The label key that means converted."""
    found = ", ".join(repr(c.most_common(1)[0][0]) for c in spellings.values())
    if not spellings:
        raise TrainingError(
            f"no row has a value in the label column {label!r}; expected the "
            "outcome of each lead, such as 1 for converted and 0 for not"
        )
    if positive is None and len(spellings) == 1:
        raise TrainingError(
            f"every labelled row has {label} = {found}; a model needs converted "
            "and lost leads both"
        )
    if positive is not None:
        key = category_key(positive)
        if key is None or key not in spellings:
            raise TrainingError(
                f"no row has {label} = {positive!r}; the values found are {found}"
            )
        return key
    numbers = {key: parse_number(key) for key in spellings}
    if all(number in (0.0, 1.0) for number in numbers.values()):
        ones = [key for key, number in numbers.items() if number == 1.0]
        if ones:
            return ones[0]
    words = [key for key in spellings if key in _CONVERTED]
    if len(words) == 1 and set(spellings) <= _CONVERTED | _NOT_CONVERTED:
        return words[0]
    raise TrainingError(
        f"cannot tell which value of {label!r} means converted (found {found}); "
        "pass the converted value with --positive"
    )


def _check_outcomes(label: str, converted: str, y: np.ndarray) -> None:
    if y.all() or not y.any():
        which = "converted" if y.all() else "not converted"
        raise TrainingError(
            f"every one of the {y.size:,} labelled rows is {which} ({label} "
            f"{'=' if y.all() else '!='} {converted!r}); a model needs converted "
            "and lost leads both"
        )


def _choose_features(
    candidates: Iterable[str], leads: Sequence[Mapping[str, Any]]
) -> tuple[tuple[Feature, ...], dict[str, str]]:
    """Each usable column with its kind; the others with why they are left out."""
    features: list[Feature] = []
    ignored: dict[str, str] = {}
    for name in candidates:
        if name == "email":
            ignored[name] = "identifies the lead; only its free_mail flag is used"
            continue
        if name in UNSCORED_FIELDS:
            ignored[name] = "identifies the lead rather than describing them"
            continue
        if name in READ_ONLY_FIELDS:
            ignored[name] = "the store sets it; a lead never arrives with it"
            continue
        feature = Feature(name, "category")
        present = [
            value
            for lead in leads
            if (value := feature_value(lead, feature)) is not None
        ]
        keys = Counter(category_key(value) for value in present)
        keys.pop(None, None)
        if not keys:
            ignored[name] = "always empty"
            continue
        if len(keys) == 1 and sum(keys.values()) == len(leads):
            ignored[name] = "the same value on every row"
            continue
        numbers = sum(parse_number(value) is not None for value in present)
        if numbers >= NUMBER_SHARE * sum(keys.values()):
            features.append(Feature(name, "number"))
        elif len(keys) > max(DISTINCT_FLOOR, DISTINCT_SHARE * sum(keys.values())):
            ignored[name] = "a different value on most rows: an id or free text"
        else:
            features.append(feature)
    return tuple(features), ignored


def build_estimator(features: Sequence[Feature]) -> Pipeline:
    """The unfitted pipeline: one-hot features, then a logistic regression."""
    return Pipeline(
        [
            ("features", LeadEncoder(tuple(features), bins=BINS, min_count=MIN_COUNT)),
            (
                "classifier",
                LogisticRegression(C=REGULARISATION, max_iter=1000),
            ),
        ]
    )


def cross_validate(
    history: History, folds: int, progress: Progress | None = None
) -> list[float]:
    """The AUC on each held-out fold, the pipeline refitted on the rest each time.

    Folds keep the share of converted leads and are shuffled with a fixed seed,
    so a rerun on the same file gives the same figures.
    """
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    aucs: list[float] = []
    y = history.outcomes
    for number, (train, test) in enumerate(
        splitter.split(np.zeros(y.size), y), start=1
    ):
        estimator = build_estimator(history.features)
        estimator.fit([history.leads[i] for i in train], y[train])
        scores = estimator.predict_proba([history.leads[i] for i in test])[:, 1]
        aucs.append(float(roc_auc_score(y[test], scores)))
        if progress:
            progress(f"fold {number}/{folds}: AUC {aucs[-1]:.3f}")
    return aucs


def train_model(
    path: Path,
    *,
    label: str,
    model_dir: Path,
    exclude: Sequence[str] = (),
    positive: str | None = None,
    folds: int = 5,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> TrainedModel:
    """Reads a history, cross-validates, fits on every row and saves a version.

    Args:
        path: the history file (CSV).
        label: the outcome column.
        model_dir: the folder of saved versions.
        exclude: columns to leave out (ones filled in after first contact leak
            the outcome and inflate the AUC).
        positive: the outcome value meaning converted; see `read_history`.
        folds: folds of cross-validation, at least 2.
        progress: called with a short line at each step.
        now: the training time; the current UTC time by default.

    Raises:
        TrainingError: the history cannot train a model; see `read_history`.
    """
    if folds < 2:
        raise TrainingError(f"cross-validation needs at least 2 folds, not {folds}")
    history = read_history(path, label=label, exclude=exclude, positive=positive)
    _check_rows(history, folds)
    if progress:
        progress(
            f"read {len(history.leads):,} rows ({history.converted:,} converted), "
            f"{len(history.features)} features"
            + (f", {history.skipped:,} rows skipped" if history.skipped else "")
        )
        for name, why in history.ignored.items():
            progress(f"not used: {name} ({why})")

    started = perf_counter()
    aucs = cross_validate(history, folds, progress)
    cv_seconds = perf_counter() - started

    started = perf_counter()
    estimator = build_estimator(history.features)
    estimator.fit(history.leads, history.outcomes)
    fit_seconds = perf_counter() - started

    trained_at = now or datetime.now(UTC)
    metadata = {
        "trained_at": trained_at.isoformat(),
        "file": path.name,
        "label": history.label,
        "positive": history.positive,
        "excluded": list(history.excluded),
        "rows": len(history.leads),
        "converted": history.converted,
        "kind": "logistic regression over one-hot features",
        "features": estimator.named_steps["features"].describe(),
        "ignored": history.ignored,
        "auc": {
            "folds": folds,
            "mean": round(float(np.mean(aucs)), 4),
            "spread": round(float(np.std(aucs)), 4),
            "per_fold": [round(auc, 4) for auc in aucs],
        },
    }
    version, folder = save_model(model_dir, estimator, metadata, trained_at)
    logger.info(
        "trained scoring model %s on %d rows: AUC %.3f",
        version,
        len(history.leads),
        np.mean(aucs),
    )
    return TrainedModel(
        version=version,
        path=folder,
        history=history,
        fold_aucs=tuple(aucs),
        cv_seconds=cv_seconds,
        fit_seconds=fit_seconds,
    )


def _check_rows(history: History, folds: int) -> None:
    rows = len(history.leads)
    if rows < folds:
        raise TrainingError(
            f"{history.path} has {rows} labelled rows, fewer than the {folds} "
            "folds of cross-validation; add rows, or pass fewer --folds"
        )
    fewest = min(history.converted, rows - history.converted)
    if fewest < folds:
        which = "converted" if history.converted == fewest else "not converted"
        raise TrainingError(
            f"only {fewest} of {rows} labelled rows are {which}; each outcome "
            f"needs at least {folds} rows, one per fold: add rows, or pass "
            "fewer --folds"
        )
