"""A local Twilio-compatible Messages API, for tests and the benchmark; no internet needed.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP basic auth and form fields,
answered the way api.twilio.com answers: 201 with the message resource, or Twilio's error JSON
(``{"code": 21211, "message": …, "more_info": …, "status": 400}``).

It runs an aiohttp.web app on its own event loop in a thread, so a synchronous benchmark and
an async test (whose loop it does not share) can both use it::

    with TwilioServer() as server:
        server.fail_next(2)                  # two 500s, then accept
        server.fail_for(3.0)                 # every POST 500 for 3 s (fail_every: every n-th)
        ... TwilioChannel(api_base=server.url, account_sid=ACCOUNT_SID, ...)
        assert server.requests[0].form["To"] == "+919876543210"

Run as a script it serves in the foreground (the benchmark starts it in its own process):
``python tests/twilio_server.py --port 0`` prints ``listening on http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from types import TracebackType
from typing import Any

from aiohttp import web

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "test-auth-token-0123456789abcdef"

# Recipients that fail the way Twilio fails for them (compare Twilio's own magic test
# numbers, +15005550001 and friends: https://www.twilio.com/docs/iam/test-credentials).
TO_ERRORS: dict[str, int] = {
    "+919999900001": 21211,  # invalid 'To'
    "+919999900002": 21610,  # the recipient replied STOP
    "+919999900003": 21614,  # not a mobile number
    "+919999900004": 21408,  # region not enabled for the account
}
FROM_ERRORS: dict[str, int] = {"+15005550007": 21606, "+15005550009": 21659}

_MESSAGES = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "An internal server error has occurred"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21408: (
        400,
        "Permission to send an SMS has not been enabled for the region indicated by "
        "the 'To' number: {to}.",
    ),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21606: (
        400,
        "The 'From' phone number provided is not a valid message-capable Twilio "
        "phone number for this destination.",
    ),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21612: (
        400,
        "The 'To' phone number: {to}, is not currently reachable using the 'From' phone "
        "number: {from_} via SMS.",
    ),
    21614: (400, "'To' number is not a valid mobile number"),
    21659: (400, "'From' {from_} is not a Twilio phone number or Short Code country mismatch"),
}


@dataclass(frozen=True, kw_only=True)
class Recorded:
    """One request as the server received it."""

    account_sid: str
    form: dict[str, str]
    authorized: bool
    peer: tuple[str, int]


class TwilioServer:
    """The fake, scriptable from the test's thread while it serves in its own."""

    def __init__(
        self,
        *,
        account_sid: str = ACCOUNT_SID,
        auth_token: str = AUTH_TOKEN,
        port: int = 0,
        record: bool = True,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.record = record
        self.requests: list[Recorded] = []
        self.sids: list[str] = []  # of the messages accepted, in order
        self.accepted: list[Recorded] = []  # the requests answered 201, in order (when recording)
        self.to_errors = dict(TO_ERRORS)
        self.from_errors = dict(FROM_ERRORS)
        self.delay = 0.0  # seconds before every answer: the slow mode
        self.count = 0  # POSTs answered or in progress, also when not recording
        self._script: list[tuple[int, str | None]] = []  # (status, Retry-After) to answer next
        self._failing_until = 0.0  # time.monotonic() before which every POST fails
        self._every: tuple[int, int, int] = (0, 0, 0)  # (every n-th POST, times left, status)
        self._fail_status = 500
        self._peers: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        self._socket = _listen(port)
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="twilio-server", daemon=True)
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None

    # -- scripting -----------------------------------------------------------------------------

    def fail_next(self, count: int, *, status: int = 500) -> None:
        """Answer the next ``count`` POSTs with ``status`` (a 5xx), then accept again."""
        with self._lock:
            self._script.extend([(status, None)] * count)

    def fail_for(self, seconds: float, *, status: int = 500) -> None:
        """Answer every POST with ``status`` (a 5xx) for the next ``seconds``: an outage."""
        with self._lock:
            self._failing_until = time.monotonic() + seconds
            self._fail_status = status

    def fail_every(self, n: int, *, times: int, status: int = 500) -> None:
        """Answer every ``n``-th POST with ``status``, ``times`` times in all: a flaky Twilio."""
        with self._lock:
            self._every = (n, times, status)

    def throttle_next(self, count: int = 1, *, retry_after: str = "7") -> None:
        """Answer the next ``count`` POSTs 429 / 20429 with ``Retry-After``."""
        with self._lock:
            self._script.extend([(429, retry_after)] * count)

    @property
    def connections(self) -> int:
        """How many TCP connections have carried requests (distinct client ports)."""
        with self._lock:
            return len(self._peers)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> TwilioServer:
        self._thread.start()
        self._ready.wait(timeout=10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> TwilioServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create)
        # shutdown_timeout: slow-mode handlers still sleeping are cancelled, not awaited 60 s
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        self._loop.run_until_complete(self._runner.setup())
        site = web.SockSite(self._runner, self._socket)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._runner.cleanup())
            self._cancel_leftovers()
            self._loop.close()

    def _cancel_leftovers(self) -> None:
        """Handlers still asleep in slow mode outlive ``cleanup``: cancel them quietly."""
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    # -- the API -------------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        form = {k: str(v) for k, v in (await request.post()).items()}
        authorized = _basic_auth(request) == (self.account_sid, self.auth_token)
        recorded = Recorded(account_sid=sid, form=form, authorized=authorized, peer=_peer(request))
        self._note(recorded)
        if self.delay:
            await asyncio.sleep(self.delay)
        if not authorized:
            return _error(20003)
        if sid != self.account_sid:
            return _error(20404)
        scripted = self._next_scripted()
        if scripted is not None:
            status, retry_after = scripted
            headers = {"Retry-After": retry_after} if retry_after else {}
            return _error(20429 if status == 429 else 20500, status=status, headers=headers)
        code = self._refusal(form)
        if code is not None:
            return _error(code, to=form.get("To", ""), from_=form.get("From", ""))
        created = _message(sid, form)
        with self._lock:
            if self.record:
                self.sids.append(created["sid"])
                self.accepted.append(recorded)
        return web.json_response(created, status=201)

    def _note(self, recorded: Recorded) -> None:
        with self._lock:
            self.count += 1
            self._peers.add(recorded.peer)
            if self.record:
                self.requests.append(recorded)

    def _next_scripted(self) -> tuple[int, str | None] | None:
        with self._lock:
            if self._script:
                return self._script.pop(0)
            if time.monotonic() < self._failing_until:
                return self._fail_status, None
            n, left, status = self._every
            if left and self.count % n == 0:
                self._every = (n, left - 1, status)
                return status, None
            return None

    def _refusal(self, form: dict[str, str]) -> int | None:
        """Twilio's validation, in its order: To, From, content, then per-number errors."""
        to = form.get("To", "").removeprefix("whatsapp:")
        sender = form.get("From", "").removeprefix("whatsapp:")
        if not to:
            return 21604
        if not (sender or form.get("MessagingServiceSid")):
            return 21603
        if not (form.get("Body") or form.get("ContentSid") or form.get("MediaUrl")):
            return 21602
        return self.to_errors.get(to) or self.from_errors.get(sender)


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


def _basic_auth(request: web.Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    return user, password


def _peer(request: web.Request) -> tuple[str, int]:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return (str(peer[0]), int(peer[1])) if peer else ("?", 0)


def _error(
    code: int, *, status: int | None = None, headers: dict[str, str] | None = None, **fill: str
) -> web.Response:
    default_status, text = _MESSAGES[code]
    body = {
        "code": code,
        "message": text.format(**fill) if fill else text,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status or default_status,
    }
    return web.json_response(body, status=status or default_status, headers=headers)


def _message(account_sid: str, form: dict[str, str]) -> dict[str, Any]:
    """The Message resource as Twilio's create answers it (fields as in its docs)."""
    sid = "SM" + secrets.token_hex(16)
    now = format_datetime(datetime.now(UTC), usegmt=True)
    service = form.get("MessagingServiceSid")
    return {
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": form.get("Body", ""),
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": form.get("From"),
        "messaging_service_sid": service,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        # A Messaging Service without From picks the sender later: "accepted", not "queued".
        "status": "accepted" if service and not form.get("From") else "queued",
        "subresource_uris": {
            "media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"
        },
        "to": form.get("To"),
        "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = TwilioServer(port=args.port, record=False).start()
    print(f"listening on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
