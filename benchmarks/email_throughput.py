"""How many emails a second SmtpChannel hands to an SMTP server, with connection reuse.

    .venv/bin/python benchmarks/email_throughput.py [--count 2000] [--connections 1,4]
                                                    [--latency-ms 0] [--concurrency 16]

The server is aiosmtpd (tests/smtp_server.py) in a separate process, so it does not compete with
the client for the GIL. The messages are the repo's own email templates, rendered once each up
front; sending goes through the channel as the dispatcher does it: ``open()``, ``send()`` from
``--concurrency`` tasks at a time, ``close()``. ``--latency-ms`` makes the server wait before
answering each DATA, like a remote relay; that is where a pool of several connections pays.
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from notifier.channels.base import OutgoingMessage  # noqa: E402 (after the path set-up)
from notifier.channels.smtp_email import SmtpChannel  # noqa: E402
from notifier.events import ChannelKind  # noqa: E402
from notifier.rendering import Renderer, sample_context  # noqa: E402


@dataclass(frozen=True, kw_only=True)
class Run:
    connections: int
    count: int
    seconds: float
    client_cpu: float
    received: int
    server_connections: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds


def serve(pipe: Connection, latency: float) -> None:
    """The server process: report the port, wait for "stop", report what arrived."""
    from smtp_server import Handler, SmtpServer  # type: ignore[import-not-found, unused-ignore]

    with SmtpServer(Handler(delay=latency)) as server:
        pipe.send(server.port)
        pipe.recv()
        pipe.send((len(server.received), server.connections))


def messages(count: int) -> list[OutgoingMessage]:
    """``count`` messages cycling through every email template, each with its own id."""
    renderer = Renderer(ROOT / "templates")
    context = sample_context()
    names = sorted(name for kind, name in renderer.messages() if kind is ChannelKind.EMAIL)
    rendered = [renderer.render(ChannelKind.EMAIL, name, context) for name in names]
    return [
        OutgoingMessage(
            notification_id=n,
            channel=ChannelKind.EMAIL,
            to=f"customer{n}@example.in",
            subject=r.subject,
            text=r.text,
            html=r.html,
            message_id=f"<notification.{n}@acme.example>",
            unsubscribe_url=f"https://acme.example/unsubscribe/{n}",
        )
        for n, r in zip(range(count), itertools.cycle(rendered), strict=False)
    ]


async def send_all(
    channel: SmtpChannel, batch: list[OutgoingMessage], concurrency: int
) -> tuple[float, float]:
    """Send the batch as the dispatcher would: (wall, client CPU) seconds, connecting included."""
    limit = asyncio.Semaphore(concurrency)

    async def one(message: OutgoingMessage) -> None:
        async with limit:
            await channel.send(message)

    started, cpu = time.perf_counter(), time.process_time()
    await channel.open()
    try:
        await asyncio.gather(*(one(m) for m in batch))
    finally:
        await channel.close()
    return time.perf_counter() - started, time.process_time() - cpu


def run(connections: int, batch: list[OutgoingMessage], args: argparse.Namespace) -> Run:
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(theirs, args.latency_ms / 1000)
    )
    server.start()
    try:
        port = ours.recv()
        channel = SmtpChannel(
            host="127.0.0.1",
            port=port,
            starttls=False,
            sender="Acme Store <orders@acme.example>",
            connections=connections,
        )
        seconds, cpu = asyncio.run(send_all(channel, batch, args.concurrency))
        ours.send("stop")
        received, server_connections = ours.recv()
    finally:
        server.join(timeout=30)
    return Run(
        connections=connections,
        count=len(batch),
        seconds=seconds,
        client_cpu=cpu,
        received=received,
        server_connections=server_connections,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="messages per run")
    parser.add_argument("--connections", default="1,4", help="pool sizes to try, e.g. 1,4")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="server delay per DATA")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent sends")
    args = parser.parse_args()
    batch = messages(args.count)
    sizes = [int(k) for k in args.connections.split(",")]
    print(
        f"email throughput: {args.count} messages per run, {args.concurrency} concurrent sends, "
        f"aiosmtpd in its own process, {args.latency_ms:g} ms server latency per message"
    )
    for size in sizes:
        result = run(size, batch, args)
        check = "ok" if result.received == result.count else f"ONLY {result.received} ARRIVED"
        print(
            f"  pool of {size}: {result.rate:8.0f} messages/s "
            f"({result.count} in {result.seconds:.2f} s, "
            f"client CPU {1000 * result.client_cpu / result.count:.1f} ms/message; "
            f"server saw {result.server_connections} connection(s); {check})"
        )


if __name__ == "__main__":
    main()
