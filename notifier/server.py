"""The HTTP API: an ASGI app (FastAPI) over :class:`~notifier.app.Notifier`.

``create_app(settings)`` builds it, with a lifespan that starts the dispatcher's timer; it
serves ``notifier serve`` and mounts inside a merchant's own ASGI app. Every route of
design.md is here. Input the app can judge never gets a 500: a bad body is a 4xx naming the
field, an unavailable database a 503 that Clickpost retries.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from notifier import __version__
from notifier.app import Notifier
from notifier.errors import AuthenticationError, InputError, StoreUnavailableError
from notifier.scheduling import Scheduler
from notifier.settings import Settings
from notifier.store.repository import IngestOutcome

LOOPBACK_NAMES = {"localhost", "testclient"}


class Refused(Exception):
    """A request refused before it reached the engine: status, message, field."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        self.status, self.message, self.field = status, message, field
        super().__init__(message)


def create_app(
    settings: Settings | None = None,
    *,
    notifier: Notifier | None = None,
    run_scheduler: bool = True,
) -> FastAPI:
    """The ASGI app. Pass ``notifier`` to share an engine you built; ``run_scheduler=False``
    leaves dispatching to you (tests, or a separate worker)."""
    settings = settings or (notifier.settings if notifier else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = notifier or Notifier(settings)
        scheduler = Scheduler(engine, retention_days=settings.retention_days)
        app.state.notifier, app.state.scheduler = engine, scheduler
        if run_scheduler:
            scheduler.start()
        try:
            yield
        finally:
            await scheduler.shutdown(grace=settings.shutdown_grace)
            if notifier is None:
                await engine.close()

    app = FastAPI(title="notifier", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    _errors(app)
    _routes(app, settings)
    return app


def _errors(app: FastAPI) -> None:
    def error(status: int, message: str, field: str = "", **headers: str) -> JSONResponse:
        body = {"error": message, "field": field} if field else {"error": message}
        return JSONResponse(body, status_code=status, headers=headers or None)

    @app.exception_handler(Refused)
    async def refused(_: Request, err: Refused) -> JSONResponse:
        return error(err.status, err.message, err.field)

    @app.exception_handler(AuthenticationError)
    async def unauthenticated(_: Request, err: AuthenticationError) -> JSONResponse:
        return error(401, str(err), err.field)

    @app.exception_handler(InputError)
    async def bad_input(_: Request, err: InputError) -> JSONResponse:
        return error(400 if err.field in {"", "body"} else 422, str(err), err.field)

    @app.exception_handler(StoreUnavailableError)
    async def unavailable(_: Request, err: StoreUnavailableError) -> JSONResponse:
        return error(503, "temporarily unavailable, retry later", **{"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def bad_query(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"][1:]) or "request"
        return error(422, f"{field}: {first['msg']}", field)


def _routes(app: FastAPI, settings: Settings) -> None:
    @app.post("/webhooks/clickpost")
    async def clickpost_webhook(request: Request) -> Response:
        engine = _engine(request)
        _webhook_allowed(settings)
        outcome = await engine.handle_webhook(await _body(request, settings), request.headers)
        if _due_now(outcome, engine.clock()):
            request.app.state.scheduler.wake()
        # Encoded here: the hottest route skips FastAPI's response-model machinery.
        body = json.dumps(_ingest_view(outcome), default=datetime.isoformat)
        return Response(body, media_type="application/json")

    @app.post("/shipments")
    async def register(request: Request) -> JSONResponse:
        _api_allowed(request, settings)
        result = await _engine(request).register_shipment(await _body(request, settings))
        evaluation = _ingest_view(result.evaluation) if result.evaluation else None
        body = {"shipment_id": result.shipment_id, "created": result.created,
                "adopted_events": result.adopted_events, "evaluation": evaluation}  # fmt: skip
        if result.evaluation and result.evaluation.notifications:
            request.app.state.scheduler.wake()
        return JSONResponse(jsonable_encoder(body), status_code=201 if result.created else 200)

    @app.post("/shipments/unregister")
    async def unregister(request: Request) -> dict[str, Any]:
        _api_allowed(request, settings)
        if not await _engine(request).unregister_shipment(await _body(request, settings)):
            raise Refused(404, "no such shipment", "waybill")
        return {"unregistered": True}

    @app.get("/shipments/{cp_id}/{waybill}")
    async def shipment(request: Request, cp_id: int, waybill: str) -> dict[str, Any]:
        _api_allowed(request, settings)
        detail = await _engine(request).shipment(cp_id, waybill)
        if detail is None:
            raise Refused(404, "no such shipment", "waybill")
        return detail

    @app.get("/notifications")
    async def notifications(
        request: Request,
        waybill: str | None = None,
        status: str | None = None,
        channel: str | None = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        _api_allowed(request, settings)
        return await _engine(request).notifications(
            waybill=waybill, status=status, channel=channel, since=since, limit=limit
        )

    @app.post("/callbacks/twilio/status")
    async def twilio_status(request: Request) -> Response:
        form = await request.form()
        params = {k: str(v) for k, v in form.items()}
        signature = request.headers.get("x-twilio-signature", "")
        await _engine(request).handle_twilio_status(params, signature)
        return Response(status_code=204)

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        engine, scheduler = _engine(request), request.app.state.scheduler
        database = engine.db.ping()
        body = {
            "status": "ok" if database else "unavailable",
            "database": database,
            "scheduler": scheduler.alive,
            "rules": {"version": engine.rules.version, "rules": len(engine.rules.rules),
                      "error": engine.rules_error},
        }  # fmt: skip
        return JSONResponse(body, status_code=200 if database else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> PlainTextResponse:
        from notifier.metrics import exposition

        return PlainTextResponse(exposition(_engine(request)))


def _engine(request: Request) -> Notifier:
    engine: Notifier = request.app.state.notifier
    return engine


async def _body(request: Request, settings: Settings) -> bytes:
    """The raw body, refused with 413 past the limit without reading it all."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, f"body larger than {limit} bytes", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"body larger than {limit} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


def _due_now(outcome: IngestOutcome, now: datetime) -> bool:
    """Whether the update planned a message to send now (not one deferred by quiet hours)."""
    return any(
        s.status == "scheduled" and (s.due_at is None or s.due_at <= now)
        for s in outcome.notifications
    )


def _webhook_allowed(settings: Settings) -> None:
    """Without keys, webhooks only when explicitly allowed. With keys, ``handle_webhook``
    checks them before it parses the body."""
    if not settings.accepted_webhook_keys and not settings.allow_unauthenticated:
        raise Refused(
            401,
            "webhooks are refused: set NOTIFIER_WEBHOOK_KEYS "
            "(or NOTIFIER_ALLOW_UNAUTHENTICATED=1 for local testing)",
            "webhook_key",
        )


def _api_allowed(request: Request, settings: Settings) -> None:
    """The API token when one is set (constant-time compare); else loopback callers only."""
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    if token:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Refused(401, "missing or wrong API token", "Authorization")
        return
    host = request.client.host if request.client else ""
    if not _is_loopback(host):
        raise Refused(
            403, "set NOTIFIER_API_TOKEN to use the API from other hosts", "Authorization"
        )


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ingest_view(outcome: IngestOutcome) -> dict[str, Any]:
    return {
        "status": "duplicate" if outcome.duplicate else "accepted",
        "event_id": outcome.event_id,
        "shipment_id": outcome.shipment_id,
        "verdict": outcome.verdict,
        "notifications": [
            {"id": s.notification_id, "rule": s.rule, "channel": s.channel, "status": s.status,
             "reason": s.reason, "due_at": s.due_at}
            for s in outcome.notifications
        ],
        "cancelled": outcome.cancelled,
    }  # fmt: skip


def serve(
    settings: Settings, *, host: str, port: int, log_format: str = "json", log_level: str = "INFO"
) -> int:
    """``notifier serve``: uvicorn with the app, after saying loudly what is insecure.

    Logs are JSON lines (or text) with phone numbers, emails and secrets masked; uvicorn's own
    loggers go through the same handler (``log_config=None``), its access log without query
    strings. A SIGTERM stops taking requests, lets in-flight sends finish within
    ``NOTIFIER_SHUTDOWN_GRACE`` and exits 0.
    """
    from notifier.logs import configure_logging, secret_values

    configure_logging(json=log_format == "json", level=log_level, secrets=secret_values(settings))
    log = logging.getLogger("notifier")
    if not settings.accepted_webhook_keys and not settings.allow_unauthenticated:
        if _is_loopback(host):
            settings = settings.model_copy(update={"allow_unauthenticated": True})
            log.warning(
                "NO WEBHOOK KEYS: accepting unauthenticated webhooks because this server only "
                "listens on %s. Set NOTIFIER_WEBHOOK_KEYS before exposing it.", host,
            )  # fmt: skip
        else:
            log.warning("NO WEBHOOK KEYS: every webhook will be refused (401). "
                        "Set NOTIFIER_WEBHOOK_KEYS.")  # fmt: skip
    config = uvicorn.Config(
        create_app(settings), host=host, port=port, log_config=None,
        log_level=log_level.lower(), timeout_graceful_shutdown=int(settings.shutdown_grace) + 1,
    )  # fmt: skip
    _GracefulServer(config).run()
    return 0


class _GracefulServer(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM after a clean shutdown, so the process would end with
    status 143; a graceful stop is a success, so the signal is consumed instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()
