"""Messages per second one notifier process sends end to end: claim, render, send, record.

    .venv/bin/python benchmarks/dispatch_throughput.py [--sms 5000] [--email 2000]

Shipments are registered and their "picked up" webhooks ingested with quiet hours off, so the
delivery log holds that many due notifications (the SMS run's shipments have no email and the
email run's no phone, so each run measures one channel). Then ``Notifier.dispatch_due()`` runs
until nothing is due, as the daemon's timer would: claiming batches, rendering each message
from the repo's templates in the sandbox, sending it, and committing its attempt and new status.
The providers are the local Twilio-compatible server and aiosmtpd, each in a process of its
own so they do not share this process's CPU. Channel-only figures, the ceiling to compare with,
come from benchmarks/sms_throughput.py and benchmarks/email_throughput.py.

Not a test: it prints figures, and fails only if a message was not sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from common import ROOT, bulk_register, registration, settings, webhook

sys.path.insert(0, str(ROOT / "tests"))

from sms_throughput import fake_twilio
from twilio_server import ACCOUNT_SID, AUTH_TOKEN

from notifier.app import Notifier


def _smtp_serve(pipe: Connection) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from smtp_server import Handler, SmtpServer  # type: ignore[import-not-found, unused-ignore]

    with SmtpServer(Handler()) as server:
        pipe.send(server.port)
        pipe.recv()
        pipe.send(len(server.received))


@contextlib.contextmanager
def smtp_process() -> Iterator[tuple[int, Connection]]:
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(target=_smtp_serve, args=(theirs,))
    server.start()
    try:
        yield ours.recv(), ours
    finally:
        with contextlib.suppress(Exception):
            ours.send("stop")
        server.join(timeout=30)


def without(field: str) -> Any:
    def body(i: int) -> dict[str, Any]:
        reg = registration(i)
        reg["consumer_details"][field] = ""
        return reg

    return body


async def measure(url: str, count: int, **channel: Any) -> tuple[float, dict[str, int]]:
    """Ingest ``count`` picked-up webhooks, then dispatch until nothing is due: the seconds
    dispatching took, and the statuses it ended with."""
    async with Notifier(settings(url, quiet_hours="off", **channel)) as engine:
        pending = iter(range(count))

        async def ingest() -> None:
            for i in pending:
                await engine.handle_webhook(webhook(i, 0))

        await asyncio.gather(*(ingest() for _ in range(64)))
        began = time.perf_counter()
        counts: dict[str, int] = {}
        while True:
            report = await engine.dispatch_due()
            for status, n in report.counts.items():
                counts[status] = counts.get(status, 0) + n
            if not report.total:
                break
        return time.perf_counter() - began, counts


def run(label: str, count: int, drop: str, workdir: Path, **channel: Any) -> None:
    url = f"sqlite:///{workdir / f'{label}.db'}"
    bulk_register(url, count, body=without(drop))
    seconds, counts = asyncio.run(measure(url, count, **channel))
    sent = counts.get("sent", 0)
    print(f"{label:<6} {sent / seconds:8.0f} messages/s  ({sent} sent in {seconds:.2f} s; "
          f"statuses {counts})", flush=True)  # fmt: skip
    if sent != count:
        raise SystemExit(f"{label}: {sent} of {count} sent")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sms", type=int, default=5000)
    parser.add_argument("--email", type=int, default=2000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="notifier-dispatch-"))
    try:
        if args.sms:
            with fake_twilio("process") as twilio_url:
                run("sms", args.sms, "email", workdir, twilio_api_base=twilio_url,
                    twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN,
                    twilio_from="+15005550006")  # fmt: skip
        if args.email:
            with smtp_process() as (port, _):
                run("email", args.email, "phone", workdir, smtp_host="127.0.0.1",
                    smtp_port=port, smtp_starttls=False, smtp_connections=4,
                    email_from="Acme Store <orders@acme.example>")  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
