"""Shared fixtures: a real SQLite file per test, the repo's own rules and templates, a clock."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notifier import Notifier, Settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "examples" / "clickpost"


class Clock:
    """A settable clock: tests move time instead of sleeping."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    # 11:30 in India: outside the default quiet hours (21:00-09:00 IST)
    return Clock(datetime(2026, 11, 26, 6, 0, tzinfo=UTC))


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh database per test: a SQLite file, or with NOTIFIER_TEST_DATABASE_URL set
    (PostgreSQL), a schema of its own on that server, dropped afterwards."""
    server = os.environ.get("NOTIFIER_TEST_DATABASE_URL")
    if not server:
        yield f"sqlite:///{tmp_path / 'notifier.db'}"
        return
    import sqlalchemy

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    joiner = "&" if "?" in server else "?"
    try:
        yield f"{server}{joiner}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        rules=ROOT / "rules.yaml",
        templates=ROOT / "templates",
        outbox_dir=tmp_path / "outbox",
    )


@pytest.fixture
async def notifier(settings: Settings, clock: Clock) -> AsyncIterator[Notifier]:
    async with Notifier(settings, clock=clock) as n:
        yield n


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def webhook(
    *,
    waybill: str = "SF18399217NER",
    cp_id: int = 4,
    code: int = 6,
    at: datetime,
    latest: tuple[int, datetime] | None = None,
    ndr: int | None = None,
    **additional: Any,
) -> dict[str, Any]:
    """A Clickpost webhook body shaped like the real ones (clickpost-facts.md)."""
    latest_code, latest_at = latest or (code, at)
    body: dict[str, Any] = {
        "waybill": waybill,
        "cp_id": cp_id,
        "clickpost_status_code": code,
        "clickpost_status_description": "",
        "status": "scan",
        "location": "Bengaluru Hub",
        "remark": "",
        "timestamp": iso(at),
        "additional": {
            "latest_status": {
                "clickpost_status_code": latest_code,
                "timestamp": iso(latest_at),
                "status": "scan",
                "location": "Bengaluru Hub",
                "remark": "",
            },
            "ndr_status_code": ndr,
            **additional,
        },
    }
    return body


def registration(
    *,
    waybill: str = "SF18399217NER",
    cp_id: int = 4,
    phone: str = "9876543210",
    email: str = "priya.sharma@example.com",
    order_type: str = "PREPAID",
    reference_number: str = "ACME-100231",
    **additional: Any,
) -> dict[str, Any]:
    return {
        "waybill": waybill,
        "cp_id": cp_id,
        "key": "ignored",
        "consumer_details": {"name": "Priya Sharma", "phone": phone, "email": email},
        "shipment_info": {
            "item": "Cotton kurta",
            "order_type": order_type,
            "invoice_value": 1299,
            "cod_amount": 1299 if order_type == "COD" else 0,
            "reference_number": reference_number,
            "delivery_type": "FORWARD",
            "drop_pincode": "560034",
        },
        "additional": {"order_date": "2026-11-20T18:00:00+05:30", **additional},
    }


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()
