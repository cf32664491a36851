"""Engines and transactions. The only module that knows SQLite's locking rules.

SQLite runs in WAL mode with a busy timeout, and every write transaction begins IMMEDIATE:
a deferred transaction that reads then writes fails at once with "database is locked",
whatever the timeout (implementation-notes.md). Reads use a second engine whose transactions
stay deferred, so they never wait for a writer. A file's WAL is checkpointed by a thread of
its own shortly after each write commits (notifier/store/checkpoint.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel

from notifier.errors import ConfigurationError, StoreUnavailableError
from notifier.store import models  # noqa: F401  (registers the tables)
from notifier.store.checkpoint import Checkpointer

BUSY_TIMEOUT_MS = 10_000
CONFLICT_SQLSTATES = {"40P01", "40001"}  # PostgreSQL: deadlock detected, serialization failure


class Database:
    """A writer and a reader engine over one database URL."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except Exception as err:
            raise ConfigurationError(f"NOTIFIER_DATABASE_URL is not a database URL: {err}") from err
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        path = parsed.database if self.is_sqlite and parsed.database != ":memory:" else None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # A file's WAL is copied back by a thread of its own (notifier/store/checkpoint.py);
        # not for an in-memory database, or a URI whose options it could not repeat.
        self.checkpointer = Checkpointer(path) if path and not parsed.query else None
        self.writer = self._engine(url, begin="BEGIN IMMEDIATE")
        self.reader = self._engine(url, begin="BEGIN") if self.is_sqlite else self.writer

    def _engine(self, url: str, *, begin: str) -> Engine:
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000}
        else:
            kwargs["pool_pre_ping"] = True
        # JSON columns (raw bodies, consumers) through orjson: json's encoder and decoder were
        # a tenth of the CPU that storing a webhook took.
        engine = create_engine(
            url, json_serializer=_json_text, json_deserializer=_json_value, **kwargs
        )
        if self.is_sqlite:
            _sqlite_pragmas(engine, begin)
        return engine

    def create_all(self) -> None:
        SQLModel.metadata.create_all(self.writer)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any error."""
        with (
            _translated(),
            Session(self.writer, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session
        self._committed()

    @contextmanager
    def write_core(self) -> Iterator[Connection]:
        """One write transaction on a plain connection, for code that needs no ORM session (the
        ingest path, where the session's own bookkeeping cost more than a small batch's SQL)."""
        with _translated(), self.writer.begin() as conn:
            yield conn
        self._committed()

    def _committed(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.nudge()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with (
            _translated(),
            Session(self.reader, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    def ping(self) -> bool:
        """Whether the database answers a trivial query."""
        try:
            with self.read() as session:
                session.execute(text("SELECT 1"))
        except StoreUnavailableError:
            return False
        return True

    def clock_skew(self) -> float | None:
        """Seconds the database server's clock is ahead of this host's (behind: negative),
        taken at the middle of the query's round trip; None on SQLite, which has no clock but
        this host's. Leases are written and compared by each daemon's own clock, so daemons
        on several hosts must agree with each other: each is compared with the database."""
        if self.is_sqlite:
            return None
        with self.read() as session:
            before = time.time()
            server = session.execute(text("SELECT EXTRACT(EPOCH FROM clock_timestamp())"))
            server_time = float(server.scalar_one())
            after = time.time()
        return server_time - (before + after) / 2

    def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()
        self.writer.dispose()
        self.reader.dispose()


@contextmanager
def _translated() -> Iterator[None]:
    """The database being locked, full, or unreachable is worth retrying: the caller (a
    webhook answered 503, a dispatcher) tries again later. Any other database error is a bug
    and goes up as it is."""
    try:
        yield
    except OperationalError as err:
        conflict = getattr(err.orig, "sqlstate", None) in CONFLICT_SQLSTATES
        raise StoreUnavailableError(f"database unavailable: {err.orig}", conflict=conflict) from err


def _json_text(value: Any) -> str:
    """orjson's text, or json's for what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


#: Every digit as "0", every other byte as " ": a long run of digits is then a run of zeros.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
#: 19 digits in a row: an integer orjson would read as a float (past 64 bits), losing digits.
_LONG_NUMBER = b"0" * 19


def _json_value(data: str | bytes) -> Any:
    """orjson's reading where it is exact; json's for long integers and what orjson refuses.
    SQLite gives text, psycopg bytes. The long-number check maps the bytes through a table
    and looks for a run of zeros: a regular expression for ``\\d{19}`` took 2 µs of a
    shipment's 2.7 µs consumer column, this 0.3."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if _LONG_NUMBER not in raw.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # json says what is wrong, or reads what orjson will not
    return json.loads(raw)


def _sqlite_pragmas(engine: Engine, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we say BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)
