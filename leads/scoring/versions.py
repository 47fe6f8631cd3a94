"""Saved scoring models: one folder a version under the model dir, newest last.

A version folder holds `estimator.pkl` (the fitted scikit-learn pipeline) and
`model.json` (what it was trained on and how well it did). Folders are named
by the UTC second they were trained in, so names sort by age.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import shutil
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import sklearn
from sklearn.pipeline import Pipeline

from leads.scoring.errors import ModelLoadError, ModelVersionError
from leads.scoring.model import LeadModel

logger = logging.getLogger(__name__)

MODEL_FILE = "model.json"
ESTIMATOR_FILE = "estimator.pkl"
# Bumped when model.json or the pipeline's shape changes incompatibly.
FORMAT = 1

# `20261204-181000`, and `20261204-181000-2` for a second one in that second.
VERSION = re.compile(r"^(\d{8}-\d{6})(?:-(\d+))?$")


def _order(version: str) -> tuple[str, int]:
    match = VERSION.match(version)
    if match is None:
        return ("", 0)
    return (match[1], int(match[2] or 1))


def list_versions(model_dir: Path) -> list[str]:
    """The saved versions, oldest first; none when the folder does not exist."""
    if not model_dir.is_dir():
        return []
    found = [
        entry.name
        for entry in model_dir.iterdir()
        if VERSION.match(entry.name) and (entry / MODEL_FILE).is_file()
    ]
    return sorted(found, key=_order)


def save_model(
    model_dir: Path, estimator: Pipeline, metadata: Mapping[str, Any], now: datetime
) -> tuple[str, Path]:
    """Saves a fitted pipeline as a new version.

    The files are written into a hidden folder first and renamed into place, so
    a scorer never finds a version half written.

    Args:
        model_dir: the folder of versions; created if absent.
        estimator: the fitted pipeline.
        metadata: what `model.json` records besides the version and the
            install's scikit-learn version.
        now: the training time (UTC), which names the version.

    Returns:
        The version and its folder.

    Raises:
        OSError: the folder cannot be written.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    payload = pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)
    stamp = now.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        version = stamp if attempt == 1 else f"{stamp}-{attempt}"
        final = model_dir / version
        if final.exists():
            continue
        partial = model_dir / f".{version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        (partial / ESTIMATOR_FILE).write_bytes(payload)
        document = {
            "format": FORMAT,
            "version": version,
            **metadata,
            "sklearn_version": sklearn.__version__,
            "estimator": ESTIMATOR_FILE,
            "estimator_sha256": hashlib.sha256(payload).hexdigest(),
        }
        (partial / MODEL_FILE).write_text(
            json.dumps(document, indent=2, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
        try:
            # Renaming onto a folder another trainer just filled fails, so two
            # trainings in one second each keep their own version.
            partial.rename(final)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            continue
        logger.info("saved scoring model %s to %s", version, final)
        return version, final
    raise FileExistsError(
        f"{model_dir}: every version name for {stamp} is taken; try again"
    )


def load_model(model_dir: Path, version: str | None = None) -> LeadModel | None:
    """Loads a saved version, by default the newest.

    Args:
        model_dir: the folder of versions.
        version: the folder to load; None for the newest.

    Returns:
        The model, or None when no version is saved and none was named.

    Raises:
        ModelLoadError: the named version is absent, or a file is missing,
            damaged or not a lead-scoring model.
        ModelVersionError: the model was saved by another scikit-learn.
    """
    if version is None:
        versions = list_versions(model_dir)
        if not versions:
            return None
        version = versions[-1]
    folder = model_dir / version
    if not VERSION.match(version) or not (folder / MODEL_FILE).is_file():
        saved = ", ".join(list_versions(model_dir)) or "none"
        raise ModelLoadError(
            f"no scoring model {version!r} in {model_dir} (saved: {saved}); name "
            "a saved version in scoring.yaml, or leave model.version empty for "
            "the newest"
        )
    metadata = _read_metadata(folder)
    saved_with = metadata.get("sklearn_version")
    if saved_with != sklearn.__version__:
        raise ModelVersionError(
            f"scoring model {version} was saved with scikit-learn {saved_with}, "
            f"but {sklearn.__version__} is installed; a model only loads into "
            "the version that saved it: retrain it with `orchestrator score "
            "train FILE --label COLUMN`"
        )
    payload = _read_estimator(folder, metadata)
    try:
        # Unpickling runs whatever code the file names, so only files this
        # install wrote into its own model dir are ever loaded: never a path
        # from a request, an upload or a config value other than a version
        # folder name (VERSION allows no separators).
        estimator = pickle.loads(payload)
    except Exception as exc:
        raise ModelLoadError(
            f"scoring model {version} in {folder} cannot be read ({exc}); "
            "retrain it with `orchestrator score train`"
        ) from exc
    model = LeadModel(version, estimator, metadata)
    logger.info("loaded scoring model %s from %s", version, folder)
    return model


def _read_metadata(folder: Path) -> dict[str, Any]:
    path = folder / MODEL_FILE
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{path} cannot be read ({exc}); retrain with `orchestrator score train`"
        ) from exc
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ModelLoadError(
            f"{path} is not a model description of format {FORMAT}; retrain "
            "with `orchestrator score train`"
        )
    return metadata


def _read_estimator(folder: Path, metadata: Mapping[str, Any]) -> bytes:
    path = folder / ESTIMATOR_FILE
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(
            f"{path} cannot be read ({exc}); retrain with `orchestrator score train`"
        ) from exc
    # A checksum catches a damaged or swapped file; it is no defence against
    # someone who can write the model dir, who could rewrite both files.
    if hashlib.sha256(payload).hexdigest() != metadata.get("estimator_sha256"):
        raise ModelLoadError(
            f"{path} does not match the checksum in {MODEL_FILE}: the file is "
            "damaged or was replaced; retrain with `orchestrator score train`"
        )
    return payload
