"""Console sessions: who may log in, the signed session cookie, and CSRF tokens.

A session is a signed cookie, not a server-side row, so several daemons behind one load
balancer share it and a restart logs nobody out. The signing key is derived from the
configured tokens: rotating ``NOTIFIER_API_TOKEN`` (or the read-only token) ends every
session at once. The cookie is HttpOnly, SameSite=Lax, limited to ``/console``, Secure when
the request came over HTTPS, and expires after :data:`SESSION_HOURS`.

CSRF: every session carries a random token that each form posts back (``csrf``); the login
form, before there is a session, uses a double-submitted random value in a short-lived cookie.
A POST whose ``Origin`` names another host is refused as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from notifier.settings import Settings

COOKIE = "notifier_console"
LOGIN_COOKIE = "notifier_console_login"
COOKIE_PATH = "/console"
SESSION_HOURS = 12


class Role(StrEnum):
    ADMIN = "admin"  # NOTIFIER_API_TOKEN: may resend and cancel
    READONLY = "readonly"  # NOTIFIER_CONSOLE_READONLY_TOKEN: looks only


@dataclass(frozen=True, kw_only=True)
class Session:
    role: Role
    csrf: str
    expires: int  # Unix seconds

    @property
    def may_act(self) -> bool:
        return self.role is Role.ADMIN


class Sessions:
    """Checks login tokens; issues and reads signed session cookies."""

    def __init__(self, settings: Settings) -> None:
        self._tokens = {
            role: secret.get_secret_value()
            for role, secret in (
                (Role.ADMIN, settings.api_token),
                (Role.READONLY, settings.console_readonly_token),
            )
            if secret is not None and secret.get_secret_value()
        }
        material = "\0".join(f"{r}={t}" for r, t in sorted(self._tokens.items()))
        self._key = hashlib.sha256(b"notifier-console-session\0" + material.encode()).digest()

    @property
    def enabled(self) -> bool:
        """Whether any token is configured; without one nobody can log in."""
        return bool(self._tokens)

    def role_for(self, token: str) -> Role | None:
        """The role ``token`` logs in as, compared in constant time against every token."""
        found = None
        for role, expected in self._tokens.items():
            if hmac.compare_digest(token.encode(), expected.encode()):
                found = role
        return found

    def issue(self, role: Role, *, now: float) -> tuple[str, Session]:
        session = Session(role=role, csrf=secrets.token_urlsafe(32),
                          expires=int(now) + SESSION_HOURS * 3600)  # fmt: skip
        payload = json.dumps({"r": role.value, "c": session.csrf, "e": session.expires})
        body = _b64(payload.encode())
        return f"{body}.{self._sign(body)}", session

    def read(self, cookie: str | None, *, now: float) -> Session | None:
        """The session in ``cookie``, or None when it is missing, forged or expired."""
        if not cookie or "." not in cookie:
            return None
        body, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            session = Session(role=Role(data["r"]), csrf=str(data["c"]), expires=int(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= now or session.role not in self._tokens:
            return None
        return session

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


class LoginThrottle:
    """Wrong tokens per client address: past :attr:`limit` in :attr:`window` seconds, that
    address may not try again until the oldest failure ages out. In memory, per process."""

    def __init__(self, *, limit: int = 10, window: float = 300.0) -> None:
        self.limit, self.window = limit, window
        self._failures: dict[str, deque[float]] = {}

    def blocked(self, client: str, *, now: float) -> bool:
        failures = self._failures.get(client, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return len(failures) >= self.limit

    def failed(self, client: str, *, now: float) -> None:
        if len(self._failures) > 10_000:  # a flood of addresses: forget, rather than grow
            self._failures.clear()
        self._failures.setdefault(client, deque()).append(now)


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(expected) and hmac.compare_digest(expected.encode(), (given or "").encode())


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
