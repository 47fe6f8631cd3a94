"""Reading the YAML files of `config/` into pydantic models, with clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping.

    PyYAML keeps the last of two equal keys without a word; in a config file
    that silently drops the first definition (two sequences of one name).
    """


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"found the key {key!r} twice",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping
)


def load_model(
    path: Path,
    model: type[Model],
    error: type[Exception],
    expected: str,
    explain: Callable[[Any], str] | None = None,
) -> Model:
    """The file's contents checked against `model`.

    Args:
        path: the YAML file.
        model: what the file holds; an empty file is the model's defaults.
        error: raised, with the file's path in its message, for every problem.
        expected: what the top level should be, for the message when it is not
            a mapping (`a mapping with a `sequences` key`).
        explain: words for one validation problem; `describe` when not given.

    Raises:
        error: the file cannot be read, is not YAML, or does not fit `model`;
            each problem names its key path (`rules.fit[2].points`).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot be read: {exc}") from exc
    try:
        # A SafeLoader: it builds plain data only, never Python objects.
        document = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise error(f"{path}: is not valid YAML: {exc}") from exc
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise error(f"{path}: expected {expected}, got {type(document).__name__}")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(map(explain or describe, exc.errors()))
        raise error(f"{path}: {problems}") from exc


def describe(problem: Any) -> str:
    """One validation problem as `rules.fit[2].points: <what is wrong>`."""
    where = ""
    for part in problem["loc"]:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    where = where.lstrip(".") or "the file"
    if problem["type"] == "extra_forbidden":
        return f"{where}: unknown key; check its spelling and indentation"
    message = str(problem["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"
