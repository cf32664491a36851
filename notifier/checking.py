"""``notifier check``: every mistake in rules.yaml and the templates, before a customer meets it.

Support staff edit both by hand, so each problem says ``file:line:col``, what is wrong in plain
words and what to do (the hint). Errors stop a deploy; warnings are printed and let it through.

1. Every template compiles (:meth:`Renderer.check`): a syntax error names the file and line.
2. rules.yaml loads (:mod:`notifier.rules` reports YAML traps, unknown names, missing
   templates). When it does not, only those problems are reported: the rest needs the rules.
3. Every message a rule sends, and each language variant of it (``delivered.hi``), is rendered
   with sample data for each status and NDR code the rule can fire on. A sample counts only
   where this rule is the first match (the first matching rule wins), so a general rule is not
   blamed for updates a specific rule above it takes. Samples: COD and PREPAID orders, full
   data and each optional detail absent in turn (EDD, reference number, email, name, COD
   amount); a rule without a status condition gets every documented status. A render that
   fails is an error at the template line, naming the rule and the sample data that lacks the
   variable.
4. SMS (:mod:`notifier.smscheck`): more segments than allowed, unexpected Unicode (warnings);
   DLT variables longer than 40 characters (errors, at the ``{{ … }}``).
5. Rules that can never fire (warnings): shadowed by one earlier enabled rule whose conditions
   are a superset (computed from the conditions: sets, and None meaning any), or matched first
   by no sample update at all (several rules above it share its updates out, or it asks for an
   NDR reason without status 9).
6. Customer-facing status codes (:data:`notifier.rulecheck.CUSTOMER_FACING_CODES`) that no rule
   covers, or covers only for some updates (warnings).

Samples and the rule checks (5, 6) live in :mod:`notifier.rulecheck`, the SMS checks in
:mod:`notifier.smscheck`; this module runs everything and renders the templates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jinja2

from notifier import rulecheck, smscheck
from notifier.errors import Problem, RulesError, TemplateError
from notifier.events import ChannelKind
from notifier.languages import split_tag
from notifier.rendering import Renderer
from notifier.rulecheck import Sample
from notifier.rules import Defaults, RuleSet, load_rules
from notifier.segments import count_segments, is_gsm7


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What an SMS may cost: parts per message, Unicode allowed, characters per DLT variable."""

    max_sms_segments: int = 1
    dlt_limit: int = 40
    allow_unicode: bool = False


@dataclass(frozen=True, kw_only=True)
class CheckReport:
    """Every problem found, sorted by place; the rule set when rules.yaml loaded."""

    problems: tuple[Problem, ...]
    rules: RuleSet | None = None

    @property
    def errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    @property
    def warnings(self) -> int:
        return len(self.problems) - self.errors

    def summary(self) -> str:
        counts = f"{_plural(self.errors, 'error')}, {_plural(self.warnings, 'warning')}"
        if self.errors or self.rules is None:
            return counts
        rules = self.rules
        return f"OK: {rules.path}: {len(rules.rules)} rules, version {rules.version}; {counts}"


def format_problem(problem: Problem) -> str:
    """``file:line:col: severity: message (hint)``: what editors and CI logs link to."""
    where = f"{problem.file}:{problem.line}:{problem.column}"
    text = f"{where}: {problem.severity}: {problem.message}"
    return f"{text} ({problem.hint})" if problem.hint else text


def check_all(
    rules_path: Path,
    templates_dir: Path,
    *,
    max_sms_segments: int = 1,
    dlt_limit: int = 40,
    allow_unicode: bool = False,
) -> list[Problem]:
    """Errors and warnings for ``rules_path`` and ``templates_dir``, sorted by place."""
    limits = Limits(
        max_sms_segments=max_sms_segments, dlt_limit=dlt_limit, allow_unicode=allow_unicode
    )
    return list(run_checks(rules_path, templates_dir, limits).problems)


def run_checks(rules_path: Path, templates_dir: Path, limits: Limits = Limits()) -> CheckReport:
    """:func:`check_all`, with the loaded rule set for the summary."""
    if absent := _absent(rules_path, templates_dir):
        return _report(absent, None)
    renderer = Renderer(templates_dir)
    compiled = [_compile_hint(p) for p in renderer.check()]
    try:
        rules = load_rules(rules_path, missing_template=renderer.missing)
    except RulesError as err:
        return _report([*compiled, *err.problems], None)
    doc = rulecheck.RulesFile(rules_path)
    firing = {i: rulecheck.firing(rules, i) for i, rule in enumerate(rules.rules) if rule.enabled}
    broken = {p.file for p in compiled if p.severity == "error"}
    checker = _TemplateChecker(renderer, rules.defaults, limits, broken)
    for message, samples in _uses(rules, renderer, firing).items():
        checker.check(message, samples)
    found = [*compiled, *rules.warnings, *rulecheck.unreachable(rules, doc, firing)]
    found += rulecheck.coverage(rules, doc)
    sms = sorted(f for f in (templates_dir / "sms").glob("*.txt.j2") if f.name[0] != "_")
    found += checker.problems()
    found += smscheck.dlt_header_problems(sms)
    return _report(found, rules)


def _report(problems: Iterable[Problem], rules: RuleSet | None) -> CheckReport:
    """Each problem once (a partial can fail for many messages), in file order."""
    unique = sorted(dict.fromkeys(problems), key=_place)
    return CheckReport(problems=tuple(unique), rules=rules)


def _place(p: Problem) -> tuple[str, int, int, bool, str]:
    return p.file, p.line, p.column, p.severity != "error", p.message


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _absent(rules_path: Path, templates_dir: Path) -> list[Problem]:
    wanted = (
        (rules_path.is_file(), rules_path, "rules file not found", "--rules FILE, NOTIFIER_RULES"),
        (templates_dir.is_dir(), templates_dir, "templates folder not found", "--templates DIR"),
    )
    return [
        Problem(file=str(path), line=1, column=1, message=message, hint=f"give the path: {hint}")
        for present, path, message, hint in wanted
        if not present
    ]


#: Renderer.check messages by what they say → what to do; anything else is a syntax error.
_COMPILE_HINTS = (
    ("not found", "create that template, or fix the name in the include or extends line"),
    ("missing template", "add the missing file beside the other files of this message"),
    ("cannot read", "save the file as UTF-8 text"),
)
_SYNTAX_HINT = "check the {{ }} and {% %} on this line: each {% if %} needs an {% endif %}"


def _compile_hint(problem: Problem) -> Problem:
    hint = next((h for words, h in _COMPILE_HINTS if words in problem.message), None)
    if hint is not None:
        return replace(problem, hint=problem.hint or hint)
    return replace(problem, message=f"template syntax error: {problem.message}", hint=_SYNTAX_HINT)


# ---- rendering every message with the samples that reach it ---------------------------------


class _Message(NamedTuple):
    """One message's files: a channel, a base name and a language (None: the default)."""

    channel: ChannelKind
    name: str
    language: str | None


def _uses(
    rules: RuleSet, renderer: Renderer, firing: Mapping[int, list[Sample]]
) -> dict[_Message, dict[Sample, str]]:
    """Each message, in each of its languages → the samples that reach it → the rule sending
    it. A language variant replaces its default for some shoppers, so it gets the same samples.
    """
    tagged = _tagged(renderer.templates_dir)
    uses: dict[_Message, dict[Sample, str]] = {}
    for index, samples in firing.items():
        rule = rules.rules[index]
        for send in rule.send:
            maybe = (send.channel.value, send.template) in tagged
            languages = renderer.languages(send.channel, send.template) if maybe else []
            for language in (None, *languages):
                reached = uses.setdefault(_Message(send.channel, send.template, language), {})
                reached.update((s, rule.name) for s in samples if s not in reached)
    return uses


def _tagged(templates_dir: Path) -> set[tuple[str, str]]:
    """(channel folder, base name) of every message with a language-tagged file, in one scan
    of the folder: Renderer.languages rescans it on every call."""
    stems = ((f.parent.name, f.name.removesuffix(".j2").rpartition(".")[0])
             for f in templates_dir.glob("*/*.j2"))  # fmt: skip
    return {(folder, base) for folder, stem in stems for base, tag in [split_tag(stem)] if tag}


class _Rendered(NamedTuple):
    """A message rendered for one sample, on behalf of one rule."""

    sample: Sample
    rule: str
    text: str

    @property
    def during(self) -> str:
        return _during(self.sample, self.rule)


def _cost(text: str) -> tuple[int, int]:
    info = count_segments(text)
    return info.segments, info.units


@dataclass
class _Failure:
    """The first sample a template line failed for, and how many failed there."""

    sample: Sample
    rule: str
    count: int = 1


class _TemplateChecker:
    """Renders messages with samples; collects render failures and SMS problems."""

    def __init__(
        self, renderer: Renderer, defaults: Defaults, limits: Limits, broken: set[str]
    ) -> None:
        self.renderer, self.defaults, self.limits, self.broken = renderer, defaults, limits, broken
        self.tracer = smscheck.SlotTracer(renderer.templates_dir)
        self._contexts: dict[Sample, dict[str, Any]] = {}
        self._failures: dict[tuple[str, int, str], _Failure] = {}
        self._sms: list[Problem] = []

    def context(self, sample: Sample) -> dict[str, Any]:
        if sample not in self._contexts:
            self._contexts[sample] = sample.context(self.defaults)
        return self._contexts[sample]

    def check(self, message: _Message, samples: Mapping[Sample, str]) -> None:
        paths = [path for path, _ in self.renderer.files_for(*message)]
        if {str(self.renderer.templates_dir / path) for path in paths} & self.broken:
            return  # its syntax error is reported already; a render would only repeat it
        done: list[_Rendered] = []
        for sample, rule in samples.items():
            context = self.context(sample)
            try:
                rendered = self.renderer.render(
                    message.channel, message.name, context, message.language
                )
            except TemplateError as err:
                self._failed(err, sample, rule)
            else:
                done.append(_Rendered(sample, rule, rendered.text))
        if message.channel is ChannelKind.SMS and done:
            self._check_sms(paths[0], message.language, done)

    def _failed(self, err: TemplateError, sample: Sample, rule: str) -> None:
        if isinstance(err.__cause__, jinja2.TemplateSyntaxError):
            return
        prefix = f"{err.template}:{err.line}: " if err.line else f"{err.template}: "
        key = (err.template, err.line or 1, str(err).removeprefix(prefix))
        if key in self._failures:
            self._failures[key].count += 1
        else:
            self._failures[key] = _Failure(sample=sample, rule=rule)

    def _check_sms(self, path: str, language: str | None, done: list[_Rendered]) -> None:
        """Segments for the longest render, encoding for the first Unicode one, DLT variables
        for every render when the template carries a DLT header."""
        file = str(self.renderer.templates_dir / path)
        source = (self.renderer.templates_dir / path).read_text(encoding="utf-8")
        longest = max(done, key=lambda d: _cost(d.text))
        limit = self.limits.max_sms_segments
        if smscheck.expects_unicode(language):
            # Indian scripts are UCS-2: 67 characters a part, so the same news needs a second
            # part; one extra is expected, more is flagged.
            limit += 1
        found = [smscheck.segment_problem(file, source, longest.text, max_segments=limit,
                                          during=longest.during)]  # fmt: skip
        unicode = next((d for d in done if not is_gsm7(d.text)), None)
        if unicode and not (self.limits.allow_unicode or smscheck.expects_unicode(language)):
            slots = partial(self.trace, path, unicode.sample)
            found.append(smscheck.encoding_problem(file, source, unicode.text, slots=slots,
                                                   during=unicode.during))  # fmt: skip
        self._sms += [p for p in found if p is not None]
        header, _ = smscheck.read_dlt_header(file, source)
        if header is not None:
            traced = [(d.during, self.trace(path, d.sample)) for d in done]
            self._sms += smscheck.slot_problems(file, traced, limit=self.limits.dlt_limit)

    def trace(self, path: str, sample: Sample) -> list[smscheck.Slot]:
        return self.tracer.trace(path, self.context(sample))

    def problems(self) -> list[Problem]:
        failed = [self._failure_problem(*key, f) for key, f in self._failures.items()]
        return failed + self._sms

    def _failure_problem(self, template: str, line: int, detail: str, first: _Failure) -> Problem:
        path = self.renderer.templates_dir / template
        column, detail = _explain(detail, _source_line(path, line))
        message = f"{detail}, {_during(first.sample, first.rule)}"
        if first.count > 1:
            message += f"; {first.count} sample updates fail on this line"
        hint = next((h for start, h in _RENDER_HINTS if detail.startswith(start)), _OTHER_HINT)
        return Problem(file=str(path), line=line, column=column, message=message, hint=hint)


def _during(sample: Sample, rule: str) -> str:
    return f"for rule {rule} with sample data: {sample.describe()}"


_RENDER_HINTS = (
    ("undefined variable", 'put it inside {% if ... %}...{% endif %}, or give a default: or "..."'),
    ("not allowed in templates", "templates may only read the message data, not change it"),
)
_OTHER_HINT = "check the values this line uses: some parcels lack them or have other types"


def _source_line(path: Path, line: int) -> str:
    try:
        rows = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError):
        return ""
    return rows[line - 1] if 0 < line <= len(rows) else ""


def _explain(detail: str, row: str) -> tuple[int, str]:
    """The column of the variable the error names, and the error in words for support staff:
    ``'None' has no attribute 'label'`` → ``undefined variable ndr.label: ndr is empty``."""
    attribute = re.search(r"'([^']*)' has no attribute '(\w+)'", detail)
    name = re.search(r"'(\w+)' is undefined", detail)
    if attribute:
        found = re.search(rf"[A-Za-z_][\w.]*\.{attribute[2]}\b", row)
        if found:
            owner, what = found[0].rpartition(".")[0], "is empty for this update"
            what = what if attribute[1] == "None" else f"has no {attribute[2]}"
            return found.start() + 1, f"undefined variable {found[0]}: {owner} {what}"
    elif name and (found := re.search(rf"\b{name[1]}\b", row)):
        return found.start() + 1, f"undefined variable {name[1]}: there is no such variable"
    return 1, detail
