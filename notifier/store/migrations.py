"""Schema migrations (Alembic), for SQLite and PostgreSQL alike.

``notifier db upgrade`` brings a database to this version's schema. The engine refuses to
start on a schema older or newer than its own and says which command to run; an empty
database is simply created at the current version, so a first start needs no step.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from notifier.errors import ConfigurationError
from notifier.store.database import Database

SCRIPTS = Path(__file__).resolve().parent.parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    return config


def head() -> str:
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def current(db: Database) -> str | None:
    with db.writer.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    config = _config()
    with db.writer.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def ensure_current(db: Database) -> None:
    """Create an empty database at head; refuse one at another revision, naming the fix."""
    with db.writer.connect() as connection:
        tables = set(inspect(connection).get_table_names())
    if not tables - {"alembic_version"}:
        upgrade(db)
        return
    found, wanted = current(db), head()
    if found == wanted:
        return
    known = {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}
    if found in known:
        raise ConfigurationError(
            f"the database schema is at revision {found}, this version needs {wanted}: "
            "run `notifier db upgrade` (back up the database first)"
        )
    if found is None:
        raise ConfigurationError(
            "the database has notifier's tables but no schema revision (made before migrations "
            "existed): start with a new database, or ask for help migrating it"
        )
    raise ConfigurationError(
        f"the database schema is at revision {found}, which this version of notifier does not "
        f"know (it needs {wanted}): a newer notifier made it; run that version"
    )
