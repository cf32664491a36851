"""The webhook route's short way past FastAPI's middleware and routing (server._App).

It must answer exactly as the ordinary route does, which still serves an app mounted under a
prefix or given middleware of its own; and it must really be taken, or the daemon pays for
FastAPI's stack on every webhook again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import starlette.applications
from conftest import Clock, dumps, webhook
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response

from notifier import Notifier, Settings
from notifier.errors import StoreUnavailableError
from notifier.server import create_app

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
PREFIX = "/notifier"
KEY = {"webhook_key": "k-2026"}
BODY = dumps(webhook(code=6, at=T0))


def _client(settings: Settings, clock: Clock, root_path: str = "") -> TestClient:
    limits = {"webhook_keys": SecretStr("k-2026"), "max_body_bytes": 4096}
    keyed = settings.model_copy(update=limits)
    app = create_app(keyed, notifier=Notifier(keyed, clock=clock), run_scheduler=False)
    return TestClient(app, root_path=root_path, raise_server_exceptions=False)


@pytest.fixture
def calls_through_fastapi(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of HTTP requests that went through Starlette's middleware and router."""
    seen: list[str] = []
    through = starlette.applications.Starlette.__call__

    async def spy(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
        await through(self, scope, receive, send)

    monkeypatch.setattr(starlette.applications.Starlette, "__call__", spy)
    return seen


def test_the_webhook_skips_fastapis_stack_and_nothing_else_does(
    settings: Settings, clock: Clock, calls_through_fastapi: list[str]
) -> None:
    clock.now = T0
    with _client(settings, clock) as client:
        assert client.post("/webhooks/clickpost", content=BODY, headers=KEY).status_code == 200
        assert client.post("/webhooks/clickpost", content=b"{", headers=KEY).status_code == 400
        assert client.get("/webhooks/clickpost").status_code == 405  # not the POST
        assert client.get("/healthz").status_code == 200
    assert calls_through_fastapi == ["/webhooks/clickpost", "/healthz"]


def _exchanges(client: TestClient, path: str) -> list[tuple[int, Any, str | None]]:
    """The same requests, good and bad, as (status, JSON body, Retry-After)."""
    sent = [
        (BODY, KEY),  # accepted
        (BODY, KEY),  # duplicate
        (BODY, {"webhook_key": "wrong"}),  # 401
        (b"{not json", KEY),  # 400
        (b'{"waybill": "A", "cp_id": 4}', KEY),  # 422, naming the field
        (b"{" + b" " * 5000 + b"}", KEY),  # 413
        (dumps(webhook(code=8, at=T0)), {**KEY, "content-type": "text/plain"}),
    ]
    answers = []
    for content, headers in sent:
        response = client.post(path, content=content, headers=headers)
        answers.append((response.status_code, response.json(), response.headers.get("retry-after")))
    return answers


def _failing(client: TestClient, error: Exception) -> Callable[..., Any]:
    async def fail(*_: Any, **__: Any) -> Any:
        raise error

    notifier: Notifier = client.app.state.notifier  # type: ignore[attr-defined]
    notifier.handle_webhook = fail  # type: ignore[method-assign]
    return fail


@pytest.mark.parametrize(
    "error", [StoreUnavailableError("database is locked"), RuntimeError("a bug")]
)
def test_both_ways_answer_alike(
    settings: Settings, clock: Clock, tmp_path: Any, error: Exception
) -> None:
    """Accepted, duplicate, 401, 400, 413, 422: the same status and body either way; an
    unavailable database is a 503 with Retry-After, and a bug a JSON 500, either way."""
    clock.now = T0
    results = []
    for root in ("", PREFIX):
        fresh = settings.model_copy(
            update={"database_url": f"sqlite:///{tmp_path}/{root.strip('/') or 'direct'}.db"}
        )
        with _client(fresh, clock, root_path=root) as client:
            answers = _exchanges(client, f"{root}/webhooks/clickpost")
            _failing(client, error)
            failed = client.post(f"{root}/webhooks/clickpost", content=BODY, headers=KEY)
            answers.append((failed.status_code, failed.json(), failed.headers.get("retry-after")))
        results.append(answers)
    direct, mounted = results
    assert direct == mounted
    assert [status for status, _, _ in direct] == [
        200, 200, 401, 400, 422, 413, 200, 503 if isinstance(error, StoreUnavailableError) else 500
    ]  # fmt: skip
    assert direct[1][1]["status"] == "duplicate"
    assert direct[4][1]["field"] == "clickpost_status_code"


class _Tagging(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers["x-merchant"] = "seen"
        return response


@pytest.fixture
def tagged(settings: Settings, clock: Clock) -> Iterator[TestClient]:
    keyed = settings.model_copy(update={"webhook_keys": SecretStr("k-2026")})
    app = create_app(keyed, notifier=Notifier(keyed, clock=clock), run_scheduler=False)
    app.add_middleware(_Tagging)
    with TestClient(app) as client:
        yield client


def test_middleware_added_to_the_app_sees_webhooks_too(tagged: TestClient, clock: Clock) -> None:
    clock.now = T0
    response = tagged.post("/webhooks/clickpost", content=BODY, headers=KEY)
    assert response.status_code == 200 and response.headers["x-merchant"] == "seen"
