"""The command line, run in-process through ``main``: exit codes, output, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLES, registration

from notifier.cli import main


@pytest.fixture
def flags(tmp_path: Path) -> list[str]:
    return [
        "--database",
        f"sqlite:///{tmp_path / 'n.db'}",
        "--rules",
        str(ROOT / "rules.yaml"),
        "--templates",
        str(ROOT / "templates"),
        "--outbox",
        str(tmp_path / "outbox"),
    ]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_passes_on_the_shipped_rules(
    capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    code, out, _ = run(capsys, "check", *flags)
    assert code == 0 and "rules, version" in out


def test_check_reports_file_line_col_and_exits_1(
    capsys: pytest.CaptureFixture[str], flags: list[str], tmp_path: Path
) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text(
        (ROOT / "rules.yaml")
        .read_text()
        .replace("clickpost_status_code: OutForDelivery", "clickpost_status_code: OutForDelivry", 1)
    )
    code, _, err = run(capsys, "check", *flags, "--rules", str(bad))
    assert code == 1
    assert f"{bad}:" in err and "did you mean" in err.lower()
    assert "Traceback" not in err


def test_preview_shows_rule_dedup_key_and_text(
    capsys: pytest.CaptureFixture[str], flags: list[str], tmp_path: Path
) -> None:
    reg = tmp_path / "reg.json"
    reg.write_text(json.dumps(registration(waybill="P0109276342", cp_id=14, order_type="COD")))
    payload = SAMPLES / "webhook-out-for-delivery-2017.json"
    code, out, _ = run(capsys, "preview", str(payload), "--shipment", str(reg), *flags)
    assert code == 0
    assert "rule out_for_delivery_cod matched OutForDelivery (6)" in out
    # a 2017 scan is far too old to matter: preview says so instead of sending
    assert "would NOT send: stale: event is" in out
    assert "dedup key: 0:out_for_delivery_cod:sms:day 2017-08-02" in out


def test_preview_renders_what_would_be_sent(
    capsys: pytest.CaptureFixture[str], flags: list[str], tmp_path: Path
) -> None:
    body = json.loads((SAMPLES / "webhook-selected-delivered.json").read_text())
    from datetime import UTC, datetime

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body["timestamp"] = body["additional"]["latest_status"]["timestamp"] = now
    payload = tmp_path / "delivered.json"
    payload.write_text(json.dumps(body))
    code, out, _ = run(capsys, "preview", str(payload), "--quiet-hours", "off", *flags)
    assert code == 0 and "sample customer" in out
    assert "[sms] rule delivered" in out and "GSM-7, 1 segment(s)" in out
    assert "subject:" in out


def test_register_ingest_dispatch_log(
    capsys: pytest.CaptureFixture[str], flags: list[str], tmp_path: Path
) -> None:
    regs = SAMPLES / "registrations.jsonl"
    code, out, _ = run(capsys, "register", str(regs), *flags)
    assert code == 0 and out.count("registered") == 4
    code, out, _ = run(capsys, "ingest", str(SAMPLES / "webhook-selected-delivered.json"), *flags)
    assert code == 0 and "rule delivered" in out and "stale: event is" in out
    code, out, _ = run(capsys, "dispatch", *flags)
    assert (code, out.strip()) == (0, "nothing due")
    code, out, _ = run(capsys, "log", "--waybill", "12527345", "--json", *flags)
    rows = [json.loads(line) for line in out.splitlines()]
    assert {(r["channel"], r["status"]) for r in rows} == {("sms", "skipped"), ("email", "skipped")}
    assert all("9437011223" not in line for line in out.splitlines())


def test_bad_input_file_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], flags: list[str], tmp_path: Path
) -> None:
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text('{"waybill": "A", "cp_id": 4}\n')
    code, _, err = run(capsys, "ingest", str(bodies), *flags)
    assert code == 1 and f"{bodies}:1:" in err and "clickpost_status_code" in err
    code, _, err = run(capsys, "ingest", str(tmp_path / "missing.json"), *flags)
    assert code == 1 and "cannot read" in err and "Traceback" not in err


def test_schema_is_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    assert code == 0 and "rules" in schema["properties"]


def test_demo_fills_the_outbox(
    capsys: pytest.CaptureFixture[str], flags: list[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "demo", *flags)
    assert code == 0
    assert "landline phone" in out and "no email" in out
    assert (tmp_path / "outbox" / "sms.jsonl").exists()
    lines = (tmp_path / "outbox" / "sms.jsonl").read_text().splitlines()
    code, again, _ = run(capsys, "demo", *flags)
    assert "dispatched: nothing due" in again
    assert (tmp_path / "outbox" / "sms.jsonl").read_text().splitlines() == lines


def test_preview_from_codes_without_a_payload(
    capsys: pytest.CaptureFixture[str], flags: list[str]
) -> None:
    code, out, _ = run(capsys, "preview", "--status", "FailedDelivery", "--ndr", "6",
                       "--quiet-hours", "off", *flags)  # fmt: skip
    assert code == 0 and "rule failed_delivery_address matched FailedDelivery (9)" in out
    code, out, _ = run(capsys, "preview", "--status", "8", "--quiet-hours", "21:00-09:00",
                       *flags)  # fmt: skip
    assert code == 0 and "[sms] rule delivered" in out
    code, _, err = run(capsys, "preview", "--status", "Delivred", *flags)
    assert code == 1 and "unknown status 'Delivred'" in err
    code, _, err = run(capsys, "preview", *flags)
    assert code == 1 and "--status" in err


def test_replay_compares_new_rules_without_sending(
    capsys: pytest.CaptureFixture[str], flags: list[str], tmp_path: Path
) -> None:
    assert run(capsys, "demo", *flags)[0] == 0
    outbox = sorted(p.name for p in (tmp_path / "outbox").rglob("*"))
    text = (ROOT / "rules.yaml").read_text()
    at = text.index("  - name: failed_delivery_unavailable")
    new = tmp_path / "new.yaml"
    new.write_text(
        text[:at] + text[at:].replace("    send:\n", "    enabled: false\n    send:\n", 1)
    )
    code, out, _ = run(capsys, "replay", "--new-rules", str(new), *flags)
    assert code == 0 and out.startswith("4 stored updates replayed")
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in out.splitlines()[3:10]}
    assert rows[("failed_delivery_unavailable", "sms")] == ["1", "0", "-1"]
    assert rows[("failed_delivery", "email")] == ["0", "2", "+2"]
    assert rows[("delivered", "sms")] == ["1", "1", "+0"]
    assert "only with the new rules: failed_delivery sms: e.g. XYZABC" in out
    assert sorted(p.name for p in (tmp_path / "outbox").rglob("*")) == outbox  # nothing sent
