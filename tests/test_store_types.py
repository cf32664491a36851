"""How values reach the database and come back: times as aware UTC, JSON exactly.

The ingest path binds its times and JSON through faster routes than SQLAlchemy's own (one-step
UTC text on SQLite, orjson); these tests hold them to what the slower routes did, on whichever
database the suite runs against.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from conftest import Clock, dumps, registration, webhook
from sqlalchemy import DateTime, select, text
from sqlalchemy.dialects import sqlite

from notifier import Notifier
from notifier.store.database import Database, _json_value
from notifier.store.models import Event, UtcDateTime

IST = timezone(timedelta(hours=5, minutes=30))


def test_sqlite_text_is_what_sqlalchemy_wrote() -> None:
    """Rows written before keep comparing and sorting with rows written now."""
    ours = UtcDateTime().bind_processor(sqlite.dialect())
    theirs = DateTime().dialect_impl(sqlite.dialect()).bind_processor(sqlite.dialect())
    assert ours is not None and theirs is not None
    for at in (
        datetime(2026, 11, 27, 7, 5, 48, 210074, tzinfo=UTC),
        datetime(2026, 11, 27, 7, 5, 48, tzinfo=UTC),  # no microseconds: still written out
        datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
    ):
        assert ours(at) == theirs(at.replace(tzinfo=None))
    assert ours(datetime(2026, 11, 27, 12, 35, tzinfo=IST)) == "2026-11-27 07:05:00.000000"


def test_sqlite_reads_every_stored_form_as_aware_utc() -> None:
    read = UtcDateTime().result_processor(sqlite.dialect(), None)
    assert read is not None
    expected = datetime(2026, 11, 27, 7, 5, tzinfo=UTC)
    assert read("2026-11-27 07:05:00.000000") == expected
    assert read("2026-11-27 07:05:00") == expected  # SQLite's CURRENT_TIMESTAMP form
    assert read("2026-11-27 12:35:00+05:30") == expected
    assert all(read(t).tzinfo is UTC for t in ("2026-11-27 07:05:00.000000", "2026-11-27"))
    assert read(None) is None


def test_a_naive_time_is_refused() -> None:
    bind = UtcDateTime().bind_processor(sqlite.dialect())
    assert bind is not None
    with pytest.raises(ValueError, match="aware"):
        bind(datetime(2026, 11, 27, 7, 5))


def test_each_instant_is_formatted_once_whatever_its_zone() -> None:
    """Times are formatted once per instant (a batch writes its ``now`` on most rows): the same
    instant in another zone shares the text, and a naive time with the same digits as one
    already formatted is still refused, every time."""
    bind = UtcDateTime().bind_processor(sqlite.dialect())
    assert bind is not None
    at = datetime(2026, 11, 27, 7, 5, 1, 250000, tzinfo=UTC)
    assert bind(at) == bind(at.astimezone(IST)) == "2026-11-27 07:05:01.250000"
    assert bind(at + timedelta(microseconds=1)) == "2026-11-27 07:05:01.250001"
    for _ in range(2):
        with pytest.raises(ValueError, match="aware"):
            bind(at.replace(tzinfo=None))


async def test_times_and_raw_bodies_come_back_exactly(notifier: Notifier, clock: Clock) -> None:
    """A scan in India's zone comes back as the same instant in UTC; a body's 30-digit number
    and non-ASCII text come back unchanged (orjson would read the number as a float)."""
    await notifier.register_shipment(dumps(registration()))
    body = webhook(at=datetime(2026, 11, 26, 11, 0, tzinfo=IST))
    body["additional"]["big"] = 123456789012345678901234567890
    body["location"] = "Bengaluru — Hub 7, ಬೆಂಗಳೂರು"
    outcome = await notifier.handle_webhook(dumps(body))
    db: Database = notifier.db
    with db.reader.connect() as conn:
        row = conn.execute(select(Event.__table__).where(Event.__table__.c.id == outcome.event_id))
        event = row.one()._mapping
        assert event["scan_at"] == datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
        assert event["scan_at"].tzinfo is not None
        assert event["received_at"] == clock.now
        assert event["raw"]["additional"]["big"] == 123456789012345678901234567890
        assert event["raw"]["location"] == "Bengaluru — Hub 7, ಬೆಂಗಳೂರು"
        if db.is_sqlite:
            stored = conn.execute(text("SELECT scan_at FROM event WHERE id = :i"),
                                  {"i": outcome.event_id}).scalar_one()  # fmt: skip
            assert stored == "2026-11-26 05:30:00.000000"


@pytest.mark.parametrize(
    "text",
    [
        '{"at": -9223372036854775809}',  # 19 digits, one past int64: a float to orjson
        '{"n": 18446744073709551616, "m": [1, 2.5, 18446744073709551615]}',
        '{"phone": "1234567890123456789", "n": 12345678901234567}',  # a long run in a string
        '{"name": "ಬೆಂಗಳೂರು 12345678901234567890"}',
        '{"a": 1e300, "b": -0.5, "c": null, "d": [true, false]}',
    ],
)
def test_stored_json_reads_back_exactly_as_json_would(text: str) -> None:
    """The reader takes orjson's fast path only when no number can lose digits; either way the
    value equals the standard library's reading, from SQLite's text or psycopg's bytes."""
    expected = json.loads(text)
    for stored in (text, text.encode(), memoryview(text.encode())):
        value = _json_value(stored)
        assert value == expected
        assert json.dumps(value) == json.dumps(expected)  # 1 and 1.0 are equal, not the same


def test_stored_json_that_is_not_json_says_where() -> None:
    with pytest.raises(json.JSONDecodeError, match="line 1 column 7"):
        _json_value('{"a": }')
