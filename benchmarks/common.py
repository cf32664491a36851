"""What the ingest benchmarks share: registered shipments and the webhooks they receive.

Shipments are ``BENCH0000000``, ``BENCH0000001``, … on courier 4, each with a mobile and an
email, every third cash on delivery. Their webhooks walk picked up → in transit → delivered, as
benchmarks/webhook.lua does for wrk, so every webhook is a new event that plans (and
supersedes) notifications as a real one would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy

from notifier.clickpost.models import parse_registration
from notifier.settings import Settings
from notifier.store import migrations
from notifier.store.database import Database
from notifier.store.models import Shipment
from notifier.store.repository import shipment_row

ROOT = Path(__file__).resolve().parent.parent
ALL_DAY = "00:00-23:59"  # quiet hours over the whole day: nothing becomes due, ingest alone
CODES = ((4, "PickedUp"), (5, "InTransit"), (8, "Delivered"))


def settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "rules": ROOT / "rules.yaml",
        "templates": ROOT / "templates",
        "quiet_hours": ALL_DAY,
    }
    return Settings(**(values | overrides))


def registration(i: int) -> dict[str, Any]:
    return {
        "waybill": f"BENCH{i:07d}",
        "cp_id": 4,
        "account_code": "bench",
        "consumer_details": {
            "name": f"Customer {i}",
            "phone": f"98{i:08d}",
            "email": f"customer{i}@example.in",
        },
        "shipment_info": {
            "reference_number": f"ORD-{i}",
            "order_type": "COD" if i % 3 == 0 else "PREPAID",
            "delivery_type": "FORWARD",
        },
        "additional": {"order_date": "2026-11-20T10:00:00+05:30"},
    }


def webhook(i: int, step: int, at: datetime | None = None) -> bytes:
    """Shipment ``i``'s webhook number ``step`` (0: picked up, 1: in transit, 2: delivered)."""
    code, label = CODES[step % len(CODES)]
    when = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    scan = {"clickpost_status_code": code, "timestamp": when, "status": label,
            "location": "Bengaluru Hub", "remark": ""}  # fmt: skip
    extra = {"latest_status": scan, "notification_event_id": step + 1}
    body = {"waybill": f"BENCH{i:07d}", "cp_id": 4, "clickpost_status_description": label,
            **scan, "additional": extra}  # fmt: skip
    return json.dumps(body).encode()


def bulk_register(
    url: str,
    count: int,
    *,
    start: int = 0,
    chunk: int = 20_000,
    body: Callable[[int], dict[str, Any]] = registration,
) -> float:
    """Insert shipments ``start`` … ``start + count - 1`` as registrations would, in bulk (a
    million one at a time would take the benchmark longer than the measurement). Returns the
    seconds it took."""
    began = time.perf_counter()
    db = Database(url)
    migrations.ensure_current(db)
    table = Shipment.__table__  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    with db.writer.begin() as conn:
        for first in range(start, start + count, chunk):
            last = min(first + chunk, start + count)
            rows = [shipment_row(parse_registration(body(i)), now)
                    for i in range(first, last)]  # fmt: skip
            conn.execute(sqlalchemy.insert(table), rows)
    db.dispose()
    return time.perf_counter() - began


def count_rows(url: str, table: str) -> int:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        return int(conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {table}")).scalar_one())
