"""How long ``notifier check`` takes on a large setup: 200 rules and 400 template files.

    .venv/bin/python benchmarks/check_speed.py [--rules 200] [--repeat 3]

Generates, in a temporary folder, a rules file of ``--rules`` rules (per-courier rules for ten
customer-facing statuses, some COD-only, some for NDR reasons, every 25th with no status
condition so that it is tried on every documented status, and general rules last) and one SMS
template per rule plus an email (subject and text, extending the shipped layout) for every
other rule: 400 template files for 200 rules. Then times :func:`notifier.checking.check_all`
in this process (best of ``--repeat``) and ``notifier check`` as a subprocess (interpreter
start and imports included: what a support agent waits for).

Not a test: it prints figures, and fails only if the generated setup has errors.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from notifier.checking import check_all

ROOT = Path(__file__).resolve().parent.parent
# fmt: off
STATUSES = ("PickedUp", "OutForDelivery", "FailedDelivery", "Delivered", "Cancelled",
            "RTO-Requested", "RTO-Delivered", "Lost", "ShipmentDelayed", "OutForPickup")
# fmt: on
NDR = ("customer_unavailable", "address_issue", "payment_issue")
SMS = (
    "{# Generated for the benchmark. #}\n"
    "{% set ref = shipment.order_id or shipment.waybill %}\n"
    'Hi {{ consumer.first_name | shorten(18) or "there" }}, your {{ brand.name }} order {{ ref }}'
    " is now {{ status.label | lower }} (rule {{ n }})."
    "{% if edd %} Expected {{ edd | ist('%d %b') }}.{% endif %}\n"
)
SUBJECT = "Order {{ shipment.order_id or shipment.waybill }}: {{ status.label }}\n"
EMAIL = (
    '{% extends "email/_layout.txt.j2" %}\n'
    "{% block content %}\n"
    "Your order is now {{ status.label | lower }} (rule {{ n }}).\n"
    "{% if ndr %}Reason reported by the courier: {{ ndr.label }}.{% endif %}\n"
    "{% endblock %}\n"
)


def rule_yaml(i: int, total: int) -> str:
    """Rule ``i``: courier-specific until the last ten, which are the general rules."""
    status = STATUSES[i % len(STATUSES)]
    when = [f"clickpost_status_code: {status}"]
    if i < total - len(STATUSES):
        when.append(f"cp_id: {100 + i // len(STATUSES)}")
    if i % 25 == 24:
        when = [f"cp_id: {100 + i // len(STATUSES)}", "order_type: PREPAID"]
    elif status == "FailedDelivery" and i % 3 == 0:
        when.append(f"ndr_status_code: {NDR[i % len(NDR)]}")
    elif i % 7 == 0:
        when.append("order_type: COD")
    sends = [f"{{channel: sms, template: r{i}}}"]
    sends += [f"{{channel: email, template: r{i}}}"] if i % 2 == 0 else []
    lines = [f"  - name: r{i}", "    when:", *(f"      {c}" for c in when), "    send:"]
    return "\n".join([*lines, *(f"      - {s}" for s in sends)]) + "\n"


def generate(folder: Path, rules: int) -> tuple[Path, Path]:
    templates = folder / "templates"
    (templates / "sms").mkdir(parents=True)
    (templates / "email").mkdir()
    for partial in (ROOT / "templates" / "email").glob("_*.txt.j2"):
        shutil.copy(partial, templates / "email" / partial.name)
    for i in range(rules):
        (templates / "sms" / f"r{i}.txt.j2").write_text(SMS.replace("{{ n }}", str(i)))
        if i % 2 == 0:
            (templates / "email" / f"r{i}.subject.j2").write_text(SUBJECT)
            (templates / "email" / f"r{i}.txt.j2").write_text(EMAIL.replace("{{ n }}", str(i)))
    head = "version: 1\ndefaults:\n  brand: {name: Acme Store}\n"
    head += '  tracking_url: "https://track.acme.example/{waybill}"\nrules:\n'
    path = folder / "rules.yaml"
    path.write_text(head + "".join(rule_yaml(i, rules) for i in range(rules)))
    return path, templates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rules, templates = generate(Path(tmp), args.rules)
        files = sum(1 for f in templates.rglob("*.j2") if not f.name.startswith("_"))
        print(f"{args.rules} rules, {files} template files (+ the shipped email partials)")
        timings, problems = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            problems = check_all(rules, templates, max_sms_segments=2)
            timings.append(time.perf_counter() - start)
        errors = [p for p in problems if p.severity == "error"]
        print(f"check_all: {min(timings):.2f} s (best of {args.repeat}); "
              f"{len(errors)} errors, {len(problems) - len(errors)} warnings")  # fmt: skip
        for problem in errors[:5]:
            print(f"  {problem}")
        command = [str(Path(sys.executable).with_name("notifier")), "check", "--rules", str(rules)]
        command += ["--templates", str(templates), "--max-sms-segments", "2"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        print(f"notifier check (subprocess): {elapsed:.2f} s, exit {done.returncode}")
        print(f"  {done.stdout.strip()}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
