"""Languages: spellings to codes, choosing a template variant, falling back, the Hindi templates.

A Hindi shopper must get a whole message in Hindi or a whole message in English, never a mix;
a message without a Hindi variant goes out in English rather than not at all.
"""

from __future__ import annotations

import email
import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from email import policy
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, registration, webhook
from sqlmodel import col, select

from notifier import Notifier, Settings
from notifier.clickpost.models import parse_registration, parse_webhook
from notifier.errors import TemplateError
from notifier.events import ChannelKind
from notifier.languages import language_of, normalize_language
from notifier.preview import preview
from notifier.rendering import Renderer, sample_context
from notifier.segments import count_segments
from notifier.store.models import Notification

TEMPLATES = ROOT / "templates"
HINDI = ["delivered", "failed_delivery", "out_for_delivery", "out_for_delivery_cod", "shipped"]
DEVANAGARI = re.compile("[\u0900-\u097f]")
T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)  # 10:30 IST, outside quiet hours

MakeRenderer = Callable[[dict[str, str]], Renderer]


@pytest.fixture
def make_renderer(tmp_path: Path) -> MakeRenderer:
    """A Renderer over a temporary folder holding exactly the given templates."""

    def make(files: dict[str, str]) -> Renderer:
        for rel, source in files.items():
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source, encoding="utf-8")
        return Renderer(tmp_path)

    return make


# --- spellings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("hi", "hi"),
        ("hi-IN", "hi"),
        ("hi_IN", "hi"),
        ("HI", "hi"),
        (" Hindi ", "hi"),
        ("hindi", "hi"),
        ("हिंदी", "hi"),
        ("हिन्दी", "hi"),
        ("ta", "ta"),
        ("Tamil", "ta"),
        ("ta-IN", "ta"),
        ("te", "te"),
        ("Telugu", "te"),
        ("bn", "bn"),
        ("Bengali", "bn"),
        ("Bangla", "bn"),
        ("mr", "mr"),
        ("Marathi", "mr"),
        ("gu", "gu"),
        ("Gujarati", "gu"),
        ("kn", "kn"),
        ("Kannada", "kn"),
        ("ml", "ml"),
        ("Malayalam", "ml"),
        ("pa", "pa"),
        ("Punjabi", "pa"),
        ("en", None),
        ("en-IN", None),
        ("English", None),
        ("ENGLISH", None),
        ("", None),
        ("   ", None),
        (None, None),
        ("fr", None),
        ("klingon", None),
        ("../../etc", None),
    ],
)
def test_normalize_language(given: str | None, expected: str | None) -> None:
    assert normalize_language(given) == expected


def _registration(**sections: dict[str, Any]) -> dict[str, Any]:
    body = registration()
    for key, extra in sections.items():
        body[key] = {**body[key], **extra}
    return body


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"consumer_details": {"language": "hi-IN"}}, "hi"),
        ({"additional": {"language": "Hindi"}}, "hi"),
        ({"consumer_details": {"language": "en"}, "additional": {"language": "hi"}}, None),
        ({"consumer_details": {"language": " "}, "additional": {"language": "ta"}}, "ta"),
        ({"consumer_details": {"language": 7}}, None),
        ({"consumer_details": {"language": "fr"}}, None),
        ({}, None),
    ],
)
def test_language_of_reads_consumer_details_then_additional(
    sections: dict[str, dict[str, Any]], expected: str | None
) -> None:
    assert language_of(parse_registration(_registration(**sections))) == expected


# --- choosing a variant -----------------------------------------------------------------------


def test_variants_are_languages_of_a_message_not_messages() -> None:
    renderer = Renderer(TEMPLATES)
    names = {name for _, name in renderer.messages()}
    assert "delivered" in names and not any(n.endswith(".hi") for n in names)
    for name in HINDI:
        assert renderer.languages(ChannelKind.SMS, name) == ["hi"]
        assert renderer.languages(ChannelKind.EMAIL, name) == ["hi"]
    assert renderer.languages(ChannelKind.SMS, "cancelled") == []
    assert renderer.languages(ChannelKind.WHATSAPP, "delivered") == []


def test_files_for_a_language_and_refusal_of_other_codes() -> None:
    renderer = Renderer(TEMPLATES)
    assert renderer.files_for(ChannelKind.EMAIL, "delivered", "hi") == [
        ("email/delivered.hi.subject.j2", True),
        ("email/delivered.hi.txt.j2", True),
        ("email/delivered.hi.html.j2", False),
    ]
    for bad in ("../x", "hi/../../secret", "fr", "HI"):
        with pytest.raises(TemplateError, match="not a known language code"):
            renderer.files_for(ChannelKind.SMS, "delivered", bad)


def test_hindi_is_used_when_asked_in_any_spelling() -> None:
    renderer = Renderer(TEMPLATES)
    for spelling in ("hi", "hi-IN", "Hindi"):
        sms = renderer.render(ChannelKind.SMS, "delivered", sample_context(), language=spelling)
        assert sms.language == "hi" and DEVANAGARI.search(sms.text), spelling


def test_a_message_without_that_language_falls_back_to_the_default() -> None:
    renderer = Renderer(TEMPLATES)
    english = renderer.render(ChannelKind.SMS, "cancelled", sample_context())
    for language in ("hi", "ta", "fr"):
        rendered = renderer.render(
            ChannelKind.SMS, "cancelled", sample_context(), language=language
        )
        assert rendered == english and rendered.language is None


def test_an_email_variant_missing_a_part_falls_back_wholly(make_renderer: MakeRenderer) -> None:
    renderer = make_renderer(
        {
            "email/x.subject.j2": "Subject",
            "email/x.txt.j2": "Text",
            "email/x.html.j2": "<p>HTML</p>",
            "email/x.hi.subject.j2": "विषय",
            "email/x.hi.html.j2": "<p>हिंदी</p>",  # no x.hi.txt.j2
        }
    )
    rendered = renderer.render(ChannelKind.EMAIL, "x", {}, language="hi")
    assert (rendered.subject, rendered.text, rendered.html) == ("Subject", "Text", "<p>HTML</p>")
    assert rendered.language is None
    assert renderer.languages(ChannelKind.EMAIL, "x") == []
    [problem] = renderer.check()  # a half-added variant is reported, not silently ignored
    assert Path(problem.file).name.startswith("x.hi.")
    assert "email/x.hi.txt.j2" in problem.message


def test_a_variant_without_its_optional_html_sends_no_english_html(
    make_renderer: MakeRenderer,
) -> None:
    renderer = make_renderer(
        {
            "email/x.subject.j2": "Subject",
            "email/x.txt.j2": "Text",
            "email/x.html.j2": "<p>HTML</p>",
            "email/x.hi.subject.j2": "विषय",
            "email/x.hi.txt.j2": "पाठ",
        }
    )
    rendered = renderer.render(ChannelKind.EMAIL, "x", {}, language="hi")
    assert (rendered.subject, rendered.text, rendered.html) == ("विषय", "पाठ", None)
    assert rendered.language == "hi"
    assert renderer.check() == []


def test_a_variant_without_a_default_is_reported(make_renderer: MakeRenderer) -> None:
    renderer = make_renderer({"sms/only.hi.txt.j2": "केवल हिंदी", "sms/offer.v2.txt.j2": "ok"})
    assert renderer.messages() == [(ChannelKind.SMS, "offer.v2"), (ChannelKind.SMS, "only")]
    [problem] = renderer.check()
    assert problem.file.endswith("only.hi.txt.j2") and "sms/only.txt.j2" in problem.message
    assert renderer.render(ChannelKind.SMS, "only", {}, language="hi").text == "केवल हिंदी"


# --- the shipped Hindi templates --------------------------------------------------------------

CONTEXTS: dict[str, Callable[[], dict[str, Any]]] = {
    "cod": lambda: sample_context(),
    "prepaid": lambda: sample_context(order_type="PREPAID"),
    "cod-ndr": lambda: sample_context(status_code=9, ndr_code=1),
    "prepaid-ndr-unknown": lambda: sample_context(order_type="PREPAID", status_code=9, ndr_code=0),
    "ndr-without-hindi-label": lambda: sample_context(status_code=9, ndr_code=11),
    "cod-no-edd": lambda: sample_context(edd=None),
    "prepaid-no-edd": lambda: sample_context(order_type="PREPAID", edd=None),
    "no-name": lambda: sample_context(name=""),
}


def _long(order_type: str, name: str) -> dict[str, Any]:
    """Long realistic values: a five-figure COD amount, a two-digit date in the longest month
    name, the rules.yaml support number; with sample_context's 14-char order id and 40-char
    tracking URL."""
    context = sample_context(order_type=order_type, name=name, edd=date(2025, 10, 17))
    if context["shipment"]["cod_amount"] is not None:
        context["shipment"]["cod_amount"] = Decimal("24999.50")
    context["brand"]["support_phone"] = "+91 80 4567 8900"
    context["edd"] = date(2025, 10, 17)  # sample_context's clock is 5 Aug 2025: still ahead
    return context


LONG: dict[str, Callable[[], dict[str, Any]]] = {
    "long-cod-8-letter-name": lambda: _long("COD", "Abhishek Kumar"),
    "long-prepaid-8-letter-name": lambda: _long("PREPAID", "Abhishek Kumar"),
    "long-cod-longer-name": lambda: _long("COD", "Balasubramaniyanan"),
}


@pytest.mark.parametrize("context_name", sorted(CONTEXTS))
def test_every_hindi_template_renders_whole_in_hindi(context_name: str) -> None:
    renderer = Renderer(TEMPLATES)
    context = CONTEXTS[context_name]()
    for channel in (ChannelKind.SMS, ChannelKind.EMAIL):
        for name in HINDI:
            rendered = renderer.render(channel, name, context, language="hi")
            assert rendered.language == "hi", (channel, name)
            parts: list[str | None] = [rendered.text]
            if channel is ChannelKind.EMAIL:
                parts += [rendered.subject, rendered.html]
            for part in parts:
                assert part and DEVANAGARI.search(part), (channel, name, part)
                assert "None" not in part, (channel, name, part)
            if rendered.html is not None:
                assert '<html lang="hi">' in rendered.html and "Acme Store" in rendered.html
                for english in ("Hi ", "Need help", "Track your order", "Payment", "receiving"):
                    assert english not in rendered.html, (name, english)
            for english in ("Hi ", "Need help", "Track your order", "Payment:"):
                assert english not in rendered.text, (channel, name, english)


@pytest.mark.parametrize("context_name", sorted(CONTEXTS) + sorted(LONG))
def test_every_hindi_sms_fits_two_ucs2_segments(context_name: str) -> None:
    renderer = Renderer(TEMPLATES)
    context = (CONTEXTS | LONG)[context_name]()
    for name in HINDI:
        text = renderer.render(ChannelKind.SMS, name, context, language="hi").text
        info = count_segments(text)
        assert info.encoding == "UCS-2" and info.units <= 134, (name, info, text)
        assert info.segments <= 2


def test_hindi_sms_keeps_latin_ids_and_uses_hindi_dates() -> None:
    renderer = Renderer(TEMPLATES)
    shipped = renderer.render(ChannelKind.SMS, "shipped", sample_context(), language="hi").text
    assert shipped.startswith("Priya जी,")
    assert "Acme Store" in shipped and "ACME-240805-17" in shipped
    assert "https://track.acme.example/SF18399217NER" in shipped
    assert "7 अगस्त" in shipped and "Aug" not in shipped
    cod = renderer.render(ChannelKind.SMS, "out_for_delivery_cod", sample_context(), language="hi")
    assert "₹1,299" in cod.text
    long_name = _long("COD", "Balasubramaniyanan")
    assert renderer.render(ChannelKind.SMS, "delivered", long_name, language="hi").text.startswith(
        "नमस्ते,"
    )


def test_hindi_email_gives_the_reason_and_time_in_hindi() -> None:
    renderer = Renderer(TEMPLATES)
    context = sample_context(status_code=9, ndr_code=1)
    failed = renderer.render(ChannelKind.EMAIL, "failed_delivery", context, language="hi")
    assert "आप उस समय उपलब्ध नहीं थे" in failed.text
    delivered = renderer.render(ChannelKind.EMAIL, "delivered", sample_context(), language="hi")
    assert "5 अगस्त, सुबह 9:42 बजे" in delivered.text  # 04:12 UTC
    assert delivered.html is not None and "tel:18001234567" in delivered.html


def test_english_is_unchanged_by_the_language_parameter() -> None:
    renderer = Renderer(TEMPLATES)
    for channel, name in renderer.messages():
        english = renderer.render(channel, name, sample_context())
        assert english.language is None
        assert renderer.render(channel, name, sample_context(), language="en") == english
        assert not DEVANAGARI.search(english.text), (channel, name)
        if english.html is not None:
            assert '<html lang="en">' in english.html and "Hi Priya," in english.html


# --- end to end -------------------------------------------------------------------------------


def _hindi_registration(**kwargs: Any) -> dict[str, Any]:
    body = registration(**kwargs)
    body["consumer_details"]["language"] = "hi"
    return body


async def _languages_logged(notifier: Notifier) -> dict[tuple[str, str], str | None]:
    with notifier.db.read() as session:
        rows = session.exec(select(Notification).order_by(col(Notification.id))).all()
        return {(n.channel, n.template): n.language for n in rows}


async def test_a_hindi_shopper_gets_hindi_sms_and_email(
    notifier: Notifier, settings: Settings
) -> None:
    await notifier.register_shipment(_hindi_registration())
    await notifier.handle_webhook(webhook(code=6, at=T0))
    assert (await notifier.dispatch_due()).counts == {"sent": 2}
    [line] = (settings.outbox_dir / "sms.jsonl").read_text(encoding="utf-8").splitlines()
    sms = json.loads(line)["text"]
    assert DEVANAGARI.search(sms) and "डिलीवरी के लिए निकल चुका है" in sms
    [eml] = (settings.outbox_dir / "email").glob("*.eml")
    mail = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert "डिलीवरी के लिए निकल चुका है" in str(mail["Subject"])
    assert await _languages_logged(notifier) == {
        ("sms", "out_for_delivery"): "hi",
        ("email", "out_for_delivery"): "hi",
    }
    [row] = await notifier.notifications(channel="sms")
    assert row["encoding"] == "UCS-2" and row["segments"] == 2


async def test_a_hindi_shopper_gets_english_where_there_is_no_hindi(
    notifier: Notifier, settings: Settings
) -> None:
    await notifier.register_shipment(_hindi_registration())
    await notifier.handle_webhook(webhook(code=9, ndr=1, at=T0))  # failed_delivery_unavailable
    assert (await notifier.dispatch_due()).counts == {"sent": 2}
    [line] = (settings.outbox_dir / "sms.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["text"].startswith("Hi Priya,")
    assert set((await _languages_logged(notifier)).values()) == {None}


async def test_an_english_shopper_is_logged_with_the_default_language(
    notifier: Notifier, settings: Settings
) -> None:
    await notifier.register_shipment(registration())
    await notifier.handle_webhook(webhook(code=6, at=T0))
    assert (await notifier.dispatch_due()).counts == {"sent": 2}
    [line] = (settings.outbox_dir / "sms.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["text"].startswith("Hi Priya,")
    assert set((await _languages_logged(notifier)).values()) == {None}


async def test_preview_shows_the_language_used(notifier: Notifier) -> None:
    reg = parse_registration(_hindi_registration())
    update = parse_webhook(webhook(code=6, at=T0))
    result = preview(update, reg, rules=notifier.rules, renderer=notifier.renderer, now=T0)
    assert {item.planned.channel.value: item.language for item in result.items} == {
        "sms": "hi",
        "email": "hi",
    }
