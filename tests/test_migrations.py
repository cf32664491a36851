"""Schema migrations on the test database (SQLite, or PostgreSQL with NOTIFIER_TEST_DATABASE_URL):
a database holding data at the first revision migrates to head, and the engine refuses a
schema it was not made for, naming the command to run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import Clock, registration, webhook
from sqlmodel import SQLModel

from notifier import ConfigurationError, Notifier, Settings
from notifier.cli import main
from notifier.store import migrations
from notifier.store.database import Database

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)


def test_an_empty_database_is_created_at_head_matching_the_models(settings: Settings) -> None:
    Notifier(settings)
    db = Database(settings.database_url)
    assert migrations.current(db) == migrations.head()
    with db.writer.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []
    db.dispose()


async def test_data_at_the_first_revision_migrates_to_head(
    settings: Settings, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    db = Database(settings.database_url)
    migrations.upgrade(db, "0001")
    now = T0.isoformat()
    with db.writer.begin() as connection:
        connection.execute(sqlalchemy.text(
            "INSERT INTO shipment (cp_id, waybill, consumer, shipment_info, registration, "
            "state, created_at, updated_at) VALUES (4, 'OLD1', :c, '{}', :r, 'active', :t, :t)"
        ), {"c": '{"name": "Priya Sharma", "phone": "9876543210", "email": ""}',
            "r": '{"waybill": "OLD1", "cp_id": 4}', "t": now})  # fmt: skip
    db.dispose()
    with pytest.raises(ConfigurationError, match="notifier db upgrade"):
        Notifier(settings)
    assert main(["db", "upgrade", "--database", settings.database_url]) == 0
    assert f"0001 -> {migrations.head()}" in capsys.readouterr().out
    clock.now = T0
    async with Notifier(settings, clock=clock) as n:
        detail = await n.shipment(4, "OLD1")
        assert detail is not None and detail["shipment"]["polled_at"] is None
        await n.register_shipment(registration())
        outcome = await n.handle_webhook(webhook(code=8, at=T0))
        assert [s.status for s in outcome.notifications] == ["scheduled", "scheduled"]


def test_a_schema_from_a_newer_version_is_refused(settings: Settings) -> None:
    Notifier(settings)
    db = Database(settings.database_url)
    with db.writer.begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'ffff'"))
    db.dispose()
    with pytest.raises(ConfigurationError, match="newer notifier"):
        Notifier(settings)
