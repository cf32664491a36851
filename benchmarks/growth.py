"""Does ingest slow down as the database grows? One daemon on SQLite, small and then large.

    .venv/bin/python benchmarks/growth.py [--small 10000] [--large 1000000]
                                          [--events-per-shipment 3] [--duration 10]

Two databases, measured in the same run with the same load (wrk, 32 connections,
benchmarks/webhook.lua, waybills in a scattered order so the indexes are not walked in
sequence):

- ``--small`` registered shipments and nothing else;
- ``--large`` registered shipments, each with ``--events-per-shipment`` older events and as
  many notifications sent to its customer already stored (bulk-loaded: rows as ingest writes
  them), so the unique indexes ingest checks (event identity, notification dedup key), the
  others a new message enters (recipient, shipment and status) and the tables it reads
  (shipments, pending notifications) are full size.

Both get the same webhooks: each round walks ``--small`` shipments that have had none yet,
through picked up, in transit and delivered, in the same scattered order. On the small
database these are all its shipments, so each round starts from a fresh copy of it; on the
large one they are every hundredth shipment (``--large / --small``), from an offset no
earlier round used, so they lie scattered through its tables and indexes. (Before, the large
database got only picked-up webhooks, a million shipments being more than a round reaches,
while the small one cycled through all three and, from the second round on, mostly stale ones
for shipments already delivered: two different loads.)

Each is served by one ``notifier serve``; its resident memory (RSS) is sampled every half
second from start to stop. Printed: webhooks/s on each and their ratio, the database's bytes
per shipment, and the daemon's peak RSS.

Not a test: it prints figures, and fails only when a request was refused.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy
from common import bulk_register
from http_ingest import Load, daemons, load, warm_up

from notifier.store.models import Event, Notification

# Primes: each round walks the shipments in another scattered order, so a round does not hit
# the shipments an earlier one already moved on.
SPREADS = (7927, 7933, 7937, 7949, 7951)


@contextmanager
def peak_rss(pids: list[int]) -> Iterator[list[int]]:
    """Sample the processes' resident memory every half second; the peak (bytes) in [0]."""
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            total = 0
            for pid in pids:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            peak[0] = max(peak[0], total)
            done.wait(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def history(url: str, shipments: int, per_shipment: int, *, chunk: int = 50_000) -> float:
    """Each shipment's older events and sent notifications, as ingest and dispatch leave
    them; seconds taken."""
    began = time.perf_counter()
    engine = sqlalchemy.create_engine(url)
    events, notes = Event.__table__, Notification.__table__  # type: ignore[attr-defined]
    old = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as conn:
        ids = dict(conn.execute(sqlalchemy.text("SELECT waybill, id FROM shipment")).all())
        for first in range(0, shipments, chunk):
            waybills = [f"BENCH{i:07d}" for i in range(first, min(first + chunk, shipments))]
            ev_rows, note_rows = [], []
            for waybill in waybills:
                for k in range(per_shipment):
                    at = old + timedelta(hours=k)
                    ev_rows.append(_event(ids[waybill], waybill, k, at))
            result = conn.execute(
                sqlalchemy.insert(events).returning(events.c.id, events.c.shipment_id,
                                                    sort_by_parameter_order=True),
                ev_rows,
            )  # fmt: skip
            for k, (event_id, shipment_id) in enumerate(result.all()):
                waybill = ev_rows[k]["waybill"]
                note_rows.append(_sent(shipment_id, event_id, k % per_shipment, old, waybill))
            conn.execute(sqlalchemy.insert(notes), note_rows)
    engine.dispose()
    return time.perf_counter() - began


def _event(shipment_id: int, waybill: str, k: int, at: datetime) -> dict[str, Any]:
    code = (1, 2, 3, 7, 10)[k % 5]  # placed, pickup pending, picked up … : before the load's
    scan = {"clickpost_status_code": code, "timestamp": at.isoformat(), "status": "scan",
            "location": "Bengaluru Hub", "remark": ""}  # fmt: skip
    return {
        "idempotency_key": f"history-{waybill}-{k}", "shipment_id": shipment_id, "cp_id": 4,
        "waybill": waybill, "reference_number": None, "order_id": None, "source": "webhook",
        "scan_code": code, "scan_at": at, "trigger_code": code, "trigger_at": at,
        "ndr_code": None, "notification_event_id": None,
        "raw": {"waybill": waybill, "cp_id": 4, **scan, "additional": {"latest_status": scan}},
        "outcome": "history", "received_at": at,
    }  # fmt: skip


def _sent(shipment_id: int, event_id: int, k: int, at: datetime, waybill: str) -> dict[str, Any]:
    # Sent to the shipment's own customer (common.registration's phone), so the recipient
    # index is as large and as scattered as a real shop's, and each new message lands beside
    # its customer's earlier ones.
    phone = f"+9198{int(waybill.removeprefix('BENCH')):08d}"
    return {
        "shipment_id": shipment_id, "event_id": event_id, "rule": f"history{k}",
        "channel": "sms", "dedup_key": f"{shipment_id}:history{k}:sms:once",
        "recipient": phone, "recipient_masked": "+91******" + phone[-4:],
        "template": "shipped", "rules_version": "history", "status": "sent", "reason": "",
        "body": "Hi, your order is on its way: https://track.acme.example/BENCH",
        "encoding": "GSM-7",
        "segments": 1, "trigger_code": 4, "trigger_stage": 20, "trigger_at": at, "due_at": at,
        "attempts": 1, "provider_id": f"SM{event_id:032d}", "created_at": at, "updated_at": at,
        "sent_at": at,
    }  # fmt: skip


def measure(
    workdir: Path, url: str, shipments: int, seconds: float, spread: int, *, first: int,
    stride: int,
) -> tuple[Load, int]:  # fmt: skip
    with daemons(workdir, url, 1) as (urls, pids), peak_rss(pids) as peak:
        warm_up(urls, shipments)  # on unregistered waybills: held updates
        result = load(urls, pids, shipments=shipments, connections=32, seconds=seconds,
                      spread=spread, first=first, stride=stride)  # fmt: skip
    return result, peak[0]


def fresh_offsets(path: Path, stride: int, rounds: int) -> list[int]:
    """Offsets of shipments no earlier round walked (a kept database remembers them)."""
    used_file = path.with_name(path.name + ".walked")
    used = {int(x) for x in used_file.read_text().split()} if used_file.exists() else set()
    free = [x for x in range(stride) if x not in used]
    if len(free) < rounds:
        raise SystemExit(f"{path}: too few unwalked shipments left; build it again")
    used_file.write_text(" ".join(str(x) for x in sorted(used | set(free[:rounds]))))
    return free[:rounds]


def database_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--events-per-shipment", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="small, large, small, large …: "
        "the ratio is the median of the rounds (this machine is noisy)",
    )
    parser.add_argument("--keep", type=Path, help="build the databases here and keep them; "
                        "a later run with the same folder reuses them (loading a million "
                        "shipments takes minutes)")  # fmt: skip
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="notifier-growth-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        paths = {}
        for label, count, per in (("small", args.small, 0),
                                  ("large", args.large, args.events_per_shipment)):  # fmt: skip
            # -r2: messages sent to each shipment's own customer (before, all to one number)
            path = paths[label] = workdir / f"{label}-{count}x{per}-r2.db"
            if not path.exists():
                took = bulk_register(f"sqlite:///{path}", count)
                if per:
                    took += history(f"sqlite:///{path}", count, per)
                print(f"{label}: {count} shipments, {count * per} older events and "
                      f"notifications, loaded in {took:.0f} s")  # fmt: skip
            print(f"{label}: {database_bytes(path) / count:.0f} bytes per shipment", flush=True)
        stride = args.large // args.small
        offsets = fresh_offsets(paths["large"], stride, args.rounds)
        small_copy = workdir / "small-round.db"  # the kept small database stays as built
        ratios, peak = [], 0
        for round_, spread in enumerate(SPREADS[: args.rounds], start=1):
            rates = {}
            for stale in small_copy.parent.glob(small_copy.name + "*"):
                stale.unlink()
            shutil.copy(paths["small"], small_copy)
            walks = {
                "small": (small_copy, args.small, 0, 1),
                "large": (paths["large"], args.large, offsets[round_ - 1], stride),
            }
            for label, (path, count, first, step) in walks.items():
                result, rss = measure(workdir / label, f"sqlite:///{path}", count, args.duration,
                                      spread, first=first, stride=step)  # fmt: skip
                rates[label], peak = result.rate, max(peak, rss)
                print(f"  round {round_} {label:<5} {result.rate:6.0f} webhooks/s  p50 "
                      f"{result.p50_ms:.1f} ms  p99 {result.p99_ms:.1f} ms  daemon peak RSS "
                      f"{rss / 2**20:.0f} MB", flush=True)  # fmt: skip
                if result.refused:
                    raise SystemExit(f"{label}: {result.refused} requests refused")
            ratios.append(rates["large"] / rates["small"])
        print(f"large / small: median {statistics.median(ratios):.2f} of "
              f"{', '.join(f'{r:.2f}' for r in ratios)} (target: at least 0.80); "
              f"daemon peak RSS {peak / 2**20:.0f} MB (target: under 250)")  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
