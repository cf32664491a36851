"""Twilio SMS and WhatsApp, and Twilio's delivery receipts. The only module importing the SDK.

Sending goes through the SDK's async API (``messages.create_async``) over an aiohttp session
this module owns (:class:`_AiohttpTransport`), opened once per dispatch batch. Async rather
than the blocking client in threads: benchmarks/sms_throughput.py measured both against the
local server of tests/twilio_server.py on a 2-core machine: 2,000-4,000 SMS/s against
700-1,000 at concurrency 16 to 64. The threaded client spends about 3 times the CPU per message
(~1 ms against ~0.3 ms: requests and urllib3 are heavier than aiohttp, and dozens of threads
trade the GIL), and it holds a thread for every message in flight, which a slow Twilio makes
many of.

The SDK's own ``AsyncTwilioHttpClient`` is not used, for three reasons found in twilio 9.13:
it ignores its ``timeout`` argument (it hands aiohttp ``timeout=None``, which means *no*
timeout), it opens its ``ClientSession`` in ``__init__``, outside any batch, and the
``TwilioRestException`` it leads to carries no response headers, so ``Retry-After`` is lost.

Retries are never the SDK's: it re-POSTs after a 500 and Twilio has no idempotency key, so one
message went out twice (implementation-notes.md). The dispatcher retries and records attempts.
A timeout after Twilio accepted a message is the one ambiguous case: it is reported transient,
so the customer may get that message twice; that is the crash/timeout window of design.md.

Errors, translated once in :func:`_translate`:

    TwilioRestException 21610 (replied STOP)      OptedOutError
    HTTP 429 / 20429, HTTP 5xx                    TransientChannelError (retry_after: Retry-After)
    HTTP 401 / 20003 (credentials)                TransientChannelError (retry_after 300s)
    21211, 21614, 21408, 21606, 21659, other 4xx  PermanentChannelError (code: Twilio's)
    timeouts, refused or dropped connections      TransientChannelError
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from twilio.base.exceptions import TwilioException
from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from notifier.channels.base import Channel, OutgoingMessage, SendReceipt
from notifier.errors import (
    ChannelError,
    ConfigurationError,
    InputError,
    OptedOutError,
    PermanentChannelError,
    TransientChannelError,
)
from notifier.events import ChannelKind, NotificationStatus
from notifier.recipients import mask, mask_phone
from notifier.retry_after import retry_after_seconds
from notifier.settings import Settings

__all__ = [
    "STATUS_CALLBACK_PATH",
    "StatusReceipt",
    "TwilioChannel",
    "parse_status_callback",
    "status_callback_url",
    "validate_status_callback",
]

log = logging.getLogger("notifier.channels.twilio")

STATUS_CALLBACK_PATH = "/callbacks/twilio/status"

# Twilio codes that retrying will not fix, with what to tell the operator.
# https://www.twilio.com/docs/api/errors/<code>
_PERMANENT_REASONS: dict[int, str] = {
    20003: "Twilio rejected the credentials: check NOTIFIER_TWILIO_ACCOUNT_SID and "
    "NOTIFIER_TWILIO_AUTH_TOKEN",
    21211: "invalid 'To' phone number",
    21614: "'To' is not a mobile number (a landline?)",
    21408: "the Twilio account may not send to this region: enable it in the Twilio console "
    "(Messaging > Settings > Geo permissions)",
    21606: "the 'From' number cannot send this message: check NOTIFIER_TWILIO_FROM "
    "(or NOTIFIER_TWILIO_WHATSAPP_FROM)",
    21659: "'From' is not a sender of this Twilio account: check NOTIFIER_TWILIO_FROM "
    "(or NOTIFIER_TWILIO_WHATSAPP_FROM)",
}
_OPTED_OUT = 21610
_RATE_LIMITED = 20429
_AUTHENTICATION = 20003

# Twilio MessageStatus → the log's status; statuses on the way (queued, sending, sent,
# accepted, scheduled) change nothing. WhatsApp's "read" comes after "delivered" and proves it,
# and callbacks arrive out of order, so it counts as delivered.
_CALLBACK_STATUSES: dict[str, NotificationStatus] = {
    "delivered": NotificationStatus.DELIVERED,
    "read": NotificationStatus.DELIVERED,
    "undelivered": NotificationStatus.UNDELIVERED,
    "failed": NotificationStatus.FAILED,
}

_PHONE_LIKE = re.compile(r"\+?\d{8,15}")


class _Exchange:
    """Where the transport leaves the response headers for the ``send`` that asked.

    The SDK's TwilioRestException drops the response, and with it ``Retry-After``.
    """

    def __init__(self) -> None:
        self.headers: Mapping[str, str] = {}


# One per send (a contextvar, so concurrent sends on one session do not see each other's).
_EXCHANGE: ContextVar[_Exchange | None] = ContextVar("twilio_exchange", default=None)


class _AiohttpTransport(AsyncHttpClient):  # type: ignore[misc] # the SDK is untyped
    """The SDK's async HTTP interface over one aiohttp session, with a real timeout."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        super().__init__(log, True, None)
        self.session = session

    async def request(
        self,
        method: str,
        uri: str,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        # The session's timeout applies unless the SDK asks for one; passing aiohttp
        # timeout=None would mean no timeout at all.
        limit = aiohttp.ClientTimeout(total=timeout) if timeout else self.session.timeout
        async with self.session.request(
            method,
            uri,
            params=params,
            data=data,
            headers=_with_basic_auth(headers, auth),
            allow_redirects=allow_redirects,
            timeout=limit,
        ) as answer:
            text = await answer.text()
        exchange = _EXCHANGE.get()
        if exchange is not None:
            exchange.headers = answer.headers
        return Response(answer.status, text, answer.headers)


def _with_basic_auth(
    headers: dict[str, str] | None, auth: tuple[str, str] | None
) -> dict[str, str]:
    """Basic auth as a header: aiohttp 3.14 deprecates ``auth=BasicAuth(...)``."""
    if not auth:
        return dict(headers or {})
    credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
    return {**(headers or {}), "Authorization": f"Basic {credentials}"}


class TwilioChannel(Channel):
    """SMS or WhatsApp through Twilio's Messages API; one HTTP session per dispatch batch."""

    def __init__(
        self,
        kind: ChannelKind,
        *,
        account_sid: str,
        auth_token: str,
        from_: str | None = None,
        messaging_service_sid: str | None = None,
        api_base: str = "https://api.twilio.com",
        timeout: float = 15.0,
        status_callback_url: str | None = None,
    ) -> None:
        if kind is ChannelKind.EMAIL:
            raise ConfigurationError("Twilio sends sms and whatsapp, not email")
        if not (from_ or messaging_service_sid):
            raise ConfigurationError(f"Twilio {kind} needs from_ or messaging_service_sid")
        self.kind = kind
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.from_ = from_
        self.messaging_service_sid = messaging_service_sid
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self.status_callback_url = status_callback_url
        self._session: aiohttp.ClientSession | None = None
        self._client: Any = None
        self._users = 0

    def __repr__(self) -> str:  # the auth token stays out of logs and tracebacks
        return f"TwilioChannel({self.kind.value!r}, account_sid={self.account_sid!r})"

    @classmethod
    def from_settings(cls, kind: ChannelKind, settings: Settings) -> TwilioChannel:
        """The channel the ``NOTIFIER_TWILIO_*`` settings describe; names any that are missing."""
        _require(kind, settings)
        token = settings.twilio_auth_token
        whatsapp = kind is ChannelKind.WHATSAPP
        return cls(
            kind,
            account_sid=settings.twilio_account_sid or "",
            auth_token=token.get_secret_value() if token else "",
            from_=settings.twilio_whatsapp_from if whatsapp else settings.twilio_from,
            messaging_service_sid=None if whatsapp else settings.twilio_messaging_service_sid,
            api_base=settings.twilio_api_base,
            timeout=settings.twilio_timeout,
            status_callback_url=status_callback_url(settings.public_url)
            if settings.public_url
            else None,
        )

    async def open(self) -> None:
        """Start the batch's HTTP session. Nested opens share it (counted)."""
        self._users += 1
        self._ensure_open()

    async def close(self) -> None:
        """End the session when the last batch that opened it is done."""
        self._users = max(0, self._users - 1)
        if self._users == 0 and self._session is not None:
            session, self._session, self._client = self._session, None, None
            await session.close()

    def _ensure_open(self) -> Any:
        """The SDK client, made on first use; synchronous so concurrent sends make one."""
        if self._client is None:
            # No connection cap here (aiohttp's default is 100): the dispatcher's concurrency
            # (NOTIFIER_CHANNEL_CONCURRENCY) is the one knob for messages in flight.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
            self._client = self._new_client(_AiohttpTransport(self._session))
        return self._client

    def _new_client(self, transport: _AiohttpTransport) -> Any:
        """An SDK client on ``transport`` that reads nothing from ``os.environ``.

        ClientBase falls back to ``os.environ`` for TWILIO_EDGE and TWILIO_REGION (which
        rewrite the host) whenever ``environment`` is falsy: pass a non-empty one.
        """
        client = Client(
            self.account_sid,
            self._auth_token,
            http_client=transport,
            environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""},
        )
        client.api.base_url = self.api_base  # a plain attribute: NOTIFIER_TWILIO_API_BASE
        return client

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        """POST one message; exactly one HTTP request, whatever happens."""
        client = self._ensure_open()
        exchange = _Exchange()
        reset = _EXCHANGE.set(exchange)
        try:
            created = await client.messages.create_async(**self._params(message))
        except TwilioException as err:
            raise _translate(err, exchange.headers) from err
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise _unreachable(err, self.timeout) from err
        except json.JSONDecodeError as err:
            raise TransientChannelError("Twilio answered 2xx without JSON") from err
        finally:
            _EXCHANGE.reset(reset)
        log.debug("twilio %s to %s accepted: %s", self.kind, mask(message.to), created.sid)
        return SendReceipt(provider_id=str(created.sid))

    def _params(self, message: OutgoingMessage) -> dict[str, object]:
        """Keyword arguments for ``messages.create_async``; None values are not sent."""
        params: dict[str, object] = {
            "to": self._address(message.to),
            "from_": self._address(self.from_) if self.from_ else None,
            "messaging_service_sid": self.messaging_service_sid,
            "status_callback": self.status_callback_url,
        }
        if self.kind is ChannelKind.WHATSAPP and message.content_sid:
            # Outside WhatsApp's 24-hour session Meta accepts only approved templates, sent
            # as ContentSid + ContentVariables (a JSON object) instead of Body.
            params["content_sid"] = message.content_sid
            params["content_variables"] = json.dumps(dict(message.content_variables or {}))
        else:
            params["body"] = message.text
        return {k: v for k, v in params.items() if v is not None}

    def _address(self, number: str) -> str:
        """WhatsApp addresses are ``whatsapp:+E164`` on both ends; SMS ones plain E.164."""
        if self.kind is ChannelKind.WHATSAPP:
            return "whatsapp:" + number.removeprefix("whatsapp:")
        return number


def _require(kind: ChannelKind, settings: Settings) -> None:
    """Raise ConfigurationError naming every NOTIFIER_TWILIO_* variable the kind lacks."""
    missing = []
    if not settings.twilio_account_sid:
        missing.append("NOTIFIER_TWILIO_ACCOUNT_SID")
    if not (settings.twilio_auth_token and settings.twilio_auth_token.get_secret_value()):
        missing.append("NOTIFIER_TWILIO_AUTH_TOKEN")
    if kind is ChannelKind.SMS and not (
        settings.twilio_from or settings.twilio_messaging_service_sid
    ):
        missing.append("NOTIFIER_TWILIO_FROM or NOTIFIER_TWILIO_MESSAGING_SERVICE_SID")
    if kind is ChannelKind.WHATSAPP and not settings.twilio_whatsapp_from:
        missing.append("NOTIFIER_TWILIO_WHATSAPP_FROM")
    if kind is ChannelKind.EMAIL:
        missing.append("a channel other than email (Twilio sends sms and whatsapp)")
    if missing:
        raise ConfigurationError(f"Twilio {kind} is not configured: set {', '.join(missing)}")


# -- errors ---------------------------------------------------------------------------------


def _translate(err: TwilioException, headers: Mapping[str, str]) -> ChannelError:
    """A Twilio error answer as notifier's transient/permanent/opted-out error."""
    status: int = getattr(err, "status", 0) or 0
    code: int | None = getattr(err, "code", None)
    text = f"Twilio {status}: {_vendor_text(err)}"
    if code == _OPTED_OUT:
        return OptedOutError("recipient replied STOP to this sender", code=str(code))
    if status == 429 or code == _RATE_LIMITED or status >= 500:
        retry_after = retry_after_seconds(headers.get("Retry-After"))
        return TransientChannelError(text, code=_code(code), retry_after=retry_after, outage=True)
    if status == 401 or code == _AUTHENTICATION:
        # A wrong or rotated token is the operator's to fix, not the message's fault: keep the
        # messages and retry slowly, so nothing is lost while someone updates the setting.
        message = "Twilio refused the credentials: check NOTIFIER_TWILIO_AUTH_TOKEN"
        return TransientChannelError(message, code=_code(code), retry_after=300, outage=True)
    if code in _PERMANENT_REASONS:
        return PermanentChannelError(f"Twilio: {_PERMANENT_REASONS[code]}", code=str(code))
    return PermanentChannelError(text, code=_code(code))


def _vendor_text(err: TwilioException) -> str:
    """Twilio's own message, numbers masked: its 21211 text quotes the recipient's number."""
    raw = getattr(err, "msg", None) or getattr(err, "detail", None) or getattr(err, "title", "")
    text = str(raw or type(err).__name__).removeprefix("Unable to create record: ")
    return _PHONE_LIKE.sub(lambda m: mask_phone(m.group()), text)


def _code(code: int | None) -> str | None:
    return str(code) if code is not None else None


def _unreachable(err: Exception, timeout: float) -> TransientChannelError:
    """No answer from Twilio. After a timeout it may still have accepted the message."""
    if isinstance(err, TimeoutError):
        return TransientChannelError(
            f"no answer from Twilio within {timeout:g}s; it may have sent the message"
        )
    return TransientChannelError(f"cannot reach Twilio: {type(err).__name__}: {err}", outage=True)


# -- delivery receipts (status callbacks) ---------------------------------------------------


def status_callback_url(public_url: str) -> str:
    """Where Twilio posts delivery receipts: the PUBLIC url, which signatures are made over."""
    return public_url.rstrip("/") + STATUS_CALLBACK_PATH


def validate_status_callback(
    *, auth_token: str, public_url: str, params: Mapping[str, str], signature: str
) -> bool:
    """True when ``X-Twilio-Signature`` signs these form fields for the PUBLIC callback url.

    Twilio signs the URL it called. Behind a TLS-terminating proxy the app sees an internal
    ``http://`` URL that never validates, hence the configured public one (implementation-notes).
    """
    if not (auth_token and signature):
        return False
    validator = RequestValidator(auth_token)
    return bool(validator.validate(status_callback_url(public_url), params, signature))


@dataclass(frozen=True, kw_only=True)
class StatusReceipt:
    """One Twilio status callback, normalized. ``to`` is masked; ``raw`` keeps every field."""

    message_sid: str
    status: str
    error_code: str | None = None
    to: str = ""
    raw: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def notification_status(self) -> NotificationStatus | None:
        """The delivery log's new status, or None when Twilio's status changes nothing."""
        return _CALLBACK_STATUSES.get(self.status)


def parse_status_callback(params: Mapping[str, str]) -> StatusReceipt:
    """A status callback's form fields (``MessageSid``, ``MessageStatus``, ``ErrorCode``…)."""
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    status = (params.get("MessageStatus") or params.get("SmsStatus") or "").strip().lower()
    if not sid:
        raise InputError("missing", field="MessageSid")
    if not status:
        raise InputError("missing", field="MessageStatus")
    return StatusReceipt(
        message_sid=sid,
        status=status,
        error_code=params.get("ErrorCode") or None,
        to=mask(params.get("To")),
        raw=dict(params),
    )
