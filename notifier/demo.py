"""``notifier demo`` (what ``make run`` shows): the sample webhooks through the whole engine.

Registers four shipments, feeds Clickpost's sample webhooks (their timestamps moved to a few
minutes ago, so they are not too old to matter), dispatches, and prints what reached the
outbox. Run it twice: the second run sends nothing, because every message is once only.
"""

from __future__ import annotations

import email
import json
from datetime import datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any, TextIO

from notifier.app import Notifier
from notifier.errors import ConfigurationError
from notifier.settings import Settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "clickpost"


async def run(settings: Settings, out: TextIO, examples: Path = EXAMPLES) -> int:
    if not examples.is_dir():
        raise ConfigurationError(f"sample webhooks not found in {examples}")
    async with Notifier(settings) as n:
        print(f"database {settings.database_url}, outbox {settings.outbox_dir}/\n", file=out)
        anchor = None
        for line in (examples / "registrations.jsonl").read_text().splitlines():
            result = await n.register_shipment(line)
            body = json.loads(line)
            word = "registered" if result.created else "already registered"
            print(f"shipment {body['waybill']}: {word}", file=out)
            detail = await n.shipment(body["cp_id"], body["waybill"])
            assert detail is not None
            created = detail["shipment"]["created_at"]
            anchor = created if anchor is None else min(anchor, created)
        assert anchor is not None
        # Scans dated shortly before the shipments were first registered: a second run replays
        # the very same webhooks, and shows that nothing goes out twice.
        when = anchor.replace(microsecond=0) - timedelta(minutes=5)
        for path in sorted(examples.glob("webhook-*.json")):
            outcome = await n.handle_webhook(_recent(json.loads(path.read_text()), when))
            print(f"\n{path.name}: {outcome.verdict}", file=out)
            for s in outcome.notifications:
                print(
                    f"  {s.channel:<6} {s.status}" + (f": {s.reason}" if s.reason else ""), file=out
                )
        report = await n.dispatch_due()
        print(f"\ndispatched: {report.counts or 'nothing due'}", file=out)
    _show_outbox(settings.outbox_dir, out)
    return 0


def _recent(body: Any, when: datetime) -> Any:
    """The body with every ``timestamp`` set to ``when``, in Clickpost's ``Z`` form."""
    if isinstance(body, dict):
        return {
            k: (when.strftime("%Y-%m-%dT%H:%M:%SZ") if k == "timestamp" else _recent(v, when))
            for k, v in body.items()
        }
    return body


def _show_outbox(outbox: Path, out: TextIO) -> None:
    print(f"\nWhat reached the outbox ({outbox}/):", file=out)
    for kind in ("sms", "whatsapp"):
        path = outbox / f"{kind}.jsonl"
        if path.exists():
            for line in path.read_text().splitlines()[-10:]:
                msg = json.loads(line)
                print(f"  {kind} #{msg['id']} to {msg['to']}: {msg['text']}", file=out)
    emails = sorted((outbox / "email").glob("*.eml")) if (outbox / "email").is_dir() else []
    for path in emails[-10:]:
        mail = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        print(f"  email {path.name} to {mail['To']}: {mail['Subject']}", file=out)
