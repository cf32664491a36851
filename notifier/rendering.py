"""Render customer messages from Jinja templates that support staff edit.

Templates are addressed by a base name (``delivered``); the channel picks the files::

    templates/sms/<name>.txt.j2
    templates/whatsapp/<name>.txt.j2
    templates/email/<name>.subject.j2, <name>.txt.j2 (both required), <name>.html.j2 (optional)

A language variant puts its code before the suffix (``sms/delivered.hi.txt.j2``). A message
is in one language throughout: the variant only when all its required parts exist, else the
default; never a Hindi subject over an English body.

Files whose name starts with ``_`` are partials and layouts (``email/_layout.html.j2``), never
messages. Staff-edited templates are untrusted code: they run in Jinja's immutable sandbox with
``StrictUndefined`` (a typo fails loudly instead of sending "Hi ,"), output is capped, and the
obvious ways to allocate gigabytes (``'x' * 10**9``) are refused. Only the HTML environment
autoescapes: escaping an SMS would send ``&amp;`` to a phone. Every failure becomes a
:class:`~notifier.errors.TemplateError` naming the template file and line.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import quote

import jinja2
from jinja2 import meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from notifier import sandbox
from notifier.clickpost import codes
from notifier.errors import ConfigurationError, Problem, TemplateError
from notifier.events import Brand, ChannelKind, Consumer, Registration, Scan, ShipmentUpdate
from notifier.filters import FILTERS, IST, first_name
from notifier.languages import message_files, normalize_language, tagged

#: Per channel: (file suffix, required) for each part of a message, in render order.
_PARTS: dict[ChannelKind, tuple[tuple[str, bool], ...]] = {
    ChannelKind.SMS: ((".txt.j2", True),),
    ChannelKind.WHATSAPP: ((".txt.j2", True),),
    ChannelKind.EMAIL: ((".subject.j2", True), (".txt.j2", True), (".html.j2", False)),
}
_MAX_POWER_BITS = 4096
_BASE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True, kw_only=True)
class Rendered:
    """A rendered message: ``subject`` and ``html`` only for email (``html`` when it has one);
    ``language`` is the variant used (None: the default), not necessarily the one asked for."""

    subject: str | None
    text: str
    html: str | None
    language: str | None = None


class _TimedLoops(CodeGenerator):
    """Compiles every ``{% for %}`` to iterate through the environment's ``timed_loop``, which
    checks the render's time budget before each turn (:mod:`notifier.sandbox`)."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        timed = copy.copy(node)
        timed.iter = nodes.Call(nodes.EnvironmentAttribute("timed_loop"), [node.iter], [],
                                None, None, lineno=node.iter.lineno)  # fmt: skip
        super().visit_For(timed, frame)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, also refusing ``*`` and ``**`` results too big to ever send, and
    keeping each render within its time budget.

    Jinja's sandbox guards attribute access, not work: ``{{ '-' * 10**10 }}`` would allocate
    10 GB before any output cap could look at it, and nested loops run for hours.
    """

    code_generator_class = _TimedLoops
    intercepted_binops = frozenset({"*", "**", "%"})
    max_output_chars: int = 100_000

    def timed_loop(self, iterable: Any) -> Iterator[Any]:
        return sandbox.timed(iterable)

    def get_template(self, *args: Any, **kwargs: Any) -> jinja2.Template:
        """Also what ``{% include %}``, ``{% import %}`` and ``{% extends %}`` call at render
        time: a template including itself is recursion without a call."""
        sandbox.check_time()
        sandbox.check_nesting(self)
        return super().get_template(*args, **kwargs)

    def select_template(self, *args: Any, **kwargs: Any) -> jinja2.Template:
        sandbox.check_time()
        sandbox.check_nesting(self)
        return super().select_template(*args, **kwargs)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Every call a template makes, once the time budget is checked; str methods are
        checked for oversized results first (``'x'.center(10**9)``,
        ``'{:999999999}'.format(1)``): see :mod:`notifier.sandbox`."""
        sandbox.check_time()
        subject = getattr(__obj, "__self__", None)
        if isinstance(subject, str):
            name = getattr(__obj, "__name__", "")
            args = tuple(sandbox.materialized(name, args))
            sandbox.check_call(name, subject, args, kwargs, __self.max_output_chars)
        nested = sandbox.enter_call()
        try:
            return super().call(__context, __obj, *args, **kwargs)
        finally:
            sandbox.leave_call(nested)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` as the sandbox runs it, refusing huge widths first (``'{:999999999}'``;
        Jinja wraps the method, so :meth:`call` never sees the string)."""
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            sandbox.check_format(str(value.__self__), self.max_output_chars)
        return wrapped

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%":
            if isinstance(left, str):
                sandbox.check_format(left, self.max_output_chars)
        elif operator == "*":
            self._check_repeat(left, right)
            self._check_repeat(right, left)
        elif _is_int(left) and _is_int(right) and left.bit_length() * abs(right) > _MAX_POWER_BITS:
            raise SecurityError(f"{left} ** {right} is too large")
        return super().call_binop(context, operator, left, right)

    def _check_repeat(self, seq: Any, times: Any) -> None:
        is_sequence = isinstance(seq, str | list | tuple)
        if is_sequence and _is_int(times) and len(seq) * times > self.max_output_chars:
            raise SecurityError("repetition longer than the output cap")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int)


class Renderer:
    """Loads, checks and renders the templates folder. Templates reload when edited."""

    def __init__(
        self,
        templates_dir: Path,
        *,
        max_output_chars: int = 100_000,
        max_render_seconds: float = sandbox.DEFAULT_RENDER_SECONDS,
    ) -> None:
        self.templates_dir = Path(templates_dir)
        self.max_output_chars = max_output_chars
        self.max_render_seconds = max_render_seconds
        self._text_env = self._environment(autoescape=False)
        self._html_env = self._environment(autoescape=True)

    def _environment(self, *, autoescape: bool) -> _Sandbox:
        env = _Sandbox(
            loader=jinja2.FileSystemLoader(self.templates_dir),
            undefined=jinja2.StrictUndefined,
            autoescape=autoescape,
            # Compiled once, not checked against the disk at every render (a stat per
            # message); the reload job calls reload() when a file changed.
            auto_reload=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.max_output_chars = self.max_output_chars
        env.filters.update(FILTERS)
        for name in sandbox.AMPLIFYING_FILTERS:
            env.filters[name] = sandbox.guard_filter(name, env.filters[name], self.max_output_chars)
        env.globals["lipsum"] = sandbox.capped_lipsum(env.globals["lipsum"])
        return env

    def reload(self) -> None:
        """Forget the compiled templates: the next render of each reads its file again."""
        for env in (self._text_env, self._html_env):
            if env.cache is not None:
                env.cache.clear()

    def _env_for(self, path: str) -> _Sandbox:
        return self._html_env if path.endswith(".html.j2") else self._text_env

    def files_for(
        self, channel: ChannelKind, name: str, language: str | None = None
    ) -> list[tuple[str, bool]]:
        """The template paths (relative, ``/``-separated) a message uses, and which are required.
        ``language``, a code of ``LANGUAGE_CODES`` or None (default), picks the variant."""
        _check_name(name)
        channel = ChannelKind(channel)
        stem = tagged(f"{channel.value}/{name}", language)
        return [(f"{stem}{suffix}", req) for suffix, req in _PARTS[channel]]

    def missing(self, channel: ChannelKind, name: str, language: str | None = None) -> str | None:
        """A plain message naming the required files that do not exist, or None when complete.

        Also a message, not an exception, for a name that cannot be a template: the rules
        loader reports it at the rule's line.
        """
        if problem := _name_problem(name):
            return problem
        files = self.files_for(channel, name, language)
        absent = [p for p, req in files if req and not self._exists(p)]
        if not absent:
            return None
        noun = "template" if len(absent) == 1 else "templates"
        return f"missing {noun} {', '.join(absent)} in {self.templates_dir}"

    def _exists(self, path: str) -> bool:
        return (self.templates_dir / path).is_file()

    def messages(self) -> list[tuple[ChannelKind, str]]:
        """Every (channel, base name) that has a message file, for checks and previews; a
        language variant is not a message of its own (``delivered.hi`` is ``delivered``)."""
        return sorted(self._scan())

    def languages(self, channel: ChannelKind, name: str) -> list[str]:
        """The languages with a complete variant of a message (the default not included)."""
        tags = self._scan().get((ChannelKind(channel), name), {})
        return sorted(t for t in tags if t and self.missing(channel, name, t) is None)

    def _scan(self) -> dict[tuple[ChannelKind, str], dict[str | None, Path]]:
        """Each message that has a file, with the languages (None: default) that have any."""
        return {
            (channel, name): files
            for channel, parts in _PARTS.items()
            for name, files in message_files(self.templates_dir / channel.value, parts).items()
        }

    def render(
        self,
        channel: ChannelKind,
        name: str,
        context: Mapping[str, Any],
        language: str | None = None,
    ) -> Rendered:
        """Render one message, in ``language`` (any spelling ``normalize_language`` knows) when
        it has a complete variant, else the default. TemplateError when missing or broken."""
        chosen = self._variant(channel, name, normalize_language(language))
        outputs: dict[str, str | None] = {}
        for path, required in self.files_for(channel, name, chosen):
            if not required and not self._exists(path):
                outputs[path] = None
                continue
            outputs[path] = self._render_file(path, context)
        subject, text, html = _assemble(ChannelKind(channel), list(outputs.values()))
        return Rendered(subject=subject, text=text, html=html, language=chosen)

    def _variant(self, channel: ChannelKind, name: str, language: str | None) -> str | None:
        """``language`` if its variant has every required part, else None (the default)."""
        if language and self.missing(channel, name, language) is None:
            return language
        return None

    def render_variables(
        self, expressions: Sequence[tuple[str, str]], context: Mapping[str, Any], *, where: str
    ) -> dict[str, str]:
        """WhatsApp approved-template variables: each a Jinja expression such as
        ``consumer.first_name``, evaluated in the sandbox; ``where`` names the rule in errors."""
        values: dict[str, str] = {}
        for key, source in expressions:
            try:
                expression = self._text_env.compile_expression(source, undefined_to_none=False)
                with sandbox.deadline(self.max_render_seconds):
                    value = expression(**context)
            except Exception as err:  # staff-written expression: any failure is theirs
                message = f"content variable {key} ({source}): {_describe(err)}"
                raise TemplateError(message, template=where) from err
            values[key] = str(value).strip()[:1024]  # Meta's limit per variable
        return values

    def _render_file(self, path: str, context: Mapping[str, Any]) -> str:
        try:
            template = self._env_for(path).get_template(path)
            with sandbox.deadline(self.max_render_seconds):
                return self._capped(path, template.generate(dict(context)))
        except TemplateError:
            raise
        except jinja2.TemplateSyntaxError as err:
            where = err.name or path
            raise TemplateError(err.message or str(err), template=where, line=err.lineno) from err
        except Exception as err:  # staff-written code: any failure is a template error
            where, line = self._locate(err, path)
            raise TemplateError(_describe(err), template=where, line=line) from err

    def _capped(self, path: str, chunks: Iterator[str]) -> str:
        """Join the output, stopping as soon as it passes the cap (a loop can emit megabytes)."""
        out: list[str] = []
        size = 0
        for chunk in chunks:
            size += len(chunk)
            if size > self.max_output_chars:
                message = f"output longer than {self.max_output_chars} characters"
                raise TemplateError(message, template=path)
            out.append(chunk)
        return "".join(out)

    def _locate(self, err: BaseException, default: str) -> tuple[str, int | None]:
        """The innermost template frame of the error: Jinja rewrites frames to template lines."""
        root = self.templates_dir.resolve()
        for frame in reversed(traceback.extract_tb(err.__traceback__)):
            file = Path(frame.filename).resolve()
            if file.is_relative_to(root) and file.name.endswith(".j2"):
                return file.relative_to(root).as_posix(), frame.lineno
        return default, None

    def check(self) -> list[Problem]:
        """Compile every template; one Problem per syntax error or broken reference.

        Also flags emails that lack a required part, so a half-added message fails at load
        time rather than at its first send; a half-added language variant too, since it would
        silently fall back to the default.
        """
        problems: list[Problem] = []
        for file in sorted(self.templates_dir.rglob("*.j2")):
            problems.extend(self._check_file(file))
        for (channel, name), files in sorted(self._scan().items()):
            for language in sorted({None, *files}, key=lambda tag: tag or ""):
                if gap := self.missing(channel, name, language):
                    gap += f"; {language} shoppers get the default until then" if language else ""
                    where = str(files.get(language) or min(files.values()))
                    problems.append(Problem(file=where, line=1, column=1, message=gap))
        return problems

    def _check_file(self, file: Path) -> list[Problem]:
        rel = file.relative_to(self.templates_dir).as_posix()
        env = self._env_for(rel)
        try:
            tree = env.parse(file.read_text(encoding="utf-8"), rel, str(file))
            env.compile(tree, rel, str(file))
            refs = meta.find_referenced_templates(tree)
        except jinja2.TemplateSyntaxError as err:
            return [Problem(file=str(file), line=err.lineno, column=1, message=err.message or "")]
        except (OSError, UnicodeDecodeError) as err:
            return [Problem(file=str(file), line=1, column=1, message=f"cannot read: {err}")]
        return [
            Problem(file=str(file), line=1, column=1, message=f"template {ref!r} not found")
            for ref in refs
            if ref is not None and not self._exists(ref)
        ]


def _name_problem(name: str) -> str | None:
    """Base names come from rules.yaml: refuse paths and partials before touching the disk."""
    if _BASE_NAME.fullmatch(name):
        return None
    return f"{name!r} is not a template base name (letters, digits, _ . -; not starting with _)"


def _check_name(name: str) -> None:
    if problem := _name_problem(name):
        raise TemplateError(problem, template=repr(name))


def _describe(err: Exception) -> str:
    """A message for staff: the undefined variable, the refused operation, or the error."""
    if isinstance(err, jinja2.UndefinedError):
        return f"undefined variable: {err.message}"
    if isinstance(err, sandbox.RenderTimeout):
        return f"stopped: {err.message}"
    if isinstance(err, SecurityError):
        return f"not allowed in templates: {err.message}"
    if isinstance(err, jinja2.TemplateNotFound):
        return f"template {err.name!r} not found"
    return f"{type(err).__name__}: {err}"


def _assemble(channel: ChannelKind, parts: list[str | None]) -> tuple[str | None, str, str | None]:
    """Tidy rendered parts: strip texts, fold the subject to one line (a header cannot wrap)."""
    if channel is ChannelKind.EMAIL:
        subject, text, html = parts
        return " ".join((subject or "").split()), (text or "").strip(), html
    return None, (parts[0] or "").strip(), None


# --- the context every template sees ---------------------------------------------------------


def build_context(
    *,
    registration: Registration,
    update: ShipmentUpdate | None,
    brand: Brand,
    tracking_url: str,
    consumer_phone: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The variables templates see, as plain dicts read with attribute syntax.

    ``consumer_phone`` is the normalized phone when planning has one. ``now`` drops an EDD
    already in the past (IST): "expected by" yesterday is worse than saying nothing.
    """
    shipment = _shipment(registration, update)
    return {
        "consumer": _consumer(registration.consumer, consumer_phone),
        "shipment": shipment,
        "status": _scan(update.latest) if update else None,
        "scan": _scan(update.scan) if update else None,
        "ndr": _ndr(update),
        "edd": _edd(update, now),
        "brand": dataclasses.asdict(brand),
        "tracking_url": _tracking_url(tracking_url, shipment),
    }


def _consumer(consumer: Consumer, phone: str) -> dict[str, Any]:
    return {
        "name": consumer.name,
        "first_name": first_name(consumer.name),
        "phone": phone or consumer.phone,
        "email": consumer.email,
    }


def _shipment(reg: Registration, update: ShipmentUpdate | None) -> dict[str, Any]:
    reference = reg.reference_number or (update.reference_number if update else None)
    order_id = reg.order_id or (update.order_id if update else None) or reference
    return {
        "waybill": reg.waybill,
        "cp_id": reg.cp_id,
        "account_code": reg.account_code or (update.account_code if update else None),
        "reference_number": reference,
        "order_id": order_id,
        "order_type": reg.order_type,
        "is_cod": reg.order_type == "COD",
        "cod_amount": reg.cod_amount,
        "invoice_value": reg.invoice_value,
        "item": reg.item,
        "delivery_type": reg.delivery_type,
        "is_rvp": reg.is_rvp or bool(update and update.is_rvp),
        "drop_pincode": reg.drop_pincode,
        "drop_address": reg.drop_address,
        "order_date": reg.order_date,
        "ship_date": reg.ship_date,
    }


def _scan(scan: Scan) -> dict[str, Any]:
    known = codes.status(scan.code)
    return {
        "code": scan.code,
        "name": known.name,
        "label": known.label,
        "description": scan.description,
        "location": scan.location,
        "remark": scan.remark,
        "timestamp": scan.timestamp,
        "bucket": scan.bucket if scan.bucket is not None else known.bucket,
    }


def _ndr(update: ShipmentUpdate | None) -> dict[str, Any] | None:
    if update is None or update.ndr_code is None:
        return None
    known = codes.ndr(update.ndr_code)
    return {
        "code": update.ndr_code,
        "name": known.name,
        "label": known.label,
        "description": update.ndr_description or "",
    }


def _edd(update: ShipmentUpdate | None, now: datetime | None) -> date | None:
    if update is None or update.edd is None:
        return None
    today = (now or datetime.now(UTC)).astimezone(IST).date()
    return update.edd if update.edd >= today else None


_URL_FIELDS = ("waybill", "cp_id", "reference_number", "order_id")


def _tracking_url(pattern: str, shipment: Mapping[str, Any]) -> str:
    """Fill the tracking URL pattern; values are URL-quoted, absent ones are empty.

    rules.py checks the placeholders at load time; this guards other callers.
    """
    values = {k: quote(str(shipment[k]), safe="") if shipment[k] else "" for k in _URL_FIELDS}
    try:
        return pattern.format(**values)
    except (KeyError, IndexError, ValueError) as err:
        usable = ", ".join("{" + f + "}" for f in _URL_FIELDS)
        raise ConfigurationError(f"tracking URL {pattern!r}: {err!r}; use {usable}") from err


def sample_context(
    *,
    order_type: str = "COD",
    status_code: int = 6,
    ndr_code: int | None = None,
    edd: date | None = date(2025, 8, 7),
    name: str = "Priya Sharma",
) -> dict[str, Any]:
    """Realistic Indian data for previews, ``notifier check`` and tests: a Rs 1,299 COD order."""
    when = datetime(2025, 8, 5, 4, 12, tzinfo=UTC)  # 09:42 IST
    description = codes.status(status_code).name
    scan = Scan(code=status_code, description=description, location="Mumbai_DC", timestamp=when)
    update = ShipmentUpdate(
        cp_id=4,
        waybill="SF18399217NER",
        scan=scan,
        latest=scan,
        ndr_code=ndr_code,
        ndr_description="Customer not available" if ndr_code is not None else None,
        edd=edd,
    )
    registration = _sample_registration(order_type, name)
    brand = Brand(
        name="Acme Store",
        support_phone="1800-123-4567",
        support_email="care@acme.example",
        website="https://acme.example",
    )
    return build_context(
        registration=registration,
        update=update,
        brand=brand,
        tracking_url="https://track.acme.example/{waybill}",
        consumer_phone="+919876543210",
        now=when,
    )


def _sample_registration(order_type: str, name: str) -> Registration:
    cod = order_type.upper() == "COD"
    return Registration(
        cp_id=4,
        waybill="SF18399217NER",
        account_code="Shadowfax Surface",
        consumer=Consumer(name=name, phone="09876543210", email="priya.sharma@example.in"),
        reference_number="ACME-240805-17",
        order_id="ACME-240805-17",
        order_type=order_type.upper(),
        delivery_type="FORWARD",
        item="Cotton Kurta Set (Blue, M)",
        invoice_value=Decimal("1299.00"),
        cod_amount=Decimal("1299.00") if cod else None,
        drop_pincode="400053",
        drop_address="Flat 302, Sai Krupa CHS, Lokhandwala, Andheri West, Mumbai",
        order_date=datetime(2025, 8, 1, 14, 30, tzinfo=UTC),
        ship_date=datetime(2025, 8, 3, 6, 0, tzinfo=UTC),
    )
