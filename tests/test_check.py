"""``notifier check``: one test per kind of problem, each on a copy of the shipped files with
one thing broken, asserting the file, line and column a support agent is sent to."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import ROOT

from notifier import rulecheck
from notifier.checking import check_all, format_problem
from notifier.cli import main
from notifier.clickpost.codes import STATUS_CODES
from notifier.errors import Problem
from notifier.languages import LANGUAGE_CODES
from notifier.rules import load_rules

REGISTERED = "{# dlt: template_id=1107161234567890123 #}\n"


def without_language_variants(folder: str, names: list[str]) -> set[str]:
    """Leave out ``delivered.hi.txt.j2`` and its like: each test adds the variants it needs,
    so the shipped ones (Hindi SMS take two or three parts) do not blur what it asserts."""
    return {name for name in names if set(name.split(".")[1:]) & LANGUAGE_CODES}


class Project:
    """A temporary copy of rules.yaml and templates/, edited one mistake at a time."""

    def __init__(self, root: Path) -> None:
        self.rules = root / "rules.yaml"
        self.templates = root / "templates"
        shutil.copy(ROOT / "rules.yaml", self.rules)
        shutil.copytree(ROOT / "templates", self.templates, ignore=without_language_variants)

    def template(self, rel: str) -> Path:
        return self.templates / rel

    def edit(self, path: Path, old: str, new: str) -> str:
        """Replace ``old`` (which must be there) and return the new text."""
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {path}"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        return path.read_text(encoding="utf-8")

    def check(
        self, *, max_sms_segments: int = 1, dlt_limit: int = 40, allow_unicode: bool = False
    ) -> list[Problem]:
        return check_all(
            self.rules,
            self.templates,
            max_sms_segments=max_sms_segments,
            dlt_limit=dlt_limit,
            allow_unicode=allow_unicode,
        )


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def place(text: str, needle: str) -> tuple[int, int]:
    """1-based (line, column) of the first ``needle`` in ``text``."""
    before = text[: text.index(needle)]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


# ---- the shipped files ----------------------------------------------------------------------


def test_shipped_files_have_no_error_and_no_rule_warning() -> None:
    problems = check_all(ROOT / "rules.yaml", ROOT / "templates")
    assert errors(problems) == []
    assert [p for p in problems if p.file == str(ROOT / "rules.yaml")] == []
    english = [p for p in problems if ".hi." not in p.file]  # Hindi SMS take 2-3 parts
    assert english == []


# ---- templates: compile, render with sample data ---------------------------------------------


def test_template_syntax_error_names_the_file_and_line(project: Project) -> None:
    sms = project.template("sms/delivered.txt.j2")
    project.edit(sms, "{{ brand.name }} order", "{{ brand.name } order")
    [problem] = project.check()
    assert (problem.file, problem.line, problem.column) == (str(sms), 3, 1)
    assert problem.severity == "error" and "template syntax error" in problem.message
    assert "{% endif %}" in problem.hint


def test_unguarded_ndr_names_the_line_the_rule_and_the_data_that_lacks_it(
    project: Project,
) -> None:
    sms = project.template("sms/delivered.txt.j2")
    text = project.edit(sms, "Thank you", "Reason: {{ ndr.label }}. Thank you")
    [problem] = project.check()
    assert (problem.file, (problem.line, problem.column)) == (str(sms), place(text, "ndr.label"))
    assert problem.severity == "error"
    assert problem.message.startswith("undefined variable ndr.label: ndr is empty")
    assert "rule delivered" in problem.message
    assert "status Delivered (8), COD order, no NDR reason" in problem.message
    assert "{% if" in problem.hint


def test_a_guarded_ndr_is_fine(project: Project) -> None:
    sms = project.template("sms/delivered.txt.j2")
    project.edit(sms, "Thank you", "{% if ndr %}{{ ndr.label }}{% endif %}Thank you")
    assert project.check() == []


def test_each_optional_detail_is_tried_absent(project: Project) -> None:
    sms = project.template("sms/cancelled.txt.j2")
    text = project.edit(sms, "{{ ref }}", "{{ shipment.reference_number.upper() }}")
    [problem] = project.check()
    assert (problem.line, problem.column) == place(text, "shipment.reference_number.upper")
    assert "no order or reference number" in problem.message
    assert "rule cancelled" in problem.message


def test_a_general_rule_is_not_tried_on_updates_a_specific_rule_above_takes() -> None:
    rules = load_rules(ROOT / "rules.yaml")
    index = next(i for i, rule in enumerate(rules.rules) if rule.name == "failed_delivery")
    reasons = {sample.ndr for sample in rulecheck.firing(rules, index)}
    # NDR 1, 5 (unavailable), 6 (address), 7 (payment), 3 (rescheduled) have rules above it
    assert reasons == {None, 0, 2, 4, 8, 9, 10, 11, 12, 13}


# ---- SMS: segments, encoding, language variants ---------------------------------------------


def test_an_sms_over_one_segment_is_a_warning_unless_allowed(project: Project) -> None:
    sms = project.template("sms/out_for_delivery.txt.j2")
    long = " Please keep your phone switched on so that the courier can call you on arrival."
    project.edit(sms, "will reach you today.", "will reach you today." + long)
    [problem] = project.check()
    assert (problem.file, problem.line, problem.column) == (str(sms), 3, 1)
    assert problem.severity == "warning"
    assert "2 SMS segments (GSM-7), more than 1" in problem.message
    assert "rule out_for_delivery" in problem.message
    assert project.check(max_sms_segments=2) == []


def test_a_rupee_sign_makes_an_sms_unicode_and_says_where(project: Project) -> None:
    sms = project.template("sms/shipped.txt.j2")
    text = project.edit(sms, "has been shipped", "has been shipped, ₹0 to pay")
    problems = project.check()
    unicode = [p for p in problems if "Unicode" in p.message]
    assert [(p.file, p.line, p.column) for p in unicode] == [(str(sms), *place(text, "₹0 to pay"))]
    assert unicode[0].severity == "warning" and "write Rs instead" in unicode[0].hint
    assert [p for p in project.check(allow_unicode=True) if "Unicode" in p.message] == []


def test_unicode_from_the_data_points_at_the_variable(project: Project) -> None:
    project.edit(project.rules, "name: Acme Store", "name: Acme’s Store")
    sms = project.template("sms/shipped.txt.j2")
    [problem] = [p for p in project.check() if p.file == str(sms) and "Unicode" in p.message]
    text = sms.read_text(encoding="utf-8")
    assert (problem.line, problem.column) == place(text, "{{ brand.name }}")
    assert "{{ brand.name }} fills in 'Acme’s Store'" in problem.message
    assert "write ' instead" in problem.hint


def test_a_hindi_variant_may_be_unicode_and_is_rendered_like_its_base(project: Project) -> None:
    hindi = project.template("sms/delivered.hi.txt.j2")
    hindi.write_text(
        "नमस्ते {{ consumer.first_name }}, आपका ऑर्डर {{ shipment.order_id }} पहुँच गया।\n",
        encoding="utf-8",
    )
    assert project.check() == []
    untagged = project.template("sms/delivered.txt.j2")
    untagged.write_text(hindi.read_text(encoding="utf-8"), encoding="utf-8")
    [problem] = project.check()
    assert (problem.file, problem.line, problem.column) == (str(untagged), 1, 1)
    assert "Unicode" in problem.message
    # the variant gets the samples of the rules that send its base template
    hindi.write_text("{{ ndr.label }}\n", encoding="utf-8")
    assert [(p.file, p.line, p.column) for p in errors(project.check())] == [(str(hindi), 1, 4)]


# ---- DLT ------------------------------------------------------------------------------------


def test_a_registered_dlt_header_on_the_shipped_wording_is_fine(project: Project) -> None:
    sms = project.template("sms/out_for_delivery.txt.j2")
    sms.write_text(REGISTERED + sms.read_text(encoding="utf-8"), encoding="utf-8")
    assert project.check() == []


def test_a_dlt_variable_over_40_characters_is_an_error_at_its_expression(
    project: Project,
) -> None:
    sms = project.template("sms/out_for_delivery.txt.j2")
    sms.write_text(REGISTERED + sms.read_text(encoding="utf-8"), encoding="utf-8")
    text = project.edit(sms, "{{ tracking_url }}", '{{ tracking_url ~ "?utm=sms" }}')
    [problem] = project.check()
    assert (problem.file, problem.severity) == (str(sms), "error")
    assert (problem.line, problem.column) == place(text, '{{ tracking_url ~ "?utm=sms" }}')
    assert "DLT variable longer than 40 characters" in problem.message
    assert "fills in 48" in problem.message and "shorten(40)" in problem.hint
    assert project.check(dlt_limit=48) == []


def test_a_placeholder_dlt_id_is_a_warning_and_a_misspelt_key_an_error(project: Project) -> None:
    sms = project.template("sms/shipped.txt.j2")
    placeholder = "{# dlt: template_id=PENDING-REGISTRATION #}\n"
    sms.write_text(placeholder + sms.read_text(encoding="utf-8"), encoding="utf-8")
    [problem] = project.check()
    assert (problem.file, problem.line, problem.column, problem.severity) == (
        str(sms),
        1,
        1,
        "warning",
    )
    assert "placeholder" in problem.message
    project.edit(sms, "template_id=PENDING-REGISTRATION", "templat_id=1107161234567890123")
    messages = [(p.line, p.severity, p.message, p.hint) for p in project.check()]
    assert (
        1,
        "error",
        "unknown DLT header key 'templat_id'",
        "did you mean template_id?",
    ) in messages


# ---- rules that never fire, statuses no rule covers ----------------------------------------


def test_cod_specific_after_generic_is_shadowed(project: Project) -> None:
    text = project.rules.read_text(encoding="utf-8")
    start = text.index("  - name: out_for_delivery_cod")
    middle = text.index("  - name: out_for_delivery\n")
    end = text.index("  - name: failed_delivery_unavailable")
    text = text[:start] + text[middle:end] + text[start:middle] + text[end:]
    project.rules.write_text(text, encoding="utf-8")
    [problem] = project.check()
    assert (problem.file, problem.severity) == (str(project.rules), "warning")
    assert (problem.line, problem.column) == place(text, "out_for_delivery_cod\n")
    assert problem.message.startswith(
        "rule out_for_delivery_cod is shadowed by rule out_for_delivery (line"
    )
    assert "move out_for_delivery_cod above out_for_delivery" in problem.hint


def test_generic_after_cod_specific_is_not_shadowed(project: Project) -> None:
    assert not [p for p in project.check() if "shadowed" in p.message]


def test_a_rule_asking_for_an_ndr_reason_without_status_9_never_fires(project: Project) -> None:
    text = project.edit(
        project.rules,
        "      clickpost_status_code: Cancelled             # 10\n",
        "      clickpost_status_code: Cancelled             # 10\n      ndr_status_code: 1\n",
    )
    problems = [p for p in project.check() if "never fires" in p.message]
    assert [(p.line, p.column) for p in problems] == [place(text, "cancelled\n")]
    assert "only with status 9" in problems[0].hint


def test_uncovered_statuses_are_listed_at_the_rules_key(project: Project) -> None:
    old, new = "  - name: lost_damaged\n", "  - name: lost_damaged\n    enabled: false\n"
    text = project.edit(project.rules, old, new)
    rules_key = text.split("\n").index("rules:") + 1
    assert [(p.file, p.line, p.column, p.severity, p.message) for p in project.check()] == [
        (str(project.rules), rules_key, 1, "warning", "no rule covers status 16 (Lost)"),
        (str(project.rules), rules_key, 1, "warning", "no rule covers status 17 (Damaged)"),
    ]


def test_partly_covered_status_names_an_update_that_gets_nothing(project: Project) -> None:
    text = project.rules.read_text(encoding="utf-8")
    start = text.index("  - name: out_for_delivery\n")
    end = text.index("  - name: failed_delivery_unavailable")
    project.rules.write_text(text[:start] + text[end:], encoding="utf-8")
    [problem] = project.check()
    assert problem.severity == "warning"
    assert problem.message.startswith("no rule covers status 6 (OutForDelivery) for some updates")
    assert "PREPAID order" in problem.message


def test_the_customer_facing_list_is_documented_codes() -> None:
    assert set(rulecheck.CUSTOMER_FACING_CODES) <= set(STATUS_CODES)


# ---- rules.yaml traps (the loader's checks, through notifier check) --------------------------

#: name: (text to replace, replacement, where the problem is: needle and column offset, words)
TRAPS = {
    "duplicate key": ("    repeat: once\n", "    repeat: once\n    repeat: once  # again\n",
                      ("repeat: once  # again", 0), "duplicate key 'repeat'"),
    "no as a word": ("quiet_hours: send\n", "quiet_hours: no\n", ("quiet_hours: no", 13),
                     "'no' is ambiguous"),
    "21:00 unquoted": ('quiet_hours: "21:00-09:00"', "quiet_hours: 21:00",
                       ("quiet_hours: 21:00", 13), "'21:00'"),
    "tab": ("    send:\n      - {channel: sms, template: shipped}",
            "    send:\n\t- {channel: sms, template: shipped}", ("\t- {channel", 0),
            "tab character"),
}  # fmt: skip


@pytest.mark.parametrize("trap", list(TRAPS))
def test_yaml_traps_are_located_errors(project: Project, trap: str) -> None:
    old, new, (needle, offset), words = TRAPS[trap]
    text = project.edit(project.rules, old, new)
    problems = project.check()
    line, column = place(text, needle)
    assert [(p.file, p.line, p.column, p.severity) for p in problems] == [
        (str(project.rules), line, column + offset, "error")
    ]
    assert words in problems[0].message and problems[0].hint


def test_a_leading_zero_number_is_a_located_error(project: Project) -> None:
    text = project.edit(
        project.rules, "PickedUp              # 4\n", "PickedUp\n      cp_id: 012\n"
    )
    [problem] = project.check()
    assert (problem.line, problem.column) == place(text, "012")


# ---- the command: output and exit codes -------------------------------------------------------


def run(project: Project, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    flags = ["--rules", str(project.rules), "--templates", str(project.templates)]
    code = main(["check", *flags, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_exit_0_and_ok_summary_on_the_shipped_files(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    version = load_rules(project.rules).version
    code, out, err = run(project, capsys)
    assert (code, err) == (0, "")
    assert out == f"OK: {project.rules}: 15 rules, version {version}; 0 errors, 0 warnings\n"


def test_exit_1_on_an_error_with_file_line_col_severity_and_hint(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    sms = project.template("sms/delivered.txt.j2")
    project.edit(sms, "{{ brand.name }} order", "{{ brand.name } order")
    code, out, err = run(project, capsys)
    assert code == 1 and out.strip() == "1 error, 0 warnings"
    assert err.startswith(f"{sms}:3:1: error: template syntax error: ")
    assert err.rstrip().endswith("needs an {% endif %})")


def test_exit_0_with_warnings_printed(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    sms = project.template("sms/shipped.txt.j2")
    text = project.edit(sms, "has been shipped", "has been shipped, ₹0 to pay")
    line, column = place(text, "₹0 to pay")
    code, out, err = run(project, capsys)
    assert code == 0 and "; 0 errors, 2 warnings" in out and "rules, version" in out
    assert err.startswith(f"{sms}:3:1: warning: 154 characters, 3 SMS segments (UCS-2)")
    assert f"\n{sms}:{line}:{column}: warning: '₹' makes this SMS Unicode" in err
    code, out, err = run(project, capsys, "--allow-unicode", "--max-sms-segments", "3")
    assert (code, err) == (0, "")


def test_rules_that_do_not_load_stop_the_check_there(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    project.edit(
        project.rules, "clickpost_status_code: Delivered", "clickpost_status_code: Delivred"
    )
    code, out, err = run(project, capsys)
    assert code == 1 and out.strip() == "1 error, 0 warnings"
    assert "did you mean Delivered?" in err and "Traceback" not in err


def test_format_problem() -> None:
    problem = Problem(file="f", line=2, column=3, message="m", hint="h", severity="warning")
    assert format_problem(problem) == "f:2:3: warning: m (h)"
