"""The shape of rules.yaml: the values people type and the pydantic models that check them.

:mod:`notifier.rules` loads a file with these models and builds the typed rule set; the same
models give ``rules.schema.json`` for editors. Every field has a description, because it is
what an editor shows the support agent hovering over a key.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from notifier.clickpost import codes
from notifier.events import ChannelKind
from notifier.yamlsource import (
    InvalidValue,
    Vocabulary,
    checked,
    did_you_mean,
    fail,
    listed,
    one_or_many,
)

TRACKING_PLACEHOLDERS = ("waybill", "cp_id", "reference_number", "order_id")


class Repeat(StrEnum):
    """How often one rule may message one shipment on one channel: the dedup scope."""

    ONCE = "once"
    PER_ATTEMPT = "per_attempt"
    PER_DAY = "per_day"


class QuietHoursPolicy(StrEnum):
    """What a rule does inside quiet hours: wait for them to end, or send anyway."""

    DEFER = "defer"
    SEND = "send"


@dataclass(frozen=True, kw_only=True)
class QuietHours:
    """A daily window [start, end) of local time; ``21:00-09:00`` wraps midnight."""

    start: time
    end: time

    def contains(self, t: time) -> bool:
        """Whether local wall-clock time ``t`` falls inside the window."""
        t = t.replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def next_end(self, local: datetime) -> datetime:
        """The first moment at or after ``local`` outside the window, in ``local``'s zone."""
        if not self.contains(local.time()):
            return local
        e = self.end
        end = local.replace(hour=e.hour, minute=e.minute, second=e.second, microsecond=0)
        return end if end > local else end + timedelta(days=1)


# ---- values people type: shared by validation and by building the typed result -------------

_QUIET = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_quiet_hours(text: str) -> QuietHours | None:
    """``"21:00-09:00"`` → a window (it may wrap midnight); ``"off"`` → None."""
    if text.strip().lower() == "off":
        return None
    hint = 'write a quoted range such as "21:00-09:00", or off'
    match = _QUIET.fullmatch(text.strip())
    if match is None:
        raise InvalidValue(f"quiet hours {text!r} is not a START-END range", hint)
    h1, m1, h2, m2 = map(int, match.groups())
    try:
        window = QuietHours(start=time(h1, m1), end=time(h2, m2))
    except ValueError as err:
        raise InvalidValue(f"quiet hours {text!r}: {err}", "hours 00-23, minutes 00-59") from err
    if window.start == window.end:
        raise InvalidValue(f"quiet hours {text!r} start and end at the same time", hint)
    return window


def parse_duration(value: int | str) -> timedelta:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"3d"`` or a whole number of seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        hint = "write e.g. 90s, 15m, 12h, 3d, or a whole number of seconds"
        raise InvalidValue(f"{value!r} is not a duration", hint)
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError) as err:  # ZoneInfoNotFoundError is a KeyError
        hint = did_you_mean(name, available_timezones()) or "use an IANA name: Asia/Kolkata"
        raise InvalidValue(f"unknown time zone {name!r}", hint) from err


def _tracking_url(url: str) -> str:
    if url and not url.startswith(("https://", "http://")):
        raise InvalidValue("tracking_url must start with https:// or http://")
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(url) if name is not None]
    except ValueError as err:
        raise InvalidValue(f"tracking_url: {err}", "a literal brace is written {{ or }}") from err
    for name in names:
        if name not in TRACKING_PLACEHOLDERS:
            usable = " ".join(f"{{{p}}}" for p in TRACKING_PLACEHOLDERS)
            hint = did_you_mean(name, TRACKING_PLACEHOLDERS) or f"use {usable}"
            raise InvalidValue(f"unknown placeholder {{{name}}} in tracking_url", hint)
    return url


def _phone_region(region: str) -> str:
    if region not in phonenumbers.SUPPORTED_REGIONS:
        hint = did_you_mean(region, phonenumbers.SUPPORTED_REGIONS) or "e.g. IN"
        raise InvalidValue(f"unknown phone region {region!r}", hint)
    return region


_STATUS = Vocabulary("Clickpost status", codes.status_code_by_name, codes.STATUS_CODES)
_NDR = Vocabulary("NDR", codes.ndr_code_by_name, codes.NDR_CODES)
_EVENT = Vocabulary("notification event", codes.event_id_by_name, codes.NOTIFICATION_EVENTS)
VOCABULARIES = {"clickpost_status_code": _STATUS, "ndr_status_code": _NDR}
VOCABULARIES |= {"notification_event_id": _EVENT}


# ---- the file's shape as pydantic models: validation, and rules.schema.json ----------------


_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)
_StatusCode = Annotated[int, BeforeValidator(_STATUS.resolve)]
_NdrCode = Annotated[int, BeforeValidator(_NDR.resolve)]
_EventId = Annotated[int, BeforeValidator(_EVENT.resolve)]
StatusCodes = Annotated[list[_StatusCode], listed, _STATUS.schema]
NdrCodes = Annotated[list[_NdrCode], listed, _NDR.schema]
EventIds = Annotated[list[_EventId], listed, _EVENT.schema]
Ints = Annotated[list[int], listed, one_or_many({"type": "integer"})]
Texts = Annotated[
    list[Annotated[str, Field(min_length=1)]],
    listed,
    one_or_many({"type": "string", "minLength": 1}),
]
_SECONDS = {"type": "integer", "minimum": 0}
_WITH_UNIT = {"type": "string", "pattern": r"^\d+[smhd]$"}
Duration = Annotated[
    timedelta,
    BeforeValidator(checked(parse_duration, convert=True)),
    WithJsonSchema({"anyOf": [_SECONDS, _WITH_UNIT]}),
]
QuietHoursText = Annotated[
    str,
    AfterValidator(checked(parse_quiet_hours)),
    WithJsonSchema({"type": "string", "pattern": r"^(off|\d{1,2}:\d{2}-\d{1,2}:\d{2})$"}),
]


class BrandSpec(BaseModel):
    """Who the messages come from, as templates show it."""

    model_config = _STRICT
    name: str = Field(default="", description="Shop name shown in every message.")
    support_phone: str = Field(default="", description="Support phone number shown to customers.")
    support_email: str = Field(default="", description="Support email address shown to customers.")
    website: str = Field(default="", description="The shop's website.")


class RetrySpec(BaseModel):
    """How a send that failed for a passing reason is retried (exponential backoff, jitter)."""

    model_config = _STRICT
    max_attempts: int | None = Field(
        default=None, ge=1, le=20, description="Attempts before giving up (default 5)."
    )
    max_age: Duration | None = Field(
        default=None,
        description="Stop retrying this long after the message was planned (default 1d).",
    )


class DefaultsSpec(BaseModel):
    """Settings every rule shares unless it overrides them."""

    model_config = _STRICT
    timezone: Annotated[str, AfterValidator(checked(_zone))] = Field(
        default="Asia/Kolkata", description="IANA time zone for quiet hours and per-day repeats."
    )
    quiet_hours: QuietHoursText = Field(
        default="21:00-09:00",
        description='Local time window "HH:MM-HH:MM" when messages wait, or off.',
    )
    brand: BrandSpec = Field(
        default_factory=lambda: BrandSpec(), description="Who messages are from."
    )
    tracking_url: Annotated[str, AfterValidator(checked(_tracking_url))] = Field(
        default="",
        description="Tracking page link: {waybill} {cp_id} {reference_number} {order_id}.",
    )
    max_event_age: Duration | None = Field(
        default=None,
        description="Updates older than this send nothing (90s, 15m, 12h, 3d or seconds).",
    )
    phone_region: Annotated[str, AfterValidator(checked(_phone_region))] = Field(
        default="IN", description="Region for reading phone numbers without a country code."
    )
    retry: RetrySpec = Field(
        default_factory=lambda: RetrySpec(), description="Retries for every rule."
    )


class ConditionSpec(BaseModel):
    """Every condition given must hold; a list means any of its values."""

    model_config = _STRICT
    clickpost_status_code: StatusCodes | None = Field(
        default=None,
        description="Clickpost status codes, as numbers or names such as OutForDelivery.",
    )
    ndr_status_code: NdrCodes | None = Field(
        default=None, description="Why delivery failed (with status 9), as numbers or names."
    )
    notification_event_id: EventIds | None = Field(
        default=None, description="Clickpost notification events, as numbers or names."
    )
    cp_id: Ints | None = Field(default=None, description="Courier partner ids.")
    account_code: Texts | None = Field(default=None, description="Courier account codes.")
    order_type: Literal["COD", "PREPAID"] | None = Field(default=None, description="Payment type.")
    delivery_type: Literal["FORWARD", "RVP"] | None = Field(default=None, description="Direction.")
    is_rvp: bool | None = Field(default=None, description="Reverse pickup (true) or not (false).")

    @model_validator(mode="after")
    def _asks_something(self) -> ConditionSpec:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            fail("no condition given", "a rule without conditions would message every update")
        return self


class SendSpec(BaseModel):
    """One message: a channel and the template to render for it."""

    model_config = _STRICT
    channel: ChannelKind = Field(strict=False, description="sms, whatsapp or email.")
    template: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Template name under templates/: letters, digits, _ . - (no spaces).",
    )
    content_sid: str | None = Field(
        default=None,
        pattern=r"^HX[0-9a-fA-F]{32}$",
        description="WhatsApp only: the approved template's Twilio Content SID (HX...).",
    )
    content_variables: dict[str, str] | None = Field(
        default=None,
        description="WhatsApp only: the template's numbered variables as expressions, e.g. "
        '{"1": "consumer.first_name", "2": "shipment.order_id"}.',
    )

    @model_validator(mode="after")
    def _whatsapp_only(self) -> SendSpec:
        if self.content_sid and self.channel is not ChannelKind.WHATSAPP:
            fail("content_sid is for whatsapp only", "remove it, or use channel: whatsapp")
        if self.content_variables and not self.content_sid:
            fail("content_variables needs a content_sid", "add the approved template's HX... id")
        for key in self.content_variables or {}:
            if not key.isdigit():
                fail(f"content variable {key!r} must be a number", 'write "1", "2", ...')
        return self


class RuleSpec(BaseModel):
    """One rule: when it applies and what it sends."""

    model_config = _STRICT
    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$", description="Unique name: lower-case letters, digits, _."
    )
    description: str = Field(default="", description="Free text for people reading the file.")
    when: ConditionSpec = Field(description="Conditions; the first rule that matches wins.")
    send: list[SendSpec] = Field(min_length=1, description="Messages to send, one per channel.")
    repeat: Repeat = Field(
        default=Repeat.ONCE, strict=False, description="once, per_attempt or per_day (local day)."
    )
    delay: Duration = Field(
        default=0, validate_default=True, description="Wait this long before sending."
    )
    quiet_hours: QuietHoursPolicy = Field(
        default=QuietHoursPolicy.DEFER,
        strict=False,
        description="defer: wait for quiet hours to end.",
    )
    max_event_age: Duration | None = Field(
        default=None, description="Overrides defaults.max_event_age."
    )
    enabled: bool = Field(
        default=True, description="false switches the rule off without deleting it."
    )
    retry: RetrySpec | None = Field(
        default=None, description="Overrides defaults.retry, field by field."
    )


class RulesFileSpec(BaseModel):
    """notifier rules.yaml: which tracking updates send which messages."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, title="notifier rules")
    version: Literal[1] = Field(description="Format version of this file: 1.")
    defaults: DefaultsSpec = Field(
        default_factory=lambda: DefaultsSpec(), description="Settings shared by all rules."
    )
    rules: list[RuleSpec] = Field(description="Rules, tried top to bottom; the first match wins.")


def rules_json_schema() -> dict[str, Any]:
    """JSON Schema of rules.yaml, for editors (``# yaml-language-server: $schema=...``)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **RulesFileSpec.model_json_schema(),
    }
