"""The scorer and matching rules intake applies, read from the config and model folders.

Intake runs in long-lived processes (the API, a flow run), so each is loaded
once and loaded again when its files change: a model trained or a rule edited
takes effect within seconds, without a restart. A file that cannot be loaded is
logged and the last good version (or none) stays in use: a typo in a YAML file
must not turn every incoming lead away.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from leads.fuzzy import MatchRules, RulesError, load_rules
from leads.scoring.errors import ScoringError
from leads.sequences import Sequence, SequenceConfigError, load_sequences
from leads.settings import get_settings

if TYPE_CHECKING:
    from leads.scoring import Scorer

logger = logging.getLogger(__name__)

# How often a process looks at the files again.
RECHECK_SECONDS = 2.0
MATCHING_FILE = "matching.yaml"
SCORING_FILE = "scoring.yaml"
SEQUENCES_FILE = "sequences.yaml"

T = TypeVar("T")


@dataclass
class _Loaded(Generic[T]):
    value: T | None = None
    stamp: object = None
    checked_at: float = float("-inf")


class _Reloading(Generic[T]):
    """A value loaded from files, reloaded when their stamp changes."""

    def __init__(
        self,
        stamp: Callable[[], object],
        load: Callable[[], T],
        errors: tuple[type[Exception], ...],
    ) -> None:
        self._stamp = stamp
        self._load = load
        self._errors = errors
        self._loaded: _Loaded[T] = _Loaded()
        self._lock = threading.Lock()

    def forget(self) -> None:
        with self._lock:
            self._loaded = _Loaded()

    def get(self) -> T | None:
        loaded = self._loaded
        now = time.monotonic()
        if now - loaded.checked_at < RECHECK_SECONDS:
            return loaded.value
        with self._lock:
            loaded = self._loaded
            stamp = self._stamp()
            if stamp == loaded.stamp:
                loaded.checked_at = now
                return loaded.value
            try:
                value = self._load()
            except self._errors as exc:
                logger.error("%s; keeping the rules in use until it is fixed", exc)
                self._loaded = _Loaded(loaded.value, stamp, now)
                return loaded.value
            self._loaded = _Loaded(value, stamp, now)
            return value


def _file_stamp(path: Path) -> object:
    try:
        status = path.stat()
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size)


def _folders() -> tuple[Path, Path]:
    settings = get_settings()
    return settings.config_dir, settings.model_dir


# The scoring modules (and scikit-learn) are imported when a scorer is first
# asked for, not by every process that imports this module.
def _scoring_stamp() -> object:
    config_dir, model_dir = _folders()
    if not (config_dir / SCORING_FILE).is_file():
        return (config_dir, None, None)
    from leads.scoring.versions import list_versions

    versions = list_versions(model_dir)
    return (
        config_dir,
        _file_stamp(config_dir / SCORING_FILE),
        versions[-1] if versions else None,
    )


def _load_scorer() -> Scorer | None:
    from leads.scoring.scorer import load_scorer

    config_dir, model_dir = _folders()
    if not (config_dir / SCORING_FILE).is_file():
        return None
    return load_scorer(config_dir, model_dir)


def _matching_stamp() -> object:
    config_dir, _ = _folders()
    return (config_dir, _file_stamp(config_dir / MATCHING_FILE))


def _load_matching() -> MatchRules | None:
    config_dir, _ = _folders()
    path = config_dir / MATCHING_FILE
    return load_rules(path) if path.is_file() else None


def _sequences_stamp() -> object:
    config_dir, _ = _folders()
    return (config_dir, _file_stamp(config_dir / SEQUENCES_FILE))


def _load_sequences() -> dict[str, Sequence]:
    config_dir, _ = _folders()
    path = config_dir / SEQUENCES_FILE
    return load_sequences(path) if path.is_file() else {}


_scorer = _Reloading(_scoring_stamp, _load_scorer, (ScoringError, OSError))
_matching = _Reloading(_matching_stamp, _load_matching, (RulesError, OSError))
_sequences = _Reloading(
    _sequences_stamp, _load_sequences, (SequenceConfigError, OSError)
)


def forget() -> None:
    """Drops what was loaded, so the next call reads the files again."""
    for reloading in (_scorer, _matching, _sequences):
        reloading.forget()


def warm() -> None:
    """Loads all three now, so the first lead a server takes does not wait for them."""
    scorer()
    matching_rules()
    sequences()


def scorer() -> Scorer | None:
    """The scorer for this process's settings; None without a `scoring.yaml`."""
    return _scorer.get()


def matching_rules() -> MatchRules | None:
    """The fuzzy matching rules; None without a `matching.yaml` (exact keys only)."""
    return _matching.get()


def sequences() -> dict[str, Sequence]:
    """The e-mail sequences; none without a `sequences.yaml` (nobody is enrolled)."""
    return _sequences.get() or {}
