"""The console's HTML plumbing: the Jinja environment (autoescaping everything), the response
headers every page carries, and the names of Clickpost's codes for the templates."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from notifier.clickpost import codes
from notifier.http_input import engine_of

_T = TypeVar("_T")
HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"

# No script at all, styles from our own file only, forms post only here, never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value, in every template, whatever its file name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["local"] = local_time
    env.globals.update(status_name=status_name, ndr_label=ndr_label, event_label=event_label)
    return env


class Pages:
    """Renders a template into a response with the console's headers."""

    def __init__(self) -> None:
        self.env = environment()

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def local_time(value: datetime | None, zone: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if value is None:
        return ""
    return value.astimezone(zone).strftime(fmt)


def status_name(code: int | None) -> str:
    if code is None:
        return ""
    entry = codes.status(code)
    return f"{entry.label} ({code} {entry.name})"


def ndr_label(code: int | None) -> str:
    if code is None:
        return ""
    entry = codes.ndr(code)
    return f"{entry.label} (NDR {code} {entry.name})"


def event_label(event_id: int | None) -> str:
    if event_id is None:
        return ""
    entry = codes.notification_event(event_id)
    return f"{entry.label} (event {event_id})"


async def query(request: Request, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Run a store query off the event loop, on the engine's database."""
    return await asyncio.to_thread(partial(fn, engine_of(request).db, *args, **kwargs))
