"""Clickpost's tracking API: the one module that talks to it (httpx, async).

The five calls of clickpost-tracking-api.md: register-service, awb-register, awb-unregister,
track-order (polling, at most five waybills of one ``cp_id`` a call) and test_webhook.

Errors, translated once, where each answer is read (``_once``, ``_judge``)::

    NotifierError
    └── ClickpostError              status (HTTP, or meta.status), message (Clickpost's own)
        ├── ClickpostUnavailable    transient: network errors, timeouts, 429, 5xx, a 2xx body
        │                           that cannot be read; raised after ``max_retries`` retries,
        │                           with ``retry_after`` when Clickpost gave one
        └── ClickpostRejected       4xx, or ``meta.success: false``: Clickpost refused the call
                                    and will refuse it again; ``message`` says why

Clickpost answers some refusals with HTTP 200 and ``meta: {"success": false, "status": 400}``
(the docs: "status: 200 if the API data was fine, 400 in case of a bad request"), so success is
judged on ``meta`` as well as on the HTTP status. register-service answers a flat
``{"message", "status_code", "success"}`` instead of ``meta``; both shapes are read.

Retries: 429, 5xx and network errors are retried up to ``max_retries`` times with exponential
backoff and jitter; a ``Retry-After`` header is honoured, and one longer than ``max_backoff``
ends the retries at once (the caller, e.g. the owed-call queue, reschedules for later instead of
holding a worker). POSTs are retried too: awb-register and awb-unregister name the waybill, so a
repeat after a timeout re-registers the same shipment rather than a new one (assumed: Clickpost
does not document it; the stand-in of :mod:`.standin` behaves so).

The API key travels in the query string (track-order, test_webhook) and in JSON bodies (the
rest). It never reaches a log line or an error message: messages name the path, not the URL;
anything derived from a transport error is redacted; and httpx's own ``HTTP Request: GET …``
INFO line is masked by a filter on the ``httpx`` logger (:class:`KeyMaskFilter`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from notifier.clickpost.models import TrackResult, parse_track_order
from notifier.errors import ConfigurationError, InputError, NotifierError
from notifier.retry_after import retry_after_seconds
from notifier.settings import Settings

__all__ = [
    "MAX_TRACK_BATCH",
    "ClickpostClient",
    "ClickpostError",
    "ClickpostRejected",
    "ClickpostUnavailable",
    "KeyMaskFilter",
    "RegisteredAwb",
    "install_key_mask",
    "mask_key",
]

log = logging.getLogger("notifier.clickpost.client")

MAX_TRACK_BATCH = 5  # track-order: up to five waybills of one cp_id a call (clickpost-facts.md)
TRACKING_SERVICE = 2  # register-service: 2 is "For Tracking Shipments on Clickpost"

REGISTER_SERVICE = "/api/v1/register-service/"
AWB_REGISTER = "/api/v2/tracking/awb-register/"
AWB_UNREGISTER = "/api/v1/tracking/awb-unregister/"
TRACK_ORDER = "/api/v2/track-order/"
TEST_WEBHOOK = "/api/v1/test_webhook"

_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


# --- errors ---------------------------------------------------------------------------------


class ClickpostError(NotifierError):
    """A Clickpost API call failed. ``message`` is Clickpost's own when it gave one; ``status``
    is the HTTP status, or ``meta.status`` when Clickpost refused inside a 200, None when no
    answer came back; ``call`` is the API path."""

    def __init__(self, message: str, *, status: int | None = None, call: str = "") -> None:
        self.status = status
        self.message = message
        self.call = call
        text = f"{call}: {message}" if call else message
        super().__init__(f"{text} (status {status})" if status is not None else text)


class ClickpostUnavailable(ClickpostError):
    """Worth trying again later: network, timeout, 429, 5xx (after the client's own retries)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        call: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, call=call)


class ClickpostRejected(ClickpostError):
    """Clickpost refused the call (4xx, or ``meta.success: false``); ``message`` is its own."""


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RegisteredAwb:
    """awb-register's answer. ``tracking_id`` is Clickpost's id for the registration (the
    ``tracking_id`` of polled scans); ``raw`` is the response's ``result``."""

    cp_id: int
    waybill: str
    tracking_id: int | None
    security_key: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


# --- keeping the key out of logs ------------------------------------------------------------

_KEY_IN_QUERY = re.compile(r"(\bkey=)[^&\s\"']+")


def mask_key(text: str) -> str:
    """``…/track-order/?username=u&key=SECRET&…`` → ``…&key=***&…`` (not ``webhook_key=``)."""
    return _KEY_IN_QUERY.sub(r"\1***", text)


class KeyMaskFilter(logging.Filter):
    """Rewrites log records whose text carries ``key=…``: httpx logs every request URL at INFO
    (``notifier serve`` logs at INFO), and uvicorn's access log every path it serves."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Masks inside the arguments, keeping their number and the others' types: uvicorn's
        access formatter unpacks ``record.args`` as a tuple."""
        if isinstance(record.args, tuple):
            record.args = tuple(_masked(arg) for arg in record.args)
        if isinstance(record.msg, str):
            record.msg = mask_key(record.msg)
        return True


def _masked(value: object) -> object:
    """``value``, or its text with the key masked when it carries one (an httpx.URL too)."""
    text = value if isinstance(value, str) else str(value)
    return mask_key(text) if "key=" in text else value


def install_key_mask(logger_name: str = "httpx") -> None:
    """Mask ``key=`` in that logger's own records; once per logger, however often called.

    A logger's filters see only the records it creates (not its children's), hence a name."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, KeyMaskFilter) for f in logger.filters):
        logger.addFilter(KeyMaskFilter())


# --- the client -----------------------------------------------------------------------------

Sleep = Callable[[float], Awaitable[None]]


class ClickpostClient:
    """An async client for Clickpost's tracking API.

    Use it as ``async with ClickpostClient(...) as client`` or call :meth:`aclose` when done;
    the HTTP connection pool is opened on the first call. ``username`` is needed only by
    :meth:`track`. ``transport`` and ``sleep`` are for tests (an ASGI transport, a recorder).
    """

    def __init__(
        self,
        *,
        key: str,
        username: str | None = None,
        base_url: str = "https://www.clickpost.in",
        timeout: float = 15.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not key:
            raise ConfigurationError("a Clickpost API key is required (NOTIFIER_CLICKPOST_KEY)")
        if _scheme(base_url) not in {"http", "https"}:
            raise ConfigurationError(
                f"NOTIFIER_CLICKPOST_API_BASE must be an http(s) URL, not {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._key = key
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._transport = transport
        self._sleep = sleep
        self._client: httpx.AsyncClient | None = None
        install_key_mask()

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"ClickpostClient({self.base_url!r}, username={self.username!r})"

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> ClickpostClient | None:
        """The client ``NOTIFIER_CLICKPOST_*`` describes; None when no key is set (no Clickpost
        calls, no polling). Polling (``NOTIFIER_POLL_INTERVAL`` > 0) needs the username."""
        key = settings.clickpost_key.get_secret_value() if settings.clickpost_key else ""
        if not key:
            return None
        if not settings.clickpost_username and settings.poll_interval > 0:
            raise ConfigurationError(
                "NOTIFIER_CLICKPOST_USERNAME is not set: polling Clickpost (track-order) needs "
                "it with NOTIFIER_CLICKPOST_KEY; set it, or NOTIFIER_POLL_INTERVAL=0 to only "
                "register AWBs"
            )
        return cls(
            key=key,
            username=settings.clickpost_username,
            base_url=settings.clickpost_api_base,
            **options,
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> ClickpostClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; the next call opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self.timeout,
                transport=self._transport,
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
        return self._client

    # -- the API ----------------------------------------------------------------------------

    async def register_service(self, service_id: int = TRACKING_SERVICE) -> None:
        """Subscribe the account to a Clickpost service (2: tracking). Done once per account."""
        await self._request(
            "POST", REGISTER_SERVICE, json={"key": self._key, "service_id": service_id}
        )

    async def register_awb(self, body: Mapping[str, Any]) -> RegisteredAwb:
        """awb-register: ``body`` is the awb-register body as the merchant sent it to us (its
        own ``key``, if any, is replaced by ours)."""
        answer = await self._request("POST", AWB_REGISTER, json={**body, "key": self._key})
        result = answer.get("result")
        result = result if isinstance(result, dict) else {}
        return RegisteredAwb(
            cp_id=_int(body.get("cp_id")) or 0,
            waybill=str(body.get("waybill", "")),
            tracking_id=_int(result.get("tracking_id")),
            security_key=_str(result.get("security_key")),
            raw=result,
        )

    async def unregister_awb(self, cp_id: int, waybill: str) -> None:
        """awb-unregister: stop tracking; Clickpost marks the shipment Expired (code 23)."""
        body = {"cp_id": cp_id, "waybill": waybill, "key": self._key}
        await self._request("POST", AWB_UNREGISTER, json=body)

    async def track(self, cp_id: int, waybills: Sequence[str]) -> dict[str, TrackResult]:
        """track-order for up to five waybills of one ``cp_id`` (callers batch).

        Every requested waybill is in the answer: one Clickpost does not know (``valid:
        false``, missing, or ``result: null``) maps to ``TrackResult(valid=False)``.
        """
        wanted = _track_batch(waybills)
        params = {
            "username": self._tracking_username(),
            "key": self._key,
            "waybill": ",".join(wanted),
            "cp_id": str(cp_id),
        }
        answer = await self._request("GET", TRACK_ORDER, params=params)
        try:
            results = parse_track_order(answer, cp_id=cp_id)
        except InputError as err:
            message = f"answered a body we cannot read: {err}"
            raise ClickpostUnavailable(message, call=TRACK_ORDER) from err
        return {waybill: results.get(waybill, TrackResult(valid=False)) for waybill in wanted}

    async def test_webhook(self, test_url: str, test_data: Mapping[str, Any]) -> dict[str, Any]:
        """Ask Clickpost to POST ``test_data`` to ``test_url`` with the account's webhook
        headers; returns Clickpost's answer (its shape is undocumented)."""
        body = {"test_url": test_url, "test_data": dict(test_data)}
        return await self._request("POST", TEST_WEBHOOK, params={"key": self._key}, json=body)

    def _tracking_username(self) -> str:
        if not self.username:
            raise ConfigurationError(
                "NOTIFIER_CLICKPOST_USERNAME is not set: Clickpost's track-order needs it"
            )
        return self.username

    # -- one call, with retries -------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The call, retried while Clickpost is unavailable and retries remain."""
        for attempt in range(self.max_retries + 1):
            try:
                return await self._once(method, path, params, json)
            except ClickpostUnavailable as err:
                delay = self._delay(attempt, err.retry_after)
                if attempt >= self.max_retries or delay is None:
                    raise
                log.warning("clickpost %s %s; retry %d of %d in %.2fs",
                            method, err, attempt + 1, self.max_retries, delay)  # fmt: skip
                await self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds before the next attempt: Retry-After when given (None when it is longer
        than ``max_backoff``: give up now), else exponential backoff with jitter."""
        if retry_after is not None:
            return retry_after if retry_after <= self.max_backoff else None
        ceiling = min(self.max_backoff, self.backoff * 2.0**attempt)
        return ceiling * random.uniform(0.5, 1.0)

    async def _once(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        json: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """One HTTP exchange; every failure leaves as a ClickpostError."""
        try:
            response = await self._http().request(method, path, params=params, json=json)
        except httpx.TimeoutException as err:
            message = f"no answer within {self.timeout:g}s"
            raise ClickpostUnavailable(message, call=path) from err
        except httpx.TransportError as err:
            reason = self._redact(f"{type(err).__name__}: {err}")
            raise ClickpostUnavailable(reason, call=path) from err
        return self._judge(path, response)

    def _judge(self, path: str, response: httpx.Response) -> dict[str, Any]:
        """The decoded body of a successful answer, or the error the answer means."""
        body = _decode(response)
        success, status, message = _meta(body)
        status = status if success is False and status else response.status_code
        message = self._redact(message or response.reason_phrase or "no message")
        if response.status_code in _RETRYABLE_STATUS or status in _RETRYABLE_STATUS:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            raise ClickpostUnavailable(message, status=status, call=path, retry_after=retry_after)
        if response.is_redirect:  # never followed: a redirected POST would arrive as a GET
            where = self._redact(response.headers.get("Location", "?"))
            message = f"redirected to {where}: check NOTIFIER_CLICKPOST_API_BASE"
        if response.is_error or response.is_redirect or success is False:
            raise ClickpostRejected(message, status=status, call=path)
        if body is None:
            raise ClickpostUnavailable("answer is not a JSON object", status=status, call=path)
        return body

    def _redact(self, text: str) -> str:
        return mask_key(text).replace(self._key, "***")


# --- helpers --------------------------------------------------------------------------------


def _scheme(url: str) -> str:
    try:
        return httpx.URL(url).scheme
    except httpx.InvalidURL:
        return ""


def _track_batch(waybills: Sequence[str]) -> list[str]:
    """The waybills of one track-order call, checked: 1 to 5, no blanks, no commas."""
    if isinstance(waybills, str):
        raise ValueError("pass a sequence of waybills, not one string")
    wanted = list(dict.fromkeys(w.strip() for w in waybills))
    if not wanted or len(wanted) > MAX_TRACK_BATCH:
        raise ValueError(
            f"track-order takes 1 to {MAX_TRACK_BATCH} waybills of one cp_id, got {len(wanted)}"
        )
    if any(not w or "," in w for w in wanted):
        raise ValueError(f"waybills must be non-empty and without commas: {wanted!r}")
    return wanted


def _decode(response: httpx.Response) -> dict[str, Any] | None:
    """The JSON object of an answer; None for anything else (an HTML error page)."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _meta(body: Mapping[str, Any] | None) -> tuple[bool | None, int | None, str]:
    """(success, status, message) from ``meta``, or from the flat register-service shape."""
    if body is None:
        return None, None, ""
    meta = body.get("meta")
    source: Mapping[str, Any] = meta if isinstance(meta, dict) else body
    success = source.get("success")
    status = _int(source.get("status", source.get("status_code")))
    message = source.get("message") or body.get("error") or ""
    return (success if isinstance(success, bool) else None), status, str(message)


def _int(value: object) -> int | None:
    """Clickpost sends ids and codes as ints or numeric strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _str(value: object) -> str | None:
    return None if value is None else str(value)
