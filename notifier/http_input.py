"""What the HTTP routes do with a request before the engine sees it: find the engine, read
the body within the size limit, read a form, check the API token, and refuse with a status and
the field at fault (:class:`Refused`, answered by :mod:`notifier.server`'s error handlers)."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

from notifier.app import Notifier
from notifier.settings import Settings

LOOPBACK_NAMES = {"localhost", "testclient"}


class Refused(Exception):
    """A request refused before it reached the engine: status, message, field."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        self.status, self.message, self.field = status, message, field
        super().__init__(message)


def engine_of(request: Request) -> Notifier:
    engine: Notifier = request.app.state.notifier
    return engine


async def read_body(request: Request, settings: Settings) -> bytes:
    """The raw body, refused with 413 past the limit without reading it all."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"body larger than {limit} bytes", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"body larger than {limit} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


def read_form(body: bytes) -> dict[str, str]:
    """Twilio's form post (``application/x-www-form-urlencoded``), read within the size limit;
    anything else yields no fields, and so a signature that cannot match."""
    text = body.decode("utf-8", "replace")
    try:
        return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=200))
    except ValueError as err:  # more fields than any Twilio callback has
        raise Refused(400, f"not a Twilio form post: {err}", "body") from err


def api_allowed(request: Request, settings: Settings) -> None:
    """The API token when one is set (constant-time compare); else loopback callers only."""
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    if token:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Refused(401, "missing or wrong API token", "Authorization")
        return
    host = request.client.host if request.client else ""
    if not is_loopback(host):
        raise Refused(
            403, "set NOTIFIER_API_TOKEN to use the API from other hosts", "Authorization"
        )


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def schema_body(schema: dict[str, Any]) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}
