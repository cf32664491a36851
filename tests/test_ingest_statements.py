"""What ingest asks of the database, statement by statement: each update's event is written
with its shipment in one go, and every read is answered from an index, the search for pending
messages to supersede reading none of the messages already sent.

These are the properties that keep ingest as fast at a million shipments as at ten thousand
(benchmarks/growth.py measures that); here they are checked on the statements themselves."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy
from conftest import Clock, registration, webhook

from notifier import Notifier

NIGHT = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)  # 22:30 IST: quiet hours, messages wait


@contextmanager
def statements(n: Notifier) -> Iterator[list[tuple[str, Any]]]:
    """Every statement sent to the database meanwhile, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, sql: str, parameters: Any, *args: Any) -> None:
        seen.append((sql, parameters))

    sqlalchemy.event.listen(n.db.writer, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sqlalchemy.event.remove(n.db.writer, "before_cursor_execute", record)


def event_rows(n: Notifier) -> list[tuple[Any, ...]]:
    with n.db.writer.connect() as conn:
        query = "SELECT waybill, shipment_id, outcome FROM event ORDER BY id"
        return [tuple(row) for row in conn.exec_driver_sql(query)]


async def test_an_update_is_written_with_its_shipment_and_only_its_outcome_set_after(
    notifier: Notifier,
) -> None:
    shipment = await notifier.register_shipment(registration())
    with statements(notifier) as seen:
        outcome = await notifier.handle_webhook(webhook(code=6, at=NIGHT))
    assert outcome.shipment_id == shipment.shipment_id
    updates = [sql for sql, _ in seen if sql.lstrip().upper().startswith("UPDATE EVENT")]
    assert updates and all("shipment_id" not in sql for sql in updates)
    # the shipment is read once, locked, and that read serves both the event and the planning
    reads = [sql for sql, _ in seen if sql.lstrip().upper().startswith("SELECT")]
    assert len([sql for sql in reads if "FROM shipment" in sql]) == 1
    ((waybill, shipment_id, said),) = event_rows(notifier)
    assert (waybill, shipment_id) == ("SF18399217NER", shipment.shipment_id)
    assert said.startswith("stage out_for_delivery") or "sms scheduled" in said


async def test_an_update_found_by_its_order_reference_is_given_its_shipment(
    notifier: Notifier,
) -> None:
    """Without a waybill, the shipment is found by reference after the event is stored; the
    event then learns its shipment at the end, with its outcome."""
    shipment = await notifier.register_shipment(registration(order_id="ORDER-9"))
    outcome = await notifier.handle_webhook(
        webhook(waybill="", code=6, at=NIGHT, order_id="ORDER-9")
    )
    assert outcome.shipment_id == shipment.shipment_id
    assert [s.channel for s in outcome.notifications] == ["sms", "email"]
    ((waybill, shipment_id, said),) = event_rows(notifier)
    assert (waybill, shipment_id) == ("", shipment.shipment_id)
    assert "sms scheduled" in said


async def test_a_held_update_is_given_its_shipment_at_registration(notifier: Notifier) -> None:
    held = await notifier.handle_webhook(webhook(code=6, at=NIGHT))
    assert held.shipment_id is None and event_rows(notifier)[0][1] is None
    shipment = await notifier.register_shipment(registration())
    assert [row[1] for row in event_rows(notifier)] == [shipment.shipment_id]


async def test_every_read_is_answered_from_an_index(notifier: Notifier, clock: Clock) -> None:
    url = notifier.settings.database_url
    if not url.startswith("sqlite"):
        pytest.skip("reads SQLite's query plans; PostgreSQL plans by table statistics")
    await notifier.register_shipment(registration())
    clock.now = NIGHT + timedelta(minutes=1)
    await notifier.handle_webhook(webhook(code=4, at=NIGHT))  # shipped: waits for morning
    with statements(notifier) as seen:
        clock.now = NIGHT + timedelta(hours=10)
        ofd = await notifier.handle_webhook(webhook(code=6, at=NIGHT + timedelta(hours=10)))
    assert ofd.cancelled == 2
    reads = [(sql, p) for sql, p in seen if sql.lstrip().upper().startswith("SELECT")]
    with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
        plans = {
            sql: [r[3] for r in raw.execute("EXPLAIN QUERY PLAN " + sql, p)] for sql, p in reads
        }
    scans = {sql: plan for sql, plan in plans.items() if any(s.startswith("SCAN") for s in plan)}
    assert scans == {}
    (supersede,) = [plan for sql, plan in plans.items() if "FROM notification" in sql]
    assert supersede[0] == (
        "SEARCH notification USING INDEX ix_notification_shipment_status "
        "(shipment_id=? AND status=?)"
    )


async def test_registration_finds_held_updates_by_the_held_index(notifier: Notifier) -> None:
    url = notifier.settings.database_url
    if not url.startswith("sqlite"):
        pytest.skip("reads SQLite's query plans; PostgreSQL plans by table statistics")
    await notifier.register_shipment(registration(waybill="OTHER1"))
    await notifier.handle_webhook(webhook(waybill="OTHER1", code=6, at=NIGHT))
    await notifier.handle_webhook(webhook(code=6, at=NIGHT))  # held: not registered yet
    with statements(notifier) as seen:
        await notifier.register_shipment(registration())
    lookups = [(sql, p) for sql, p in seen if sql.lstrip().upper().startswith("SELECT")]
    held = [(sql, p) for sql, p in lookups if "FROM event" in sql and "IS NULL" in sql]
    assert len(held) == 2  # by waybill, and by order reference for updates without one
    with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
        for sql, p in held:
            plan = [r[3] for r in raw.execute("EXPLAIN QUERY PLAN " + sql, p)]
            assert plan == ["SEARCH event USING INDEX ix_event_held (waybill=?)"], sql
        indexed = raw.execute("SELECT waybill FROM event INDEXED BY ix_event_held "
                              "WHERE shipment_id IS NULL").fetchall()  # fmt: skip
    assert indexed == []  # adopted at registration, the update left the index
