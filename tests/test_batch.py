"""Batches of rows and queries handed to the driver directly (notifier/store/batch.py), on the
database the suite runs against: the same rows, the same values, the same conflicts as
SQLAlchemy's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from conftest import dumps, registration
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import StatementError

from notifier import Notifier
from notifier.store.batch import Batch, Query
from notifier.store.ingest_sql import (
    SHIPMENTS_BY_WAYBILL,
    STATE_COLUMNS,
    SUPPRESSION,
    insert_ignoring,
)

T0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))
INSERT = Batch(
    lambda dialect: insert_ignoring(SUPPRESSION, dialect, "channel", "address").returning(
        SUPPRESSION.c.id, SUPPRESSION.c.address
    )
)
RENAME = Batch(
    lambda _: (
        update(SUPPRESSION)
        .where(SUPPRESSION.c.id == bindparam("sid"))
        .values(reason=bindparam("why"), created_at=bindparam("at"))
    )
)


def _row(i: int, at: datetime = T0) -> dict[str, object]:
    return {"channel": "sms", "address": f"+9198{i:08d}", "reason": "STOP", "created_at": at}


async def test_returning_gives_every_new_row_once_past_one_statements_limit(
    notifier: Notifier,
) -> None:
    """9,000 rows of 4 values are more than SQLite takes in one statement (32,766 values);
    rows already there, or twice in the batch, come back once, for the first that was new."""
    with notifier.db.write() as session:
        conn = session.connection()
        first = INSERT.returning(conn, [_row(i) for i in range(0, 9000, 2)])
        again = INSERT.returning(conn, [_row(i) for i in range(9000)] + [_row(8999)])
    assert len(first) == 4500 and len(again) == 4500
    assert {address for _, address in again} == {f"+9198{i:08d}" for i in range(1, 9000, 2)}
    assert len({sid for sid, _ in first + again}) == 9000


async def test_values_go_through_their_types(notifier: Notifier) -> None:
    """A time in India's zone is stored as the same instant in UTC, as SQLAlchemy stores it."""
    with notifier.db.write() as session:
        conn = session.connection()
        [(sid, _)] = INSERT.returning(
            conn, [_row(1, at=datetime(2026, 11, 27, 12, 30, tzinfo=IST))]
        )
        RENAME.run(conn, [{"sid": sid, "why": "unsubscribed", "at": T0 + timedelta(hours=1)}])
    with notifier.db.reader.connect() as conn:
        row = conn.execute(select(SUPPRESSION).where(SUPPRESSION.c.id == sid)).one()
    assert (row.reason, row.created_at) == ("unsubscribed", T0 + timedelta(hours=1))


async def test_a_statement_of_one_parameter_takes_each_rows_value(notifier: Notifier) -> None:
    with notifier.db.write() as session:
        conn = session.connection()
        ids = [sid for sid, _ in INSERT.returning(conn, [_row(i) for i in range(3)])]
        by_channel = Batch(lambda _: update(SUPPRESSION)
                           .where(SUPPRESSION.c.id == bindparam("sid"))
                           .values(reason=SUPPRESSION.c.channel))  # fmt: skip
        by_channel.run(conn, [{"sid": ids[0]}, {"sid": ids[2]}])
    with notifier.db.reader.connect() as conn:
        rows = conn.execute(select(SUPPRESSION.c.id, SUPPRESSION.c.reason)).all()
    assert dict(rows) == {ids[0]: "sms", ids[1]: "STOP", ids[2]: "sms"}


async def test_a_value_missing_from_the_rows_is_named(notifier: Notifier) -> None:
    fixed = Batch(lambda _: update(SUPPRESSION).values(reason="x", address=bindparam("a")))
    with notifier.db.write() as session, pytest.raises(ValueError, match="reason"):
        fixed.run(session.connection(), [{"a": "+919800000000"}])


# --- queries --------------------------------------------------------------------------------

SINCE = Query(
    select(SUPPRESSION.c.address, SUPPRESSION.c.created_at, SUPPRESSION.c.reason)
    .where(
        SUPPRESSION.c.address.in_(bindparam("addresses", expanding=True)),
        SUPPRESSION.c.created_at >= bindparam("since"),
        SUPPRESSION.c.channel.in_(["sms", "whatsapp"]),  # a list of the statement's own
    )
    .order_by(SUPPRESSION.c.address)
)


async def test_a_query_gives_what_sqlalchemy_gives(notifier: Notifier) -> None:
    """The same rows in the same order, times aware and in UTC, a parameter time in India's
    zone compared as the same instant, the statement's own IN list applied."""
    rows = [_row(i, at=T0 + timedelta(minutes=i)) for i in range(6)]
    rows[4]["channel"] = "email"
    since = datetime(2026, 11, 27, 12, 31, tzinfo=IST)  # T0 + 1 minute
    wanted = [f"+9198{i:08d}" for i in (5, 4, 3, 1, 0)]
    with notifier.db.write() as session:
        conn = session.connection()
        INSERT.returning(conn, rows)
        ours = SINCE.rows(conn, {"addresses": wanted, "since": since})
        theirs = conn.execute(SINCE.statement, {"addresses": wanted, "since": since}).all()
    assert ours == [tuple(r) for r in theirs]
    assert [(a, at) for a, at, _ in ours] == [
        ("+919800000001", T0 + timedelta(minutes=1)),
        ("+919800000003", T0 + timedelta(minutes=3)),
        ("+919800000005", T0 + timedelta(minutes=5)),
    ]
    assert all(at.tzinfo is not None for _, at, _ in ours)


async def test_a_query_reads_json_columns_and_takes_an_empty_list(notifier: Notifier) -> None:
    await notifier.register_shipment(dumps(registration()))
    with notifier.db.write() as session:
        conn = session.connection()
        [row] = SHIPMENTS_BY_WAYBILL.rows(conn, {"cp_id": 4, "waybills": ["SF18399217NER"]})
        none = SHIPMENTS_BY_WAYBILL.rows(conn, {"cp_id": 4, "waybills": []})
    assert row[STATE_COLUMNS.index("consumer")]["name"] == "Priya Sharma"
    assert none == []


async def test_a_query_names_a_parameter_without_a_value(notifier: Notifier) -> None:
    with notifier.db.write() as session:
        conn = session.connection()
        with pytest.raises((ValueError, StatementError), match="since"):
            SINCE.rows(conn, {"addresses": ["+919800000001"]})
