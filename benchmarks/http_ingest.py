"""Webhooks per second that notifier daemons accept over HTTP, on SQLite and on PostgreSQL.

    .venv/bin/python benchmarks/http_ingest.py
        [--setups bare,asgi,sqlite:1,postgres:1,postgres:2,postgres:3]
        [--duration 10] [--connections 32] [--shipments 6000] [--postgres URL]

Each setup is measured in the same run, one after the other, under the same load:

- ``bare``: a FastAPI endpoint that reads the body and answers 200, served by uvicorn with the
  settings ``notifier serve`` uses (uvloop, httptools, JSON logs with the access log on, the
  start-up heap frozen out of the garbage collector's sight). It is
  the ceiling this stack reaches on this machine; every other figure is also given as a ratio
  to it. It is measured again after the other setups, and the ratios given against both: a
  machine whose speed drifts during the run shows as two ratios that disagree.
- ``asgi``: a plain ASGI app (no framework) answering the same path, same server settings: the
  floor of uvicorn itself. notifier answers its webhook route this way (server._App), so its
  ratio to this is printed too.
- ``sqlite:1``: one ``notifier serve`` on a SQLite file.
- ``postgres:N``: N ``notifier serve`` processes on one PostgreSQL database (a throwaway one
  created here and dropped afterwards), the load split evenly between them as a load balancer
  would.

Before each setup, ``--shipments`` shipments are registered (in bulk, with the rows real
registrations write: benchmarks/common.py). The load is wrk (``apt-get install wrk``), one
process per daemon, ``--connections`` in all, running benchmarks/webhook.lua: every request a
new webhook for a registered shipment, walking picked up → in transit → delivered, so requests
plan and supersede notifications as real ones do. Quiet hours cover the whole day, so nothing
becomes due and the figure is ingest alone: every answer a 200 given only after the event and
its planned notifications were committed.

Not a test: it prints figures, and fails only when a request was refused or an accepted
webhook is missing from the database.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from common import ALL_DAY, bulk_register  # noqa: E402
from daemon import WEBHOOK_KEY, Daemon, free_port  # noqa: E402

LUA = ROOT / "benchmarks" / "webhook.lua"
WARMUP_SHIPMENTS = 1000

BARE = """
import contextlib, gc, sys, uvicorn
from fastapi import FastAPI, Request
from notifier.logs import configure_logging
configure_logging(json=True, level="INFO")
@contextlib.asynccontextmanager
async def lifespan(app):
    gc.freeze()  # as notifier serve does once started
    yield
app = FastAPI(lifespan=lifespan)
@app.post("/webhooks/clickpost")
async def webhook(request: Request) -> dict:
    await request.body()
    return {"ok": True}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, log_level="info")
"""

ASGI = """
import gc, sys, uvicorn
from notifier.logs import configure_logging
configure_logging(json=True, level="INFO")
BODY = b'{"ok":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            gc.freeze()  # as notifier serve does once started
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, log_level="info")
"""


@dataclass(frozen=True, kw_only=True)
class Load:
    """What the wrk processes of one setup measured together."""

    requests: int
    seconds: float
    p50_ms: float  # the median of the processes' medians
    p99_ms: float  # the worst of their 99th percentiles
    refused: int  # non-2xx answers and socket errors
    cpu_seconds: float = 0.0  # the servers' CPU time (user + system) during the load

    @property
    def cpu_us(self) -> float:
        """Server CPU per request: what the figure would be on an otherwise idle machine."""
        return self.cpu_seconds / self.requests * 1e6 if self.requests else 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def wrk(
    url: str,
    *,
    first: int,
    step: int,
    count: int,
    connections: int,
    seconds: float,
    spread: int = 1,
) -> subprocess.Popen[str]:
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--timeout", "10s",
        "-s", str(LUA), url, "--", str(first), str(step), str(count), WEBHOOK_KEY,
        str(spread),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15
    return total / os.sysconf("SC_CLK_TCK")


def load(
    urls: list[str],
    pids: list[int],
    *,
    shipments: int,
    connections: int,
    seconds: float,
    spread: int = 1,
    first: int = 0,
    stride: int = 1,
) -> Load:
    """wrk against every URL at once, ``connections`` split between them; ``pids`` are the
    servers whose CPU time is measured. The webhooks are for the shipments ``first``,
    ``first + stride``, … below ``shipments``, shared out between the URLs."""
    cpu_before = cpu_seconds(pids)
    daemons = len(urls)
    step = daemons * stride
    shares = [connections // daemons + (1 if i < connections % daemons else 0)
              for i in range(daemons)]  # fmt: skip
    procs = [
        wrk(
            url,
            first=first + i * stride,
            step=step,
            count=shipments // step,
            connections=c,
            seconds=seconds,
            spread=spread,
        )
        for i, (url, c) in enumerate(zip(urls, shares, strict=True))
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"wrk printed no result:\n{out}")
        results.append([int(v) for v in line.split()[1:]])
    cpu = cpu_seconds(pids) - cpu_before
    return Load(
        cpu_seconds=cpu,
        requests=sum(r[0] for r in results),
        seconds=max(r[1] for r in results) / 1e6,
        p50_ms=statistics.median(r[2] for r in results) / 1000,
        p99_ms=max(r[3] for r in results) / 1000,
        refused=sum(r[4] + r[5] for r in results),
    )


def warm_up(urls: list[str], shipments: int) -> None:
    """Two seconds on shipments the measurement does not use: imports, caches, pools."""
    for url in urls:
        proc = wrk(url, first=shipments, step=1, count=WARMUP_SHIPMENTS, connections=4, seconds=2)
        proc.communicate()


def count_events(url: str) -> int:
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        return int(conn.execute(sqlalchemy.text("SELECT count(*) FROM event")).scalar_one())


@contextlib.contextmanager
def bare_server(workdir: Path, code: str = BARE) -> Iterator[tuple[list[str], list[int]]]:
    port = free_port()
    with (workdir / "bare.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", code, str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/webhooks/clickpost"
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["curl", "-s", "-o", "/dev/null", "-XPOST", url]).returncode:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"the bare server did not start: {workdir / 'bare.log'}")
            time.sleep(0.2)
        yield [url], [proc.pid]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def daemons(workdir: Path, url: str, count: int) -> Iterator[tuple[list[str], list[int]]]:
    started = [
        Daemon(workdir / f"daemon{i}", database_url=url, NOTIFIER_QUIET_HOURS=ALL_DAY)
        for i in range(count)
    ]
    try:
        for daemon in started:
            daemon.start()
        yield [f"{d.url}/webhooks/clickpost" for d in started], [d.pid for d in started]
    finally:
        for daemon in started:
            daemon.stop()


class Postgres:
    """Throwaway databases on one server: a registered template, copied for each setup."""

    def __init__(self, server: str) -> None:
        self.server = server.rstrip("/")
        self.admin = sqlalchemy.create_engine(
            f"{self.server}/postgres", isolation_level="AUTOCOMMIT",
            poolclass=sqlalchemy.pool.NullPool,
        )  # fmt: skip
        self.prefix = f"notifier_bench_{os.getpid()}"
        self.created: list[str] = []

    def create(self, name: str, template: str | None = None) -> str:
        database = f"{self.prefix}_{name}"
        copy = f" TEMPLATE {template}" if template else ""
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {database}{copy}")
        self.created.append(database)
        return database

    def url(self, database: str) -> str:
        return f"{self.server}/{database}"

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for database in reversed(self.created):
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setups", default="bare,asgi,sqlite:1,postgres:1,postgres:2,postgres:3")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--shipments", type=int, default=6000)
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    registered = args.shipments + WARMUP_SHIPMENTS
    results: dict[str, Load] = {}
    workdir = Path(tempfile.mkdtemp(prefix="notifier-http-ingest-"))
    pg = Postgres(args.postgres) if any(s.startswith("postgres") for s in setups) else None
    sqlite_template = workdir / "registered.db"
    pg_template = ""
    try:
        print(f"{args.connections} connections, {args.duration:.0f} s per setup, "
              f"{args.shipments} shipments (+{WARMUP_SHIPMENTS} for warm-up)")  # fmt: skip

        def bare(label: str, code: str = BARE) -> None:
            with bare_server(workdir, code) as (urls, pids):
                warm_up(urls, args.shipments)
                results[label] = load(
                    urls, pids, shipments=args.shipments, connections=args.connections,
                    seconds=args.duration,
                )  # fmt: skip
            report(label, results[label], None, None)

        for setup in setups:
            kind, _, n = setup.partition(":")
            count = int(n or 1)
            if kind in ("bare", "asgi"):
                bare(kind, BARE if kind == "bare" else ASGI)
                continue
            if kind == "sqlite":
                if not sqlite_template.exists():
                    started = time.perf_counter()
                    bulk_register(f"sqlite:///{sqlite_template}", registered)
                    print(f"  registered {registered} shipments on SQLite in "
                          f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
                path = workdir / f"{setup.replace(':', '_')}.db"
                shutil.copy(sqlite_template, path)
                url = f"sqlite:///{path}"
            elif kind == "postgres" and pg is not None:
                if not pg_template:
                    pg_template = pg.create("template")
                    started = time.perf_counter()
                    bulk_register(pg.url(pg_template), registered)
                    print(f"  registered {registered} shipments on PostgreSQL in "
                          f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
                url = pg.url(pg.create(f"n{count}", template=pg_template))
            else:
                raise SystemExit(f"unknown setup {setup!r}: bare, sqlite:1 or postgres:N")
            before = count_events(url)
            with daemons(workdir / setup.replace(":", "_"), url, count) as (urls, pids):
                warm_up(urls, args.shipments)
                warmed = count_events(url)
                results[setup] = load(
                    urls, pids, shipments=args.shipments, connections=args.connections,
                    seconds=args.duration,
                )  # fmt: skip
            stored = count_events(url) - warmed
            report(setup, results[setup], results.get("bare"), stored)
            if stored < results[setup].requests - results[setup].refused or before:
                raise SystemExit(f"{setup}: {stored} events stored for "
                                 f"{results[setup].requests} answered requests")  # fmt: skip
        if "bare" in results and len(results) > 1:
            # The bare endpoint again: a machine whose speed drifts between the first bare run
            # and a setup's shows here, rather than as a ratio that belongs to neither.
            bare("bare again")
            first, again = results["bare"].rate, results["bare again"].rate
            print(f"ratios to bare, measured before ({first:.0f}/s) and after ({again:.0f}/s) "
                  "the setups:")  # fmt: skip
            asgi = results.get("asgi")
            for setup, result in results.items():
                if setup.startswith("bare") or setup == "asgi":
                    continue
                floor = f"  ({result.rate / asgi.rate:.2f} of bare ASGI)" if asgi else ""
                print(f"  {setup:<12} {result.rate / first:.2f} and {result.rate / again:.2f}"
                      f"{floor}")  # fmt: skip
    finally:
        if pg is not None:
            pg.drop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({k: round(v.rate, 1) for k, v in results.items()}))


def report(setup: str, result: Load, bare: Load | None, stored: int | None) -> None:
    ratio = f"  {result.rate / bare.rate:.2f} of bare" if bare and setup != "bare" else ""
    if setup == "asgi":
        ratio = f"  {result.rate / bare.rate:.2f} times the bare FastAPI endpoint" if bare else ""
    events = f"  events stored {stored}" if stored is not None else ""
    print(
        f"{setup:<12} {result.rate:8.0f} webhooks/s  p50 {result.p50_ms:6.1f} ms  "
        f"p99 {result.p99_ms:6.1f} ms  server CPU {result.cpu_us:5.0f} µs/webhook  "
        f"refused {result.refused}{ratio}{events}",
        flush=True,
    )
    if result.refused:
        raise SystemExit(f"{setup}: {result.refused} requests refused or failed")


if __name__ == "__main__":
    main()
