"""Templates are untrusted code: no escape from the sandbox, no hang, no flood, and a template
that fails at send time fails its own notification only, naming the file and line."""

from __future__ import annotations

import shutil
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Clock, registration, webhook

from notifier import Notifier, Settings
from notifier.errors import TemplateError
from notifier.events import ChannelKind
from notifier.rendering import Renderer, sample_context


def render(tmp_path: Path, source: str, *, seconds: float = 2.0) -> str:
    """Render ``source`` as line 2 of an SMS template (line 1 is plain text)."""
    folder = tmp_path / "templates" / "sms"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t.txt.j2").write_text("Hello\n" + source + "\n", encoding="utf-8")
    renderer = Renderer(tmp_path / "templates", max_render_seconds=seconds)
    return renderer.render(ChannelKind.SMS, "t", sample_context()).text


def refused(tmp_path: Path, source: str, *words: str, seconds: float = 2.0) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        render(tmp_path, source, seconds=seconds)
    message = str(caught.value)
    assert message.startswith("sms/t.txt.j2:2:"), message  # file and line, for staff
    for word in words:
        assert word in message, message
    return caught.value


# One test per known escape technique; each must fail before reaching anything dangerous.
ESCAPES = {
    "class_mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "subclasses": "{{ ().__class__.__base__.__subclasses__() }}",
    "globals_of_a_function": "{{ lipsum.__globals__['os'] }}",
    "init_globals": "{{ consumer.__init__.__globals__ }}",
    "cycler_init_globals": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "joiner_init_globals": "{{ joiner.__init__.__globals__ }}",
    "namespace_init": "{{ namespace.__init__.__globals__ }}",
    "lipsum_globals": "{{ lipsum.__globals__.os }}",
    "range_class": "{{ range.__class__.__base__ }}",
    "template_reference_context": "{{ self._TemplateReference__context }}",
    "self_init": "{{ self.__init__.__globals__ }}",
    "attr_filter": "{{ consumer|attr('__class__') }}",
    "attr_filter_hex": "{{ consumer|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "str_format_field": "{{ '{0.__class__}'.format(consumer) }}",
    "str_format_index": "{{ '{0.__init__.__globals__}'.format(cycler) }}",
    "format_map": "{{ '{x.__class__}'.format_map({'x': consumer}) }}",
    "attr_format_cve_2025_27516": "{{ ('{0.__class__}'|attr('format'))(consumer) }}",
    "map_format_cve_2024_56326": (
        "{{ (['{0.__class__}']|map(attribute='format')|first)(consumer) }}"
    ),
    "percent_format": "{{ '%s' % consumer.__class__ }}",
    "format_filter": "{{ '%s'|format(consumer.__class__) }}",
    "getitem_dunder": "{{ consumer['__class__'] }}",
    "mro_via_getitem": "{{ ''['__class__'] }}",
}


@pytest.mark.parametrize("source", ESCAPES.values(), ids=ESCAPES.keys())
def test_attribute_escapes_are_blocked(tmp_path: Path, source: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(tmp_path, source)
    message = str(caught.value)
    assert message.startswith("sms/t.txt.j2:2:"), message
    assert "unsafe" in message or "undefined" in message, message


@pytest.mark.parametrize("name", ["request", "config", "os", "__builtins__", "self.environment"])
def test_framework_objects_are_not_there(tmp_path: Path, name: str) -> None:
    """Flask's ``request``/``config`` and friends do not exist here: strict undefined."""
    refused(tmp_path, "{{ " + name + ".items() }}", "undefined")


@pytest.mark.parametrize(
    "source",
    [
        "{{ [1].append(2) }}",
        "{{ consumer.update({'name': 'x'}) }}",
        "{{ consumer.pop('name') }}",
        "{{ consumer.clear() }}",
        "{{ shipment.setdefault('x', 1) }}",
        "{{ brand.__setitem__('name', 'x') }}",
        "{% set l = [1] %}{{ l.extend([2]) }}",
    ],
)
def test_the_context_cannot_be_mutated(tmp_path: Path, source: str) -> None:
    refused(tmp_path, source, "unsafe")


def test_mutation_attempts_leave_the_context_alone(tmp_path: Path) -> None:
    context = sample_context()
    folder = tmp_path / "templates" / "sms"
    folder.mkdir(parents=True)
    (folder / "t.txt.j2").write_text("{{ consumer.update({'name': 'x'}) }}", encoding="utf-8")
    with pytest.raises(TemplateError):
        Renderer(tmp_path / "templates").render(ChannelKind.SMS, "t", context)
    assert context["consumer"]["name"] == "Priya Sharma"


# --- work: time and size ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("{% for i in range(10**9) %}x{% endfor %}", ("Range too big",)),
        ("{{ 'x' * 10**9 }}", ("output cap",)),
        ("{{ [0] * 10**9 }}", ("output cap",)),
        ("{{ 10 ** 100000 }}", ("too large",)),
        ("{{ 'x'.center(10**9) }}", ("output cap",)),
        ("{{ 'x'|center(10**9) }}", ("output cap",)),
        ("{{ 'x'.ljust(10**9) }}", ("output cap",)),
        ("{{ '1'.zfill(10**9) }}", ("output cap",)),
        ("{{ '{:999999999}'.format(1) }}", ("format width",)),
        ("{{ '{:{w}}'.format(1, w=10**9) }}", ("format width",)),
        ("{{ '%999999999d' % 1 }}", ("format width",)),
        ("{{ '%*d' % (10**9, 1) }}", ("format width",)),
        ("{{ '%999999999s'|format('x') }}", ("format width",)),
        ("{{ ('x' * 100000)|replace('', 'y' * 100000) }}", ("replace",)),
        ("{{ ('y' * 100000).join(range(10000)|map('string')|list) }}", ("join",)),
        ("{{ range(10000)|map('string')|join('y' * 100000) }}", ("join",)),
        ("{{ ('\\n' * 100000)|indent('y' * 100000, blank=True) }}", ("indent",)),
        ("{{ lipsum(100000) }}", ("lipsum",)),
    ],
)
def test_amplifiers_are_refused_before_they_allocate(
    tmp_path: Path, source: str, words: tuple[str, ...]
) -> None:
    """Each would allocate a gigabyte or more; refused, the render's peak stays far below.
    (Memory, not time, tells "before": a time bound failed on a busy machine at 1.03 s.)"""
    tracemalloc.start()
    try:
        refused(tmp_path, source, *words)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"peak {peak / 1e6:.1f} MB")
    assert peak < 32_000_000


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% set x = i * j %}"
        "{% endfor %}{% endfor %}",
        "{% for a in 'x' * 90000 %}{% for b in 'y' * 90000 %}{% endfor %}{% endfor %}",
        "{% macro spin(n) %}{% for i in range(100000) %}{% endfor %}{{ spin(n) if n else '' }}"
        "{% endmacro %}{% for i in range(100000) %}{{ spin(0) }}{% endfor %}",
        # No loop at all: 2**40 macro calls.
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}",
        # A filtered loop whose test never passes: no turn of its body ever runs.
        "{% for i in range(100000) %}{% for j in range(100000) if j < 0 %}{% endfor %}{% endfor %}",
        # A recursive loop walking a wide tree, again and again.
        "{% set tree = [{'c': range(100000)|list}] * 1000 %}"
        "{% for node in tree recursive %}{% if node.c is defined %}{{ loop(node.c) }}"
        "{% endif %}{% endfor %}",
    ],
    ids=[
        "nested_loops",
        "nested_loops_with_work",
        "loops_over_strings",
        "loops_in_macros",
        "exponential_macro_recursion",
        "filtered_loops",
        "recursive_loop",
    ],
)
def test_a_template_that_would_hang_is_stopped_in_time(tmp_path: Path, source: str) -> None:
    started = time.monotonic()
    refused(tmp_path, source, "longer than 0.3 s", seconds=0.3)
    assert time.monotonic() - started < 10  # unstopped, any of these runs for hours


def test_a_template_including_itself_exponentially_is_stopped_in_time(tmp_path: Path) -> None:
    """Includes are recursion without a call or a loop: each checks the budget too."""
    folder = tmp_path / "templates" / "sms"
    folder.mkdir(parents=True)
    (folder / "t.txt.j2").write_text("Hello\n{% include 'sms/boom.txt.j2' %}\n", encoding="utf-8")
    (folder / "boom.txt.j2").write_text(
        "{% set n = (n | default(40)) - 1 %}{% if n > 0 %}"
        "{% include 'sms/boom.txt.j2' %}{% include 'sms/boom.txt.j2' %}{% endif %}",
        encoding="utf-8",
    )
    renderer = Renderer(tmp_path / "templates", max_render_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        renderer.render(ChannelKind.SMS, "t", sample_context())
    assert "longer than 0.3 s" in str(caught.value)
    assert str(caught.value).startswith("sms/boom.txt.j2:1:"), str(caught.value)
    assert time.monotonic() - started < 10  # unstopped: 2**40 includes


def test_the_time_budget_is_per_render_and_a_debuggers_tracer_is_left_alone(
    tmp_path: Path,
) -> None:
    """A debugger or coverage tracer keeps seeing template code while the budget is kept."""
    import sys

    seen: set[str] = set()

    def mine(frame: Any, event: str, arg: object) -> None:
        seen.add(frame.f_code.co_filename)

    sys.settrace(mine)
    try:
        refused(tmp_path, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                          "{% endfor %}", "longer", seconds=0.2)  # fmt: skip
        assert sys.gettrace() is mine
    finally:
        sys.settrace(None)
    assert any(name.endswith("t.txt.j2") for name in seen), seen
    assert render(tmp_path, "{% for i in range(1000) %}{% endfor %}ok", seconds=0.2) == "Hello\nok"


def test_output_is_capped(tmp_path: Path) -> None:
    refused_output = "{% for i in range(100000) %}xxxxxxxxxx{% endfor %}"
    with pytest.raises(TemplateError, match="output longer than 100000 characters"):
        render(tmp_path, refused_output)


def test_unbounded_recursion_is_a_template_error(tmp_path: Path) -> None:
    """Stopped by the sandbox's own depth limit, not Python's RecursionError, which could
    surface in a generator's cleanup as an unraisable error instead (a CI run saw it)."""
    refused(tmp_path, "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
            "not allowed in templates: calls nested deeper than 64")  # fmt: skip


def _includes(tmp_path: Path, boom: str) -> Renderer:
    folder = tmp_path / "templates" / "sms"
    folder.mkdir(parents=True)
    (folder / "t.txt.j2").write_text("Hello\n{% include 'sms/boom.txt.j2' %}", encoding="utf-8")
    (folder / "boom.txt.j2").write_text(boom, encoding="utf-8")
    return Renderer(tmp_path / "templates")


def test_a_template_including_itself_without_end_is_a_template_error(tmp_path: Path) -> None:
    """Stopped by the sandbox's own depth limit, naming it, not by Python's RecursionError."""
    renderer = _includes(tmp_path, "x{% include 'sms/boom.txt.j2' %}")
    with pytest.raises(TemplateError) as caught:
        renderer.render(ChannelKind.SMS, "t", sample_context())
    assert "templates included nested deeper than 64" in str(caught.value)
    assert str(caught.value).startswith("sms/boom.txt.j2:1:"), str(caught.value)


def test_templates_included_a_few_deep_render(tmp_path: Path) -> None:
    boom = "{% set n = (n | default(60)) - 1 %}{{ n }}{% if n %} {% include 'sms/boom.txt.j2' %}"
    renderer = _includes(tmp_path, boom + "{% endif %}")
    rendered = renderer.render(ChannelKind.SMS, "t", sample_context())
    assert rendered.text == "Hello\n" + " ".join(str(n) for n in range(59, -1, -1))


def test_macros_nested_a_few_deep_render(tmp_path: Path) -> None:
    source = "{% macro f(n) %}{{ n }}{{ f(n - 1) if n else '' }}{% endmacro %}{{ f(60) }}"
    assert render(tmp_path, source) == "Hello\n" + "".join(str(n) for n in range(60, -1, -1))


def test_ordinary_formatting_still_works(tmp_path: Path) -> None:
    source = "{{ '{:,}'.format(150000) }} {{ '%05d' % 42 }} [{{ 'ab'|center(6) }}] {{ 'a-b'|replace('-', '+') }}"  # noqa: E501
    assert render(tmp_path, source) == "Hello\n150,000 00042 [  ab  ] a+b"


# --- at send time: the failing notification fails, the others go out ------------------------


@pytest.fixture
def breakable(tmp_path: Path, settings: Settings) -> tuple[Settings, Path]:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    return settings.model_copy(update={"templates": templates}), templates


async def _two_customers(n: Notifier, clock: Clock) -> None:
    for waybill, name in (("WB-OK-1", "Priya Sharma"), ("WB-BOOM-2", "Boom Tester")):
        body = registration(waybill=waybill, phone="9876543210", reference_number=waybill)
        body["consumer_details"]["name"] = name
        await n.register_shipment(body)
        await n.handle_webhook(webhook(waybill=waybill, code=6, at=clock.now))


async def test_a_template_failing_at_send_time_fails_only_its_notification(
    breakable: tuple[Settings, Path], clock: Clock
) -> None:
    settings, templates = breakable
    sms = templates / "sms" / "out_for_delivery.txt.j2"
    sms.write_text(
        "Hi {{ consumer.first_name }},\n"
        "{% if consumer.name.startswith('Boom') %}\n"
        "{{ shipment.no_such_field }}\n"
        "{% endif %}your order is out for delivery.\n",
        encoding="utf-8",
    )
    async with Notifier(settings, clock=clock) as n:
        await _two_customers(n, clock)
        report = await n.dispatch_due()
        log = {(r["waybill"], r["channel"]): r for r in await n.notifications()}
    assert report.counts == {"sent": 3, "failed": 1}
    failed = log[("WB-BOOM-2", "sms")]
    assert failed["status"] == "failed"
    assert "sms/out_for_delivery.txt.j2:3" in failed["reason"], failed["reason"]
    assert "no_such_field" in failed["reason"]
    assert {log[k]["status"] for k in log if k != ("WB-BOOM-2", "sms")} == {"sent"}


async def test_a_hanging_template_is_stopped_and_the_batch_goes_on(
    breakable: tuple[Settings, Path], clock: Clock
) -> None:
    settings, templates = breakable
    (templates / "sms" / "out_for_delivery.txt.j2").write_text(
        "{% if consumer.name.startswith('Boom') %}"
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        "{% endif %}Hi, your order is out for delivery.\n",
        encoding="utf-8",
    )
    async with Notifier(settings, clock=clock) as n:
        n.renderer.max_render_seconds = 0.3
        await _two_customers(n, clock)
        started = time.monotonic()
        report = await n.dispatch_due()
        elapsed = time.monotonic() - started
        log = {(r["waybill"], r["channel"]): r for r in await n.notifications()}
    assert elapsed < 30  # unstopped, the loop runs for hours
    assert report.counts == {"sent": 3, "failed": 1}
    reason = log[("WB-BOOM-2", "sms")]["reason"]
    assert "sms/out_for_delivery.txt.j2:1" in reason and "longer than 0.3 s" in reason


async def test_stored_data_that_no_longer_parses_fails_one_notification(
    notifier: Notifier, clock: Clock
) -> None:
    """Not a template error, but the same promise: one bad row never stops the batch."""
    await _two_customers(notifier, clock)
    from sqlalchemy import update

    from notifier.store.models import Shipment

    with notifier.db.write() as session:
        session.execute(
            update(Shipment).where(Shipment.waybill == "WB-BOOM-2").values(registration={})  # type: ignore[arg-type]
        )
    report = await notifier.dispatch_due()
    log = {(r["waybill"], r["channel"]): r for r in await notifier.notifications()}
    assert report.counts == {"sent": 2, "failed": 2}
    assert log[("WB-BOOM-2", "sms")]["reason"].startswith("cannot prepare the message")
    assert log[("WB-OK-1", "sms")]["status"] == "sent"
