"""The daemon's logs: one JSON object a line (or plain text), with personal data masked.

notifier's logs travel further than its database (log shippers, support tickets, screenshots),
so nothing that identifies a customer or unlocks an account may reach them:

- phone numbers (E.164, and Indian mobiles written as ``9876543210``, ``098…``, ``+91 98765
  43210``, ``0091…``) become ``+91******3210`` and e-mail addresses ``p***@example.com``, with
  the same helpers the delivery log uses (:mod:`notifier.recipients`), in the message, its
  ``%`` arguments, ``extra={...}`` fields and exception text;
- secrets never appear: ``token=…``, ``password: …``, ``Authorization: Bearer …``,
  ``{"auth_token": …}``, credentials in URLs, and any exact value passed as ``secrets``
  (see :func:`secret_values`) become ``***``.

uvicorn's loggers are routed through the same handler. Its access log keeps the method, path and
status but drops the query string (``/console/search?q=<a phone>``) and the client address (a
customer opening an unsubscribe link is a person, not a server).
"""

from __future__ import annotations

import json as jsonlib
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from pydantic import SecretStr

from notifier.errors import ConfigurationError
from notifier.recipients import mask_email, mask_phone
from notifier.settings import Settings

MASK = "***"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# Loggers that narrate every timer tick at INFO ("Running job dispatch…" each second): kept at
# WARNING unless DEBUG is asked for, so the daemon's own lines stay readable.
CHATTY_LOGGERS = ("apscheduler",)
# Attributes every LogRecord has; anything else on a record came from ``extra={...}``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of the message with ANSI colours
}
_JSON_KEYS = frozenset({"ts", "level", "logger", "message", "exc", "stack"})

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
# Not glued to a longer run of letters or digits (a waybill, an id, an already masked number).
_PHONE = re.compile(
    r"(?<![A-Za-z0-9+*])"
    r"(?:\+[1-9](?:[ \-.()]{0,2}\d){7,14}"  # E.164, however grouped: +91 98765 43210
    r"|(?:(?:00)?91[ \-]?|0)?[6-9](?:[ \-]?\d){9})"  # India: 98765 43210, 098…, 0091 98…
    r"(?![0-9])"
)
# A name whose value is secret: ends in a secret word (``auth_token``, ``X-Twilio-Signature``,
# ``secret_key``), is a kind of key (``api_key``, ``webhook_keys``), or is just ``key``
# (Clickpost's API key parameter). ``dedup_key`` is not one.
_SECRET_NAME = (
    r"(?:[\w-]*?(?:token|passw(?:or)?d|pwd|secret|authorization|auth|credentials?|signature"
    r"|cookie)(?:[_-]?keys?)?"
    r"|[\w-]*?(?:api|webhook|private|access|signing)[_-]?keys?"
    r"|keys?)"
)
_SECRET_PAIR = re.compile(
    rf"(?i)(?P<name>\b{_SECRET_NAME})(?P<sep>[\"']?\s*[:=]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|(?:(?:bearer|basic|token)\s+)?[^\s&,;\"'}\])]+)"
)
_NO_DIGITS = str.maketrans("", "", "0123456789")
_SECRET_KEY = re.compile(rf"(?i)^{_SECRET_NAME}$")
_URL_CREDENTIALS = re.compile(r"(?P<head>://[^/\s:@]+:)[^@\s/]+@")


class Redactor:
    """Masks personal data and secrets in text and in structured values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole. Very short
        # values would mask ordinary words; settings secrets are never that short.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def text(self, text: str) -> str:
        # Each pattern runs only when the text holds what any match must contain: most lines
        # (an access line, a job's summary) hold none of it, and logging is on the hot path.
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        if "://" in text:
            text = _URL_CREDENTIALS.sub(rf"\g<head>{MASK}@", text)
        if ":" in text or "=" in text:
            text = _SECRET_PAIR.sub(rf"\g<name>\g<sep>{MASK}", text)
        if "@" in text:
            text = _EMAIL.sub(lambda m: mask_email(m.group()), text)
        if len(text) - len(text.translate(_NO_DIGITS)) >= 7:  # a phone has 7 digits at least
            text = _PHONE.sub(_masked_phone, text)
        return text

    def value(self, key: str, value: Any) -> Any:
        """An ``extra`` field: secret-looking keys lose their value, everything else is masked
        recursively; objects become masked text, since their ``str`` may hold anything."""
        if _SECRET_KEY.match(key):
            return MASK
        if value is None or isinstance(value, bool | float):
            return value
        if isinstance(value, int):
            masked = self.text(str(value))
            return value if masked == str(value) else masked
        if isinstance(value, Mapping):
            return {str(k): self.value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value("", v) for v in value]
        if isinstance(value, datetime):
            return value.isoformat()
        return self.text(str(value))


def _masked_phone(match: re.Match[str]) -> str:
    """Separators go, and ``0091…`` is written ``+91…``, so every form masks alike."""
    digits = re.sub(r"[ \-.()]", "", match.group())
    return mask_phone("+" + digits[2:] if digits.startswith("00") else digits)


class MaskingFilter(logging.Filter):
    """Masks a record in place before any formatter sees it.

    A handler filter, not a logger filter: logger filters do not see records propagated from
    child loggers, and every record reaches the root handler. The message is merged with its
    arguments first, because a phone number passed as ``log.info("to %s", phone)`` is only a
    phone number once formatted.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.text(_message(record))
        record.args = None
        for key in extra_fields(record):
            setattr(record, key, self.redactor.value(key, record.__dict__[key]))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.text(record.stack_info)
        return True


def _message(record: logging.LogRecord) -> str:
    """``record.getMessage()``, but never raising: a filter that raises breaks the log call."""
    try:
        return record.getMessage()
    except Exception:  # a bad format string or arguments: keep both, still masked later
        return f"{record.msg!r} {record.args!r}"


def extra_fields(record: logging.LogRecord) -> list[str]:
    return [k for k in record.__dict__ if k not in _STANDARD and not k.startswith("_")]


class AccessPathFilter(logging.Filter):
    """uvicorn's access line without the query string or the client address.

    uvicorn logs ``'%s - "%s %s HTTP/%s" %d'`` with (client, method, path?query, version,
    status) (uvicorn/protocols/http/*_impl.py). Queries carry personal data (the console's
    ``?q=<phone>``) and the client may be a customer, so both go; the fields stay as extras.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            _client, method, target, version, status = args
            path = str(target).split("?", 1)[0]
            record.msg, record.args = '"%s %s HTTP/%s" %s', (method, path, version, status)
            record.method, record.path, record.status = method, path, status
        return True


def _timestamp(record: logging.LogRecord) -> str:
    at = datetime.fromtimestamp(record.created, UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``message``, extras, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in extra_fields(record):
            line[f"extra_{key}" if key in _JSON_KEYS else key] = record.__dict__[key]
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return jsonlib.dumps(line, ensure_ascii=False, default=_jsonable)


class TextFormatter(logging.Formatter):
    """``2026-11-26T05:00:00.000Z INFO notifier: message key=value``, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = " ".join(f"{k}={record.__dict__[k]}" for k in extra_fields(record))
        if fields:
            text = f"{text} {fields}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{record.stack_info}"
        return text


class _NotifierHandler(logging.StreamHandler[TextIO]):
    """Marks the handler ``configure_logging`` installed, so calling it again replaces it."""


def configure_logging(
    *,
    json: bool = True,
    level: str = "INFO",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Send every log record, uvicorn's included, through one masking handler on the root.

    ``json=False`` is the human-readable form (``--log-format text``). ``secrets`` are exact
    values never to print, usually :func:`secret_values` of the settings. Handlers that others
    installed on the root stay; run uvicorn with ``log_config=None`` so it keeps these.
    """
    threshold = _level(level)
    handler = _NotifierHandler(stream if stream is not None else sys.stderr)
    handler.setLevel(threshold)  # also below loggers that set their own level (uvicorn's)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(MaskingFilter(Redactor(secrets)))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _NotifierHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    _route_uvicorn()
    chatty = threshold if threshold <= logging.DEBUG else max(threshold, logging.WARNING)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty)


def _level(name: str) -> int:
    levels = logging.getLevelNamesMapping()
    if name.upper() not in levels:
        choices = ", ".join(sorted(set(levels) - {"NOTSET", "WARN", "FATAL"}))
        raise ConfigurationError(f"log level {name!r} unknown: use one of {choices}")
    return levels[name.upper()]


def _route_uvicorn() -> None:
    """uvicorn's own handlers go; its records propagate to the root handler instead."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.disabled = False
    access = logging.getLogger("uvicorn.access")
    for old in [f for f in access.filters if isinstance(f, AccessPathFilter)]:
        access.removeFilter(old)
    access.addFilter(AccessPathFilter())


def secret_values(settings: Settings) -> list[str]:
    """Every secret setting's value (each webhook key on its own), for ``secrets=``."""
    values: list[str] = []
    for _name, value in settings:
        if isinstance(value, SecretStr):
            values.append(value.get_secret_value())
    values.extend(settings.accepted_webhook_keys)
    return [v for v in values if v]
