"""Structured logs: JSON lines, personal data masked everywhere, secrets never printed."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from notifier import ConfigurationError, Settings
from notifier.logs import UVICORN_LOGGERS, configure_logging, secret_values

PHONE_FORMS = [
    "9876543210",
    "09876543210",
    "+919876543210",
    "+91 98765 43210",
    "+91-98765-43210",
    "98765 43210",
    "919876543210",
    "0091 98765 43210",
    "whatsapp:+919876543210",
]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back for the next test."""
    root = logging.getLogger()
    names = [*UVICORN_LOGGERS, "apscheduler"]
    saved = [(root.handlers[:], root.level)]
    loggers = [logging.getLogger(n) for n in names]
    state = [(lg.handlers[:], lg.filters[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    yield
    root.handlers[:], level = saved[0]
    root.setLevel(level)
    for lg, (handlers, filters, lvl, propagate, disabled) in zip(loggers, state, strict=True):
        lg.handlers[:], lg.filters[:] = handlers, filters
        lg.setLevel(lvl)
        lg.propagate, lg.disabled = propagate, disabled


Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_lines() -> Lines:
    stream = io.StringIO()
    configure_logging(json=True, level="DEBUG", stream=stream)
    return lambda: [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_a_line_with_the_fields(json_lines: Lines) -> None:
    logging.getLogger("notifier.test").info(
        "update %s/%s", 4, "SF18399217NER", extra={"event_id": 7}
    )
    [line] = json_lines()
    assert line["level"] == "INFO" and line["logger"] == "notifier.test"
    assert line["message"] == "update 4/SF18399217NER"
    assert line["event_id"] == 7
    assert datetime.fromisoformat(line["ts"]).tzinfo == UTC and line["ts"].endswith("Z")
    assert abs(datetime.fromisoformat(line["ts"]) - datetime.now(UTC)).total_seconds() < 60


@pytest.mark.parametrize("form", PHONE_FORMS)
def test_every_phone_form_masked_in_free_text(json_lines: Lines, form: str) -> None:
    logging.getLogger("notifier").info(f"sending to {form} now")
    message = json_lines()[0]["message"]
    assert "98765" not in message and "43210" not in message
    assert message.startswith("sending to ") and message.endswith("3210 now")
    assert "******3210" in message


def test_phone_and_email_masked_in_args(json_lines: Lines) -> None:
    log = logging.getLogger("notifier")
    log.info("to %s", "+919876543210")
    log.warning("to %s and %s", "098765 43210", "priya.sharma@example.com")
    first, second = (line["message"] for line in json_lines())
    assert first == "to +91******3210"
    assert second == "to *******3210 and p***@example.com"


def test_extras_masked_recursively_and_secret_keys_dropped(json_lines: Lines) -> None:
    class Consumer:
        def __str__(self) -> str:
            return "Consumer(phone=9876543210)"

    extra = {
        "to": "+91 98765 43210",
        "phone_number": 9876543210,
        "consumer": {"email": "priya.sharma@example.com", "phones": ["09876543210"]},
        "obj": Consumer(),
        "auth_token": "tw-very-secret",
        "headers": {"Authorization": "Bearer abc123", "webhook_key": "k-2026"},
        "attempts": 3,
        "dedup_key": "4/SF18399217NER/delivered/sms",
    }
    logging.getLogger("notifier").info("sent", extra=extra)
    [line] = json_lines()
    assert line["to"] == "+91******3210"
    assert line["phone_number"] == "******3210"
    assert line["consumer"] == {"email": "p***@example.com", "phones": ["*******3210"]}
    assert line["obj"] == "Consumer(phone=******3210)"
    assert line["auth_token"] == "***"
    assert line["headers"] == {"Authorization": "***", "webhook_key": "***"}
    assert line["attempts"] == 3 and line["dedup_key"] == "4/SF18399217NER/delivered/sms"


def test_exception_text_masked(json_lines: Lines) -> None:
    try:
        raise ValueError("no route to 9876543210 or priya.sharma@example.com, token=abc123")
    except ValueError:
        logging.getLogger("notifier").exception("send failed for %s", "+919876543210")
    [line] = json_lines()
    assert line["message"] == "send failed for +91******3210"
    assert "Traceback" in line["exc"] and "ValueError: no route to ******3210" in line["exc"]
    assert "p***@example.com" in line["exc"] and "token=***" in line["exc"]
    assert "9876543210" not in line["exc"] and "abc123" not in line["exc"]


def test_secrets_never_appear() -> None:
    settings = Settings(
        webhook_keys=SecretStr("k-2026-alpha, k-2025-beta"),
        twilio_auth_token=SecretStr("tw-0123456789abcdef"),
        smtp_password=SecretStr("hunter2-smtp"),
        api_token=SecretStr("api-token-value"),
    )
    stream = io.StringIO()
    configure_logging(json=True, secrets=secret_values(settings), stream=stream)
    log = logging.getLogger("notifier")
    log.info("headers %s", {"webhook_key": "k-2026-alpha", "Authorization": "Bearer x.y.z"})
    log.info("GET /api?token=abcdef&waybill=SF1 Authorization: Basic dXNlcjpwYXNz")
    log.info("password=pw-in-text, auth_token: at-in-text, smtp://u:pw-in-url@mail.example")
    log.info("clickpost poll ?username=acme&key=cp-api-key, secret_key=sk-in-text")
    log.info("rotated %s to %s via %s", "k-2025-beta", "k-2026-alpha", "tw-0123456789abcdef")
    log.info("config", extra={"smtp": {"password": "hunter2-smtp"}, "note": "api-token-value"})
    output = stream.getvalue()
    for secret in (
        "k-2026-alpha", "k-2025-beta", "tw-0123456789abcdef", "hunter2-smtp",
        "api-token-value", "x.y.z", "abcdef", "dXNlcjpwYXNz", "pw-in-text", "at-in-text",
        "pw-in-url", "cp-api-key", "sk-in-text",
    ):  # fmt: skip
        assert secret not in output
    messages = [json.loads(line)["message"] for line in output.splitlines()]
    assert messages[1] == "GET /api?token=***&waybill=SF1 Authorization: ***"
    assert messages[4] == "rotated *** to *** via ***"


def test_ordinary_identifiers_are_not_masked(json_lines: Lines) -> None:
    logging.getLogger("notifier").info(
        "update 4/SF18399217NER awb 1234567890123 at 2026-11-26T05:00:00Z from 203.0.113.9 "
        "order ACME-100231 epoch 1764133200"
    )
    message = json_lines()[0]["message"]
    assert message == (
        "update 4/SF18399217NER awb 1234567890123 at 2026-11-26T05:00:00Z from 203.0.113.9 "
        "order ACME-100231 epoch 1764133200"
    )


def test_a_broken_format_call_is_still_logged_and_masked(json_lines: Lines) -> None:
    logging.getLogger("notifier").info("to %s %s", "9876543210")
    [line] = json_lines()
    assert "******3210" in line["message"] and "9876543210" not in line["message"]


def test_level_filtering_and_unknown_level() -> None:
    stream = io.StringIO()
    configure_logging(level="warning", stream=stream)
    log = logging.getLogger("notifier")
    log.info("quiet")
    log.warning("loud")
    logging.getLogger("uvicorn.error").setLevel(logging.INFO)  # as uvicorn.run sets it
    logging.getLogger("uvicorn.error").info("quiet too")
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["loud"]
    with pytest.raises(ConfigurationError, match="log level 'LOUD'"):
        configure_logging(level="LOUD")


def test_text_mode_is_human_readable_and_masked() -> None:
    stream = io.StringIO()
    configure_logging(json=False, stream=stream)
    logging.getLogger("notifier.dispatch").info("sent to %s", "9876543210", extra={"id": 12})
    line = stream.getvalue().strip()
    assert line.endswith("INFO    notifier.dispatch: sent to ******3210 id=12")
    datetime.fromisoformat(line.split(" ")[0])


def test_configuring_twice_installs_one_handler_and_quiets_apscheduler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    logging.getLogger("notifier").info("once")
    logging.getLogger("apscheduler.executors.default").info('Running job "dispatch"')
    assert first.getvalue() == ""
    assert [json.loads(line)["message"] for line in second.getvalue().splitlines()] == ["once"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _tiny_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_uvicorn_logs_routed_and_access_log_keeps_the_path_only() -> None:
    """A real uvicorn server, configured as ``notifier serve`` should: ``log_config=None``."""
    stream = io.StringIO()
    configure_logging(json=True, level="INFO", stream=stream)
    port = _free_port()
    config = uvicorn.Config(_tiny_app, host="127.0.0.1", port=port, log_config=None,
                            log_level="info", lifespan="off")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}/console/search?q=9876543210&token=abc"
        assert httpx.get(url).text == "ok"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers
    [access] = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert access["message"] == '"GET /console/search HTTP/1.1" 200'  # no client, no query
    assert (access["method"], access["path"], access["status"]) == ("GET", "/console/search", 200)
    served = json.dumps([line for line in lines if line["logger"].startswith("uvicorn")])
    assert "q=" not in served and "9876543210" not in served and "abc" not in served
