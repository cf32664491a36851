"""Faults injected for real into a running daemon (``notifier serve`` as a subprocess):

- the SMTP server stopped, then started again on the same port;
- the local Twilio answering 500 for a few seconds, then every other request;
- the SQLite database locked by another process past the busy timeout;
- the SQLite database on a filesystem that fills up (SQLITE_FULL), then frees;
- the outbox folder on a filesystem that fills up, then turns read-only (and, on the channel
  alone, a line of ``sms.jsonl`` cut off by the full disk);
- PostgreSQL out of reach (every connection cut, new ones closed on arrival, through a proxy),
  then back (with ``NOTIFIER_TEST_DATABASE_URL`` set, as CI's PostgreSQL run does).

Each test then checks the promises: every webhook answered 200 is stored, a webhook the daemon
could not store was answered 503 with ``Retry-After`` (never 500) and Clickpost's retry got it
in, every planned message went out exactly once, and the log says what happened.

The database and outbox faults mount small tmpfs filesystems, so they need root (as CI runs);
root ignores file modes, so ``chmod`` could not make anything unwritable. Retries are sped up
with ``NOTIFIER_RETRY_BACKOFF=1`` (first retry after 0.5-1 s instead of 15-30 s); the busy
timeout stays the real 10 s, so the lock test holds its lock for 12 s.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import registration, webhook
from daemon import WEBHOOK_KEY, Daemon, daemon_logs_on_failure, wait_for
from smtp_server import SmtpServer
from sqlalchemy import make_url
from tcp_proxy import TcpProxy
from twilio_server import TwilioServer

from notifier.channels import OutboxChannel, OutgoingMessage
from notifier.errors import TransientChannelError
from notifier.events import ChannelKind

__all__ = ["daemon_logs_on_failure"]  # the fixture, imported to be found
pytestmark = pytest.mark.usefixtures("daemon_logs_on_failure")

FAST_RETRIES = {"NOTIFIER_RETRY_BACKOFF": "1"}
SETTLE = 40.0  # seconds for a backlog to drain on a loaded 2-core machine
PENDING = ("scheduled", "sending", "retrying")
_numbers = itertools.count(1)


# -- customers and what reached them ---------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    waybill: str
    phone: str

    @property
    def e164(self) -> str:
        return "+91" + self.phone

    @property
    def email(self) -> str:
        return f"{self.waybill.lower()}@example.in"

    def registration(self) -> dict[str, Any]:
        return registration(waybill=self.waybill, phone=self.phone, email=self.email,
                            reference_number=f"ORD-{self.waybill}")  # fmt: skip

    def delivered(self) -> dict[str, Any]:
        return webhook(waybill=self.waybill, code=8, at=datetime.now(UTC) - timedelta(minutes=1))


def customers(count: int) -> list[Customer]:
    numbers = [next(_numbers) for _ in range(count)]
    return [Customer(waybill=f"FAULT{n:05d}", phone=f"97{n:08d}") for n in numbers]


def register(daemon: Daemon, people: list[Customer]) -> None:
    for who in people:
        response = daemon.api.post("/shipments", json=who.registration())
        assert response.status_code == 201, response.text


@dataclass
class Clickpost:
    """Posts webhooks as Clickpost does: again after a 503, until one is answered 200. Any
    other answer (a 500 above all) fails the test. Retries come every 0.3 s rather than after
    the ``Retry-After`` the daemon asks for, so the test stays short."""

    url: str
    answers: Counter[int] = field(default_factory=Counter)
    retry_after: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def deliver(self, body: dict[str, Any], *, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        with httpx.Client(timeout=30) as client:
            while True:
                response = client.post(f"{self.url}/webhooks/clickpost", json=body,
                                       headers={"webhook_key": WEBHOOK_KEY})  # fmt: skip
                with self.lock:
                    self.answers[response.status_code] += 1
                if response.status_code == 200:
                    return
                assert response.status_code == 503, f"{response.status_code} {response.text}"
                with self.lock:
                    self.retry_after.add(response.headers.get("retry-after", "missing"))
                assert time.monotonic() < deadline, "still 503 after a minute"
                time.sleep(0.3)

    def deliver_all(self, people: list[Customer]) -> None:
        for who in people:
            self.deliver(who.delivered())


def in_background(work: Any, *args: Any) -> Any:
    """Run ``work(*args)`` on a thread; ``.result()`` re-raises its failure."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(work, *args)
    pool.shutdown(wait=False)
    return future


def statuses(daemon: Daemon) -> dict[str, int]:
    return dict(daemon.sql("SELECT status, count(*) FROM notification GROUP BY status"))


def all_sent(daemon: Daemon, people: list[Customer], *, timeout: float = SETTLE) -> None:
    """Wait until each customer's two messages (SMS and email) are ``sent``."""
    expected = {"sent": 2 * len(people)}
    wait_for(lambda: statuses(daemon) == expected, timeout=timeout, every=0.25,
             what=f"{expected} (now {statuses(daemon)})")  # fmt: skip


def assert_nothing_lost(daemon: Daemon, people: list[Customer]) -> None:
    """Every customer's webhook is stored as one event, and planned one SMS and one email."""
    events = Counter(w for (w,) in daemon.sql("SELECT waybill FROM event"))
    assert events == Counter({who.waybill: 1 for who in people})
    rows = daemon.sql("SELECT s.waybill, n.channel FROM notification n "
                      "JOIN shipment s ON s.id = n.shipment_id")  # fmt: skip
    assert Counter(rows) == Counter(
        (who.waybill, channel) for who in people for channel in ("sms", "email")
    )


def assert_sent_once(
    daemon: Daemon, twilio: TwilioServer, smtp: SmtpServer, people: list[Customer]
) -> None:
    """Each customer got exactly one SMS and one email, and the log holds their provider ids."""
    sms = Counter(r.form["To"] for r in twilio.accepted)
    emails = Counter(to for m in smtp.received for to in m.rcpt_tos)
    assert sms == Counter({who.e164: 1 for who in people})
    assert emails == Counter({who.email: 1 for who in people})
    logged = {id_ for (id_,) in daemon.sql("SELECT provider_id FROM notification")}
    assert set(twilio.sids) | {m.message["Message-ID"] for m in smtp.received} == logged


def attempts(daemon: Daemon, channel: str) -> list[tuple[Any, ...]]:
    """(notification, number, started, outcome, error) of every attempt on ``channel``."""
    rows = daemon.sql(
        "SELECT a.notification_id, a.number, a.started_at, a.outcome, a.error FROM attempt a "
        "JOIN notification n ON n.id = a.notification_id WHERE n.channel = ? "
        "ORDER BY a.notification_id, a.number",
        channel,
    )
    return rows


# -- small filesystems ---------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path``; fails loudly where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs and needs root (CAP_SYS_ADMIN): {done.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill(folder: Path) -> Path:
    """Write a file until the filesystem is full; the file, to delete when space should free."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    return filler


def remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


# -- the tests -----------------------------------------------------------------------------------


def test_smtp_down_then_back_every_email_goes_once(tmp_path: Path) -> None:
    people = customers(10)
    with TwilioServer() as twilio, SmtpServer() as smtp, \
            Daemon(tmp_path, twilio=twilio, smtp=smtp, **FAST_RETRIES) as daemon:  # fmt: skip
        register(daemon, people)
        clickpost = Clickpost(daemon.url)
        smtp.stop()
        down_at = time.monotonic()
        clickpost.deliver_all(people[:5])

        def retried() -> bool:
            tried = Counter(n for n, *_ in attempts(daemon, "email"))
            return len(tried) == 5 and min(tried.values()) >= 2

        wait_for(retried, timeout=20, what="each email to be tried twice")
        clickpost.deliver_all(people[5:])  # webhooks are still answered while SMTP is down
        assert clickpost.answers == Counter({200: 10})
        time.sleep(max(0.0, 4.0 - (time.monotonic() - down_at)))  # down for 4 s
        smtp.restart()

        all_sent(daemon, people)
        assert_nothing_lost(daemon, people)
        assert_sent_once(daemon, twilio, smtp, people)
        email = attempts(daemon, "email")
        failed = [a for a in email if a[3] == "transient"]
        assert failed and all(
            f"cannot talk to SMTP server 127.0.0.1:{smtp.port}" in a[4] for a in failed
        ), failed
        assert Counter(a[3] for a in email)["sent"] == 10
        gaps = _gaps(email)
        assert gaps and min(gaps) >= 0.4, gaps  # backoff: never again at once
        assert "retry at" in daemon.log_text()


def _gaps(rows: list[tuple[Any, ...]]) -> list[float]:
    """Seconds between one attempt of a notification and the next."""
    gaps = []
    for _, group in itertools.groupby(rows, key=lambda a: a[0]):
        starts = [datetime.fromisoformat(a[2]) for a in group]
        gaps += [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    return gaps


def test_twilio_500_bursts_every_sms_goes_once_and_attempts_are_logged(tmp_path: Path) -> None:
    people = customers(16)
    burst, flaky = people[:8], people[8:]
    with TwilioServer() as twilio, SmtpServer() as smtp, \
            Daemon(tmp_path, twilio=twilio, smtp=smtp, **FAST_RETRIES) as daemon:  # fmt: skip
        register(daemon, people)
        clickpost = Clickpost(daemon.url)
        twilio.fail_for(3.0)  # every request for 3 s
        clickpost.deliver_all(burst)
        all_sent(daemon, burst)
        twilio.fail_every(2, times=8)  # then every other request, 8 times
        clickpost.deliver_all(flaky)
        all_sent(daemon, people)

        assert_nothing_lost(daemon, people)
        assert_sent_once(daemon, twilio, smtp, people)
        sms = attempts(daemon, "sms")
        # Every request Twilio saw is an attempt in the log, and every failure says why.
        assert len(sms) == twilio.count == len(twilio.requests)
        failed = [a for a in sms if a[3] == "transient"]
        assert len(failed) == twilio.count - len(people) >= 8 + 8
        assert all("20500" in a[4] for a in failed), failed
        tries = dict(daemon.sql("SELECT s.waybill, n.attempts FROM notification n JOIN shipment "
                                "s ON s.id = n.shipment_id WHERE n.channel = 'sms'"))  # fmt: skip
        assert all(tries[who.waybill] >= 2 for who in burst), tries


def test_database_locked_webhooks_get_503_and_sends_are_recorded_once(tmp_path: Path) -> None:
    """Another process holds a write transaction for 12 s, past the daemon's 10 s busy
    timeout, while the dispatcher has SMS and emails in flight at the providers."""
    people = customers(8)
    before, during = people[:4], people[4:]
    settings = FAST_RETRIES | {"NOTIFIER_SEND_LEASE_SECONDS": "5"}  # shorter than the lock
    with TwilioServer() as twilio, SmtpServer() as smtp, \
            Daemon(tmp_path, twilio=twilio, smtp=smtp, **settings) as daemon:  # fmt: skip
        register(daemon, people)
        clickpost = Clickpost(daemon.url)
        twilio.delay = smtp.handler.delay = 1.5  # the providers answer after the lock is taken
        clickpost.deliver_all(before)
        wait_for(lambda: twilio.count >= 4, timeout=10, what="SMS in flight at Twilio")
        with contextlib.closing(sqlite3.connect(daemon.database, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")
            locked_at = time.monotonic()
            posting = in_background(clickpost.deliver_all, during)
            time.sleep(12.0)
            holder.execute("ROLLBACK")
        held = time.monotonic() - locked_at
        twilio.delay = smtp.handler.delay = 0.0
        posting.result(timeout=60)

        all_sent(daemon, people)
        assert held >= 12.0
        assert clickpost.answers[503] >= 1 and set(clickpost.answers) == {200, 503}
        assert clickpost.retry_after == {"5"}
        assert_nothing_lost(daemon, people)
        assert_sent_once(daemon, twilio, smtp, people)
        text = daemon.log_text()
        assert "POST /webhooks/clickpost answered 503, to be retried: database unavailable: " \
               "database is locked" in text  # fmt: skip
        assert "but cannot record it" in text  # the dispatcher kept the outcome and retried


def test_database_full_webhooks_get_503_until_space_frees(tmp_path: Path) -> None:
    people = customers(8)
    before, during = people[:2], people[2:]
    with tmpfs(tmp_path / "db", "8m") as folder, TwilioServer() as twilio, \
            SmtpServer() as smtp, Daemon(tmp_path / "work", twilio=twilio, smtp=smtp,
                                         database_url=f"sqlite:///{folder}/notifier.db",
                                         **FAST_RETRIES) as daemon:  # fmt: skip
        register(daemon, people)
        clickpost = Clickpost(daemon.url)
        twilio.delay = 1.5
        clickpost.deliver_all(before)
        wait_for(lambda: twilio.count >= 2, timeout=10, what="SMS in flight at Twilio")
        # After a checkpoint the daemon writes its WAL from the start again, into space the
        # file already has, so a full disk stops only writes that need more than that. Empty
        # the WAL first: then every write needs new space, as the sends' records must.
        with sqlite3.connect(folder / "notifier.db", timeout=10) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        filler = fill(folder)
        posting = in_background(clickpost.deliver_all, during)
        wait_for(lambda: clickpost.answers[503] >= 3, timeout=20, what="503s while full")
        time.sleep(2.0)
        assert not posting.done()  # nothing gets in while the disk is full
        ready = daemon.api.get("/readyz")  # reads still work: a ping alone said "ok"
        assert ready.status_code == 503 and ready.json()["database"] is True
        assert ready.json()["status"] == "degraded"
        assert ready.json()["ingest"]["reason"] == "database or disk is full"
        filler.unlink()
        twilio.delay = 0.0
        posting.result(timeout=60)
        ready = daemon.api.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ingest"] == {"refusing": False}

        all_sent(daemon, people)
        assert set(clickpost.answers) == {200, 503} and clickpost.retry_after == {"5"}
        assert_nothing_lost(daemon, people)
        assert_sent_once(daemon, twilio, smtp, people)
        text = daemon.log_text()
        assert "answered 503, to be retried: database unavailable: database or disk is full" \
               in text  # fmt: skip
        assert "but cannot record it" in text


@pytest.mark.skipif(
    not os.environ.get("NOTIFIER_TEST_DATABASE_URL"),
    reason="needs PostgreSQL: set NOTIFIER_TEST_DATABASE_URL",
)
def test_postgresql_out_of_reach_webhooks_get_503_and_nothing_is_lost(
    tmp_path: Path, database_url: str
) -> None:
    """The database server goes out of reach for a few seconds (every connection cut, new
    ones closed on arrival) while sends are in flight at the providers and webhooks keep
    coming; then it is back. The daemon's pooled connections are all dead by then."""
    people = customers(8)
    before, during = people[:2], people[2:]
    real = make_url(database_url)
    with contextlib.ExitStack() as stack:
        proxy = stack.enter_context(TcpProxy((real.host or "127.0.0.1", real.port or 5432)))
        through = real.set(host="127.0.0.1", port=proxy.port)
        twilio, smtp = stack.enter_context(TwilioServer()), stack.enter_context(SmtpServer())
        daemon = stack.enter_context(Daemon(
            tmp_path, twilio=twilio, smtp=smtp, **FAST_RETRIES,
            database_url=through.render_as_string(hide_password=False),
        ))  # fmt: skip
        register(daemon, people)
        clickpost = Clickpost(daemon.url)
        twilio.delay = 1.5
        clickpost.deliver_all(before)
        wait_for(lambda: twilio.count >= 2, timeout=10, what="SMS in flight at Twilio")
        proxy.cut()
        posting = in_background(clickpost.deliver_all, during)
        wait_for(lambda: clickpost.answers[503] >= 3, timeout=20, what="503s while cut off")
        health = daemon.api.get("/healthz")
        assert health.status_code == 503 and health.json()["database"] is False
        # Twilio answers the SMS in flight: their records meet the outage too
        wait_for(lambda: "but cannot record it" in daemon.log_text(), timeout=10,
                 what="the record of a send refused")  # fmt: skip
        assert not posting.done()
        proxy.restore()
        twilio.delay = 0.0
        posting.result(timeout=60)
        health = daemon.api.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"

        all_sent(daemon, people)
        assert set(clickpost.answers) == {200, 503} and clickpost.retry_after == {"5"}
        assert_nothing_lost(daemon, people)
        assert_sent_once(daemon, twilio, smtp, people)
        assert proxy.refused > 0  # the daemon did try to reconnect while cut off
        text = daemon.log_text()
        assert "answered 503, to be retried: database unavailable" in text


def test_outbox_full_then_read_only_is_retried_and_nothing_half_written(tmp_path: Path) -> None:
    people = customers(6)
    with tmpfs(tmp_path / "outbox", "1m") as outbox, \
            Daemon(tmp_path, **FAST_RETRIES) as daemon:  # fmt: skip
        register(daemon, people)
        clickpost = Clickpost(daemon.url)
        clickpost.deliver_all(people[:2])
        all_sent(daemon, people[:2])

        filler = fill(outbox)
        clickpost.deliver_all(people[2:4])
        wait_for(lambda: _retrying_with(daemon, "No space left on device"), timeout=20,
                 what="an outbox send retrying for lack of space")  # fmt: skip
        filler.unlink()
        remount(outbox, "ro")
        clickpost.deliver_all(people[4:])
        wait_for(lambda: _retrying_with(daemon, "Read-only file system"), timeout=20,
                 what="an outbox send retrying on a read-only folder")  # fmt: skip
        remount(outbox, "rw")

        all_sent(daemon, people)
        assert clickpost.answers == Counter({200: 6})
        assert_nothing_lost(daemon, people)
        ids = dict(daemon.sql("SELECT id, channel FROM notification"))
        lines = (outbox / "sms.jsonl").read_text().splitlines()
        written = Counter(json.loads(line)["id"] for line in lines)  # every line whole
        assert written == Counter({id_: 1 for id_, kind in ids.items() if kind == "sms"})
        emails = sorted(p.name for p in (outbox / "email").iterdir())
        assert emails == sorted(f"{id_}.eml" for id_, kind in ids.items() if kind == "email")
        reasons = [a[4] for a in attempts(daemon, "sms") + attempts(daemon, "email")]
        assert any("outbox not writable" in r and "No space left" in r for r in reasons)
        assert any("outbox not writable" in r and "Read-only" in r for r in reasons)


def _retrying_with(daemon: Daemon, error: str) -> bool:
    rows = daemon.sql("SELECT count(*) FROM notification WHERE status = 'retrying' "
                      "AND reason LIKE ?", f"%{error}%")  # fmt: skip
    return bool(rows[0][0])


async def test_an_outbox_line_cut_off_by_a_full_disk_is_removed_again(tmp_path: Path) -> None:
    """The disk fills in the middle of a line of sms.jsonl: the part that fitted is cut off,
    so the file stays whole lines, and the send fails as transient (to be retried)."""
    with tmpfs(tmp_path / "outbox", "64k") as outbox:
        lines = outbox / "sms.jsonl"
        lines.write_text(json.dumps({"id": 0, "pad": "x" * 4000}) + "\n")  # most of a page
        size = lines.stat().st_size
        fill(outbox)
        channel = OutboxChannel(ChannelKind.SMS, outbox)
        message = OutgoingMessage(notification_id=1, channel=ChannelKind.SMS, to="+919800000001",
                                  text="Your parcel is out for delivery. " * 10)  # fmt: skip
        with pytest.raises(TransientChannelError, match="No space left on device"):
            await channel.send(message)
        assert lines.stat().st_size == size
        (outbox / "filler").unlink()
        await channel.send(message)
        assert [json.loads(line)["id"] for line in lines.read_text().splitlines()] == [0, 1]
