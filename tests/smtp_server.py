"""A real SMTP server for tests and benchmarks: aiosmtpd on 127.0.0.1, scriptable faults.

    with SmtpServer() as server:            # plain; SmtpServer(auth=("u", "p"), tls=...)
        server.handler.defer(2)             # 451 for the next two messages, then accept
        server.handler.refuse["x@y.in"] = "550 5.1.1 no such user"
        ...
        server.received[0].message["Subject"], server.connections

The server runs on its own thread and event loop (aiosmtpd's ``Controller``); what it records
is complete by the time the client has read the server's reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from enum import StrEnum
from typing import Any, cast

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True, kw_only=True)
class Received:
    """One message as the server got it: envelope, raw bytes, and how the session looked."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    tls: bool
    login: str | None

    @property
    def message(self) -> EmailMessage:
        """The parsed message, with the wire's CRLF line ends read as a mail client would."""
        return message_from_bytes(self.content.replace(b"\r\n", b"\n"), policy=policy.default)


class TlsMode(StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    IMPLICIT = "implicit"


@dataclass(frozen=True, kw_only=True)
class Certificates:
    """A throwaway CA (trustme) and a certificate for 127.0.0.1 and localhost it signed."""

    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts the test CA

    @classmethod
    def make(cls) -> Certificates:
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1", "localhost")
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        issued.configure_cert(server)
        client = ssl.create_default_context()
        ca.configure_trust(client)
        return cls(server=server, client=client)


@dataclass(kw_only=True)
class Handler:
    """aiosmtpd hooks that record what arrives and answer as scripted.

    ``data_replies`` answers the next DATA commands in order, then ``always`` (if set) or
    ``accept``; ``refuse`` answers RCPT per address; ``delay`` waits before each DATA reply,
    like a remote relay would.
    """

    accept: str = "250 OK"
    always: str | None = None
    data_replies: deque[str] = field(default_factory=deque)
    refuse: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    attempts: int = 0

    def defer(self, count: int, reply: str = "451 4.3.0 try later") -> None:
        """Answer the next ``count`` messages with a transient refusal, then accept."""
        self.data_replies.extend([reply] * count)

    async def handle_RCPT(  # aiosmtpd hook
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # aiosmtpd hook
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.attempts += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = self.data_replies.popleft() if self.data_replies else self.always
        if reply is not None:
            return reply
        self.received.append(_received(server, session, envelope))
        return self.accept.format(n=len(self.received))


def _received(server: SMTP, session: Session, envelope: Envelope) -> Received:
    auth = session.auth_data
    transport = server.transport
    return Received(
        mail_from=envelope.mail_from or "",
        rcpt_tos=tuple(envelope.rcpt_tos),
        content=envelope.original_content or b"",
        # session.ssl is set by STARTTLS only; the transport knows for implicit TLS too
        tls=transport is not None and transport.get_extra_info("ssl_object") is not None,
        login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
    )


class _SMTP(SMTP):
    """aiosmtpd's protocol, counting connections and able to hang up at the next MAIL."""

    def __init__(self, owner: SmtpServer, handler: Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgraded = self._original_transport is not None  # STARTTLS calls this again
        super().connection_made(transport)
        if not upgraded:
            self.owner._opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.owner._live.discard(self)
        super().connection_lost(error)

    async def smtp_MAIL(self, arg: str) -> None:  # aiosmtpd command
        if self.owner.hang_ups > 0:
            self.owner.hang_ups -= 1
            if self.owner.hang_up_reply:
                await self.push(self.owner.hang_up_reply)
            if self.transport is not None:
                self.transport.close()
            return
        await super().smtp_MAIL(arg)


class _Controller(Controller):
    """Binds port 0 and learns the port the OS chose, instead of guessing a free one."""

    def __init__(
        self, owner: SmtpServer, handler: Handler, *, port: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(handler, hostname="127.0.0.1", port=port, **kwargs)
        self.owner = owner

    def factory(self) -> _SMTP:
        return _SMTP(self.owner, self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        server = cast(asyncio.Server, self.server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SmtpServer:
    """Start on enter, stop on exit. ``auth=(user, password)`` turns AUTH on (allowed without
    TLS, for tests only); ``tls`` with ``certificates`` turns on STARTTLS (required) or implicit
    TLS."""

    host = "127.0.0.1"

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        auth: tuple[str, str] | None = None,
        tls: TlsMode = TlsMode.NONE,
        certificates: Certificates | None = None,
    ) -> None:
        if tls is not TlsMode.NONE and certificates is None:
            raise ValueError("TLS needs certificates: Certificates.make()")
        self.handler = handler or Handler()
        self.auth = auth
        self.connections = 0
        self.hang_ups = 0  # close the connection at the next N MAIL commands
        self.hang_up_reply: str | None = None  # e.g. "421 4.4.2 idle timeout", sent first
        self._live: set[_SMTP] = set()
        self._lock = threading.Lock()
        self._options = self._smtp_options(tls, certificates)
        self._controller = _Controller(self, self.handler, **self._options)

    def _smtp_options(self, tls: TlsMode, certificates: Certificates | None) -> dict[str, Any]:
        options: dict[str, Any] = {"server_hostname": "smtp.test", "ready_timeout": 30.0}
        if self.auth is not None:
            options |= {"authenticator": self._authenticate, "auth_require_tls": False}
        if certificates is not None and tls is TlsMode.STARTTLS:
            options |= {"tls_context": certificates.server, "require_starttls": True}
        if certificates is not None and tls is TlsMode.IMPLICIT:
            options["ssl_context"] = certificates.server
        return options

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def start(self) -> SmtpServer:
        self._controller.start()
        self.connections = 0  # the Controller's own start-up probe is not a client
        return self

    def stop(self) -> None:
        self._controller.stop()

    def restart(self) -> SmtpServer:
        """Start again after :meth:`stop`, on the same port (the outage is over); what was
        received before stays in ``received``."""
        port = self.port
        self._controller = _Controller(self, self.handler, port=port, **self._options)
        self._controller.start()
        return self

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drop_connections(self) -> int:
        """Close every client connection from the server side, as an idle timeout would."""

        async def drop() -> int:
            live = list(self._live)
            for smtpd in live:
                if smtpd.transport is not None:
                    smtpd.transport.close()
            return len(live)

        future = asyncio.run_coroutine_threadsafe(drop(), self._controller.loop)
        return future.result(timeout=30)

    def _opened(self, smtpd: _SMTP) -> None:
        with self._lock:
            self.connections += 1
        self._live.add(smtpd)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.auth is not None
        user, password = (s.encode() for s in self.auth)
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (user, password)
        # handled=False: aiosmtpd answers a failure with "535 5.7.8 Authentication
        # credentials invalid", as Postfix, SES and Gmail do.
        return AuthResult(success=ok, handled=False, auth_data=data)


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 where nothing listens: bound (so no one else takes it meanwhile)
    but not listening, so a connection is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
