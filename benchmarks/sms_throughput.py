"""How many SMS per second one process gets through TwilioChannel, against a local fake Twilio.

    .venv/bin/python benchmarks/sms_throughput.py [--count 3000] [--concurrency 16,32,64]
                                                  [--server process|thread] [--compare-threads]

The fake (tests/twilio_server.py) runs in its own process by default, so that it does not share
this process's GIL and the figure is the client's. ``--server thread`` runs it in-process.
``--compare-threads`` also measures the rejected design, the blocking SDK client run in a
thread pool, to show why notifier/channels/twilio.py uses the async API. It imports the twilio
SDK directly, which only this measurement of the SDK itself does outside that module.

Not a test: it prints figures and asserts only that every message was accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from twilio_server import ACCOUNT_SID, AUTH_TOKEN, TwilioServer  # noqa: E402

from notifier.channels.base import OutgoingMessage  # noqa: E402
from notifier.channels.twilio import TwilioChannel  # noqa: E402
from notifier.events import ChannelKind  # noqa: E402

FROM = "+15005550006"
TEXT = "Hi Priya, your order ACME-100231 is out for delivery today. Track: https://t.example/x"

Sender = Callable[[OutgoingMessage], Awaitable[object]]


def message(i: int) -> OutgoingMessage:
    return OutgoingMessage(
        notification_id=i, channel=ChannelKind.SMS, to=f"+9198{i:08d}", text=TEXT
    )


@dataclass(frozen=True, kw_only=True)
class Figures:
    """Messages per wall-clock second, and this process's CPU time per message."""

    rate: float
    cpu_us: float


async def run(send: Sender, count: int, concurrency: int) -> Figures:
    """Send ``count`` messages, at most ``concurrency`` in flight."""
    limit = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with limit:
            await send(message(i))

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Figures(rate=count / elapsed, cpu_us=cpu / count * 1e6)


async def async_channel(url: str, count: int, concurrency: int) -> Figures:
    """The shipped design: TwilioChannel, one aiohttp session for the batch."""
    channel = TwilioChannel(
        ChannelKind.SMS,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_=FROM,
        api_base=url,
        status_callback_url="https://notify.example.in/callbacks/twilio/status",
    )
    await channel.open()
    try:
        await run(channel.send, min(200, count), concurrency)  # warm up connections
        return await run(channel.send, count, concurrency)
    finally:
        await channel.close()


async def threaded_sync_client(url: str, count: int, concurrency: int) -> Figures:
    """The rejected design: the blocking SDK client (requests) in a pool of threads."""
    from requests.adapters import HTTPAdapter
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    http = TwilioHttpClient(pool_connections=True, max_retries=None, timeout=15)
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=concurrency)  # default 10 drops some
    http.session.mount("http://", adapter)
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http, environment={"_": ""})
    client.api.base_url = url
    pool = ThreadPoolExecutor(max_workers=concurrency)  # asyncio.to_thread's has only cpu+4
    loop = asyncio.get_running_loop()

    def create(m: OutgoingMessage) -> Any:
        return client.messages.create(to=m.to, from_=FROM, body=m.text)

    async def send(m: OutgoingMessage) -> object:
        return await loop.run_in_executor(pool, create, m)

    try:
        await run(send, min(200, count), concurrency)
        return await run(send, count, concurrency)
    finally:
        pool.shutdown()


@contextlib.contextmanager
def fake_twilio(where: str) -> Iterator[str]:
    """The fake's base URL, served from a child process or from a thread of this one."""
    if where == "thread":
        with TwilioServer(record=False) as server:
            yield server.url
        return
    script = ROOT / "tests" / "twilio_server.py"
    child = subprocess.Popen(
        [sys.executable, str(script), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        yield child.stdout.readline().split()[-1]
    finally:
        child.terminate()
        child.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--concurrency", default="16,32,64")
    parser.add_argument("--server", choices=("process", "thread"), default="process")
    parser.add_argument("--compare-threads", action="store_true")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    designs: dict[str, Callable[[str, int, int], Coroutine[Any, Any, Figures]]] = {
        "async (TwilioChannel)": async_channel
    }
    if args.compare_threads:
        designs["sync client in threads"] = threaded_sync_client
    with fake_twilio(args.server) as url:
        print(f"{args.count} SMS to a fake Twilio at {url} (server in a {args.server})")
        for name, design in designs.items():
            for level in levels:
                got = asyncio.run(design(url, args.count, level))
                print(
                    f"  {name:<24} concurrency {level:>3}: {got.rate:6.0f} SMS/s"
                    f"  ({got.cpu_us:4.0f} µs CPU per SMS in this process)"
                )


if __name__ == "__main__":
    main()
