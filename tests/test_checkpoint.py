"""Background checkpoints (notifier/store/checkpoint.py): the WAL's pages reach the database
file soon after each commit without the writer copying them, the WAL still restarts, and the
thread exists only while there is something to do."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from daemon import wait_for
from sqlalchemy import text

from notifier.store.checkpoint import Checkpointer
from notifier.store.database import Database


def _database(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'notifier.db'}")
    with db.write_core() as conn:
        conn.execute(text("CREATE TABLE probe (n INTEGER, pad BLOB)"))
    return db


def _insert(db: Database, n: int, pad: int = 0) -> None:
    with db.write_core() as conn:
        conn.execute(text("INSERT INTO probe VALUES (:n, zeroblob(:pad))"), {"n": n, "pad": pad})


def _in_database_file(tmp_path: Path) -> list[int]:
    """What the database file holds by itself, as if its WAL were lost: a copy without it."""
    copy = tmp_path / "copy.db"
    shutil.copy(tmp_path / "notifier.db", copy)
    with sqlite3.connect(copy) as conn:
        try:
            return [n for (n,) in conn.execute("SELECT n FROM probe ORDER BY n")]
        except sqlite3.OperationalError:  # not even the table yet
            return []


def test_a_commit_reaches_the_database_file_soon_without_the_writers_checkpoint(
    tmp_path: Path,
) -> None:
    db = _database(tmp_path)
    try:
        _insert(db, 1)
        _insert(db, 2)
        # Three small commits are far below the writer's automatic checkpoint (1,000 pages):
        # only the background one can have copied them.
        assert db.checkpointer is not None
        wait_for(lambda: _in_database_file(tmp_path) == [1, 2], timeout=5,
                 what="the rows copied into the database file")  # fmt: skip
        busy, frames, copied = db.checkpointer.last or (1, 0, 0)
        assert (busy, copied) == (0, frames) and frames > 0
    finally:
        db.dispose()


def test_the_wal_still_restarts_under_steady_writes(tmp_path: Path) -> None:
    """40 MB committed 200 KB at a time, back to back: the WAL stays near the writer's own
    checkpoint threshold (SQLite's 1,000 pages, 4 MB) instead of growing with everything
    written, because that checkpoint still runs and restarts the WAL when the thread keeps
    finding new pages behind it."""
    db = _database(tmp_path)
    wal = tmp_path / "notifier.db-wal"
    limit = 2 * 1000 * 4096
    largest = 0
    try:
        for n in range(200):
            _insert(db, n, pad=200_000)
            largest = max(largest, wal.stat().st_size)
        assert db.checkpointer is not None and db.checkpointer.checkpoints > 0
    finally:
        db.dispose()
    assert largest < limit < 40_000_000, f"the WAL grew to {largest} bytes"


def test_the_thread_runs_only_from_the_first_write_until_dispose(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'notifier.db'}")
    assert db.checkpointer is not None
    assert db.ping() and not db.checkpointer.running  # reading starts nothing
    with db.write_core() as conn:
        conn.execute(text("CREATE TABLE probe (n INTEGER)"))
    assert db.checkpointer.running
    db.dispose()
    assert not db.checkpointer.running


def test_an_idle_database_is_left_alone(tmp_path: Path) -> None:
    db = _database(tmp_path)
    try:
        assert db.checkpointer is not None
        wait_for(lambda: db.checkpointer and db.checkpointer.checkpoints, timeout=5,
                 what="the first checkpoint")  # fmt: skip
        done = db.checkpointer.checkpoints
        time.sleep(0.3)
        assert db.checkpointer.checkpoints == done
        _insert(db, 1)
        wait_for(lambda: db.checkpointer and db.checkpointer.checkpoints > done, timeout=5,
                 what="a checkpoint after the next write")  # fmt: skip
    finally:
        db.dispose()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:",
                                 "sqlite:///file:notifier.db?uri=true"])  # fmt: skip
def test_no_checkpointer_where_there_is_no_plain_file(url: str) -> None:
    db = Database(url)
    try:
        assert db.checkpointer is None
    finally:
        db.dispose()


def test_a_file_it_cannot_open_is_said_once_and_the_thread_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpointer = Checkpointer(str(tmp_path / "no such folder" / "notifier.db"))
    with caplog.at_level(logging.WARNING, logger="notifier.store"):
        checkpointer.nudge()
        wait_for(lambda: not checkpointer.running, timeout=5, what="the thread to end")
        checkpointer.nudge()
    assert [r.getMessage() for r in caplog.records] == [
        f"no background checkpoints for {tmp_path / 'no such folder' / 'notifier.db'}: "
        "unable to open database file (the writer's own go on)"
    ]
    checkpointer.close()


def test_an_idle_thread_ends_and_the_next_commit_starts_another(tmp_path: Path) -> None:
    db = _database(tmp_path)
    try:
        assert db.checkpointer is not None
        db.checkpointer.idle = 0.2
        _insert(db, 1)
        wait_for(lambda: db.checkpointer and not db.checkpointer.running, timeout=5,
                 what="the idle thread to end")  # fmt: skip
        done = db.checkpointer.checkpoints
        _insert(db, 2)
        assert db.checkpointer.running
        wait_for(lambda: _in_database_file(tmp_path) == [1, 2], timeout=5,
                 what="the second row copied by a new thread")  # fmt: skip
        assert db.checkpointer.checkpoints > done
    finally:
        db.dispose()


def test_dispose_stops_a_thread_in_any_state(tmp_path: Path) -> None:
    """Closing while the thread waits, pauses or copies: it always ends (a lost wake-up here
    once hung a test run)."""
    for pause in (0.0, 0.005, 0.05):
        for writes in range(4):
            db = Database(f"sqlite:///{tmp_path / f'{pause}-{writes}.db'}")
            assert db.checkpointer is not None
            db.checkpointer.pause = pause
            with db.write_core() as conn:
                conn.execute(text("CREATE TABLE probe (n INTEGER, pad BLOB)"))
            for n in range(writes):
                _insert(db, n, pad=20_000)
            started = time.monotonic()
            db.dispose()
            assert not db.checkpointer.running
            assert time.monotonic() - started < 10  # a lost wake-up: never
