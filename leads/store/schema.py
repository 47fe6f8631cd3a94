"""Bringing a store's schema to the newest migration, and telling where it stands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest migration this code ships."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the migrations folder holds no revision"
    return head


def upgrade(engine: Engine) -> None:
    """Applies every migration the store has not had yet."""
    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@dataclass(frozen=True)
class SchemaState:
    """Where a store's schema stands against the code."""

    reachable: bool
    revision: str | None
    head: str
    error: str | None = None

    @property
    def current(self) -> bool:
        return self.reachable and self.revision == self.head

    @property
    def label(self) -> str:
        if not self.reachable:
            return "unreachable"
        return "ok" if self.current else "needs_upgrade"


def schema_state(engine: Engine) -> SchemaState:
    """Reads the store's migration revision without changing anything.

    Reads `alembic_version` directly: Alembic's migration context logs two INFO
    lines per call, too many for a health probe.
    """
    head = head_revision()
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return SchemaState(True, None, head)
            revision = connection.execute(
                text("SELECT version_num FROM alembic_version")
            ).scalar()
    except SQLAlchemyError as exc:
        return SchemaState(False, None, head, error=describe_error(exc))
    return SchemaState(True, revision, head)


def describe_error(exc: SQLAlchemyError) -> str:
    """The driver's own first line (`database "x" does not exist`), not a class name."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__
