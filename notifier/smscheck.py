"""What Indian SMS routes accept, checked on rendered SMS: segments, encoding and DLT variables.

Used by :mod:`notifier.checking` (``notifier check``) on every SMS template a rule can send.

**Segments and encoding.** One character outside the GSM-7 alphabet (``₹``, a curly quote)
turns the whole SMS into UCS-2: 70 characters a part instead of 160 (:mod:`notifier.segments`).
A language variant in an Indian script (``templates/sms/delivered.hi.txt.j2``, see
:mod:`notifier.languages`) is expected to be UCS-2; any other SMS template is expected to be
GSM-7 unless ``notifier check --allow-unicode``. The segment limit applies to both.

**DLT header.** India's TRAI DLT rules (clickpost-facts.md) require every commercial SMS to
match a registered template, whose variable parts (``{#var#}``) hold at most 40 characters each.
An SMS template records its registration in one Jinja comment, anywhere in the file (by
convention its first line)::

    {# dlt: template_id=1107161234567890123 #}

Jinja drops comments, so the header never reaches the customer. ``template_id`` is the number
the DLT portal gave; until the template is registered write a placeholder such as
``PENDING-REGISTRATION`` (a warning). For a template with a header, every ``{{ … }}`` is one
DLT variable: the check renders the template with sample data and reports, at the line and
column of the expression, any variable that fills in more than 40 characters. Expressions in
files pulled in with ``include``/``extends`` are not traced: SMS templates are single files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from notifier.errors import Problem, TemplateError
from notifier.filters import FILTERS
from notifier.segments import GSM_BASIC, GSM_EXTENSION, count_segments, is_gsm7
from notifier.yamlsource import did_you_mean

#: ISO 639 codes of India's scheduled languages written in non-Latin scripts: an SMS in any of
#: them cannot be GSM-7, so a template tagged with one is expected to be UCS-2.
# fmt: off
UNICODE_LANGUAGES = frozenset({
    "as", "bn", "brx", "doi", "gu", "hi", "kn", "kok", "ks", "mai", "ml", "mni", "mr", "ne",
    "or", "pa", "sa", "sat", "sd", "ta", "te", "ur",
})
# fmt: on

#: What to type instead of the characters that most often turn an SMS into Unicode.
GSM_SUBSTITUTES: Mapping[str, str] = {
    "₹": "Rs",
    "‘": "'",
    "’": "'",
    "“": '"',
    "”": '"',
    "…": "...",
    "–": "-",
    "—": "-",
    "•": "-",
    "\t": "a space",
    "\u00a0": "a plain space",
}

_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_STATEMENT = re.compile(r"\{%.*?%\}", re.DOTALL)
_HEADER = re.compile(r"\{#-?\s*dlt\s*:(?P<body>.*?)-?#\}", re.DOTALL | re.IGNORECASE)
_HEADER_KEYS = ("template_id",)
_SLOT_FILTER = "__dlt_slot"  # a name templates cannot type, so only the tracer adds it
_RECORDER = "__dlt_slots"


def expects_unicode(language: str | None) -> bool:
    """``hi`` → True: an SMS in a language of an Indian script cannot be GSM-7."""
    return language in UNICODE_LANGUAGES


def _blank(source: str, pattern: re.Pattern[str]) -> str:
    """``source`` with every match of ``pattern`` replaced by spaces, keeping lines and columns."""
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), source)


def first_text_line(source: str) -> int:
    """The first line that prints something: where a person reads "this message" from."""
    code = _blank(_blank(source, _COMMENT), _STATEMENT)
    return next((n for n, row in enumerate(code.split("\n"), 1) if row.strip()), 1)


def _find_non_gsm(source: str) -> tuple[int, int, str] | None:
    """(line, column, character) of the first non-GSM character outside Jinja comments."""
    for number, row in enumerate(_blank(source, _COMMENT).split("\n"), 1):
        for index, char in enumerate(row):
            if char not in GSM_BASIC and char not in GSM_EXTENSION:
                return number, index + 1, char
    return None


# ---- segments and encoding --------------------------------------------------------------------


def segment_problem(
    file: str, source: str, text: str, *, max_segments: int, during: str
) -> Problem | None:
    """A warning when ``text`` needs more than ``max_segments`` SMS parts: each part is billed."""
    info = count_segments(text)
    if info.segments <= max_segments:
        return None
    message = (
        f"{info.characters} characters, {info.segments} SMS segments ({info.encoding}), "
        f"more than {max_segments}, {during}"
    )
    hint = "shorten the text: one SMS part holds 160 plain characters, or 70 if it is Unicode"
    return _warning(file, first_text_line(source), 1, message, hint)


@dataclass(frozen=True, kw_only=True)
class Slot:
    """One ``{{ … }}`` of a render: where it is typed, as typed, and what it filled in."""

    line: int
    column: int
    expression: str
    value: str


def encoding_problem(
    file: str, source: str, text: str, *, slots: Callable[[], list[Slot]], during: str
) -> Problem | None:
    """A warning when ``text`` is UCS-2, at the character's place in the template, or at the
    ``{{ … }}`` that filled it in when it comes from the data (a brand name, say)."""
    if is_gsm7(text):
        return None
    cost = _cost(text)
    found = _find_non_gsm(source)
    if found is not None:
        line, column, char = found
        message = f"{char!r} makes this SMS Unicode: {cost}, {during}"
        return _warning(file, line, column, message, _unicode_hint(char))
    slot = next((s for s in slots() if not is_gsm7(s.value)), None)
    char = next((c for c in (slot.value if slot else text) if not is_gsm7(c)), "?")
    message = f"{char!r} makes this SMS Unicode: {cost}, {during}"
    if slot is None:
        return _warning(file, 1, 1, message, _unicode_hint(char))
    message = f"{slot.expression} fills in {slot.value!r}: {message}"
    return _warning(file, slot.line, slot.column, message, _unicode_hint(char))


def _cost(text: str) -> str:
    """What Unicode costs here: ``its 154 characters take 3 parts of 70 instead of 1 of 160``."""
    unicode = count_segments(text)
    plain = count_segments("".join(c if is_gsm7(c) else "?" for c in text))
    return (
        f"its {unicode.characters} characters take {unicode.segments} part(s) of 70"
        f" instead of {plain.segments} of 160"
    )


def _unicode_hint(char: str) -> str:
    instead = GSM_SUBSTITUTES.get(char)
    fix = f"write {instead} instead of {char!r}" if instead else f"remove {char!r}"
    tag = "or, if the message is meant to be in Hindi (say), name the file <name>.hi.txt.j2"
    return f"{fix}; {tag}"


# ---- the DLT header -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DltHeader:
    """The ``{# dlt: … #}`` comment of an SMS template."""

    template_id: str
    line: int
    column: int

    @property
    def registered(self) -> bool:
        """A DLT portal id is a long number; anything else is a placeholder."""
        return self.template_id.isdigit() and len(self.template_id) >= 12


def read_dlt_header(file: str, source: str) -> tuple[DltHeader | None, list[Problem]]:
    """The header and its problems: an unknown key or a missing id is an error, since the
    check would otherwise run without the registration the person meant to record."""
    match = _HEADER.search(source)
    if match is None:
        return None, []
    line = source.count("\n", 0, match.start()) + 1
    column = match.start() - source.rfind("\n", 0, match.start())
    fields, problems = _header_fields(match["body"]), []
    for key in fields.keys() - set(_HEADER_KEYS):
        hint = _did_you_mean(key, _HEADER_KEYS)
        problems.append(_error(file, line, column, f"unknown DLT header key {key!r}", hint))
    template_id = fields.get("template_id", "")
    if not template_id:
        hint = "write {# dlt: template_id=<the id from the DLT portal> #}"
        problems.append(_error(file, line, column, "DLT header without a template_id", hint))
        return None, problems
    header = DltHeader(template_id=template_id, line=line, column=column)
    if not header.registered:
        message = f"DLT template id {template_id!r} is a placeholder, not a registered id"
        hint = "operators block unregistered SMS: fill in the id the DLT portal gave"
        problems.append(_warning(file, line, column, message, hint))
    return header, problems


def _header_fields(body: str) -> dict[str, str]:
    pairs = (part.partition("=") for part in re.split(r"[\s,;]+", body.strip()) if part)
    return {key.strip().lower(): value.strip() for key, _, value in pairs}


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    return did_you_mean(word, list(choices)) or "the header takes template_id=..."


def slot_problems(
    file: str, traced: Iterable[tuple[str, list[Slot]]], *, limit: int
) -> list[Problem]:
    """One error per ``{{ … }}`` that fills in more than ``limit`` characters for some sample
    (``traced`` pairs a description of each sample with its slots); the longest is shown."""
    longest: dict[tuple[int, int], tuple[Slot, str]] = {}
    for during, slots in traced:
        for slot in slots:
            seen = longest.get((slot.line, slot.column))
            if len(slot.value) > limit and (seen is None or len(slot.value) > len(seen[0].value)):
                longest[(slot.line, slot.column)] = (slot, during)
    return [
        _error(
            file,
            slot.line,
            slot.column,
            f"DLT variable longer than {limit} characters: {slot.expression} fills in "
            f"{len(slot.value)} ({slot.value!r}), {during}",
            f"DLT rejects the SMS; shorten it, e.g. {{{{ ... | shorten({limit}) }}}}",
        )
        for slot, during in longest.values()
    ]


# ---- tracing what each {{ … }} fills in ---------------------------------------------------


class SlotTracer:
    """Renders SMS templates with every ``{{ … }}`` output recorded, with its line and column.

    Each output expression of the parsed template is wrapped in a recording filter before it
    is compiled, so the values are exactly what the customer would get (same sandbox, filters
    and whitespace settings as :class:`notifier.rendering.Renderer`'s text templates).
    """

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self._env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(templates_dir),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters.update(FILTERS)
        self._env.filters[_SLOT_FILTER] = _record
        self._compiled: dict[str, tuple[jinja2.Template, list[tuple[int, int, str]]]] = {}

    def trace(self, path: str, context: Mapping[str, Any]) -> list[Slot]:
        """The slots of one render of ``path`` (relative to the templates folder)."""
        template, places = self._instrumented(path)
        recorded: list[tuple[int, str]] = []
        try:
            template.render({**context, _RECORDER: recorded})
        except Exception as err:  # staff-written code: any failure is a template error
            raise TemplateError(f"tracing DLT variables: {err}", template=path) from err
        return [
            Slot(line=places[i][0], column=places[i][1], expression=places[i][2], value=value)
            for i, value in recorded
        ]

    def _instrumented(self, path: str) -> tuple[jinja2.Template, list[tuple[int, int, str]]]:
        if path not in self._compiled:
            source = (self.templates_dir / path).read_text(encoding="utf-8")
            tree = self._env.parse(source, path, str(self.templates_dir / path))
            places = _wrap_outputs(tree, source)
            self._compiled[path] = (self._env.from_string(tree), places)
        return self._compiled[path]


@jinja2.pass_context  # a context filter is never folded into a constant at compile time
def _record(context: Context, value: Any, index: int) -> Any:
    recorded = context.get(_RECORDER)
    if isinstance(recorded, list):
        recorded.append((index, str(value)))
    return value


def _wrap_outputs(tree: nodes.Template, source: str) -> list[tuple[int, int, str]]:
    """Wrap each output expression in the recording filter; (line, column, text) of each.

    Outputs are visited in source order, so the k-th expression on a line is its k-th ``{{``.
    """
    openings = _openings(source)
    places: list[tuple[int, int, str]] = []
    for output in tree.find_all(nodes.Output):
        for position, node in enumerate(output.nodes):
            if isinstance(node, nodes.TemplateData):
                continue
            line = node.lineno
            on_line = openings.setdefault(line, [])
            column, text = on_line.pop(0) if on_line else (1, "{{ ... }}")
            index: list[nodes.Expr] = [nodes.Const(len(places))]
            output.nodes[position] = nodes.Filter(
                node, _SLOT_FILTER, index, [], None, None, lineno=line
            )
            places.append((line, column, text))
    return places


def _openings(source: str) -> dict[int, list[tuple[int, str]]]:
    """Per line, the column and text of each ``{{ … }}`` outside comments."""
    found: dict[int, list[tuple[int, str]]] = {}
    code = _blank(source, _COMMENT)
    for match in re.finditer(r"\{\{.*?\}\}", code, re.DOTALL):
        line = code.count("\n", 0, match.start()) + 1
        column = match.start() - code.rfind("\n", 0, match.start())
        text = " ".join(match.group(0).split())
        found.setdefault(line, []).append((column, text))
    return found


def _error(file: str, line: int, column: int, message: str, hint: str) -> Problem:
    return Problem(file=file, line=line, column=column, message=message, hint=hint)


def _warning(file: str, line: int, column: int, message: str, hint: str) -> Problem:
    return Problem(
        file=file, line=line, column=column, message=message, hint=hint, severity="warning"
    )


def dlt_header_problems(files: Iterable[Path]) -> Iterator[Problem]:
    """Header mistakes in the SMS templates ``files``, whether or not a rule sends them yet.

    A template without a header is not a problem: routes outside India, or that register
    templates elsewhere, need none.
    """
    for path in files:
        yield from read_dlt_header(str(path), path.read_text(encoding="utf-8"))[1]
