"""rules.yaml → a typed, versioned, immutable :class:`RuleSet`, or every problem at once.

How the rules are used (say this to whoever edits the file):

- Rules are evaluated top to bottom, and the FIRST enabled rule whose conditions all hold
  wins; later rules are not looked at. Put specific rules first (``out_for_delivery_cod``
  before ``out_for_delivery``), catch-alls last.
- Within ``when`` every condition given must hold; a list means "any of these".
- One rule may send on several channels (``send`` lists them); each channel is sent at most
  once per ``repeat`` scope (once per shipment, per delivery attempt, or per local day).
- ``max_event_age`` left out of a rule means the one in ``defaults`` applies.

The file is read with ruamel.yaml in YAML 1.2 (see :mod:`notifier.yamlsource`) and validated
with pydantic models that forbid unknown keys, so a typo is an error, not a silently ignored
line. Every problem carries ``file:line:col``; all of them are collected before
:class:`~notifier.errors.RulesError` is raised, so support staff fix the file in one pass.
Status, NDR and event names resolve through :mod:`notifier.clickpost.codes`; an unknown
numeric code is allowed (Clickpost sends undocumented ones) but reported as a warning.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from notifier import yamlsource
from notifier.clickpost import codes
from notifier.errors import Problem, RulesError
from notifier.events import Brand, ChannelKind
from notifier.yamlsource import (
    InvalidValue,
    Vocabulary,
    checked,
    did_you_mean,
    fail,
    listed,
    one_or_many,
)

MissingTemplate = Callable[[ChannelKind, str], str | None]
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


@dataclass(frozen=True, kw_only=True)
class Defaults:
    """What every rule shares; ``quiet_hours`` None means off."""

    timezone: ZoneInfo
    quiet_hours: QuietHours | None
    brand: Brand
    tracking_url: str
    max_event_age: timedelta | None
    phone_region: str


@dataclass(frozen=True, kw_only=True)
class Condition:
    """What an update must look like; ``None`` means "not asked", a set means "any of"."""

    clickpost_status_code: frozenset[int] | None = None
    ndr_status_code: frozenset[int] | None = None
    notification_event_id: frozenset[int] | None = None
    cp_id: frozenset[int] | None = None
    account_code: frozenset[str] | None = None
    order_type: str | None = None
    delivery_type: str | None = None
    is_rvp: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Send:
    """One message a rule sends: which channel, rendered from which template."""

    channel: ChannelKind
    template: str


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One rule; ``max_event_age`` is None when the rule leaves it to ``defaults``."""

    name: str
    description: str
    when: Condition
    send: tuple[Send, ...]
    repeat: Repeat
    delay: timedelta
    quiet_hours: QuietHoursPolicy
    max_event_age: timedelta | None
    enabled: bool
    line: int


@dataclass(frozen=True, kw_only=True)
class RuleSet:
    """The loaded file; ``version`` (sha256 of its bytes) goes into the delivery log."""

    version: str
    path: str
    defaults: Defaults
    rules: tuple[Rule, ...]
    warnings: tuple[Problem, ...]


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
_VOCABULARIES = {"clickpost_status_code": _STATUS, "ndr_status_code": _NDR}
_VOCABULARIES |= {"notification_event_id": _EVENT}


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


# ---- loading: parse, validate, check across rules, build ------------------------------------


def load_rules(path: Path, *, missing_template: MissingTemplate | None = None) -> RuleSet:
    """Load and check ``path``; raises RulesError listing every problem with its location.

    ``missing_template(channel, name)`` returns a message when that template does not exist;
    it is reported at the send's ``template`` line.
    """
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        problem = Problem(file=str(path), line=1, column=1, message=f"not UTF-8 text: {err}")
        raise RulesError([problem]) from err
    return _parse(text, raw, str(path), missing_template)


def parse_rules(
    text: str, *, path: str = "rules.yaml", missing_template: MissingTemplate | None = None
) -> RuleSet:
    """Like :func:`load_rules`, from text; ``path`` only names the file in problems."""
    return _parse(text, text.encode("utf-8"), path, missing_template)


def _parse(text: str, raw: bytes, path: str, missing: MissingTemplate | None) -> RuleSet:
    doc = yamlsource.load(text, path)
    if doc.usable and doc.data is None:
        raise RulesError([doc.at((), "the file is empty: it needs version, defaults and rules")])
    if not doc.usable:
        raise RulesError(doc.problems)
    allowed: dict[yamlsource.Shape, str] = {("defaults", "quiet_hours"): "off"}
    spec, problems = yamlsource.validate(doc, RulesFileSpec, words_allowed=allowed)
    rules = list(enumerate(spec.rules)) if spec else list(_valid_rules(doc.data))
    problems = [*doc.problems, *problems, *_across_rules(doc, rules, missing)]
    problems += _unbranded(doc) if spec and not spec.defaults.brand.name else []
    problems.sort(key=lambda p: (p.line, p.column))
    errors = [p for p in problems if p.severity == "error"]
    if errors or spec is None:
        raise RulesError(errors)
    version = hashlib.sha256(raw).hexdigest()[:12]
    return _build(spec, doc, version=version, warnings=tuple(problems))


def _unbranded(doc: yamlsource.Document) -> list[Problem]:
    """A file without a brand still loads (tests, a first try), but customers would get
    messages that do not say which shop they are from."""
    message = "defaults.brand.name is not set: messages will not name the shop"
    at = ("defaults", "brand", "name")
    return [doc.at(at, message, "add defaults: brand: {name: ...}", severity="warning")]


def _raw_rules(data: Any) -> list[Any]:
    rules = data.get("rules") if isinstance(data, dict) else None
    return rules if isinstance(rules, list) else []


def _valid_rules(data: Any) -> Iterator[tuple[int, RuleSpec]]:
    """Rules that are valid on their own, so checks of sends and templates still run when
    another part of the file has errors."""
    for index, rule in enumerate(_raw_rules(data)):
        try:
            yield index, RuleSpec.model_validate(yamlsource.plain(rule))
        except ValidationError:
            continue


def _across_rules(
    doc: yamlsource.Document, rules: list[tuple[int, RuleSpec]], missing: MissingTemplate | None
) -> Iterator[Problem]:
    """What no single rule can check: unique names, templates, undocumented codes."""
    yield from _duplicate_names(doc)
    for index, rule in rules:
        yield from _sends(doc, ("rules", index), rule, missing)
        yield from _undocumented_codes(doc, ("rules", index), rule.when)


def _duplicate_names(doc: yamlsource.Document) -> Iterator[Problem]:
    """Read from the file itself, so a name is checked even when its rule has other errors."""
    first_line: dict[str, int] = {}
    for index, rule in enumerate(_raw_rules(doc.data)):
        name = rule.get("name") if isinstance(rule, dict) else None
        if not isinstance(name, str):
            continue
        at = ("rules", index, "name")
        if name in first_line:
            hint = f"first used at line {first_line[name]}; the delivery log names rules"
            yield doc.at(at, f"duplicate rule name {name!r}", hint)
        first_line.setdefault(name, yamlsource.locate(doc.data, at)[0])


def _sends(
    doc: yamlsource.Document, at: yamlsource.Loc, rule: RuleSpec, missing: MissingTemplate | None
) -> Iterator[Problem]:
    seen: set[ChannelKind] = set()
    for index, send in enumerate(rule.send):
        here = (*at, "send", index)
        if send.channel in seen:
            hint = "one message per channel per rule: the second would never be sent"
            yield doc.at((*here, "channel"), f"{send.channel} is sent twice by this rule", hint)
        seen.add(send.channel)
        problem = missing(send.channel, send.template) if missing else None
        if problem:
            yield doc.at((*here, "template"), problem)


def _undocumented_codes(
    doc: yamlsource.Document, at: yamlsource.Loc, when: ConditionSpec
) -> Iterator[Problem]:
    """Clickpost sends undocumented codes, so they are allowed; but a typo looks the same."""
    for field, vocab in _VOCABULARIES.items():
        for index, code in enumerate(getattr(when, field) or ()):
            if code not in vocab.known:
                message = f"{vocab.what} code {code} is not in Clickpost's documented table"
                hint = "allowed; check it is the code you meant"
                yield doc.at((*at, "when", field, index), message, hint, severity="warning")


def _build(
    spec: RulesFileSpec, doc: yamlsource.Document, *, version: str, warnings: tuple[Problem, ...]
) -> RuleSet:
    d = spec.defaults
    defaults = Defaults(
        timezone=ZoneInfo(d.timezone),
        quiet_hours=parse_quiet_hours(d.quiet_hours),
        brand=Brand(**d.brand.model_dump()),
        tracking_url=d.tracking_url,
        max_event_age=d.max_event_age,
        phone_region=d.phone_region,
    )
    lines = (yamlsource.locate(doc.data, ("rules", i))[0] for i in range(len(spec.rules)))
    rules = tuple(_rule(rule, line) for rule, line in zip(spec.rules, lines, strict=True))
    return RuleSet(
        version=version, path=doc.path, defaults=defaults, rules=rules, warnings=warnings
    )


def _rule(spec: RuleSpec, line: int) -> Rule:
    conditions = spec.when.model_dump()
    when: dict[str, Any] = {
        k: frozenset(v) if isinstance(v, list) else v for k, v in conditions.items()
    }
    return Rule(
        **spec.model_dump(exclude={"when", "send"}),
        when=Condition(**when),
        send=tuple(Send(channel=s.channel, template=s.template) for s in spec.send),
        line=line,
    )
