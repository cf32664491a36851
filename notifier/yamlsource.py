"""YAML that people edit, read with ruamel.yaml so every value keeps its line and column.

Support staff edit ``rules.yaml`` by hand, so a mistake must come back as ``file:line:col``
with a sentence they can act on, never as a stack trace or a silently different value. This
module owns that bridge, for any file validated by a pydantic model:

- it parses with the round-trip loader (which remembers where every node was) and forces
  YAML 1.2, so ``21:00`` stays text and ``no`` is not ``False``;
- it reports every tab and every duplicate key, and every plain ``yes``/``no``/``on``/``off``
  (YAML 1.1 tools read those as booleans), instead of stopping at the first;
- it maps each pydantic error's ``loc`` (``("rules", 2, "when")``) back to the node's
  position and rewrites the message in plain words, with a "did you mean ...?" hint.

Only this module imports ruamel.yaml.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, BeforeValidator, ValidationError, WithJsonSchema
from pydantic_core import ErrorDetails, PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scalarbool import ScalarBoolean

from notifier.errors import Problem

Loc = tuple[str | int, ...]
Shape = tuple[str, ...]  # a Loc without list indexes: says which model checks a mapping
M = TypeVar("M", bound=BaseModel)

#: Plain words that YAML 1.1 tools (PyYAML, older editors) read as booleans. Under YAML 1.2
#: they are text, so the same file means two things depending on who reads it.
AMBIGUOUS_WORDS = frozenset({"y", "n", "yes", "no", "on", "off"})

_MAX_TABS = 200  # a file indented with tabs throughout still gets a bounded report


@dataclass(frozen=True, kw_only=True)
class Document:
    """A parsed YAML file: the round-trip tree (``None`` when unusable) and what went wrong."""

    path: str
    text: str
    data: Any
    problems: tuple[Problem, ...]
    usable: bool

    def at(
        self,
        path: Loc,
        message: str,
        hint: str = "",
        *,
        key: bool = False,
        severity: str = "error",
    ) -> Problem:
        """A Problem located at ``path`` (at its key when ``key``: "this key is unknown")."""
        line, column = locate(self.data, path, key=key)
        return Problem(
            file=self.path, line=line, column=column, message=message, hint=hint, severity=severity
        )


def load(text: str, path: str) -> Document:
    """Parse ``text``; syntax errors, tabs and duplicate keys become located Problems.

    A file that does not parse is unusable: only its syntax problems are reported, since
    errors found in a guessed structure would mislead. ``data`` is None for an empty file.
    """
    try:
        node = _yaml().compose(text)
    except MarkedYAMLError as err:
        found = _tab_problems(text, path) or [_syntax_problem(err, path)]
        return Document(path=path, text=text, data=None, problems=tuple(found), usable=False)
    if node is None:
        return Document(path=path, text=text, data=None, problems=(), usable=True)
    data = _yaml(allow_duplicates=True).load(text)
    problems = tuple(_duplicate_keys(node, path))
    return Document(path=path, text=text, data=data, problems=problems, usable=True)


def _yaml(*, allow_duplicates: bool = False) -> YAML:
    yaml = YAML(typ="rt")
    yaml.version = (1, 2)  # sexagesimal 21:00 and yes/no booleans do not exist in 1.2
    yaml.preserve_quotes = True  # quoted scalars keep a str subclass: see plain_words()
    yaml.allow_duplicate_keys = allow_duplicates
    return yaml


def _tab_problems(text: str, path: str) -> list[Problem]:
    """Every tab that breaks the parse, not just the first: tabs in indentation are found
    line by line; any other is found by replacing each one the parser stops at and retrying.
    """
    problems, lines = [], text.split("\n")
    for number, row in enumerate(lines):
        indent = row[: len(row) - len(row.lstrip(" \t"))]
        if "\t" in indent:
            problems.append(_tab_problem(path, number, indent.index("\t")))
            lines[number] = indent.replace("\t", " ") + row[len(indent) :]
    for _ in range(_MAX_TABS):
        try:
            _yaml().compose("\n".join(lines))
            break
        except MarkedYAMLError as err:
            mark = err.problem_mark
            if mark is None or not _is_tab(lines, mark.line, mark.column):
                break
            problems.append(_tab_problem(path, mark.line, mark.column))
            row = lines[mark.line]
            lines[mark.line] = row[: mark.column] + " " + row[mark.column + 1 :]
    return problems


def _is_tab(lines: Sequence[str], line: int, column: int) -> bool:
    return line < len(lines) and column < len(lines[line]) and lines[line][column] == "\t"


def _tab_problem(path: str, line: int, column: int) -> Problem:
    return Problem(
        file=path,
        line=line + 1,
        column=column + 1,
        message="tab character: YAML does not allow tabs for indentation or spacing",
        hint="replace the tab with spaces",
    )


def _syntax_problem(err: MarkedYAMLError, path: str) -> Problem:
    mark = err.problem_mark or err.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    hint = ""
    if err.context and err.context_mark:
        hint = f"{err.context} started at line {err.context_mark.line + 1}"
    message = f"YAML syntax error: {err.problem or err.context or 'cannot parse'}"
    return Problem(file=path, line=line, column=column, message=message, hint=hint)


def _duplicate_keys(root: Node, path: str) -> Iterator[Problem]:
    """Every repeated key in every mapping: the loader would keep only one of them."""
    stack, seen_nodes = [root], set[int]()
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, MappingNode):
            yield from _duplicates_in(node, path)
            stack.extend(value for _, value in node.value)


def _duplicates_in(node: MappingNode, path: str) -> Iterator[Problem]:
    first_line: dict[str, int] = {}
    for key, _ in node.value:
        if not isinstance(key, ScalarNode):
            continue
        mark = key.start_mark
        if key.value in first_line:
            yield Problem(
                file=path,
                line=mark.line + 1,
                column=mark.column + 1,
                message=f"duplicate key {key.value!r}",
                hint=f"first given at line {first_line[key.value]}; only one can count",
            )
        else:
            first_line[key.value] = mark.line + 1


def locate(data: Any, loc: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
    """The 1-based (line, column) of the value at ``loc``, or of its key when ``key``.

    Walks as deep as ``loc`` goes in the file and stops at the first part that is not there
    (a missing key, or a validator's own label such as ``function-before[...]``): the
    deepest existing node is the best place to point an editor at.
    """
    node, (line, column) = data, _start(data)
    for index, part in enumerate(loc):
        if isinstance(node, CommentedMap) and part in node:
            spot = node.lc.data.get(part)  # None for a key merged in with <<: *anchor
            want_key = (key and index == len(loc) - 1) or node[part] is None
            if spot:
                line, column = spot[:2] if want_key else spot[2:]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line, column = node.lc.item(part)
        else:
            break
        node = node[part]
    return line + 1, column + 1


def _start(node: Any) -> tuple[int, int]:
    if isinstance(node, CommentedMap | CommentedSeq):
        return node.lc.line, node.lc.col
    return 0, 0


def plain_words(data: Any, path: Loc = ()) -> Iterator[tuple[Loc, str]]:
    """Unquoted values that YAML 1.1 would read as booleans (``no``, ``on``...), with paths.

    With ``preserve_quotes`` a quoted scalar is a ``str`` subclass, so an exact ``str`` is a
    plain scalar as the person typed it.
    """
    if isinstance(data, CommentedMap):
        items: Iterator[tuple[Any, Any]] = iter(data.items())
    elif isinstance(data, CommentedSeq):
        items = enumerate(data)
    else:
        if type(data) is str and data.lower() in AMBIGUOUS_WORDS:
            yield path, data
        return
    for part, value in items:
        if isinstance(part, str | int):
            yield from plain_words(value, (*path, part))


def plain(data: Any) -> Any:
    """The round-trip tree as plain dicts, lists, str, int, float and bool, for validation."""
    if isinstance(data, dict):
        return {plain(k): plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain(v) for v in data]
    if isinstance(data, bool | ScalarBoolean):
        return bool(data)
    for kind in (str, int, float):
        if isinstance(data, kind):
            return kind(data)
    return data


def source_token(text: str, line: int, column: int) -> str:
    """The scalar as typed at 1-based (line, column): ``21:00`` where YAML 1.1 saw 1260."""
    rows = text.split("\n")
    if not 0 < line <= len(rows):
        return ""
    match = re.match(r"[^,\]}#\n]*", rows[line - 1][column - 1 :])
    return match.group(0).strip() if match else ""


# ---- validation with pydantic, reported against the file ------------------------------------


class InvalidValue(ValueError):
    """A value that cannot be read; ``hint`` tells the person editing how to fix it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def fail(message: str, hint: str = "") -> NoReturn:
    """Inside a validator: fail with our own words (pydantic would prefix "Value error, ")."""
    raise PydanticCustomError("invalid", "{message}", {"message": message, "hint": hint})


def checked(parse: Callable[[Any], object], *, convert: bool = False) -> Callable[[Any], Any]:
    """A parser as a pydantic validator that reports its InvalidValue with the hint.

    It passes the input through unchanged unless ``convert``: then the parsed value.
    """

    def check(value: Any) -> Any:
        try:
            parsed = parse(value)
        except InvalidValue as err:
            fail(str(err), err.hint)
        return parsed if convert else value

    return check


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """``"did you mean X?"`` for the closest choice, ignoring case and separators; or ``""``."""
    folded = {_fold(c): c for c in choices}
    close = difflib.get_close_matches(_fold(word), folded, n=1, cutoff=0.6)
    return f"did you mean {folded[close[0]]}?" if close else ""


def _fold(word: str) -> str:
    return re.sub(r"[^0-9a-z]", "", word.lower())


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


#: Lets a field take one value or a list of them: ``cp_id: 4`` or ``cp_id: [4, 6]``.
listed = BeforeValidator(_as_list)


def one_or_many(item: dict[str, Any]) -> WithJsonSchema:
    """The JSON Schema of a ``listed`` field whose items look like ``item``."""
    return WithJsonSchema({"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]})


@dataclass(frozen=True)
class Vocabulary:
    """A table of codes people may write by number or by name (``6`` or ``OutForDelivery``).

    ``resolve`` is a pydantic before-validator: a name becomes its number, an unknown name
    fails with the closest known one as a hint; numbers pass through to the int validation.
    """

    what: str
    by_name: Callable[[str], int | None]
    known: Mapping[int, Any]  # entries have a .name

    def resolve(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        code = self.by_name(value)
        if code is None and value.strip().isdigit():
            code = int(value)
        if code is None:
            hint = did_you_mean(value, self.names) or "use a number, or a name from the schema"
            fail(f"unknown {self.what} name {value!r}", hint)
        return code

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.known.values()]

    @property
    def schema(self) -> WithJsonSchema:
        return one_or_many({"anyOf": [{"type": "integer"}, {"enum": self.names}]})


def validate(
    doc: Document, model: type[M], *, words_allowed: Mapping[Shape, str] = {}
) -> tuple[M | None, list[Problem]]:
    """Validate the document with ``model``: the result (None on errors) and every problem.

    ``words_allowed`` names fields where a plain ``off`` (say) is a documented value, not a
    YAML 1.1 trap. A field error at the same spot as a trap is dropped: the trap explains it.
    """
    words = [*_ambiguous_words(doc, words_allowed), *_leading_zeros(doc)]
    try:
        return model.model_validate(plain(doc.data)), words
    except ValidationError as err:
        taken = {(p.line, p.column) for p in words}
        models = dict(_models(model))
        located = (_explain(doc, error, models) for error in err.errors())
        return None, words + [p for p in located if (p.line, p.column) not in taken]


def _ambiguous_words(doc: Document, allowed: Mapping[Shape, str]) -> Iterator[Problem]:
    for path, word in plain_words(doc.data):
        if allowed.get(shape(path)) == word.lower():
            continue
        message = f"{where(path)}: {word!r} is ambiguous: YAML 1.1 tools read it as a boolean"
        hint = f'quote it ("{word}") if you mean the text; write true or false for yes/no'
        yield doc.at(path, message, hint)


def _leading_zeros(doc: Document) -> Iterator[Problem]:
    """``cp_id: 012``: this loader (YAML 1.2) reads 12, YAML 1.1 tools the octal number 10."""
    for path, value in _numbers(doc.data):
        typed = source_token(doc.text, *locate(doc.data, path))
        if re.fullmatch(r"[-+]?0[0-9_]+", typed):
            message = f"{where(path)}: {typed} has a leading zero: this file reads it as {value},"
            message += " older (YAML 1.1) tools as an octal number (012 is 10) or as text"
            hint = f'write {value} without the zero, or quote it ("{typed}") if it is a code'
            yield doc.at(path, message, hint)


def _numbers(data: Any, path: Loc = ()) -> Iterator[tuple[Loc, int]]:
    """Every integer in the tree, with its path (booleans are not numbers here)."""
    if isinstance(data, CommentedMap | CommentedSeq):
        items: Iterator[tuple[Any, Any]]
        items = iter(data.items()) if isinstance(data, CommentedMap) else enumerate(data)
        for part, value in items:
            if isinstance(part, str | int):
                yield from _numbers(value, (*path, part))
    elif isinstance(data, int) and not isinstance(data, bool | ScalarBoolean):
        yield path, data


def shape(path: Loc) -> Shape:
    return tuple(part for part in path if isinstance(part, str))


def where(path: Loc) -> str:
    """``rules[2].send[0].channel``: the data path, without pydantic's validator labels."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier():
            text += f".{part}" if text else part
    return text or "file"


def _models(model: type[BaseModel], at: Shape = ()) -> Iterator[tuple[Shape, type[BaseModel]]]:
    """Which model checks the mapping at each shape: {(): File, ("rules",): Rule, ...}."""
    yield at, model
    for name, field in model.model_fields.items():
        for inner in _nested_models(field.annotation):
            yield from _models(inner, (*at, name))


def _nested_models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    elif isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            yield from _nested_models(arg)


_TYPE_WORDS = {bool: "the boolean", int: "the number", float: "the number"}


def _explain(
    doc: Document, error: ErrorDetails, models: Mapping[Shape, type[BaseModel]]
) -> Problem:
    """One pydantic error → a located Problem in words support staff can act on."""
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    ctx = error.get("ctx") or {}
    message, hint = error["msg"], str(ctx.get("hint", ""))
    if kind == "extra_forbidden":
        allowed = list(models.get(shape(loc[:-1]), BaseModel).model_fields)
        hint = did_you_mean(str(loc[-1]), allowed) or "allowed here: " + ", ".join(allowed)
        return doc.at(loc, f"{where(loc[:-1])}: unknown key {loc[-1]!r}", hint, key=True)
    if kind == "missing":
        message, loc = f"missing required key {loc[-1]!r}", loc[:-1]
    elif kind in ("enum", "literal_error"):
        message = f"{message}, not {value!r}"
        hint = did_you_mean(str(value), re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
    elif kind == "too_short":
        message = "is empty: give at least one"
        hint = _description(models, loc)
    elif kind in ("model_type", "dict_type"):
        message = f"expected key: value lines here, not {type(value).__name__} {value!r}"
    elif kind == "bool_type":
        message = f"expected true or false, not {value!r}"
    elif kind == "string_pattern_mismatch":
        message, hint = f"{value!r} is not allowed here", _description(models, loc)
    elif kind == "string_type" and type(value) in _TYPE_WORDS:
        typed = source_token(doc.text, *locate(doc.data, loc)) or str(value)
        message = f"expected text, but YAML read {typed} as {_TYPE_WORDS[type(value)]} {value!r}"
        hint = f'put it in quotes: "{typed}"'
    return doc.at(loc, f"{where(loc)}: {message}", hint)


def _description(models: Mapping[Shape, type[BaseModel]], loc: Loc) -> str:
    """The field's own description: what the person editing should have written."""
    field = models.get(shape(loc[:-1]), BaseModel).model_fields.get(str(loc[-1]))
    return (field.description or "") if field else ""
