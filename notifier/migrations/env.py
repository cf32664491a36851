"""Alembic environment: the URL comes from the caller (notifier.store.migrations), never env."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from notifier.store import models  # noqa: F401  (registers the tables)

config = context.config
target_metadata = SQLModel.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through notifier.store.migrations")
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")  # fmt: skip
    with context.begin_transaction():
        context.run_migrations()


run()
