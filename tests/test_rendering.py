"""Rendering: filters, the sandbox and its errors, the context, and every default template."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from notifier.errors import ConfigurationError, TemplateError
from notifier.events import Brand, ChannelKind, Consumer, Registration, Scan, ShipmentUpdate
from notifier.filters import first_name, ist, rupees, shorten
from notifier.rendering import Renderer, build_context, sample_context
from notifier.segments import count_segments

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
BASE_NAMES = [
    "shipped",
    "out_for_pickup",
    "out_for_delivery",
    "out_for_delivery_cod",
    "failed_delivery",
    "failed_delivery_unavailable",
    "failed_delivery_address",
    "failed_delivery_payment",
    "failed_delivery_rescheduled",
    "delivered",
    "rto_started",
    "rto_delivered",
    "cancelled",
    "lost_damaged",
    "shipment_delayed",
]
WHATSAPP_NAMES = ["delivered", "failed_delivery", "out_for_delivery"]

MakeRenderer = Callable[..., Renderer]


@pytest.fixture
def make_renderer(tmp_path: Path) -> MakeRenderer:
    """A Renderer over a temporary folder holding exactly the given templates."""

    def make(files: dict[str, str], **kwargs: Any) -> Renderer:
        for rel, source in files.items():
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source, encoding="utf-8")
        return Renderer(tmp_path, **kwargs)

    return make


# --- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("prashant gupta", "Prashant"),
        ("  PRIYA   SHARMA ", "Priya"),
        ("Mr. Rahul Verma", "Rahul"),
        ("SMT. lakshmi devi", "Lakshmi"),
        ("McKenzie Rao", "McKenzie"),
        ("anne-marie d'souza", "Anne-Marie"),
        ("", ""),
        ("Dr.", ""),
        (None, ""),
    ],
)
def test_first_name(name: str | None, expected: str) -> None:
    assert first_name(name) == expected


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (0, "Rs 0"),
        (7, "Rs 7"),
        (999, "Rs 999"),
        (1000, "Rs 1,000"),
        (99_999, "Rs 99,999"),
        (1_00_000, "Rs 1,00,000"),
        (12_34_567, "Rs 12,34,567"),
        (1234567.5, "Rs 12,34,567.50"),
        (Decimal("12345678.9"), "Rs 1,23,45,678.90"),
        (1_00_00_00_000, "Rs 1,00,00,00,000"),
        ("1299.00", "Rs 1,299"),
        ("1,299", "Rs 1,299"),
        (Decimal("1299.995"), "Rs 1,300"),
        (Decimal("0.005"), "Rs 0.01"),
        (0.1 + 0.2, "Rs 0.30"),
        (-1500, "-Rs 1,500"),
        (None, ""),
    ],
)
def test_rupees_uses_indian_grouping(amount: Any, expected: str) -> None:
    assert rupees(amount) == expected
    assert count_segments(expected).encoding == "GSM-7"


def test_rupees_with_symbol() -> None:
    assert rupees(1000, symbol=True) == "₹1,000"
    assert rupees(Decimal("1234567.5"), symbol=True) == "₹12,34,567.50"


@pytest.mark.parametrize("bad", ["abc", "", float("nan"), float("inf")])
def test_rupees_refuses_non_amounts(bad: Any) -> None:
    with pytest.raises(ValueError, match="rupees"):
        rupees(bad)


def test_rupees_refuses_booleans() -> None:
    with pytest.raises(TypeError):
        rupees(True)


def test_ist_formats_datetimes_in_india_time() -> None:
    assert ist(datetime(2017, 8, 2, 13, 23, tzinfo=UTC)) == "02 Aug 2017, 06:53 PM"
    # 19:00 UTC is already the next day in India.
    assert ist(datetime(2025, 8, 4, 19, 0, tzinfo=UTC)) == "05 Aug 2025, 12:30 AM"
    # Naive times are read as UTC, as everywhere in notifier.
    assert ist(datetime(2017, 8, 2, 13, 23)) == "02 Aug 2017, 06:53 PM"


def test_ist_formats_dates_and_custom_formats() -> None:
    assert ist(date(2017, 8, 5)) == "05 Aug 2017"
    assert ist(date(2017, 8, 5), "%a %d %b") == "Sat 05 Aug"
    assert ist(datetime(2017, 8, 2, 13, 23, tzinfo=UTC), "%H:%M") == "18:53"
    assert ist("2017-08-05") == "05 Aug 2017"
    assert ist("2017-08-02T13:23:00Z") == "02 Aug 2017, 06:53 PM"
    assert ist(None) == ""


def test_ist_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        ist(12345)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ist("next tuesday")


def test_shorten_caps_and_marks_the_cut() -> None:
    assert shorten("Cotton Kurta", 20) == "Cotton Kurta"
    cut = shorten("Cotton Kurta Set with Dupatta (Blue, M)", 20)
    assert cut == "Cotton Kurta Set..."
    assert len(cut) <= 20
    assert shorten("a\n  b", 10) == "a b"
    assert len(shorten("x" * 100)) == 40
    assert shorten(None, 5) == ""
    assert shorten("abcdef", 2) == "ab"
    with pytest.raises(ValueError):
        shorten("abc", 0)


def test_filters_are_available_in_templates(make_renderer: MakeRenderer) -> None:
    source = (
        "{{ n | first_name }}|{{ a | rupees }}|{{ a | rupees(symbol=True) }}|"
        "{{ t | ist }}|{{ t | ist('%a %d %b') }}|{{ s | shorten(8) }}"
    )
    renderer = make_renderer({"sms/f.txt.j2": source})
    context = {
        "n": "prashant gupta",
        "a": Decimal("1234567.5"),
        "t": datetime(2017, 8, 2, 13, 23, tzinfo=UTC),
        "s": "Cotton Kurta Set",
    }
    text = renderer.render(ChannelKind.SMS, "f", context).text
    assert text == (
        "Prashant|Rs 12,34,567.50|₹12,34,567.50|02 Aug 2017, 06:53 PM|Wed 02 Aug|Cotto..."
    )


def test_an_edited_template_is_read_again_on_reload(make_renderer: MakeRenderer) -> None:
    """Compiled templates are kept (no stat per message) until the reload job sees an edit."""
    renderer = make_renderer({"sms/f.txt.j2": "first {{ n }}"})
    assert renderer.render(ChannelKind.SMS, "f", {"n": 1}).text == "first 1"
    (renderer.templates_dir / "sms" / "f.txt.j2").write_text("second {{ n }}", encoding="utf-8")
    assert renderer.render(ChannelKind.SMS, "f", {"n": 1}).text == "first 1"
    renderer.reload()
    assert renderer.render(ChannelKind.SMS, "f", {"n": 1}).text == "second 1"


# --- files and errors ----------------------------------------------------------------------


def test_files_for_each_channel() -> None:
    renderer = Renderer(TEMPLATES)
    assert renderer.files_for(ChannelKind.SMS, "delivered") == [("sms/delivered.txt.j2", True)]
    assert renderer.files_for(ChannelKind.WHATSAPP, "delivered") == [
        ("whatsapp/delivered.txt.j2", True)
    ]
    assert renderer.files_for(ChannelKind.EMAIL, "delivered") == [
        ("email/delivered.subject.j2", True),
        ("email/delivered.txt.j2", True),
        ("email/delivered.html.j2", False),
    ]


@pytest.mark.parametrize("name", ["../secrets", "_layout", "sms/x", "", ".hidden", "a b"])
def test_names_that_are_not_base_names_are_refused(name: str) -> None:
    renderer = Renderer(TEMPLATES)
    with pytest.raises(TemplateError, match="not a template base name"):
        renderer.files_for(ChannelKind.SMS, name)
    # The rules loader asks missing() and reports the answer at the rule's line.
    assert "not a template base name" in (renderer.missing(ChannelKind.SMS, name) or "")


def test_missing_names_the_absent_required_files(make_renderer: MakeRenderer) -> None:
    renderer = make_renderer({"email/x.txt.j2": "body"})
    message = renderer.missing(ChannelKind.EMAIL, "x")
    assert message is not None
    assert "email/x.subject.j2" in message
    assert "email/x.txt.j2" not in message
    assert "email/x.html.j2" not in message  # optional
    assert renderer.missing(ChannelKind.SMS, "x") is not None
    assert Renderer(TEMPLATES).missing(ChannelKind.EMAIL, "delivered") is None


def test_render_of_a_missing_template_is_a_template_error(make_renderer: MakeRenderer) -> None:
    renderer = make_renderer({})
    with pytest.raises(TemplateError) as info:
        renderer.render(ChannelKind.SMS, "nothing", {})
    assert info.value.template == "sms/nothing.txt.j2"


def test_undefined_variable_names_the_variable_template_and_line(
    make_renderer: MakeRenderer,
) -> None:
    renderer = make_renderer({"sms/typo.txt.j2": "Hi\n{{ consumer.frist_name }}"})
    with pytest.raises(TemplateError) as info:
        renderer.render(ChannelKind.SMS, "typo", {"consumer": {"first_name": "Priya"}})
    assert "frist_name" in str(info.value)
    assert info.value.template == "sms/typo.txt.j2"
    assert info.value.line == 2
    assert str(info.value).startswith("sms/typo.txt.j2:2: undefined variable")


def test_undefined_top_level_variable(make_renderer: MakeRenderer) -> None:
    renderer = make_renderer({"sms/x.txt.j2": "{{ nobody }}"})
    with pytest.raises(TemplateError, match="'nobody' is undefined"):
        renderer.render(ChannelKind.SMS, "x", {})


def test_attribute_of_none_raises_rather_than_printing_nothing(
    make_renderer: MakeRenderer,
) -> None:
    renderer = make_renderer({"sms/x.txt.j2": "{% if ndr.label %}x{% endif %}"})
    with pytest.raises(TemplateError, match="label"):
        renderer.render(ChannelKind.SMS, "x", {"ndr": None})


def test_error_inside_a_layout_points_at_the_layout(make_renderer: MakeRenderer) -> None:
    renderer = make_renderer(
        {
            "email/_layout.html.j2": "<html>\n\n{{ brand.nmae }}{% block content %}{% endblock %}",
            "email/x.subject.j2": "Subject",
            "email/x.txt.j2": "Text",
            "email/x.html.j2": '{% extends "email/_layout.html.j2" %}{% block content %}'
            "ok{% endblock %}",
        }
    )
    with pytest.raises(TemplateError) as info:
        renderer.render(ChannelKind.EMAIL, "x", {"brand": {"name": "Acme"}})
    assert (info.value.template, info.value.line) == ("email/_layout.html.j2", 3)
    assert "nmae" in str(info.value)


def test_syntax_error_gives_file_and_line(make_renderer: MakeRenderer) -> None:
    renderer = make_renderer({"sms/broken.txt.j2": "Hello\n\n{% if %}x{% endif %}"})
    with pytest.raises(TemplateError) as info:
        renderer.render(ChannelKind.SMS, "broken", {})
    assert (info.value.template, info.value.line) == ("sms/broken.txt.j2", 3)
    problems = renderer.check()
    assert len(problems) == 1
    assert problems[0].file.endswith("sms/broken.txt.j2")
    assert problems[0].line == 3
    assert str(problems[0]).startswith(f"{problems[0].file}:3:1: ")


def test_check_reports_unknown_filters_broken_references_and_half_emails(
    make_renderer: MakeRenderer,
) -> None:
    renderer = make_renderer(
        {
            "sms/ok.txt.j2": "fine",
            "sms/filter.txt.j2": "line one\n{{ x | no_such_filter }}",
            "email/y.html.j2": '{% extends "email/_missing.html.j2" %}',
            "email/z.txt.j2": "no subject",
            "email/z.subject.j2": "{% for %}",
        }
    )
    problems = [(Path(p.file).name, p.line, p.message) for p in renderer.check()]
    assert sorted((f, line) for f, line, _ in problems) == [
        ("filter.txt.j2", 2),
        ("y.html.j2", 1),  # the layout it extends is missing
        ("y.html.j2", 1),  # and so are its subject and text
        ("z.subject.j2", 1),
    ]
    messages = " | ".join(m for _, _, m in problems)
    assert "no_such_filter" in messages
    assert "'email/_missing.html.j2' not found" in messages
    assert "missing templates email/y.subject.j2, email/y.txt.j2" in messages


def test_default_templates_pass_check() -> None:
    assert Renderer(TEMPLATES).check() == []


def test_html_is_autoescaped_for_email_but_text_is_not(make_renderer: MakeRenderer) -> None:
    source = "{{ consumer.name }}"
    renderer = make_renderer(
        {
            "email/x.subject.j2": source,
            "email/x.txt.j2": source,
            "email/x.html.j2": "<p>" + source + "</p>",
            "sms/x.txt.j2": source,
            "whatsapp/x.txt.j2": source,
        }
    )
    context = {"consumer": {"name": "<b>Tom & Jerry</b>"}}
    email = renderer.render(ChannelKind.EMAIL, "x", context)
    assert email.html == "<p>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>"
    assert email.text == email.subject == "<b>Tom & Jerry</b>"
    assert renderer.render(ChannelKind.SMS, "x", context).text == "<b>Tom & Jerry</b>"
    assert renderer.render(ChannelKind.WHATSAPP, "x", context).text == "<b>Tom & Jerry</b>"


def test_texts_are_stripped_and_subject_is_one_line(make_renderer: MakeRenderer) -> None:
    renderer = make_renderer(
        {
            "email/x.subject.j2": "  Your order\n\n  is   here  \n",
            "email/x.txt.j2": "\n\nBody\n\n",
            "sms/x.txt.j2": "\n  Hello  \n\n",
        }
    )
    email = renderer.render(ChannelKind.EMAIL, "x", {})
    assert (email.subject, email.text, email.html) == ("Your order is here", "Body", None)
    sms = renderer.render(ChannelKind.SMS, "x", {})
    assert (sms.subject, sms.text, sms.html) == (None, "Hello", None)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''|attr('__class__') }}",
        "{{ cycler.__init__.__globals__ }}",
        "{% set items = [] %}{{ items.append(1) }}",
        "{{ consumer.update({'name': 'x'}) }}",
    ],
)
def test_sandbox_blocks_escapes_and_mutation(make_renderer: MakeRenderer, source: str) -> None:
    renderer = make_renderer({"sms/evil.txt.j2": "line\n" + source})
    with pytest.raises(TemplateError) as info:
        renderer.render(ChannelKind.SMS, "evil", {"consumer": {"name": "Priya"}})
    assert info.value.template == "sms/evil.txt.j2"
    assert info.value.line == 2


def test_output_cap(make_renderer: MakeRenderer) -> None:
    renderer = make_renderer(
        {
            "sms/loop.txt.j2": "{% for i in range(2000) %}x{% endfor %}",
            "sms/fits.txt.j2": "{% for i in range(1000) %}x{% endfor %}",
        },
        max_output_chars=1000,
    )
    with pytest.raises(TemplateError, match="output longer than 1000 characters"):
        renderer.render(ChannelKind.SMS, "loop", {})
    assert renderer.render(ChannelKind.SMS, "fits", {}).text == "x" * 1000


@pytest.mark.parametrize(
    "source", ["{{ 'x' * 10**10 }}", "{{ [1] * 10**9 }}", "{{ 9 ** 99999999 }}"]
)
def test_huge_results_are_refused_before_they_are_built(
    make_renderer: MakeRenderer, source: str
) -> None:
    renderer = make_renderer({"sms/big.txt.j2": source})
    with pytest.raises(TemplateError, match="not allowed"):
        renderer.render(ChannelKind.SMS, "big", {})
    ok = make_renderer({"sms/ok.txt.j2": "{{ '-' * 5 }}{{ 2 ** 10 }}"})
    assert ok.render(ChannelKind.SMS, "ok", {}).text == "-----1024"


def test_filter_failure_becomes_a_template_error(make_renderer: MakeRenderer) -> None:
    renderer = make_renderer({"sms/x.txt.j2": "\n\n{{ 'abc' | rupees }}"})
    with pytest.raises(TemplateError) as info:
        renderer.render(ChannelKind.SMS, "x", {})
    assert (info.value.template, info.value.line) == ("sms/x.txt.j2", 3)
    assert "not an amount" in str(info.value)


# --- the context ---------------------------------------------------------------------------

WHEN = datetime(2025, 8, 5, 4, 12, tzinfo=UTC)


def _registration(**overrides: Any) -> Registration:
    fields: dict[str, Any] = {
        "cp_id": 4,
        "waybill": "SF18399217NER",
        "consumer": Consumer(name="priya sharma", phone="09876543210", email="p@example.in"),
        "order_type": "PREPAID",
    }
    return Registration(**(fields | overrides))


def _update(code: int = 9, **overrides: Any) -> ShipmentUpdate:
    scan = Scan(code=code, description="FailedDelivery", location="Andheri", timestamp=WHEN)
    fields: dict[str, Any] = {"cp_id": 4, "waybill": "SF18399217NER", "scan": scan, "latest": scan}
    return ShipmentUpdate(**(fields | overrides))


def _context(
    registration: Registration, update: ShipmentUpdate | None, **kw: Any
) -> dict[str, Any]:
    return build_context(
        registration=registration,
        update=update,
        brand=Brand(name="Acme Store"),
        tracking_url=kw.pop("tracking_url", "https://t.example/{waybill}"),
        now=WHEN,
        **kw,
    )


def test_context_keys_and_status_names_from_codes() -> None:
    context = _context(_registration(), _update(ndr_code=1, ndr_description="CNA"))
    assert set(context) == {
        "consumer", "shipment", "status", "scan", "ndr", "edd", "brand", "tracking_url"
    }  # fmt: skip
    assert context["status"]["name"] == "FailedDelivery"
    assert context["status"]["label"] == "Failed delivery"
    assert context["status"]["bucket"] == 5
    assert context["ndr"] == {
        "code": 1,
        "name": "customer_unavailable",
        "label": "Customer unavailable",
        "description": "CNA",
    }
    assert context["consumer"]["first_name"] == "Priya"
    assert context["shipment"]["is_cod"] is False


def test_status_follows_latest_and_scan_keeps_the_outer_scan() -> None:
    outer = Scan(code=6, timestamp=WHEN)
    latest = Scan(code=8, timestamp=WHEN)
    context = _context(_registration(), _update(scan=outer, latest=latest))
    assert (context["status"]["code"], context["scan"]["code"]) == (8, 6)
    assert context["status"]["name"] == "Delivered"


def test_phone_prefers_the_normalized_one() -> None:
    assert _context(_registration(), None)["consumer"]["phone"] == "09876543210"
    normalized = _context(_registration(), None, consumer_phone="+919876543210")
    assert normalized["consumer"]["phone"] == "+919876543210"


def test_order_id_falls_back_to_reference_number() -> None:
    context = _context(_registration(reference_number="REF-1"), None)
    assert context["shipment"]["order_id"] == "REF-1"
    assert context["shipment"]["reference_number"] == "REF-1"


def test_tracking_url_is_filled_and_absent_values_are_empty() -> None:
    pattern = "https://t.example/{cp_id}/{waybill}?o={order_id}&r={reference_number}"
    context = _context(_registration(order_id="A B#1"), None, tracking_url=pattern)
    assert context["tracking_url"] == "https://t.example/4/SF18399217NER?o=A%20B%231&r="
    assert _context(_registration(), None, tracking_url="")["tracking_url"] == ""


def test_tracking_url_with_unknown_placeholder_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="awb"):
        _context(_registration(), None, tracking_url="https://t.example/{awb}")


def test_past_edd_is_dropped_and_missing_parts_are_none() -> None:
    future = _context(_registration(), _update(edd=date(2025, 8, 6)))
    assert future["edd"] == date(2025, 8, 6)
    assert _context(_registration(), _update(edd=date(2025, 8, 4)))["edd"] is None
    bare = _context(_registration(), None)
    assert (bare["status"], bare["scan"], bare["ndr"], bare["edd"]) == (None, None, None, None)


def test_sample_context_is_a_realistic_cod_order() -> None:
    context = sample_context()
    assert context["consumer"]["name"] == "Priya Sharma"
    assert context["shipment"]["is_cod"] is True
    assert rupees(context["shipment"]["cod_amount"]) == "Rs 1,299"
    assert context["shipment"]["waybill"] == "SF18399217NER"
    assert context["brand"]["name"] == "Acme Store"
    assert context["tracking_url"] == "https://track.acme.example/SF18399217NER"


# --- the default templates -----------------------------------------------------------------

CONTEXTS: dict[str, Callable[[], dict[str, Any]]] = {
    "cod": lambda: sample_context(),
    "prepaid": lambda: sample_context(order_type="PREPAID"),
    "cod-ndr": lambda: sample_context(status_code=9, ndr_code=1),
    "prepaid-ndr-unknown": lambda: sample_context(order_type="PREPAID", status_code=9, ndr_code=0),
    "no-edd": lambda: sample_context(edd=None),
    "lost": lambda: sample_context(status_code=16, edd=None),
    "no-name": lambda: sample_context(name=""),
    "no-update": lambda: _context(_registration(), None),
}
#: Longest realistic values: an 18-letter single-word name, 14-char order ref, 13-char waybill,
#: 40-char tracking URL, a five-figure COD amount.
WORST_SMS: dict[str, Callable[[], dict[str, Any]]] = {
    "cod": lambda: _worst(sample_context(name="Balasubramaniyanan")),
    "prepaid": lambda: _worst(sample_context(order_type="PREPAID", name="Balasubramaniyanan")),
}


def _worst(context: dict[str, Any]) -> dict[str, Any]:
    assert len(context["shipment"]["order_id"]) == 14
    assert len(context["shipment"]["waybill"]) == 13
    assert len(context["tracking_url"]) == 40
    if context["shipment"]["cod_amount"] is not None:
        context["shipment"]["cod_amount"] = Decimal("24999.50")
    return context


def test_default_templates_cover_every_base_name() -> None:
    messages = Renderer(TEMPLATES).messages()
    for channel in (ChannelKind.SMS, ChannelKind.EMAIL):
        assert sorted(n for c, n in messages if c is channel) == sorted(BASE_NAMES)
    assert sorted(n for c, n in messages if c is ChannelKind.WHATSAPP) == WHATSAPP_NAMES
    for name in BASE_NAMES:
        assert (TEMPLATES / "email" / f"{name}.html.j2").is_file()


@pytest.mark.parametrize("context_name", sorted(CONTEXTS))
def test_every_default_template_renders(context_name: str) -> None:
    renderer = Renderer(TEMPLATES)
    context = CONTEXTS[context_name]()
    for channel, name in renderer.messages():
        rendered = renderer.render(channel, name, context)
        assert rendered.text, (channel, name)
        assert "None" not in rendered.text, (channel, name, rendered.text)
        if channel is ChannelKind.EMAIL:
            assert rendered.subject and "None" not in rendered.subject
            assert rendered.html is not None and "None" not in rendered.html
            assert "<html" in rendered.html and "Acme Store" in rendered.html


@pytest.mark.parametrize("context_name", sorted(CONTEXTS) + [f"worst-{k}" for k in WORST_SMS])
def test_every_default_sms_fits_one_gsm7_segment(context_name: str) -> None:
    renderer = Renderer(TEMPLATES)
    make = (
        WORST_SMS[context_name[6:]] if context_name.startswith("worst-") else CONTEXTS[context_name]
    )
    context = make()
    for name in BASE_NAMES:
        text = renderer.render(ChannelKind.SMS, name, context).text
        info = count_segments(text)
        assert (info.encoding, info.segments) == ("GSM-7", 1), (name, info, text)
        assert info.units <= 160


def test_cod_messages_name_the_amount_and_prepaid_ones_do_not() -> None:
    renderer = Renderer(TEMPLATES)
    cod = renderer.render(ChannelKind.SMS, "out_for_delivery_cod", sample_context()).text
    assert "Rs 1,299" in cod
    email = renderer.render(ChannelKind.EMAIL, "out_for_delivery_cod", sample_context())
    assert "₹1,299" in (email.subject or "") and "₹1,299" in email.text
    prepaid = sample_context(order_type="PREPAID")
    assert "Rs" not in renderer.render(ChannelKind.SMS, "out_for_delivery", prepaid).text


def test_rto_delivered_refunds_prepaid_and_charges_nothing_for_cod() -> None:
    renderer = Renderer(TEMPLATES)
    prepaid = renderer.render(
        ChannelKind.SMS, "rto_delivered", sample_context(order_type="PREPAID")
    )
    assert "refund" in prepaid.text and "Rs 1,299" in prepaid.text
    cod = renderer.render(ChannelKind.SMS, "rto_delivered", sample_context())
    assert "refund" not in cod.text and "nothing" in cod.text


def test_lost_damaged_says_which() -> None:
    renderer = Renderer(TEMPLATES)
    lost = renderer.render(ChannelKind.SMS, "lost_damaged", sample_context(status_code=16))
    damaged = renderer.render(ChannelKind.EMAIL, "lost_damaged", sample_context(status_code=17))
    assert " was lost in transit" in lost.text
    assert " was damaged in transit" in damaged.text


def test_edd_appears_only_when_known() -> None:
    renderer = Renderer(TEMPLATES)
    with_edd = renderer.render(ChannelKind.SMS, "shipped", sample_context()).text
    without = renderer.render(ChannelKind.SMS, "shipped", sample_context(edd=None)).text
    assert "07 Aug" in with_edd
    assert "reach you by" not in without


def test_email_footer_has_support_contact_and_escapes_customer_data() -> None:
    context = sample_context(name="<script>alert(1)</script> Sharma")
    email = Renderer(TEMPLATES).render(ChannelKind.EMAIL, "delivered", context)
    assert email.html is not None
    assert "<script>" not in email.html and "&lt;script&gt;" in email.html
    assert "mailto:care@acme.example" in email.html and "tel:18001234567" in email.html
