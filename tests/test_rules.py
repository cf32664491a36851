"""rules.yaml: the shipped file loads, and every mistake support staff make is caught at load
time with its file:line:col and a sentence that says how to fix it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime, time, timedelta
from itertools import product
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest

from notifier.clickpost.codes import STATUS_CODES
from notifier.errors import Problem, RulesError
from notifier.events import ChannelKind
from notifier.matching import Facts, first_match
from notifier.rules import (
    Condition,
    QuietHours,
    QuietHoursPolicy,
    Repeat,
    Retry,
    RuleSet,
    load_rules,
    parse_rules,
    rules_json_schema,
)

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules.yaml"
SCHEMA = ROOT / "rules.schema.json"
TEMPLATES = ROOT / "templates"
IST = ZoneInfo("Asia/Kolkata")

BASE = """\
version: 1
defaults:
  timezone: Asia/Kolkata
  quiet_hours: "21:00-09:00"
  brand: {name: Acme Store}
  tracking_url: "https://track.example/{waybill}"
  max_event_age: 3d
rules:
  - name: out_for_delivery
    when:
      clickpost_status_code: [OutForDelivery]
    send:
      - {channel: sms, template: out_for_delivery}
    repeat: per_day
"""
BASE_RULE = BASE.split("rules:\n")[1]


def problems_of(text: str, **kwargs: Any) -> list[Problem]:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, **kwargs)
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return list(caught.value.problems)


def template_files_exist(channel: ChannelKind, name: str) -> str | None:
    """What `notifier check` does, simplified: some file for this channel and name exists."""
    found = list((TEMPLATES / channel.value).glob(f"{name}.*"))
    return None if found else f"no template {channel.value}/{name}.* in {TEMPLATES}"


# ---- the shipped file ----------------------------------------------------------------------


def test_shipped_rules_load_in_the_documented_order() -> None:
    has_templates = any(TEMPLATES.rglob("*.j2")) if TEMPLATES.is_dir() else False
    rules = load_rules(RULES, missing_template=template_files_exist if has_templates else None)

    assert [r.name for r in rules.rules] == [
        "out_for_pickup", "shipped", "out_for_delivery_cod", "out_for_delivery",
        "failed_delivery_unavailable", "failed_delivery_address", "failed_delivery_payment",
        "failed_delivery_rescheduled", "failed_delivery", "delivered", "rto_started",
        "rto_delivered", "cancelled", "lost_damaged", "shipment_delayed",
    ]  # fmt: skip
    assert rules.warnings == ()
    assert rules.version == hashlib.sha256(RULES.read_bytes()).hexdigest()[:12]
    assert (
        RULES.read_text().splitlines()[0] == "# yaml-language-server: $schema=./rules.schema.json"
    )
    for rule in rules.rules:
        assert [(s.channel, s.template) for s in rule.send] == [
            (ChannelKind.SMS, rule.name),
            (ChannelKind.EMAIL, rule.name),
        ]
        assert rule.enabled and rule.delay == timedelta(0)


def test_shipped_rules_say_what_the_design_asks() -> None:
    rules = {r.name: r for r in load_rules(RULES).rules}
    statuses = {name: r.when.clickpost_status_code for name, r in rules.items()}
    assert statuses["out_for_pickup"] == frozenset({25})
    assert statuses["shipped"] == frozenset({4})
    assert statuses["rto_started"] == frozenset({11, 12, 21})
    assert statuses["lost_damaged"] == frozenset({16, 17})
    assert statuses["shipment_delayed"] == frozenset({18})

    cod = rules["out_for_delivery_cod"]
    assert (cod.when.order_type, cod.repeat, cod.quiet_hours) == (
        "COD",
        Repeat.PER_DAY,
        QuietHoursPolicy.SEND,
    )
    assert cod.max_event_age == timedelta(hours=12)
    assert rules["out_for_delivery"].when.order_type is None

    unavailable = rules["failed_delivery_unavailable"]
    assert unavailable.when.ndr_status_code == frozenset({1, 5})
    assert unavailable.repeat is Repeat.PER_ATTEMPT
    assert unavailable.max_event_age == timedelta(hours=24)
    assert rules["failed_delivery_address"].when.ndr_status_code == frozenset({6})
    assert rules["failed_delivery_payment"].when.ndr_status_code == frozenset({7})
    assert rules["failed_delivery_rescheduled"].when.ndr_status_code == frozenset({3})
    assert rules["failed_delivery"].when.ndr_status_code is None

    delivered = rules["delivered"]
    assert (delivered.repeat, delivered.quiet_hours) == (Repeat.ONCE, QuietHoursPolicy.DEFER)
    assert delivered.max_event_age is None  # left to defaults


def test_shipped_defaults() -> None:
    defaults = load_rules(RULES).defaults
    assert defaults.timezone == IST
    assert defaults.quiet_hours == QuietHours(start=time(21), end=time(9))
    assert defaults.brand.name == "Acme Store"
    assert defaults.brand.support_phone == "+91 80 4567 8900"
    assert defaults.brand.support_email == "help@acme.example"
    assert defaults.tracking_url == "https://track.acme.example/{waybill}"
    assert defaults.max_event_age == timedelta(days=3)
    assert defaults.phone_region == "IN"


def test_specific_rules_come_before_the_general_rule_for_the_same_status() -> None:
    """First match wins: a general rule above a specific one would make it unreachable."""
    rules = load_rules(RULES).rules
    for later_index, later in enumerate(rules):
        for earlier in rules[:later_index]:
            if earlier.when.clickpost_status_code == later.when.clickpost_status_code:
                stated = {f.name for f in dataclasses.fields(earlier.when)}
                narrower = [n for n in stated if getattr(earlier.when, n) is not None]
                assert len(narrower) > 1, f"{earlier.name} hides {later.name}"


# ---- each mistake, located -----------------------------------------------------------------

CASES = {
    "unknown key": (
        ("    repeat: per_day", "    repaet: per_day"),
        (14, 5), "unknown key 'repaet'", "did you mean repeat?",
    ),
    "typo'd status name": (
        ("[OutForDelivery]", "[OutForDelivry]"),
        (11, 31), "unknown Clickpost status name 'OutForDelivry'", "did you mean OutForDelivery?",
    ),
    "typo'd NDR name": (
        ("[OutForDelivery]", "[FailedDelivery]\n      ndr_status_code: customer_unavailabel"),
        (12, 24), "unknown NDR name 'customer_unavailabel'", "did you mean customer_unavailable?",
    ),
    "duplicate key": (
        ("  timezone: Asia/Kolkata\n", "  timezone: Asia/Kolkata\n  timezone: UTC\n"),
        (4, 3), "duplicate key 'timezone'", "first given at line 3",
    ),
    "bare 21:00": (
        ('quiet_hours: "21:00-09:00"', "quiet_hours: 21:00"),
        (4, 16), "quiet hours '21:00' is not a START-END range", '"21:00-09:00"',
    ),
    "no as a template name": (
        ("template: out_for_delivery}", "template: no}"),
        (13, 34), "'no' is ambiguous: YAML 1.1 tools read it as a boolean", 'quote it ("no")',
    ),
    "no as a yes/no value": (
        ("[OutForDelivery]\n", "[OutForDelivery]\n      is_rvp: no\n"),
        (12, 15), "'no' is ambiguous", "write true or false",
    ),
    "bad timezone": (
        ("Asia/Kolkata", "Asia/Kolkatta"),
        (3, 13), "unknown time zone 'Asia/Kolkatta'", "did you mean Asia/Kolkata?",
    ),
    "bad duration": (
        ("max_event_age: 3d", "max_event_age: 3 days"),
        (7, 18), "'3 days' is not a duration", "90s, 15m, 12h, 3d",
    ),
    "duplicate rule name": (
        (BASE_RULE, BASE_RULE + BASE_RULE),
        (15, 11), "duplicate rule name 'out_for_delivery'", "first used at line 9",
    ),
    "empty send list": (
        ("    send:\n      - {channel: sms, template: out_for_delivery}\n", "    send: []\n"),
        (12, 11), "rules[0].send: is empty", "Messages to send",
    ),
    "unknown channel": (
        ("channel: sms", "channel: sns"),
        (13, 19), "'sms', 'whatsapp' or 'email', not 'sns'", "did you mean sms?",
    ),
    "bad tracking_url placeholder": (
        ("{waybill}", "{awb}"),
        (6, 17), "unknown placeholder {awb} in tracking_url", "{waybill}",
    ),
    "missing required key": (
        ("{channel: sms, template: out_for_delivery}", "{channel: sms}"),
        (13, 9), "rules[0].send[0]: missing required key 'template'", "",
    ),
    "rule without conditions": (
        ("      clickpost_status_code: [OutForDelivery]\n", "      {}\n"),
        (11, 7), "rules[0].when: no condition given", "message every update",
    ),
    "wrong case in a closed choice": (
        ("[OutForDelivery]", "[OutForDelivery]\n      order_type: cod"),
        (12, 19), "'COD' or 'PREPAID', not 'cod'", "did you mean COD?",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_each_mistake_is_one_located_problem(case: str) -> None:
    (old, new), (line, column), message, hint = CASES[case]
    assert old in BASE
    [problem] = problems_of(BASE.replace(old, new, 1))
    assert (problem.file, problem.line, problem.column) == ("rules.yaml", line, column)
    assert message in problem.message
    assert hint in problem.hint
    assert problem.severity == "error"


def test_the_base_of_the_mistakes_is_valid() -> None:
    assert parse_rules(BASE).rules[0].when.clickpost_status_code == frozenset({6})


def test_21_00_read_as_sexagesimal_under_yaml_1_1_says_to_quote_it() -> None:
    text = "%YAML 1.1\n---\n" + BASE.replace('"21:00-09:00"', "21:00")
    [problem] = problems_of(text)
    assert str(problem) == (
        "rules.yaml:6:16: defaults.quiet_hours: expected text, but YAML read 21:00 as the "
        'number 1260 (put it in quotes: "21:00")'
    )


def test_a_file_without_defaults_loads_with_a_warning_about_the_brand() -> None:
    rules = parse_rules("version: 1\nrules:\n" + BASE_RULE)
    assert rules.defaults.timezone == IST
    assert rules.defaults.quiet_hours == QuietHours(start=time(21), end=time(9))
    assert (rules.defaults.tracking_url, rules.defaults.max_event_age) == ("", None)
    [warning] = rules.warnings
    assert (warning.severity, warning.line, warning.column) == ("warning", 1, 1)
    assert "messages will not name the shop" in warning.message


def test_plain_off_is_the_documented_way_to_turn_quiet_hours_off() -> None:
    rules = parse_rules(BASE.replace('"21:00-09:00"', "off"))
    assert rules.defaults.quiet_hours is None


def test_tabs_are_reported_on_every_line_that_has_one() -> None:
    text = BASE.replace("    when:", "\twhen:").replace("    send:", "\tsend:")
    problems = problems_of(text)
    assert [(p.line, p.column) for p in problems] == [(10, 1), (12, 1)]
    assert all("tab character" in p.message for p in problems)


def test_every_duplicate_key_is_reported_not_just_the_first() -> None:
    text = BASE.replace("  max_event_age: 3d\n", "  max_event_age: 3d\n  max_event_age: 1d\n")
    text = text.replace("    repeat: per_day\n", "    repeat: per_day\n    repeat: once\n")
    problems = problems_of(text)
    assert [(p.line, p.message) for p in problems] == [
        (8, "duplicate key 'max_event_age'"),
        (16, "duplicate key 'repeat'"),
    ]


def test_yaml_syntax_error_is_located() -> None:
    [problem] = problems_of(BASE.replace("[OutForDelivery]", "[OutForDelivery"))
    assert problem.message.startswith("YAML syntax error")
    assert problem.line == 12
    assert "line 11" in problem.hint  # where the unclosed list started


def test_empty_file() -> None:
    [problem] = problems_of("# nothing yet\n")
    assert str(problem).startswith("rules.yaml:1:1: the file is empty")


def test_several_errors_are_reported_at_once_in_file_order() -> None:
    text = (
        BASE.replace("Asia/Kolkata", "Mars/Olympus")
        .replace("[OutForDelivery]", "[OutForDelivry]")
        .replace("repeat: per_day", "repeat: per_week")
    )
    text += BASE_RULE.replace("clickpost_status_code", "clickpost_status")
    problems = problems_of(text)
    assert [(p.line, p.column) for p in problems] == [
        (3, 13),
        (11, 31),
        (14, 13),
        (15, 11),
        (17, 7),
    ]
    assert "unknown time zone" in problems[0].message
    assert "OutForDelivry" in problems[1].message
    assert "not 'per_week'" in problems[2].message
    assert "duplicate rule name" in problems[3].message  # the second rule is still checked
    assert "unknown key 'clickpost_status'" in problems[4].message
    assert "did you mean clickpost_status_code?" in problems[4].hint


def test_missing_template_is_reported_at_the_sends_template() -> None:
    text = BASE.replace(
        "      - {channel: sms, template: out_for_delivery}\n",
        "      - {channel: sms, template: out_for_delivery}\n"
        "      - channel: email\n"
        "        template: out_for_delivery\n",
    )
    asked: list[tuple[ChannelKind, str]] = []

    def missing(channel: ChannelKind, name: str) -> str | None:
        asked.append((channel, name))
        return "no email template out_for_delivery" if channel is ChannelKind.EMAIL else None

    [problem] = problems_of(text, path="conf/rules.yaml", missing_template=missing)
    assert str(problem) == "conf/rules.yaml:15:19: no email template out_for_delivery"
    assert asked == [(ChannelKind.SMS, "out_for_delivery"), (ChannelKind.EMAIL, "out_for_delivery")]


def test_anchors_and_merge_keys_work_and_problems_point_at_the_text() -> None:
    text = BASE + ("  - <<: *ofd\n    name: out_for_delivery_again\n")
    text = text.replace("  - name: out_for_delivery\n", "  - &ofd\n    name: out_for_delivery\n")
    rules = parse_rules(text)
    assert [r.name for r in rules.rules] == ["out_for_delivery", "out_for_delivery_again"]
    assert rules.rules[1].repeat is Repeat.PER_DAY
    problems = problems_of(text, missing_template=lambda channel, name: "missing")
    # the merged send has no text of its own: both point at the anchored definition
    assert [(p.line, p.column) for p in problems] == [(14, 34), (14, 34)]


def test_a_channel_twice_in_one_rule_is_an_error() -> None:
    send = "      - {channel: sms, template: out_for_delivery}\n"
    text = BASE.replace(send, send + "      - {channel: sms, template: other}\n")
    [problem] = problems_of(text)
    assert (problem.line, problem.column) == (14, 19)
    assert "sms is sent twice" in problem.message


def test_load_rules_names_the_file_and_hashes_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(BASE)
    first = load_rules(path)
    assert first.path == str(path)
    assert first.version == hashlib.sha256(BASE.encode()).hexdigest()[:12]
    path.write_text(BASE.replace("3d", "2d"))
    assert load_rules(path).version != first.version
    path.write_text(BASE.replace("3d", "3 d y"))
    with pytest.raises(RulesError) as caught:
        load_rules(path)
    assert str(caught.value).startswith(f"{path}:7:18: ")


# ---- names and numbers ---------------------------------------------------------------------


def test_names_and_numbers_mix_and_one_value_needs_no_list() -> None:
    text = BASE.replace(
        "      clickpost_status_code: [OutForDelivery]\n",
        "      clickpost_status_code: [OutForDelivery, 9, DELIVERED]\n"
        "      ndr_status_code: [1, customer_unreachable]\n"
        "      notification_event_id: out_for_delivery\n"
        "      cp_id: 4\n"
        "      account_code: Delhivery Surface\n"
        "      is_rvp: false\n",
    )
    rules = parse_rules(text)
    when = rules.rules[0].when
    assert when.clickpost_status_code == frozenset({6, 9, 8})
    assert when.ndr_status_code == frozenset({1, 5})
    assert when.notification_event_id == frozenset({3})
    assert when.cp_id == frozenset({4})
    assert when.account_code == frozenset({"Delhivery Surface"})
    assert when.is_rvp is False
    assert rules.warnings == ()


def test_an_unknown_number_is_allowed_with_a_warning() -> None:
    rules = parse_rules(BASE.replace("[OutForDelivery]", "[OutForDelivery, 1003]"))
    assert rules.rules[0].when.clickpost_status_code == frozenset({6, 1003})
    [warning] = rules.warnings
    assert (warning.severity, warning.line, warning.column) == ("warning", 11, 47)
    assert "code 1003 is not in Clickpost's documented table" in warning.message


def test_a_boolean_is_not_a_status_code() -> None:
    [problem] = problems_of(BASE.replace("[OutForDelivery]", "[true]"))
    assert (problem.line, problem.column) == (11, 31)


# ---- the typed result ----------------------------------------------------------------------


def test_the_rule_set_is_immutable() -> None:
    rules = parse_rules(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.rules[0].enabled = False  # type: ignore[misc]
    assert isinstance(rules, RuleSet) and isinstance(rules.rules, tuple)
    assert rules.rules[0].line == 9


def test_rule_defaults() -> None:
    text = BASE.replace("    repeat: per_day\n", "")
    rule = parse_rules(text).rules[0]
    assert (rule.repeat, rule.quiet_hours, rule.delay) == (
        Repeat.ONCE,
        QuietHoursPolicy.DEFER,
        timedelta(0),
    )
    assert rule.max_event_age is None and rule.enabled and rule.description == ""


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("600", timedelta(minutes=10)),
    ],
)
def test_durations(typed: str, expected: timedelta) -> None:
    text = BASE.replace("    repeat: per_day\n", f"    delay: {typed}\n")
    assert parse_rules(text).rules[0].delay == expected


# ---- quiet hours ---------------------------------------------------------------------------

NIGHT = QuietHours(start=time(21), end=time(9))


@pytest.mark.parametrize(
    ("clock", "quiet"),
    [
        (time(20, 59, 59), False),
        (time(21), True),
        (time(23, 59), True),
        (time(0), True),
        (time(8, 59, 59), True),
        (time(9), False),
        (time(13), False),
    ],
)
def test_quiet_hours_wrap_midnight(clock: time, quiet: bool) -> None:
    assert NIGHT.contains(clock) is quiet


def test_a_daytime_window_does_not_wrap() -> None:
    lunch = QuietHours(start=time(13), end=time(14))
    assert [lunch.contains(time(h)) for h in (12, 13, 14, 23)] == [False, True, False, False]


@pytest.mark.parametrize(
    ("local", "end"),
    [
        (datetime(2026, 3, 1, 23, 30, tzinfo=IST), datetime(2026, 3, 2, 9, tzinfo=IST)),
        (datetime(2026, 3, 1, 21, 0, tzinfo=IST), datetime(2026, 3, 2, 9, tzinfo=IST)),
        (datetime(2026, 3, 2, 2, 15, tzinfo=IST), datetime(2026, 3, 2, 9, tzinfo=IST)),
        (datetime(2026, 12, 31, 22, 0, tzinfo=IST), datetime(2027, 1, 1, 9, tzinfo=IST)),
        (datetime(2026, 3, 2, 9, 0, tzinfo=IST), datetime(2026, 3, 2, 9, tzinfo=IST)),
        (datetime(2026, 3, 2, 15, 5, tzinfo=IST), datetime(2026, 3, 2, 15, 5, tzinfo=IST)),
    ],
)
def test_next_end_is_the_first_moment_outside_the_window(local: datetime, end: datetime) -> None:
    result = NIGHT.next_end(local)
    assert result == end
    assert result.tzinfo is local.tzinfo
    assert not NIGHT.contains(result.time())


@pytest.mark.parametrize("typed", ['"21:00-21:00"', '"25:00-09:00"', '"9pm-9am"'])
def test_bad_quiet_hours(typed: str) -> None:
    [problem] = problems_of(BASE.replace('"21:00-09:00"', typed))
    assert (problem.line, problem.column) == (4, 16)
    assert problem.message.startswith("defaults.quiet_hours: quiet hours")


# ---- the JSON Schema -----------------------------------------------------------------------


def subschemas(schema: dict[str, Any]) -> list[dict[str, Any]]:
    inner = [*schema.get("$defs", {}).values(), *schema.get("properties", {}).values()]
    inner += schema.get("anyOf", []) + ([schema["items"]] if "items" in schema else [])
    return [schema, *(s for child in inner for s in subschemas(child))]


def schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)
    ]


def yaml_data(path: Path) -> Any:
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    yaml.version = (1, 2)
    return json.loads(json.dumps(yaml.load(path)))


def test_schema_is_well_formed_and_describes_every_field() -> None:
    schema = rules_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    for sub in subschemas(schema):
        if "$ref" in sub:
            assert sub["$ref"].removeprefix("#/$defs/") in schema["$defs"]
        for name, prop in sub.get("properties", {}).items():
            assert prop.get("description"), f"{name} has no description"
        assert set(sub.get("required", [])) <= set(sub.get("properties", {}))
        if "properties" in sub:
            assert sub["additionalProperties"] is False  # typos are errors in editors too


def test_schema_lists_names_beside_numbers() -> None:
    text = json.dumps(rules_json_schema())
    for name in ("OutForDelivery", "RTO-Delivered", "customer_unavailable", "out_for_delivery"):
        assert f'"{name}"' in text


def test_shipped_rules_satisfy_the_schema_and_a_typo_does_not(tmp_path: Path) -> None:
    schema = rules_json_schema()
    assert schema_errors(schema, yaml_data(RULES)) == []
    broken = tmp_path / "rules.yaml"
    text = RULES.read_text()
    typos = [
        (": OutForDelivery", ": OutForDelivry"),
        (": per_day", ": daily"),
        (" when:", " whne:"),
    ]
    for old, new in typos:
        assert old in text
        text = text.replace(old, new, 1)
    broken.write_text(text)
    errors = schema_errors(schema, yaml_data(broken))
    assert len(errors) >= 3, errors


def test_committed_schema_is_up_to_date() -> None:
    regenerate = (
        ".venv/bin/python -c 'import json; from notifier.rules import rules_json_schema; "
        "print(json.dumps(rules_json_schema(), indent=2))' > rules.schema.json"
    )
    assert json.loads(SCHEMA.read_text()) == rules_json_schema(), f"regenerate: {regenerate}"


# ---- retries and WhatsApp approved templates -------------------------------------------------


def test_retry_bounds_default_then_defaults_then_rule_field_by_field() -> None:
    plain = parse_rules(BASE)
    assert plain.defaults.retry == Retry(max_attempts=5, max_age=timedelta(days=1))
    text = BASE.replace(
        "  max_event_age: 3d\n", "  max_event_age: 3d\n  retry: {max_attempts: 8}\n"
    )
    text += "    retry: {max_age: 2h}\n"
    rules = parse_rules(text)
    assert rules.defaults.retry == Retry(max_attempts=8, max_age=timedelta(days=1))
    assert rules.retry_for("out_for_delivery") == Retry(max_attempts=8, max_age=timedelta(hours=2))
    assert rules.retry_for("renamed_since") == rules.defaults.retry


def test_retry_attempts_are_bounded() -> None:
    [problem] = problems_of(BASE + "    retry: {max_attempts: 0}\n")
    assert problem.line == 15 and "max_attempts" in problem.message


def test_whatsapp_send_with_an_approved_template() -> None:
    sid = "HX" + "0123456789abcdef" * 2
    text = BASE.replace(
        "      - {channel: sms, template: out_for_delivery}\n",
        "      - {channel: sms, template: out_for_delivery}\n"
        f"      - channel: whatsapp\n        template: out_for_delivery\n"
        f"        content_sid: {sid}\n"
        '        content_variables: {"2": "shipment.order_id", "1": "consumer.first_name"}\n',
    )
    [rule] = parse_rules(text).rules
    whatsapp = rule.send[1]
    assert whatsapp.content_sid == sid
    assert whatsapp.content_variables == (("1", "consumer.first_name"), ("2", "shipment.order_id"))


@pytest.mark.parametrize(
    ("send", "message"),
    [
        ("{channel: sms, template: t, content_sid: HX0123456789abcdef0123456789abcdef}",
         "content_sid is for whatsapp only"),
        ('{channel: whatsapp, template: t, content_variables: {"1": "consumer.name"}}',
         "content_variables needs a content_sid"),
        ("{channel: whatsapp, template: t, content_sid: HX12}", "content_sid"),
    ],
)  # fmt: skip
def test_whatsapp_template_mistakes_are_located(send: str, message: str) -> None:
    text = BASE.replace("{channel: sms, template: out_for_delivery}", send)
    [problem] = problems_of(text)
    assert problem.line == 13 and message in problem.message


def test_matching_by_status_finds_what_trying_every_rule_finds() -> None:
    """Planning tries only the rules that could fire for the update's status code. Over the
    shipped rules, with one rule turned into a status-less one in the middle and one disabled,
    every status code (and one Clickpost has not defined) gives the same rule either way."""
    shipped = load_rules(RULES)
    rules = list(shipped.rules)
    middle = len(rules) // 2
    rules[middle] = dataclasses.replace(rules[middle], when=Condition(order_type="COD"))
    rules[1] = dataclasses.replace(rules[1], enabled=False)
    ruleset = dataclasses.replace(shipped, rules=tuple(rules))
    checked = 0
    for code, ndr, order_type, rvp in product(
        [*STATUS_CODES, 999], [None, 1, 3], ["COD", "PREPAID"], [False, True]
    ):
        facts = Facts(
            clickpost_status_code=code, ndr_status_code=ndr, notification_event_id=None,
            cp_id=4, account_code=None, order_type=order_type, delivery_type=None, is_rvp=rvp,
        )  # fmt: skip
        expected = first_match(ruleset.rules, facts)
        assert first_match(ruleset.for_status(code), facts) is expected, facts
        checked += expected is not None
    assert checked > 100  # the cases are not all unmatched
    disabled_for = next(iter(rules[1].when.clickpost_status_code or {999}))
    assert rules[1] not in ruleset.for_status(disabled_for)
