"""Soak: the daemon under a steady stream of Clickpost webhooks for minutes, with faults.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--rate 30] [--fault-every 60]

Starts ``notifier serve`` on SQLite (tests/daemon.py), the local Twilio-compatible server and a
real aiosmtpd (tests/twilio_server.py, tests/smtp_server.py), then plays simulated shipment
journeys (notifier/simulate.py: happy, COD, failed delivery then delivered, RTO, lost, bursts,
out of order, duplicates) at ``--rate`` webhooks a second, registering each shipment first.
The client behaves like Clickpost: a webhook answered 503 (or not answered) is posted again,
after the ``Retry-After`` the daemon gave, until it is answered 200.

Every ``--fault-every`` seconds one fault, in turn: Twilio answering 500 to everything for
10 s; the SMTP server stopped for 15 s and started again on the same port; another process
holding a SQLite write transaction for ``--lock-seconds`` (past the daemon's 10 s busy timeout,
so some webhooks are answered 503).

The daemon's RSS is sampled every 5 s. At the end the traffic stops, the queue drains, and the
providers' messages are compared with the delivery log: every SMS the log says was sent is at
Twilio once (by provider id, and by recipient and text), every email at the SMTP server once
(by Message-ID), every webhook answered 200 is stored as an event. Prints the figures; exits 1
if anything was lost or sent twice. Not a test: a run takes ``--minutes`` plus the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sqlite3
import string
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from daemon import API_TOKEN, WEBHOOK_KEY, Daemon  # noqa: E402 (after the path set-up)
from smtp_server import SmtpServer  # noqa: E402
from twilio_server import TwilioServer  # noqa: E402

from notifier.clickpost.models import parse_webhook  # noqa: E402
from notifier.simulate import journey_bodies  # noqa: E402

# How often each journey is played (the happy path dominates, as in a real shop).
JOURNEY_MIX = {"happy": 40, "cod": 15, "ndr_then_delivered": 10, "rto": 5, "lost": 3,
               "burst": 10, "out_of_order": 10, "duplicates": 7}  # fmt: skip
PENDING = ("scheduled", "sending", "retrying")
SAMPLE_EVERY = 5.0
Body = dict[str, Any]


def log(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", flush=True)


# -- the Clickpost side ------------------------------------------------------------------------


@dataclass
class Traffic:
    """What the client saw. ``webhooks``: bodies sent (a journey's duplicate copies count);
    ``posts``: HTTP requests including retries; the rest count requests by answer."""

    shipments: int = 0
    webhooks: int = 0
    posts: int = 0
    answers: Counter[int] = field(default_factory=Counter)  # 0: no answer (timeout, reset)
    no_answer: Counter[str] = field(default_factory=Counter)  # why, by httpx exception
    outcomes: Counter[str] = field(default_factory=Counter)  # accepted / duplicate
    retried_until_accepted: int = 0  # bodies answered 503 (or nothing) first, 200 at last
    registrations: int = 0
    registration_retries: int = 0
    identities: set[str] = field(default_factory=set)  # of webhooks answered 200
    unaccepted: int = 0  # bodies never answered 200: must be 0
    errors: list[str] = field(default_factory=list)


class Pacer:
    """Spaces request starts ``1/rate`` seconds apart across all workers."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(self.next, now)
        self.next = slot + self.interval
        await asyncio.sleep(slot - now)


@dataclass
class Clickpost:
    http: httpx.AsyncClient
    url: str
    traffic: Traffic
    pacer: Pacer
    give_up_after: float = 300.0

    async def register(self, body: Body) -> None:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        tries = await self._until_accepted(f"{self.url}/shipments", body, headers, {200, 201})
        self.traffic.registrations += 1
        self.traffic.registration_retries += tries - 1

    async def webhook(self, body: Body) -> None:
        await self.pacer.wait()
        self.traffic.webhooks += 1
        headers = {"webhook_key": WEBHOOK_KEY}
        tries = await self._until_accepted(f"{self.url}/webhooks/clickpost", body, headers, {200})
        if tries:
            self.traffic.identities.add(parse_webhook(body).identity)
        if tries > 1:
            self.traffic.retried_until_accepted += 1

    async def _until_accepted(
        self, url: str, body: Body, headers: dict[str, str], ok: set[int]
    ) -> int:
        """Post until answered with a status in ``ok``; the number of tries (0: gave up)."""
        webhook = url.endswith("/webhooks/clickpost")
        deadline = time.monotonic() + self.give_up_after
        for tries in range(1, 10_000):
            status, pause, answer = await self._post(url, body, headers)
            if webhook:
                self.traffic.posts += 1
                self.traffic.answers[status] += 1
            if status in ok:
                if webhook:
                    self.traffic.outcomes[str(answer.get("status", "?"))] += 1
                return tries
            if status not in {0, 503} or time.monotonic() > deadline:
                self._error(f"{url}: {status} {json.dumps(answer)[:200]}")
                break
            await asyncio.sleep(pause)
        if webhook:
            self.traffic.unaccepted += 1
        return 0

    async def _post(self, url: str, body: Body, headers: dict[str, str]) -> tuple[int, float, Any]:
        try:
            response = await self.http.post(url, json=body, headers=headers)
        except httpx.TransportError as err:
            self.traffic.no_answer[type(err).__name__] += 1
            return 0, 2.0, {}
        retry_after = response.headers.get("retry-after", "5")
        pause = float(retry_after) if retry_after.isdigit() else 5.0
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        return response.status_code, pause, answer

    def _error(self, text: str) -> None:
        if len(self.traffic.errors) < 10:
            self.traffic.errors.append(text)


async def play(clickpost: Clickpost, *, until: float, concurrency: int, seed: int) -> None:
    """Shipments, side by side, until the deadline; each one's journey is finished."""
    rng = random.Random(seed)
    prefix = "SOAK" + "".join(rng.choices(string.ascii_uppercase, k=5))
    names, weights = list(JOURNEY_MIX), list(JOURNEY_MIX.values())
    numbers = iter(range(10**7))

    async def worker() -> None:
        for n in numbers:
            if time.monotonic() >= until:
                return
            journey = rng.choices(names, weights)[0]
            bodies = journey_bodies(journey, waybill=f"{prefix}{n:06d}", seed=seed * 7919 + n)
            await clickpost.register(bodies.registration)
            for wave in bodies.waves:
                await asyncio.gather(*(clickpost.webhook(body) for body in wave))
            clickpost.traffic.shipments += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))


# -- faults ----------------------------------------------------------------------------------


@dataclass
class Faults:
    daemon: Daemon
    twilio: TwilioServer
    smtp: SmtpServer
    lock_seconds: float
    done: list[str] = field(default_factory=list)

    async def twilio_500s(self) -> None:
        self.twilio.fail_for(10.0)
        self._note("twilio-500s", "Twilio answers 500 to every request for 10 s")
        await asyncio.sleep(10.0)

    async def smtp_restart(self) -> None:
        await asyncio.to_thread(self.smtp.stop)
        self._note("smtp-down", "SMTP server stopped for 15 s")
        await asyncio.sleep(15.0)
        await asyncio.to_thread(self.smtp.restart)
        log("  SMTP server back on the same port")

    async def sqlite_lock(self) -> None:
        seconds = self.lock_seconds
        self._note("sqlite-lock", f"another process holds a SQLite write lock for {seconds:.0f} s")
        await asyncio.to_thread(self._hold_lock)

    def _hold_lock(self) -> None:
        with contextlib.closing(sqlite3.connect(self.daemon.database, timeout=30,
                                                isolation_level=None)) as db:  # fmt: skip
            db.execute("BEGIN IMMEDIATE")
            time.sleep(self.lock_seconds)
            db.execute("ROLLBACK")

    def _note(self, name: str, what: str) -> None:
        self.done.append(name)
        log(f"fault: {what}")

    async def run(self, *, every: float, until: float) -> None:
        cycle: list[Callable[[], Any]] = [self.twilio_500s, self.smtp_restart, self.sqlite_lock]
        await asyncio.sleep(min(every / 2, max(0.0, until - time.monotonic())))
        turn = 0
        while time.monotonic() + 20 < until:  # no fault in the last 20 s of traffic
            await cycle[turn % len(cycle)]()
            turn += 1
            await asyncio.sleep(max(0.0, min(every, until - time.monotonic())))


# -- watching the daemon ---------------------------------------------------------------------


@dataclass
class Samples:
    at: list[float] = field(default_factory=list)  # seconds since the start
    rss_mb: list[float] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pending(daemon: Daemon) -> int:
    marks = ",".join("?" * len(PENDING))
    rows = daemon.sql(f"SELECT count(*) FROM notification WHERE status IN ({marks})", *PENDING)
    return int(rows[0][0])


async def sample(daemon: Daemon, samples: Samples, started: float, stop: threading.Event) -> None:
    while not stop.is_set():
        samples.at.append(time.monotonic() - started)
        samples.rss_mb.append(rss_mb(daemon.pid))
        with contextlib.suppress(sqlite3.Error):
            samples.pending.append(await asyncio.to_thread(pending, daemon))
        await asyncio.sleep(SAMPLE_EVERY)


def slope_per_minute(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (seconds), per minute."""
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


# -- the reckoning ---------------------------------------------------------------------------


@dataclass
class Reckoning:
    statuses: Counter[str]
    sent: Counter[str]  # by channel, per the log
    at_providers: Counter[str]  # by channel, what the providers took
    duplicates: Counter[str]
    lost: Counter[str]
    events_missing: int
    events_extra: int
    attempts: Counter[str]  # send attempts by outcome (sent, transient, permanent)
    retried: int  # notifications sent after more than one attempt

    @property
    def ok(self) -> bool:
        return not (sum(self.duplicates.values()) or sum(self.lost.values())
                    or self.events_missing)  # fmt: skip


def reckon(daemon: Daemon, twilio: TwilioServer, smtp: SmtpServer, traffic: Traffic) -> Reckoning:
    rows = daemon.sql("SELECT id, channel, status, recipient, body, provider_id FROM notification")
    statuses = Counter(status for _, _, status, *_ in rows)
    sent = [r for r in rows if r[2] == "sent"]
    duplicates, lost = Counter[str](), Counter[str]()
    lost["failed (never sent)"] = statuses.get("failed", 0)

    sms_rows = [r for r in sent if r[1] == "sms"]
    sids = Counter(twilio.sids)
    logged = Counter(r[5] for r in sms_rows)
    lost["sms"] = sum(1 for r in sms_rows if r[5] not in sids)
    by_text = Counter((r.form["To"], r.form.get("Body", "")) for r in twilio.accepted)
    expected = Counter((r[3], r[4]) for r in sms_rows)
    duplicates["sms"] = max(sum((by_text - expected).values()),
                            sum(1 for sid in sids if sid not in logged))  # fmt: skip

    email_rows = {r[0] for r in sent if r[1] == "email"}
    got = Counter(_notification_id(m.message["Message-ID"]) for m in smtp.received)
    duplicates["email"] = sum(n - 1 for n in got.values()) + sum(
        1 for id_ in got if id_ not in email_rows
    )
    lost["email"] = len(email_rows - set(got))

    events = {key for (key,) in daemon.sql("SELECT idempotency_key FROM event")}
    attempts = Counter(dict(daemon.sql("SELECT outcome, count(*) FROM attempt GROUP BY 1")))
    retried = daemon.sql("SELECT count(*) FROM notification WHERE status = 'sent' "
                         "AND attempts > 1")[0][0]  # fmt: skip
    return Reckoning(
        statuses=statuses,
        sent=Counter({"sms": len(sms_rows), "email": len(email_rows)}),
        at_providers=Counter({"sms": len(twilio.sids), "email": len(smtp.received)}),
        duplicates=duplicates,
        lost=lost,
        events_missing=len(traffic.identities - events),
        events_extra=len(events - traffic.identities),
        attempts=attempts,
        retried=int(retried),
    )


def _notification_id(message_id: str) -> int:
    return int(message_id.strip("<>").split("@")[0].removeprefix("notification."))


def report(args: argparse.Namespace, traffic: Traffic, samples: Samples, faults: Faults,
           reckoning: Reckoning, seconds: float, drain: float) -> str:  # fmt: skip
    rss = samples.rss_mb
    warm = [i for i, at in enumerate(samples.at) if at >= 60] or list(range(len(samples.at)))
    late = [i for i, at in enumerate(samples.at) if at >= seconds / 2] or warm
    slope = slope_per_minute([samples.at[i] for i in warm], [rss[i] for i in warm])
    late_slope = slope_per_minute([samples.at[i] for i in late], [rss[i] for i in late])
    lines = [
        f"soak: {seconds / 60:.1f} min of traffic at {args.rate:g} webhooks/s "
        f"(measured {traffic.webhooks / seconds:.1f}/s), then {drain:.0f} s to drain",
        f"faults: {', '.join(f'{n} x {k}' for k, n in Counter(faults.done).items()) or 'none'}",
        f"shipments: {traffic.shipments} (registrations retried: {traffic.registration_retries})",
        f"webhooks: {traffic.webhooks} sent, {traffic.answers[200]} answered 200 "
        f"({_counts(traffic.outcomes)}), {traffic.answers[503]} answered 503, "
        f"{traffic.answers[0]} unanswered ({_counts(traffic.no_answer)}), "
        f"{traffic.retried_until_accepted} retried until "
        f"accepted, {traffic.unaccepted} never accepted; other answers: "
        f"{_counts(Counter({k: v for k, v in traffic.answers.items() if k not in {0, 200, 503}}))}",
        f"events: {len(traffic.identities)} distinct updates accepted; missing from the store "
        f"{reckoning.events_missing}, unexpected {reckoning.events_extra}",
        f"notifications: {_counts(reckoning.statuses)}",
        f"messages sent per the log: {_counts(reckoning.sent)}; taken by the providers: "
        f"{_counts(reckoning.at_providers)}",
        f"send attempts: {_counts(reckoning.attempts)}; messages sent after a retry: "
        f"{reckoning.retried}",
        f"duplicates: {sum(reckoning.duplicates.values())} ({_counts(reckoning.duplicates)})",
        f"lost: {sum(reckoning.lost.values())} ({_counts(reckoning.lost)})",
        f"daemon RSS: start {rss[0]:.1f} MB, max {max(rss):.1f} MB, end {rss[-1]:.1f} MB; "
        f"slope after the first minute {slope:+.2f} MB/min, over the second half "
        f"{late_slope:+.2f} MB/min (sampled every {SAMPLE_EVERY:g} s)",
        f"queue depth (pending notifications) sampled: max {max(samples.pending, default=0)}",
    ]
    lines += [f"client error: {e}" for e in traffic.errors]
    verdict = "OK" if reckoning.ok and not traffic.unaccepted else "FAILED"
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in sorted(counter.items(), key=str)) or "none"


# -- the run ---------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, daemon: Daemon, twilio: TwilioServer,
               smtp: SmtpServer) -> int:  # fmt: skip
    traffic, samples = Traffic(), Samples()
    faults = Faults(daemon, twilio, smtp, lock_seconds=args.lock_seconds)
    started = time.monotonic()
    until = started + args.minutes * 60
    stop = threading.Event()
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        clickpost = Clickpost(http, daemon.url, traffic, Pacer(args.rate))
        sampler = asyncio.create_task(sample(daemon, samples, started, stop))
        progress = asyncio.create_task(_progress(traffic, samples, started))
        await asyncio.gather(
            play(clickpost, until=until, concurrency=args.concurrency, seed=args.seed),
            faults.run(every=args.fault_every, until=until),
        )
        seconds = time.monotonic() - started
        progress.cancel()
        log(f"traffic stopped after {seconds:.0f} s; waiting for the queue to drain")
        drained = await _drain(daemon, args.drain_timeout)
        stop.set()
        await sampler
    drain = time.monotonic() - started - seconds
    if not drained:
        log(f"the queue did not drain within {args.drain_timeout:.0f} s")
    reckoning = reckon(daemon, twilio, smtp, traffic)
    print(report(args, traffic, samples, faults, reckoning, seconds, drain), flush=True)
    return 0 if drained and reckoning.ok and not traffic.unaccepted else 1


async def _drain(daemon: Daemon, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(pending, daemon) == 0:
            await asyncio.sleep(2)  # let sends finishing now reach the servers' records
            return True
        await asyncio.sleep(1)
    return False


async def _progress(traffic: Traffic, samples: Samples, started: float) -> None:
    while True:
        await asyncio.sleep(60)
        log(f"{(time.monotonic() - started) / 60:.0f} min: {traffic.webhooks} webhooks, "
            f"answers {_counts(traffic.answers)}, RSS {samples.rss_mb[-1]:.1f} MB, "
            f"pending {samples.pending[-1] if samples.pending else '?'}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="traffic duration")
    parser.add_argument("--rate", type=float, default=30.0, help="webhooks per second")
    parser.add_argument("--fault-every", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument(
        "--lock-seconds",
        type=float,
        default=12.0,
        help="how long the SQLite write lock is held (busy timeout: 10 s)",
    )
    parser.add_argument(
        "--retry-backoff",
        type=float,
        default=5.0,
        help="NOTIFIER_RETRY_BACKOFF for the daemon (seconds)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="shipments side by side")
    parser.add_argument("--drain-timeout", type=float, default=600.0, metavar="SECONDS")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, help="default: a new temporary folder (kept)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="notifier-soak-"))
    log(f"work folder (database, daemon.log): {workdir}")
    settings = {"NOTIFIER_RETRY_BACKOFF": str(args.retry_backoff)}
    with TwilioServer() as twilio, SmtpServer() as smtp, \
            Daemon(workdir, twilio=twilio, smtp=smtp, **settings) as daemon:  # fmt: skip
        log(f"daemon pid {daemon.pid} on {daemon.url}; Twilio {twilio.url}; SMTP {smtp.port}")
        return asyncio.run(soak(args, daemon, twilio, smtp))


if __name__ == "__main__":
    sys.exit(main())
