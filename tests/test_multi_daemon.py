"""Three ``notifier serve`` processes on one PostgreSQL database: every webhook posted to two
of them at once (a load balancer retrying), one of them ``kill -9``-ed mid-send.

Proves: one event per distinct webhook, one notification per (shipment, rule, channel), every
planned SMS and email delivered, and nothing sent twice but a row ``sending`` when the kill
landed (read at once: once its lease runs out a live daemon sends it again).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import registration, webhook
from daemon import API_TOKEN, WEBHOOK_KEY, Daemon, daemon_logs_on_failure, wait_for
from smtp_server import SmtpServer
from twilio_server import TwilioServer

__all__ = ["daemon_logs_on_failure"]
pytestmark = [
    pytest.mark.usefixtures("daemon_logs_on_failure"),
    pytest.mark.skipif(
        not os.environ.get("NOTIFIER_TEST_DATABASE_URL"),
        reason="needs PostgreSQL: set NOTIFIER_TEST_DATABASE_URL (several daemons, one database)",
    ),
]

SHIPMENTS = 1000
DAEMONS = 3
LEASE = 6  # short, so the dead daemon's rows go out soon; a send starts with 1.5 s of it left
SETTINGS = {"NOTIFIER_SEND_LEASE_SECONDS": str(LEASE)}


def waybill(n: int) -> str:
    return f"MULTI{n:05d}"


def phone(n: int) -> str:
    return f"97{n:08d}"


def _email_id(message_id: str) -> int:
    return int(message_id.strip("<>").split("@")[0].removeprefix("notification."))


async def _run(daemons: list[Daemon], twilio: TwilioServer) -> dict[str, Any]:
    token = {"Authorization": f"Bearer {API_TOKEN}"}
    limits = httpx.Limits(max_connections=32)
    clients = [
        httpx.AsyncClient(base_url=d.url, headers=token, timeout=60, limits=limits) for d in daemons
    ]
    sem = asyncio.Semaphore(48)
    seen: dict[str, Any] = {"unanswered": 0}

    async def register(n: int) -> None:
        async with sem:
            body = registration(waybill=waybill(n), phone=phone(n), email=f"m{n}@example.in",
                                reference_number=f"ORD-{n}")  # fmt: skip
            r = await clients[n % DAEMONS].post("/shipments", json=body)
            assert r.status_code == 201, r.text

    await asyncio.gather(*(register(n) for n in range(SHIPMENTS)))
    at = datetime.now(UTC) - timedelta(minutes=1)

    async def post(client: httpx.AsyncClient, n: int) -> None:
        body = webhook(waybill=waybill(n), code=8, at=at)
        for attempt in range(3):  # a live daemon's idle keep-alive may close under us: retry
            try:
                r = await client.post(
                    "/webhooks/clickpost", json=body, headers={"webhook_key": WEBHOOK_KEY}
                )
                break
            except httpx.TransportError:
                if client is clients[-1] and "sms_at_kill" in seen:  # the victim, dead
                    seen["unanswered"] += 1
                    return
                if attempt == 2:
                    raise
        assert r.status_code == 200, r.text

    async def twice(n: int) -> None:
        async with sem:  # the same webhook to two different daemons at once
            a, b = n % DAEMONS, (n + 1) % DAEMONS
            await asyncio.gather(post(clients[a], n), post(clients[b], n))

    async def killer() -> None:
        await asyncio.to_thread(
            wait_for, lambda: twilio.count >= SHIPMENTS // 5, timeout=60, what="some SMS"
        )
        victim = daemons[-1]
        os.kill(victim.pid, signal.SIGKILL)
        seen["sms_at_kill"] = twilio.count
        assert victim.process is not None
        assert await asyncio.to_thread(victim.process.wait, 30) == -9
        # The rows the dead daemon held, read while its leases still run (they would run out,
        # and the rows be sent again by a live daemon, before the posts below are done). Live
        # daemons' own claims at this moment are counted too: a superset.
        leased = "SELECT id FROM notification WHERE status = 'sending' AND lease_until > now()"
        held = await asyncio.to_thread(victim.sql, leased)
        seen["held"] = {row[0] for row in held}

    await asyncio.gather(*(twice(n) for n in range(SHIPMENTS)), killer())
    for c in clients:
        await c.aclose()
    return seen


def test_three_daemons_double_posts_and_a_kill_9(tmp_path: Path, database_url: str) -> None:
    with TwilioServer() as twilio, SmtpServer() as smtp:
        twilio.delay = 0.02  # requests are open at the server when the kill lands
        daemons = [
            Daemon(
                tmp_path / f"d{i}", twilio=twilio, smtp=smtp, database_url=database_url, **SETTINGS
            )
            for i in range(DAEMONS)
        ]
        try:
            started = time.monotonic()
            for d in daemons:
                d.start()
            seen = asyncio.run(_run(daemons, twilio))
            held: set[int] = seen["held"]
            live = daemons[0]

            def all_sent() -> bool:
                rows = dict(live.sql("SELECT status, count(*) FROM notification GROUP BY 1"))
                return rows == {"sent": 2 * SHIPMENTS}

            wait_for(all_sent, timeout=60, every=0.25, what="every notification to be sent")
            time.sleep(0.5)
            elapsed = time.monotonic() - started

            events = live.sql("SELECT waybill, count(*) FROM event GROUP BY waybill")
            assert len(events) == SHIPMENTS and all(c == 1 for _, c in events)
            per = live.sql("SELECT shipment_id, rule, channel, count(*) FROM notification "
                           "GROUP BY 1, 2, 3")  # fmt: skip
            assert len(per) == 2 * SHIPMENTS and all(row[3] == 1 for row in per)
            sms_id = dict(live.sql("SELECT recipient, id FROM notification WHERE channel = 'sms'"))
            sms = Counter(sms_id[r.form["To"]] for r in twilio.requests)
            emails = Counter(_email_id(m.message["Message-ID"]) for m in smtp.received)
            assert set(sms) == set(sms_id.values()) and len(sms) == SHIPMENTS
            assert len(emails) == SHIPMENTS
            twice = {n for n, c in (sms + emails).items() if c > 1}  # ids: one counter for both
            repeats = sum(c - 1 for c in sms.values()) + sum(c - 1 for c in emails.values())
            print(
                f"\nmulti-daemon: {DAEMONS} daemons, {SHIPMENTS} shipments, each delivered "
                f"webhook posted to two daemons; kill -9 after {seen['sms_at_kill']} SMS, "
                f"{seen['unanswered']} posts to it cut off.\n  sending (leased) at the kill: "
                f"{len(held)}; delivered twice: {repeats}; all {2 * SHIPMENTS} sent in "
                f"{elapsed:.1f}s"
            )
            # A repeat is a send the dead daemon had started (the provider may have taken it
            # before the kill); nothing else goes out twice.
            assert twice <= held, f"sent twice, not held at the kill: {sorted(twice - held)}"
            assert all(c <= 2 for c in (sms + emails).values())
        finally:
            for d in daemons:
                d.stop()
