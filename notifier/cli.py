"""The ``notifier`` command: a thin layer over :class:`notifier.app.Notifier`.

Every command reads settings from the environment (``NOTIFIER_*``) and its flags, once, here.
Errors are one clear line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from notifier import demo
from notifier.app import Notifier, load_ruleset, quiet_hours_override
from notifier.checking import Limits, format_problem, run_checks
from notifier.clickpost.models import parse_registration, parse_webhook
from notifier.errors import InputError, NotifierError, RulesError
from notifier.preview import Preview, preview, synthetic_update
from notifier.rendering import Renderer
from notifier.replay import replay
from notifier.rules import load_rules, rules_json_schema
from notifier.settings import Settings
from notifier.store.log import ReplaySource
from notifier.store.privacy import Forgotten

Command = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        _logging(args, settings)
        code: int = args.run(args, settings)
        return code
    except RulesError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 1
    except (NotifierError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValidationError as err:
        print(
            f"error: bad setting: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}",
            file=sys.stderr,
        )
        return 1


def _settings(args: argparse.Namespace) -> Settings:
    flags = {
        "database_url": args.database,
        "rules": args.rules,
        "templates": args.templates,
        "outbox_dir": args.outbox,
        "quiet_hours": getattr(args, "quiet_hours", None),
    }
    return Settings(**{k: v for k, v in flags.items() if v is not None})


def _logging(args: argparse.Namespace, settings: Settings) -> None:
    """Every command logs through the masking handler (``serve`` sets up its own): warnings by
    default, everything with ``--debug``; never a phone, an email or a secret setting."""
    from notifier.logs import configure_logging, secret_values

    if args.command == "serve":
        if args.debug:
            args.log_level = "DEBUG"
        return
    level = "DEBUG" if args.debug else "WARNING"
    configure_logging(json=False, level=level, secrets=secret_values(settings))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notifier",
        description="Turn Clickpost tracking updates into SMS, WhatsApp and email messages.",
        epilog="Settings come from NOTIFIER_* environment variables; the flags override them.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database", metavar="URL", help="NOTIFIER_DATABASE_URL")
    common.add_argument("--rules", type=Path, metavar="FILE", help="NOTIFIER_RULES")
    common.add_argument("--templates", type=Path, metavar="DIR", help="NOTIFIER_TEMPLATES")
    common.add_argument("--outbox", type=Path, metavar="DIR", help="NOTIFIER_OUTBOX_DIR")
    common.add_argument(
        "--debug", action="store_true", help="log everything (personal data and secrets masked)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, run: Command, help_: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, parents=[common], help=help_, description=help_)
        cmd.set_defaults(run=run)
        return cmd

    p = add("serve", cmd_serve, "Run the daemon: the HTTP API and the dispatcher.")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-format", choices=["json", "text"], default="json")
    p.add_argument("--log-level", default="INFO")
    p = add("simulate", cmd_simulate, "Play Clickpost shipment journeys against a webhook URL.")
    from notifier import simulate

    simulate.add_simulate_arguments(p)
    p = add(
        "clickpost-standin",
        cmd_clickpost_standin,
        "Serve a local Clickpost stand-in (awb-register, track-order, test_webhook).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8010)
    p.add_argument("--webhook-key", default="standin-webhook-key")
    p.add_argument("--key", default="standin-key")
    p.add_argument("--username", default="standin")
    p = add("db", cmd_db, "Database schema: upgrade it to this version, or show its revision.")
    p.add_argument("action", choices=["upgrade", "current"])
    p = add("check", cmd_check, "Check rules.yaml and every template; exit 1 on errors.")
    p.add_argument(
        "--max-sms-segments",
        type=_at_least_one,
        default=1,
        metavar="N",
        help="warn when an SMS needs more than N parts (default 1)",
    )
    p.add_argument(
        "--allow-unicode",
        action="store_true",
        help="do not warn about Unicode SMS (templates named <name>.hi.txt.j2 never warn)",
    )
    p.add_argument(
        "--dlt-limit",
        type=_at_least_one,
        default=40,
        metavar="N",
        help="most characters one DLT variable may fill in (default 40, TRAI's limit)",
    )
    p = add(
        "preview", cmd_preview, "Show what a webhook body would send, and why. No side effects."
    )
    p.add_argument("payload", type=Path, nargs="?", help="a Clickpost webhook body (JSON file)")
    p.add_argument("--shipment", type=Path, help="an awb-register body for the shipment")
    p.add_argument("--status", help="instead of a payload: a status code or name (9, Delivered)")
    p.add_argument("--ndr", help="with --status 9: the NDR code or name (1, customer_unavailable)")
    p.add_argument("--event", help="the notification event id or name (4, failed_delivery)")
    p.add_argument("--quiet-hours", help="HH:MM-HH:MM or off (overrides the rules file)")
    p = add("ingest", cmd_ingest, "Store webhook bodies and plan their notifications.")
    p.add_argument("file", help="JSON or JSON Lines file of webhook bodies, or - for stdin")
    p = add("register", cmd_register, "Register shipments (awb-register bodies).")
    p.add_argument("file", help="JSON or JSON Lines file of awb-register bodies, or - for stdin")
    p = add("log", cmd_log, "Show the delivery log, newest first.")
    p.add_argument("--waybill")
    p.add_argument("--status")
    p.add_argument("--channel", choices=["sms", "whatsapp", "email"])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = add("replay", cmd_replay, "What new rules would have sent over the stored updates.")
    p.add_argument(
        "--new-rules",
        dest="new_rules",
        type=Path,
        required=True,
        metavar="NEW.yaml",
        help="the rules file to try (nothing is sent)",
    )
    p.add_argument(
        "--since",
        type=datetime.fromisoformat,
        metavar="DATE",
        help="only updates received since (YYYY-MM-DD or an ISO time, UTC)",
    )
    add("dispatch", cmd_dispatch, "Send what is due now, once, and exit.")
    p = add("forget", cmd_forget, "Erase one customer's personal data everywhere, on request.")
    p.add_argument("--phone", help="the customer's phone number, in any usual form")
    p.add_argument("--email", help="the customer's email address")
    add("schema", cmd_schema, "Print the JSON Schema of rules.yaml.")
    p = add("demo", cmd_demo, "Feed the sample webhooks through the engine and show the outbox.")
    p.add_argument("--quiet-hours", default="off", help="default off, so the demo sends now")
    return parser


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from notifier import server

    return server.serve(settings, host=args.host, port=args.port, log_format=args.log_format,
                        log_level=args.log_level)  # fmt: skip


def cmd_clickpost_standin(args: argparse.Namespace, settings: Settings) -> int:
    from notifier.clickpost.standin import serve_standin

    return serve_standin(args.host, args.port, args.webhook_key, key=args.key,
                         username=args.username)  # fmt: skip


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from notifier import simulate

    return asyncio.run(simulate.run_from_args(args))


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from notifier.store import migrations
    from notifier.store.database import Database

    db = Database(settings.database_url)
    try:
        if args.action == "upgrade":
            before = migrations.current(db)
            migrations.upgrade(db)
            print(f"schema: {before or 'empty'} -> {migrations.current(db)}")
        else:
            print(
                f"schema: {migrations.current(db) or 'empty'} (this version: {migrations.head()})"
            )
    finally:
        db.dispose()
    return 0


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    limits = Limits(
        max_sms_segments=args.max_sms_segments,
        dlt_limit=args.dlt_limit,
        allow_unicode=args.allow_unicode,
    )
    report = run_checks(settings.rules, settings.templates, limits)
    for problem in report.problems:
        print(format_problem(problem), file=sys.stderr)
    print(report.summary())
    return 1 if report.errors else 0


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    renderer = Renderer(settings.templates)
    rules = load_ruleset(settings, renderer)
    registration = parse_registration(_read(args.shipment)) if args.shipment else None
    now = datetime.now(UTC)
    if args.payload:
        update = parse_webhook(_read(args.payload))
    elif args.status:
        update = synthetic_update(
            status=args.status, ndr=args.ndr, event=args.event, registration=registration, now=now
        )
    else:
        raise InputError("give a payload file, or --status (with --ndr/--event)", field="payload")
    result = preview(
        update,
        registration,
        rules=rules,
        renderer=renderer,
        now=now,
        quiet_hours=quiet_hours_override(settings),
    )
    _print_preview(result, sys.stdout)
    return 0


def _print_preview(result: Preview, out: TextIO) -> None:
    print(f"decision: {result.verdict}", file=out)
    if result.sample_customer:
        print("(no --shipment given: using a sample customer)", file=out)
    for item in result.items:
        p = item.planned
        head = f"\n[{p.channel.value}] rule {p.rule}, template {p.template}"
        print(
            head,
            f"  to: {p.recipient_masked or '-'}",
            f"  dedup key: {p.dedup_key}",
            sep="\n",
            file=out,
        )
        if p.status.value == "skipped":
            print(f"  would NOT send: {p.reason}", file=out)
            continue
        print(
            f"  due: {p.due_at:%Y-%m-%d %H:%M} UTC" + (f" ({p.reason})" if p.reason else ""),
            file=out,
        )
        if item.error:
            print(f"  template error: {item.error}", file=out)
        elif item.rendered is not None:
            if item.rendered.subject:
                print(f"  subject: {item.rendered.subject}", file=out)
            print("  " + item.rendered.text.replace("\n", "\n  "), file=out)
            if item.segments:
                print(f"  ({item.segments})", file=out)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        async with Notifier(settings) as n:
            for number, body in _records(args.file):
                try:
                    outcome = await n.handle_webhook(body)
                except InputError as err:
                    print(f"{args.file}:{number}: {err}", file=sys.stderr)
                    return 1
                print(
                    f"{number}: {outcome.verdict}"
                    + "".join(
                        f"\n   {s.channel}: {s.status}" + (f" ({s.reason})" if s.reason else "")
                        for s in outcome.notifications
                    )
                )
        return 0

    return asyncio.run(run())


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> int:
        async with Notifier(settings) as n:
            for number, body in _records(args.file):
                try:
                    result = await n.register_shipment(body)
                except InputError as err:
                    print(f"{args.file}:{number}: {err}", file=sys.stderr)
                    return 1
                word = "registered" if result.created else "updated"
                extra = f", {result.evaluation.verdict}" if result.evaluation else ""
                print(f"{number}: shipment {result.shipment_id} {word}{extra}")
            if n.clickpost_sync is not None:  # forward now; what fails, the daemon retries
                done = await n.clickpost_sync.make_owed_calls(limit=10_000)
                print(f"forwarded to Clickpost: {done}")
        return 0

    return asyncio.run(run())


def cmd_log(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> list[dict[str, Any]]:
        async with Notifier(settings) as n:
            return await n.notifications(
                waybill=args.waybill, status=args.status, channel=args.channel, limit=args.limit
            )

    for row in asyncio.run(run()):
        if args.json:
            print(json.dumps(row, default=str))
            continue
        when = row["sent_at"] or row["due_at"]
        print(
            f"#{row['id']:<5} {when:%Y-%m-%d %H:%M} {row['waybill']:<16} {row['rule']:<28} "
            f"{row['channel']:<8} {row['recipient']:<18} {row['status']:<10} {row['reason']}"
        )
    return 0


def cmd_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> dict[str, int]:
        async with Notifier(settings) as n:
            return (await n.dispatch_due()).counts

    counts = asyncio.run(run())
    print(", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing due")
    return 0


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    """Erase what notifier holds about one customer and say what went (counts, no data)."""
    if not (args.phone or args.email):
        raise InputError("give --phone, --email or both", field="--phone")

    async def run() -> Forgotten:
        async with Notifier(settings) as n:
            return await n.forget(phone=args.phone, email=args.email)

    forgotten = asyncio.run(run())
    print("erased:")
    for line in forgotten.lines():
        print(f"  {line}")
    if forgotten.suppressions_kept:
        print("  (opt-outs are kept so that this customer is not messaged again)")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    renderer = Renderer(settings.templates)
    new = load_rules(args.new_rules, missing_template=renderer.missing)
    since = args.since.replace(tzinfo=args.since.tzinfo or UTC) if args.since else None

    async def source() -> ReplaySource:
        async with Notifier(settings) as n:
            return await asyncio.to_thread(n.log.replay_source, since)

    events, planned = asyncio.run(source())
    report = replay(events, planned, new)
    print(
        f"{report.events} stored updates replayed with {args.new_rules} (version {new.version})"
        + (f"; {report.unreadable} unreadable (purged)" if report.unreadable else "")
    )
    print(f"\n{'rule':<30} {'channel':<9} {'sent':>6} {'would send':>11} {'change':>7}")
    for rule, channel, before, after in report.rows:
        print(f"{rule:<30} {channel:<9} {before:>6} {after:>11} {after - before:>+7}")
    sides = (("only before", report.only_before), ("only with the new rules", report.only_after))
    for title, examples in sides:
        for (rule, channel), waybills in sorted(examples.items()):
            print(f"{title}: {rule} {channel}: e.g. {', '.join(waybills)}")
    return 0


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(rules_json_schema(), indent=2))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(demo.run(settings, sys.stdout))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}", field=str(path)) from err


def _records(name: str) -> Iterator[tuple[int, bytes]]:
    """A JSON document (one body or a list of bodies) or JSON Lines, numbered for errors."""
    text = sys.stdin.read() if name == "-" else _read(Path(name)).decode("utf-8", "replace")
    stripped = text.strip()
    try:
        whole = json.loads(stripped) if stripped else []
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, list):
        yield from ((i, json.dumps(b).encode()) for i, b in enumerate(whole, 1))
    elif whole is not None:
        yield 1, stripped.encode()
    else:
        lines = ((n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip())
        yield from ((n, line.encode()) for n, line in lines)


if __name__ == "__main__":
    raise SystemExit(main())
