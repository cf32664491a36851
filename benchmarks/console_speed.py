"""How fast the support console answers with a large delivery log: 1,000,000 notifications.

    .venv/bin/python benchmarks/console_speed.py [--notifications 1000000] [--repeat 5]
                                                 [--db PATH]   # reuse a filled database

Fills a SQLite database (created at the current schema, with its indexes) by bulk inserts:
``--notifications`` / 5 shipments (five messages each: shipped and out for delivery by SMS and
email, delivered by SMS or WhatsApp), three tracking updates per shipment, one attempt per
message the provider took; spread over 90 days, mostly sent, some failed, skipped, cancelled,
and a few still due. Then logs in to the console through the ASGI app (Starlette's
TestClient, in process: no network) and times every page and kind of search: the median and
the worst of ``--repeat`` runs after a warm-up, in milliseconds.

Not a test: it prints figures and asserts only that each page answered 200.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from notifier import Notifier, Settings
from notifier.server import create_app

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "benchmark-console-token"
NOW = datetime.now(UTC).replace(microsecond=0)
SPAN = timedelta(days=90)
PER_SHIPMENT = 5
RULES = ("shipped", "out_for_delivery", "out_for_delivery_cod", "delivered", "failed_delivery",
         "failed_delivery_unavailable", "rto_started", "rto_delivered", "cancelled",
         "lost_damaged", "shipment_delayed", "out_for_pickup")  # fmt: skip
# (status, reason) by position in a hundred: mostly sent, some of everything else.
OUTCOMES = (
    [("sent", "")] * 70 + [("delivered", "")] * 10 + [("failed", "gave up after 5 attempts")] * 4
    + [("undelivered", "undelivered: Twilio 30003 (unreachable handset)")]
    + [("skipped", "no email")] * 6 + [("skipped", "invalid phone")] * 3
    + [("cancelled", "superseded by a later stage")] * 4 + [("expired", "expired: too old")]
    + [("scheduled", "")]
)  # fmt: skip


def stamp(at: datetime) -> str:
    """A time as SQLAlchemy stores an aware UTC datetime in SQLite."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def phone(n: int) -> str:
    return f"9{n:09d}"


def fill(path: Path, notifications: int) -> None:
    shipments = notifications // PER_SHIPMENT
    settings = Settings(
        database_url=f"sqlite:///{path}", rules=ROOT / "rules.yaml",
        templates=ROOT / "templates", outbox_dir=path.parent / "outbox",
    )  # fmt: skip
    Notifier(settings).db.dispose()  # creates the schema at head, indexes included
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")
    started = time.perf_counter()
    with db:
        db.executemany(
            "INSERT INTO shipment (id, cp_id, waybill, account_code, reference_number, order_id, "
            "consumer, shipment_info, registration, order_type, delivery_type, stage, "
            "status_code, status_at, state, last_event_at, created_at, updated_at) VALUES "
            "(?, 4, ?, 'acme', ?, ?, ?, '{}', ?, 'PREPAID', 'FORWARD', 80, 8, ?, 'terminal', ?, "
            "?, ?)",
            _shipments(shipments),
        )
        db.executemany(
            "INSERT INTO event (idempotency_key, shipment_id, cp_id, waybill, source, scan_code, "
            "scan_at, trigger_code, trigger_at, ndr_code, raw, outcome, received_at) VALUES "
            "(?, ?, 4, ?, 'webhook', ?, ?, ?, ?, NULL, ?, ?, ?)",
            _events(shipments),
        )
        db.executemany(
            "INSERT INTO notification (id, shipment_id, rule, channel, dedup_key, recipient, "
            "recipient_masked, template, rules_version, body, status, reason, trigger_code, "
            "trigger_at, due_at, attempts, provider_id, created_at, updated_at, sent_at) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, 'bench', ?, ?, ?, 6, ?, ?, ?, ?, ?, ?, ?)",
            _notifications(shipments),
        )
        db.execute(
            "INSERT INTO attempt (notification_id, number, started_at, finished_at, outcome, "
            "error, provider_id) SELECT id, 1, created_at, created_at, 'sent', '', provider_id "
            "FROM notification WHERE provider_id IS NOT NULL"
        )
    db.execute("ANALYZE")
    db.close()
    print(f"filled {notifications:,} notifications, {shipments:,} shipments, "
          f"{3 * shipments:,} updates in {time.perf_counter() - started:.0f} s")  # fmt: skip


def _at(i: int, total: int) -> datetime:
    return NOW - SPAN + SPAN * (i / total)


def _shipments(count: int) -> Iterator[tuple[Any, ...]]:
    for n in range(1, count + 1):
        at = stamp(_at(n, count))
        consumer = {"name": f"Customer {n}", "phone": phone(n), "email": f"customer{n}@example.com"}
        registration = {
            "waybill": f"BW{n:09d}", "cp_id": 4, "account_code": "acme",
            "consumer_details": consumer,
            "shipment_info": {"order_type": "PREPAID", "reference_number": f"ORD-{n:08d}",
                              "item": "Cotton kurta", "invoice_value": 999},
        }  # fmt: skip
        yield (n, f"BW{n:09d}", f"ORD-{n:08d}", f"ORD-{n:08d}", json.dumps(consumer),
               json.dumps(registration), at, at, at, at)  # fmt: skip


def _events(count: int) -> Iterator[tuple[Any, ...]]:
    for n in range(1, count + 1):
        base = _at(n, count)
        for k, code in enumerate((4, 6, 8)):
            at = stamp(base + timedelta(hours=6 * k))
            raw = json.dumps({
                "waybill": f"BW{n:09d}", "cp_id": 4, "clickpost_status_code": code,
                "location": "Bengaluru Hub", "remark": "", "timestamp": at,
            })  # fmt: skip
            yield (f"4:BW{n:09d}:{code}", n, f"BW{n:09d}", code, at, code, at, raw,
                   "planned", at)  # fmt: skip


def _notifications(count: int) -> Iterator[tuple[Any, ...]]:
    total = count * PER_SHIPMENT
    for i in range(1, total + 1):
        n = (i - 1) // PER_SHIPMENT + 1
        k = (i - 1) % PER_SHIPMENT
        channel = ("sms", "email", "sms", "email", "whatsapp" if n % 3 else "sms")[k]
        rule = RULES[(n * 7 + k) % len(RULES)] if n % 10 == 0 else RULES[min(k, 3)]
        status, reason = OUTCOMES[(i * 37) % len(OUTCOMES)]
        created = _at(i, total)
        sent = status in ("sent", "delivered", "undelivered", "failed")
        address = f"customer{n}@example.com" if channel == "email" else f"+91{phone(n)}"
        if channel == "whatsapp":
            address = f"whatsapp:{address}"
        masked = "c***@example.com" if channel == "email" else f"+91******{phone(n)[-4:]}"
        due = stamp(created if status != "scheduled" else created + timedelta(minutes=5))
        yield (i, n, rule, channel, f"{n}:{rule}:{channel}:{k}", address, masked, rule,
               f"Hi Customer, your order ORD-{n:08d} is on its way." if sent else None,
               status, reason, stamp(created), due, 1 if sent else 0,
               f"SM{i:032x}" if sent and status != "failed" else None, stamp(created),
               stamp(created), stamp(created) if sent else None)  # fmt: skip


def measure(name: str, call: Callable[[], Any], repeat: int) -> None:
    call()  # warm-up: the page cache, SQLite's statement cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = call()
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (name, response.status_code, response.text[:500])
    print(f"  {name:<48} median {statistics.median(times):7.1f} ms   worst {max(times):7.1f} ms"
          f"   {found(response.text):>6} found")  # fmt: skip


def found(body: str) -> int:
    """What the page showed: shipment links (search hits, log rows) or CSV rows."""
    if body.startswith("id,created_at"):
        return body.count("\n") - 1
    return max(body.count('href="/console/shipments/') - body.count("What would the rules"), 0)


def run(path: Path, repeat: int, notifications: int) -> None:
    settings = Settings(database_url=f"sqlite:///{path}", rules=ROOT / "rules.yaml",
                        templates=ROOT / "templates", outbox_dir=path.parent / "outbox",
                        api_token=TOKEN)  # fmt: skip
    shipments = notifications // PER_SHIPMENT
    middle = shipments // 2
    day = (NOW - timedelta(days=30)).strftime("%Y-%m-%d")
    with TestClient(create_app(settings, run_scheduler=False)) as client:
        login = client.get("/console/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', login)
        assert csrf
        client.post("/console/login", data={"token": TOKEN, "csrf": csrf.group(1)})
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/search").text)
        assert token
        csrf_value = token.group(1)

        def search(q: str) -> Callable[[], Any]:
            return lambda: client.post("/console/search", data={"q": q, "csrf": csrf_value})

        def get(path: str) -> Callable[[], Any]:
            return lambda: client.get(path)

        print(f"console over {notifications:,} notifications ({repeat} runs each):")
        pages: list[tuple[str, Callable[[], Any]]] = [
            ("dashboard (14 days, oldest due)", get("/console")),
            ("search: waybill, exact", search(f"BW{middle:09d}")),
            ("search: waybill prefix (50 of 10,000)", search(f"BW{middle // 10_000:05d}")),
            ("search: order number prefix", search(f"ORD-{middle // 10:07d}")),
            ("search: full phone, typed with spaces", search(f"{phone(middle)[:5]} "
                                                             f"{phone(middle)[5:]}")),
            ("search: phone's last 5 digits", search(phone(middle)[-5:])),
            ("search: phone's first 6 digits", search(phone(middle)[:6])),
            ("search: email prefix", search(f"customer{middle}@")),
            ("search: nothing matches (full fallback scan)", search("no-such-customer")),
            ("search: digits matching nothing (both scans)", search("5555555")),
            ("search by GET ?q= (waybill)", get(f"/console/search?q=BW{middle:09d}")),
            ("shipment page", get(f"/console/shipments/{middle}")),
            ("delivery log: newest page", get("/console/log")),
            ("delivery log: a page in the middle", get(f"/console/log?after={notifications // 2}")),
            ("delivery log: status=failed", get("/console/log?status=failed")),
            ("delivery log: channel=whatsapp", get("/console/log?channel=whatsapp")),
            ("delivery log: rare rule", get("/console/log?rule=lost_damaged")),
            ("delivery log: one day, 30 days ago", get(f"/console/log?since={day}&until={day}")),
            ("delivery log: skipped + email + one day",
             get(f"/console/log?status=skipped&channel=email&since={day}&until={day}")),
            ("CSV export: one day (~11,000 rows)",
             get(f"/console/log.csv?since={day}&until={day}")),
            ("preview form", get(f"/console/preview?shipment={middle}")),
            ("preview: FailedDelivery for a stored shipment",
             lambda: client.post("/console/preview", data={
                 "csrf": csrf_value, "shipment_id": str(middle), "status": "9", "ndr": "1"})),
        ]  # fmt: skip
        for name, call in pages:
            measure(name, call, repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notifications", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", type=Path, help="a database this script filled before: reused")
    args = parser.parse_args(argv)
    if args.db and args.db.exists():
        run(args.db, args.repeat, args.notifications)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        path = args.db or Path(folder) / "console.db"
        fill(path, args.notifications)
        run(path, args.repeat, args.notifications)
    return 0


if __name__ == "__main__":
    sys.exit(main())
