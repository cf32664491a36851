"""Batches of rows handed to the driver directly (notifier/store/batch.py), on the database the
suite runs against: the same rows, the same values, the same conflicts as SQLAlchemy's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, select, update

from notifier import Notifier
from notifier.store.batch import Batch
from notifier.store.ingest_sql import SUPPRESSION, insert_ignoring

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
