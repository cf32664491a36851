"""Events per second through ``Notifier.handle_webhook`` in process, against raw sqlite3.

    .venv/bin/python benchmarks/embedded_ingest.py [--shipments 10000] [--events 30000]
                                                   [--concurrency 256]

A merchant's async webhook handler under load: ``--concurrency`` requests in flight, each
awaiting ``handle_webhook(body, headers)`` (parse, check the key, store the event, plan its
notifications, commit), the next starting as one returns. Group commit lets them share
transactions. SQLite in WAL mode with ``synchronous=FULL``: every answer is durable.

The baseline is plain sqlite3 inserting exactly the rows notifier wrote (each event and its
notifications, read back afterwards) into a copy of the database as it was before the run, with
the same pragmas, twice: in transactions of the same sizes as notifier's, and one transaction
per event (what a handler without group commit pays for durability).

Not a test: it prints figures, and fails only if an event is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import bulk_register, count_rows, settings, webhook

from notifier.app import Notifier

HEADERS = {"webhook_key": "bench-key"}


async def run_notifier(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, int]:
    """Seconds to ingest every body with ``concurrency`` in flight; transactions used."""
    async with Notifier(settings(url, webhook_keys="bench-key")) as engine:
        await engine.handle_webhook(webhook(9_999_999, 0), HEADERS)  # warm-up: a held update
        pending: Iterator[bytes] = iter(bodies)

        async def worker() -> None:
            for body in pending:
                await engine.handle_webhook(body, HEADERS)

        before = engine._ingest.batches
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - began, engine._ingest.batches - before


def new_rows(path: Path, table: str, after: int) -> tuple[list[str], list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as db:
        cursor = db.execute(f"SELECT * FROM {table} WHERE id > ? ORDER BY id", (after,))
        columns = [c[0] for c in cursor.description]
        return columns, cursor.fetchall()


def raw_sqlite(path: Path, events: Any, notifications: Any, per_transaction: int) -> float:
    """Seconds for plain sqlite3 to insert the same rows, ``per_transaction`` events a commit."""
    (ev_cols, ev_rows), (n_cols, n_rows) = events, notifications
    by_event: dict[int, list[tuple[Any, ...]]] = {}
    event_id = n_cols.index("event_id")
    for row in n_rows:
        by_event.setdefault(row[event_id], []).append(row)
    insert_event = (
        f"INSERT INTO event ({','.join(ev_cols)}) VALUES ({','.join('?' * len(ev_cols))})"
    )
    insert_note = (f"INSERT INTO notification ({','.join(n_cols)}) "
                   f"VALUES ({','.join('?' * len(n_cols))})")  # fmt: skip
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    began = time.perf_counter()
    for first in range(0, len(ev_rows), per_transaction):
        chunk = ev_rows[first : first + per_transaction]
        db.execute("BEGIN IMMEDIATE")
        db.executemany(insert_event, chunk)
        db.executemany(insert_note, [n for e in chunk for n in by_event.get(e[0], ())])
        db.execute("COMMIT")
    seconds = time.perf_counter() - began
    db.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shipments", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="notifier-embedded-"))
    try:
        path = workdir / "notifier.db"
        url = f"sqlite:///{path}"
        seconds = bulk_register(url, args.shipments)
        print(f"registered {args.shipments} shipments in {seconds:.1f} s")
        before = workdir / "before.db"
        shutil.copy(path, before)
        first_event = count_rows(url, "event")
        first_note = count_rows(url, "notification")
        bodies = [webhook(i % args.shipments, i // args.shipments) for i in range(args.events)]
        elapsed, batches = asyncio.run(run_notifier(url, bodies, args.concurrency))
        events = new_rows(path, "event", first_event + 1)  # +1: the warm-up event
        notes = new_rows(path, "notification", first_note)
        if len(events[1]) != args.events:
            raise SystemExit(f"{len(events[1])} events stored for {args.events} webhooks")
        rate = args.events / elapsed
        per_batch = max(1, round(args.events / batches))
        print(f"notifier  {rate:8.0f} events/s  ({args.events} webhooks, {len(notes[1])} "
              f"notifications, {batches} transactions, {per_batch} events each on average, "
              f"concurrency {args.concurrency})")  # fmt: skip
        for label, size in (("same transactions", per_batch), ("one per event", 1)):
            shutil.copy(before, path.with_suffix(".raw.db"))
            raw = args.events / raw_sqlite(path.with_suffix(".raw.db"), events, notes, size)
            path.with_suffix(".raw.db").unlink()
            print(
                f"raw sqlite3, {label:<17} {raw:8.0f} events/s   notifier is {rate / raw:.2f} of it"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
