"""``notifier serve`` as a real subprocess, for the end-to-end, crash and shutdown tests.

    with TwilioServer() as twilio, SmtpServer() as smtp:
        with Daemon(tmp_path, twilio=twilio, smtp=smtp) as daemon:
            daemon.api.post("/shipments", json=registration())
            daemon.post_webhook(webhook(code=8, at=now))

The daemon gets nothing from the test's own environment but the basics (PATH, HOME, ...): its
settings are ``NOTIFIER_*`` variables built here: a SQLite file in the work folder, the repo's
rules.yaml and templates, webhook keys, an API token, Twilio pointed at the local Twilio server,
SMTP at the local aiosmtpd without STARTTLS, and quiet hours off, so the tests pass at any hour.
Its stdout and stderr go to ``daemon.log`` in the work folder; the ``daemon_logs_on_failure``
fixture prints what it wrote during a test that failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TypeVar

import httpx
import pytest
from smtp_server import SmtpServer
from twilio_server import ACCOUNT_SID, AUTH_TOKEN, TwilioServer

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_KEY = "e2e-webhook-key"
API_TOKEN = "e2e-api-token"
TWILIO_FROM = "+15005550006"
EMAIL_FROM = "Acme Store <orders@acme.example>"
START_TIMEOUT = 60.0  # a cold interpreter importing FastAPI, SQLAlchemy, Twilio on a busy box
STOP_TIMEOUT = 30.0

# Variables the child keeps from the test's environment; every NOTIFIER_* one is dropped.
KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "VIRTUAL_ENV")

_T = TypeVar("_T")


class DaemonError(RuntimeError):
    """The daemon did not start, or did not stop; the message carries its log."""


def free_port() -> int:
    """A port nothing listens on right now (the daemon binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    check: Callable[[], _T | None], *, timeout: float, every: float = 0.1, what: str = "condition"
) -> _T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class Daemon:
    """One ``notifier serve`` process over a database in ``workdir``; restartable."""

    created: ClassVar[list[Daemon]] = []  # every daemon of this run: the failure printer

    def __init__(
        self,
        workdir: Path,
        *,
        twilio: TwilioServer | None = None,
        smtp: SmtpServer | None = None,
        database_url: str | None = None,
        **settings: str,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.database = workdir / "notifier.db"  # a second Daemon on workdir shares it
        # Default: the SQLite file above; or any URL (PostgreSQL: several daemons share it;
        # a SQLite file elsewhere, e.g. on a small filesystem of its own).
        self.database_url = database_url or f"sqlite:///{self.database}"
        if self.database_url.startswith("sqlite:///"):
            self.database = Path(self.database_url.removeprefix("sqlite:///"))
        self._engine: Any = None
        self.log_path = workdir / "daemon.log"
        self.port = 0
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.env = self._environment(twilio, smtp, settings)
        self._client: httpx.Client | None = None
        Daemon.created.append(self)

    def _environment(
        self, twilio: TwilioServer | None, smtp: SmtpServer | None, settings: Mapping[str, str]
    ) -> dict[str, str]:
        env = {k: os.environ[k] for k in KEPT if k in os.environ}
        env |= {
            "PYTHONUNBUFFERED": "1",
            "NOTIFIER_DATABASE_URL": self.database_url,
            "NOTIFIER_RULES": str(ROOT / "rules.yaml"),
            "NOTIFIER_TEMPLATES": str(ROOT / "templates"),
            "NOTIFIER_OUTBOX_DIR": str(self.workdir / "outbox"),
            "NOTIFIER_WEBHOOK_KEYS": f"{WEBHOOK_KEY},an-older-key",
            "NOTIFIER_API_TOKEN": API_TOKEN,
            "NOTIFIER_QUIET_HOURS": "off",
        }
        if twilio is not None:
            env |= {
                "NOTIFIER_TWILIO_API_BASE": twilio.url,
                "NOTIFIER_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
                "NOTIFIER_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "NOTIFIER_TWILIO_FROM": TWILIO_FROM,
                "NOTIFIER_TWILIO_TIMEOUT": "30",
            }
        if smtp is not None:
            env |= {
                "NOTIFIER_SMTP_HOST": smtp.host,
                "NOTIFIER_SMTP_PORT": str(smtp.port),
                "NOTIFIER_SMTP_STARTTLS": "false",
                "NOTIFIER_EMAIL_FROM": EMAIL_FROM,
            }
        return env | dict(settings)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, *, timeout: float = START_TIMEOUT) -> Daemon:
        """Start ``notifier serve`` and wait until ``/healthz`` answers 200.

        The free port is found a moment before the daemon binds it; if another process took
        it meanwhile, the daemon exits at once and is started again on another port.
        """
        for _ in range(3):
            self._spawn(free_port())
            if self._healthy(timeout):
                return self
            if "address already in use" not in self.log_text().lower():
                break
        self.kill()
        raise DaemonError(f"notifier serve did not become healthy:\n{self.log_tail()}")

    def _spawn(self, port: int) -> None:
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "notifier.cli", "serve", "--host", "127.0.0.1",
                   "--port", str(port)]  # fmt: skip
        with self.log_path.open("ab") as log:
            log.write(f"\n===== {' '.join(command[1:])} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env={"NOTIFIER_PUBLIC_URL": self.url, **self.env},
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def _healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                return False
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        return False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def terminate(self, *, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, and wait up to ``timeout`` seconds; the exit status (negative: a signal).
        Raises DaemonError (after SIGKILL) when it did not exit in time."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL: the crash. Returns the exit status, None when it was not running."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        return self._signal(signal.SIGKILL, STOP_TIMEOUT)

    def _signal(self, sig: signal.Signals, timeout: float) -> int:
        assert self.process is not None, "not started"
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
            raise DaemonError(
                f"notifier serve did not exit within {timeout:.0f}s of {sig.name}:\n"
                f"{self.log_tail()}"
            ) from None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bound; never raises (teardown)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.alive:
            with contextlib.suppress(DaemonError):
                self.terminate(timeout=STOP_TIMEOUT)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- talking to it --------------------------------------------------------------------------

    @property
    def api(self) -> httpx.Client:
        """A client with the API token, on the current base URL."""
        if self._client is None or str(self._client.base_url).rstrip("/") != self.url:
            if self._client is not None:
                self._client.close()
            self._client = httpx.Client(
                base_url=self.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
            )
        return self._client

    def post_webhook(self, body: bytes | Mapping[str, Any], *, key: str = WEBHOOK_KEY) -> Any:
        """POST a webhook body; the response (any status)."""
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.api.post("/webhooks/clickpost", content=content, headers={"webhook_key": key})

    def notifications(self, **filters: Any) -> list[dict[str, Any]]:
        response = self.api.get("/notifications", params={"limit": 1000, **filters})
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()
        return rows

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the daemon's database directly (alive or dead): the ground truth. SQLite
        queries use ``?`` placeholders; on another database ``?`` becomes a bound parameter."""
        if not self.database_url.startswith("sqlite"):
            return self._sql_url(query, params)
        with contextlib.closing(sqlite3.connect(self.database, timeout=10)) as db:
            return list(db.execute(query, params).fetchall())

    def _sql_url(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        import sqlalchemy

        if self._engine is None:
            self._engine = sqlalchemy.create_engine(
                self.database_url, poolclass=sqlalchemy.pool.NullPool
            )
        parts = query.split("?")
        text = parts[0] + "".join(f":p{i}{part}" for i, part in enumerate(parts[1:]))
        with self._engine.connect() as conn:
            result = conn.execute(sqlalchemy.text(text), {f"p{i}": v for i, v in enumerate(params)})
            return [tuple(row) for row in result.fetchall()]

    # -- its log --------------------------------------------------------------------------------

    def log_text(self, start: int = 0) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(start)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_tail(self, start: int = 0, lines: int = 150) -> str:
        text = self.log_text(start).splitlines()
        cut = f"[... {len(text) - lines} earlier lines ...]\n" if len(text) > lines else ""
        return cut + "\n".join(text[-lines:])


@pytest.fixture
def daemon_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed test, print what the daemons wrote to their logs during it (pytest
    shows it with the failure, or at once under ``-s``)."""
    offsets = {d.log_path: d.log_size() for d in Daemon.created}
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed == failed_before:
        return
    for path in dict.fromkeys(d.log_path for d in Daemon.created):
        daemon = next(d for d in Daemon.created if d.log_path == path)
        start = offsets.get(path, 0)
        if daemon.log_size() > start:
            print(f"\n----- {path} (during {request.node.name}) -----\n{daemon.log_tail(start)}")
