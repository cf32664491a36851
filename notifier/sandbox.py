"""Bounds on the work a staff-written template may do: wall-clock time and the known amplifiers.

Jinja's sandbox guards attribute access, not work (implementation-notes.md): a template built a
50 MB string and ran 9 million loop turns in under a second. :mod:`notifier.rendering` caps the
output it collects; this module stops the rest.

Time. :func:`deadline` sets the end of one render's time budget; the sandbox checks the clock
wherever template code can repeat work: before each turn of every ``{% for %}`` loop (the
loops are compiled to iterate through :func:`timed`), before every call a template makes
(macros, ``caller()``, ``loop(...)`` of a recursive loop, blocks through ``self``), and before
every ``{% include %}``, ``{% import %}`` or ``{% extends %}`` loads a template. Between two of
those, template code runs straight through a bounded number of lines. Once the budget is
spent, :class:`RenderTimeout` is raised inside the template, which unwinds it like any other
template error, with its file and line. That stops a hang made of template code (nested
loops, exponential macro or include recursion) without a thread or process to kill. Until
2026-11-28 a trace function (``sys.settrace``) checked the clock on every line of template
code: it did the same, but made rendering an email three to four times slower (1.2 ms against
0.35 ms of CPU), and paused any debugger or coverage tracer during renders. Calls and
template loads also nest at most :data:`MAX_CALL_DEPTH` deep: a macro or a template recursing
without end is refused there, not left to Python's recursion limit. Limits: a single call into
C that runs long is not interrupted until it returns, hence the size checks below, and a
built-in filter chain over a long sequence (``range(100000)|map('string')``) runs to its end
between two checks (linear work, bounded by the 100,000 items of a range and the output cap).

Size. Before a call is made, :func:`check_call` refuses arguments that would make a result past
the output cap: widths (``center``, ``ljust``, ``zfill``, ``indent``, ``lipsum``, …), format
widths (``"{:999999999}"``, ``"%999999999d"``), ``replace`` and ``join`` whose result would be
too long. ``*`` and ``**`` are checked in :class:`notifier.rendering._Sandbox`.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from contextvars import ContextVar, Token
from functools import wraps
from types import FrameType
from typing import Any, TypeVar

from jinja2.exceptions import SecurityError

_T = TypeVar("_T")

#: Seconds one template file may take to render.
DEFAULT_RENDER_SECONDS = 2.0

# A width or precision in a format spec: "{:>30}", "{0:.5f}", "%-30s", "%.*f", and a width
# taken from an argument: "{:{w}}" (the "*" of %-formatting, in str.format).
_FORMAT_NUMBER = re.compile(r"(?:\{[^{}]*:|%)[^a-zA-Z{}%]*?(\d+|\*|\{)")
# Filters whose arguments can blow a small value up: checked like str methods.
AMPLIFYING_FILTERS = ("center", "indent", "format", "replace", "join", "wordwrap", "truncate")


class RenderTimeout(SecurityError):
    """A template ran past its time budget."""


# This render's end (time.monotonic()) and budget; none outside a render.
_BUDGET: ContextVar[tuple[float, float]] = ContextVar("render_budget", default=(math.inf, 0.0))


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`RenderTimeout` in template code still running ``seconds`` from now."""
    token = _BUDGET.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def check_time() -> None:
    """Raise :class:`RenderTimeout` if this render's budget is spent."""
    end, seconds = _BUDGET.get()
    if time.monotonic() > end:
        raise RenderTimeout(f"rendering took longer than {seconds:g} s")


# Calls a template may nest (a macro calling a macro …), and templates it may include within
# each other: real templates nest a few; a macro calling itself, or a template including
# itself, without end is stopped here, well before Python's recursion limit, where the error
# could surface inside a generator's cleanup instead of the template.
MAX_CALL_DEPTH = 64
_DEPTH: ContextVar[int] = ContextVar("render_call_depth", default=0)


def enter_call() -> Token[int]:
    """Count one more nested call (give the token to :func:`leave_call`); too deep: refused."""
    depth = _DEPTH.get()
    if depth >= MAX_CALL_DEPTH:
        raise SecurityError(f"calls nested deeper than {MAX_CALL_DEPTH} (a macro calling itself "
                            f"without end?)")  # fmt: skip
    return _DEPTH.set(depth + 1)


def leave_call(token: Token[int]) -> None:
    _DEPTH.reset(token)


def check_nesting(environment: object) -> None:
    """Refuse one more template load when ``environment``'s templates are already rendering
    :data:`MAX_CALL_DEPTH` deep: a template including itself without end, which the clock
    alone would leave to Python's recursion limit.

    Called where a template is loaded (each render, include, import or extends: a few times
    a message), so it looks at the stack instead of keeping a count that every template's end
    would have to undo, and walks it only when it is deep enough to hold that many levels. A
    template's top level runs in a function named ``root`` of code compiled for it, whose
    globals hold its environment.
    """
    try:
        sys._getframe(MAX_CALL_DEPTH)  # fewer frames than that hold fewer template levels
    except ValueError:
        return
    depth = 0
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "root" and frame.f_globals.get("environment") is environment:
            depth += 1
        frame = frame.f_back
    if depth >= MAX_CALL_DEPTH:
        raise SecurityError(f"templates included nested deeper than {MAX_CALL_DEPTH} (a "
                            f"template including itself without end?)")  # fmt: skip


def timed(iterable: Iterable[_T]) -> Iterator[_T]:
    """``iterable`` with the clock checked before each item: what template loops iterate."""
    end, seconds = _BUDGET.get()
    clock = time.monotonic
    for item in iterable:
        if clock() > end:
            raise RenderTimeout(f"rendering took longer than {seconds:g} s")
        yield item


def check_call(name: str, subject: object, args: Sequence[Any], kwargs: Mapping[str, Any],
               cap: int) -> None:  # fmt: skip
    """Refuse a call whose arguments would build a result longer than ``cap`` characters."""
    if name in {"format", "format_map"}:  # numbers here are values to print, not sizes
        if isinstance(subject, str):
            check_format(subject, cap)
    else:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > cap:
                raise SecurityError(f"{name}: {value} is larger than the output cap ({cap})")
    if _result_length(name, subject, args) > cap:
        raise SecurityError(f"{name}: the result would be longer than the output cap ({cap})")


def _result_length(name: str, subject: object, args: Sequence[Any]) -> int:
    """How long a ``replace``, ``join`` or ``indent`` result would be (0: not one of those)."""
    if not isinstance(subject, str):
        return 0
    if name == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        return (len(subject) + 1 if not old else subject.count(old)) * len(new) + len(subject)
    if name == "join" and args and isinstance(args[0], Sized):
        return len(args[0]) * (len(subject) + 1)
    if name == "indent" and args and isinstance(args[0], str):
        return (subject.count("\n") + 1) * len(args[0]) + len(subject)
    return 0


def check_format(spec: str, cap: int) -> None:
    """Refuse format strings that pad to more than ``cap`` characters, or take the width from
    an argument (``%*d``), which could be anything."""
    for number in _FORMAT_NUMBER.findall(spec):
        if not number.isdigit() or int(number) > cap:
            raise SecurityError(f"format width {number} is not allowed (output cap {cap})")


def capped_lipsum(function: Any, most: int = 20) -> Callable[..., Any]:
    """Jinja's ``lipsum`` global, limited to ``most`` paragraphs: it is Python code, which the
    deadline does not trace, and ``lipsum(10**5)`` takes seconds."""

    @wraps(function)
    def capped(n: int = 5, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(n, int) or n > most:
            raise SecurityError(f"lipsum: at most {most} paragraphs")
        return function(n, *args, **kwargs)

    return capped


def guard_filter(name: str, function: Callable[..., Any], cap: int) -> Callable[..., Any]:
    """A built-in filter that checks its arguments first (``{{ x|center(10**9) }}``)."""

    @wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        first = next((i for i, a in enumerate(args) if not _is_jinja_internal(a)), len(args))
        given = list(args)
        value, rest = (given[first], given[first + 1 :]) if first < len(given) else (None, [])
        if name == "join" and first < len(given):
            value = given[first] = materialized("join", [value])[0]
            separator = str(rest[0]) if rest else str(kwargs.get("d", ""))
            check_call("join", separator, [value], {}, cap)
        else:
            check_call(name, value, rest, kwargs, cap)
        return function(*given, **kwargs)

    return guarded


def materialized(name: str, args: Sequence[Any]) -> list[Any]:
    """``join`` over a generator (``range(n)|map(...)``) cannot be measured before it runs:
    make it a list first, so its length bounds the result."""
    given = list(args)
    if name == "join" and given and not isinstance(given[0], Sized | str):
        given[0] = list(given[0])
    return given


def _is_jinja_internal(value: object) -> bool:
    """Context and environment arguments that pass_context/pass_environment filters get."""
    module = type(value).__module__
    return module.startswith("jinja2.") or module.startswith("notifier.rendering")
