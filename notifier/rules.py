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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from notifier import yamlsource
from notifier.errors import Problem, RulesError
from notifier.events import Brand, ChannelKind
from notifier.rulesfile import (
    TRACKING_PLACEHOLDERS,
    VOCABULARIES,
    ConditionSpec,
    QuietHours,
    QuietHoursPolicy,
    Repeat,
    RetrySpec,
    RulesFileSpec,
    RuleSpec,
    SendSpec,
    parse_duration,
    parse_quiet_hours,
    rules_json_schema,
)

MissingTemplate = Callable[[ChannelKind, str], str | None]
__all__ = [
    "TRACKING_PLACEHOLDERS",
    "Condition",
    "Defaults",
    "MissingTemplate",
    "QuietHours",
    "QuietHoursPolicy",
    "Repeat",
    "Retry",
    "Rule",
    "RuleSet",
    "Send",
    "load_rules",
    "parse_duration",
    "parse_quiet_hours",
    "parse_rules",
    "rules_json_schema",
]


@dataclass(frozen=True, kw_only=True)
class Retry:
    """Bounds on retrying a send that failed for a passing reason."""

    max_attempts: int = 5
    max_age: timedelta = timedelta(days=1)


@dataclass(frozen=True, kw_only=True)
class Defaults:
    """What every rule shares; ``quiet_hours`` None means off."""

    timezone: ZoneInfo
    quiet_hours: QuietHours | None
    brand: Brand
    tracking_url: str
    max_event_age: timedelta | None
    phone_region: str
    retry: Retry = Retry()


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

    @cached_property
    def stated(self) -> tuple[tuple[str, Any], ...]:
        """The conditions the rule states, as (fact name, wanted value or set)."""
        named = ((f.name, getattr(self, f.name)) for f in fields(self))
        return tuple((name, wanted) for name, wanted in named if wanted is not None)


@dataclass(frozen=True, kw_only=True)
class Send:
    """One message a rule sends: which channel, rendered from which template."""

    channel: ChannelKind
    template: str
    content_sid: str | None = None
    content_variables: tuple[tuple[str, str], ...] = ()


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
    retry: Retry = Retry()


@dataclass(frozen=True, kw_only=True)
class RuleSet:
    """The loaded file; ``version`` (sha256 of its bytes) goes into the delivery log."""

    version: str
    path: str
    defaults: Defaults
    rules: tuple[Rule, ...]
    warnings: tuple[Problem, ...]

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def for_status(self, code: int) -> tuple[Rule, ...]:
        """The enabled rules that could fire for this Clickpost status code, in file order:
        those listing it and those not asking about status codes. Matching tries only these
        (most rules are about one status; trying them all cost each update a tenth of its
        planning)."""
        return self._by_status.get(code, self._any_status)

    @cached_property
    def _any_status(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled and r.when.clickpost_status_code is None)

    @cached_property
    def _by_status(self) -> dict[int, tuple[Rule, ...]]:
        codes = {c for r in self.rules for c in r.when.clickpost_status_code or ()}
        return {
            code: tuple(
                r for r in self.rules
                if r.enabled and (r.when.clickpost_status_code is None
                                  or code in r.when.clickpost_status_code)
            )
            for code in codes
        }  # fmt: skip

    def retry_for(self, name: str) -> Retry:
        """The retry bounds of rule ``name``; the defaults' when the rule is gone (reloaded)."""
        rule = self.rule(name)
        return rule.retry if rule is not None else self.defaults.retry


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
    for field, vocab in VOCABULARIES.items():
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
        retry=_retry(d.retry, Retry()),
    )
    lines = (yamlsource.locate(doc.data, ("rules", i))[0] for i in range(len(spec.rules)))
    rules = tuple(
        _rule(rule, line, defaults.retry) for rule, line in zip(spec.rules, lines, strict=True)
    )
    return RuleSet(
        version=version, path=doc.path, defaults=defaults, rules=rules, warnings=warnings
    )


def _retry(spec: RetrySpec | None, base: Retry) -> Retry:
    """Field by field: what ``spec`` says, else ``base``."""
    if spec is None:
        return base
    return Retry(
        max_attempts=spec.max_attempts or base.max_attempts,
        max_age=spec.max_age if spec.max_age is not None else base.max_age,
    )


def _rule(spec: RuleSpec, line: int, retry: Retry) -> Rule:
    conditions = spec.when.model_dump()
    when: dict[str, Any] = {
        k: frozenset(v) if isinstance(v, list) else v for k, v in conditions.items()
    }
    return Rule(
        **spec.model_dump(exclude={"when", "send", "retry"}),
        when=Condition(**when),
        send=tuple(_send(s) for s in spec.send),
        line=line,
        retry=_retry(spec.retry, retry),
    )


def _send(spec: SendSpec) -> Send:
    variables = tuple(sorted((spec.content_variables or {}).items(), key=lambda kv: int(kv[0])))
    return Send(
        channel=spec.channel,
        template=spec.template,
        content_sid=spec.content_sid,
        content_variables=variables,
    )
