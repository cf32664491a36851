"""The HTTP API: an ASGI app (FastAPI) over :class:`~notifier.app.Notifier`.

``create_app(settings)`` builds it, with a lifespan that starts the dispatcher's timer; it
serves ``notifier serve`` and mounts inside a merchant's own ASGI app. Every route of
design.md is here. Input the app can judge never gets a 500: a bad body is a 4xx naming the
field, an unavailable database a 503 that Clickpost retries.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
import uvicorn
from fastapi import FastAPI, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from notifier import __version__
from notifier.app import Notifier
from notifier.clickpost.models import body_schemas
from notifier.console import console_router
from notifier.errors import AuthenticationError, InputError, StoreUnavailableError
from notifier.http_input import (
    Refused,
    api_allowed,
    engine_of,
    is_loopback,
    read_body,
    read_form,
    schema_body,
)
from notifier.optout_routes import optout_routes
from notifier.scheduling import Scheduler
from notifier.settings import Settings
from notifier.store.repository import IngestOutcome

log = logging.getLogger("notifier")
Int32 = Annotated[int, Path(ge=-(2**31), le=2**31 - 1)]  # cp_id: a 32-bit column


WEBHOOK_PATH = "/webhooks/clickpost"
Endpoint = Callable[[Request], Awaitable[Response]]


class _App(FastAPI):
    """FastAPI, with the Clickpost webhook answered before FastAPI's middleware and routing.

    It is the route a sale day calls thousands of times a second, and the one that must keep
    up: a bare FastAPI endpoint costs about 200 µs of CPU per request here, a bare ASGI one
    100 (benchmarks/http_ingest.py prints both). The same endpoint function answers either way,
    and an error goes to the same exception handler it would reach through FastAPI. The
    ordinary route stays, and serves the request when the app is mounted under a prefix or
    has middleware of its own, which the short way would skip.
    """

    webhook: tuple[Endpoint, BaseRoute] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.webhook is not None
            and scope["type"] == "http"
            and scope["path"] == WEBHOOK_PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and not self.user_middleware
        ):
            endpoint, scope["route"] = self.webhook
            scope["app"] = self
            request = Request(scope, receive)
            try:
                response = await endpoint(request)
            except Exception as err:
                response = await self._handled(request, err)
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _handled(self, request: Request, err: Exception) -> Response:
        """The response of the exception handler FastAPI would have chosen (the most specific
        registered class; ``Exception`` catches the rest)."""
        for kind in type(err).__mro__:
            handler = self.exception_handlers.get(kind)
            if handler is not None:
                response = handler(request, err)
                return await response if inspect.isawaitable(response) else response
        raise err


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

    app = _App(title="notifier", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    _document_bodies(app)
    _errors(app)
    _routes(app, settings)
    optout_routes(app, settings)
    app.include_router(console_router(settings))
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
    async def bad_input(request: Request, err: InputError) -> JSONResponse:
        message, kind = str(err), request.headers.get("content-type", "")
        if err.field in {"", "body"} and kind and "json" not in kind:
            message += f" (sent as {kind.split(';')[0]}; the body must be JSON)"
        return error(400 if err.field in {"", "body"} else 422, message, err.field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return error(err.status_code, str(err.detail), **(err.headers or {}))

    @app.exception_handler(StoreUnavailableError)
    async def unavailable(request: Request, err: StoreUnavailableError) -> JSONResponse:
        route = getattr(request.scope.get("route"), "path", "?")  # the template: no tokens
        log.warning("%s %s answered 503, to be retried: %s", request.method, route, err)
        return error(503, "temporarily unavailable, retry later", **{"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def crashed(_: Request, err: Exception) -> JSONResponse:
        # A bug, not bad input: logged with its traceback, answered as JSON all the same.
        logging.getLogger("notifier").error("unhandled error: %r", err, exc_info=err)
        return error(500, "internal error")

    @app.exception_handler(RequestValidationError)
    async def bad_query(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"][1:]) or "request"
        return error(422, f"{field}: {first['msg']}", field)


_SCHEMAS = body_schemas()


def _json_body(name: str) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its raw body: the body's schema, for the docs
    and for property-based tests (schemathesis) that generate bodies from it."""
    return schema_body(_SCHEMAS[name])


def _document_bodies(app: FastAPI) -> None:
    """Add the bodies' shared definitions to the OpenAPI document's components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()  # FastAPI caches it; the update below is idempotent
        document.setdefault("components", {}).setdefault("schemas", {}).update(_SCHEMAS["$defs"])
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _routes(app: _App, settings: Settings) -> None:
    @app.post(WEBHOOK_PATH, openapi_extra=_json_body("webhook"))
    async def clickpost_webhook(request: Request) -> Response:
        engine = engine_of(request)
        _webhook_allowed(settings)
        outcome = await engine.handle_webhook(await read_body(request, settings), request.headers)
        if _due_now(outcome, engine.clock()):
            request.app.state.scheduler.wake()
        # Encoded here: the hottest route skips FastAPI's response-model machinery.
        return Response(orjson.dumps(_ingest_view(outcome)), media_type="application/json")

    app.webhook = (clickpost_webhook, app.router.routes[-1])

    @app.post("/shipments", openapi_extra=_json_body("registration"))
    async def register(request: Request) -> JSONResponse:
        api_allowed(request, settings)
        result = await engine_of(request).register_shipment(await read_body(request, settings))
        evaluation = _ingest_view(result.evaluation) if result.evaluation else None
        body = {"shipment_id": result.shipment_id, "created": result.created,
                "adopted_events": result.adopted_events, "evaluation": evaluation}  # fmt: skip
        if result.evaluation and result.evaluation.notifications:
            request.app.state.scheduler.wake()
        return JSONResponse(jsonable_encoder(body), status_code=201 if result.created else 200)

    @app.post("/shipments/unregister", openapi_extra=_json_body("unregistration"))
    async def unregister(request: Request) -> dict[str, Any]:
        api_allowed(request, settings)
        if not await engine_of(request).unregister_shipment(await read_body(request, settings)):
            raise Refused(404, "no such shipment", "waybill")
        return {"unregistered": True}

    @app.get("/shipments/{cp_id}/{waybill}")
    async def shipment(request: Request, cp_id: Int32, waybill: str) -> dict[str, Any]:
        api_allowed(request, settings)
        detail = await engine_of(request).shipment(cp_id, _text(waybill, "waybill"))
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
        api_allowed(request, settings)
        return await engine_of(request).notifications(
            waybill=_text(waybill, "waybill"), status=_text(status, "status"),
            channel=_text(channel, "channel"), since=_utc(since), limit=limit,
        )  # fmt: skip

    @app.post("/callbacks/twilio/status")
    async def twilio_status(request: Request) -> Response:
        params = read_form(await read_body(request, settings))
        signature = request.headers.get("x-twilio-signature", "")
        await engine_of(request).handle_twilio_status(params, signature)
        return Response(status_code=204)

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        """Liveness: 503 only when the database does not answer. Writes being refused (a full
        disk: reads still answer) make it "degraded", and /readyz 503."""
        body = _health(request)
        return JSONResponse(body, status_code=503 if body["status"] == "unavailable" else 200)

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """Readiness, for a load balancer: 200 only while webhooks are being stored."""
        body = _health(request)
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> PlainTextResponse:
        from notifier.metrics import exposition

        return PlainTextResponse(exposition(engine_of(request)))


def _health(request: Request) -> dict[str, Any]:
    engine, scheduler = engine_of(request), request.app.state.scheduler
    database, refusing = engine.db.ping(), engine.refusal()
    ingest: dict[str, Any] = {"refusing": refusing is not None}
    if refusing is not None:
        ingest |= {"since": refusing.since.isoformat(), "reason": refusing.reason,
                   "refused": refusing.what}  # fmt: skip
    status = "unavailable" if not database else "degraded" if refusing else "ok"
    return {
        "status": status,
        "database": database,
        "ingest": ingest,
        "scheduler": scheduler.alive,
        "rules": {"version": engine.rules.version, "rules": len(engine.rules.rules),
                  "error": engine.rules_error},
    }  # fmt: skip


def _due_now(outcome: IngestOutcome, now: datetime) -> bool:
    """Whether the update planned a message to send now (not one deferred by quiet hours)."""
    return any(
        s.status == "scheduled" and (s.due_at is None or s.due_at <= now)
        for s in outcome.notifications
    )


_Text = TypeVar("_Text", str, str | None)


def _text(value: _Text, field: str) -> _Text:
    """A text from the URL; a NUL character, which no database text can hold, is a 422."""
    if value is not None and "\x00" in value:
        raise Refused(422, f"{field}: must not contain a NUL character", field)
    return value


def _utc(since: datetime | None) -> datetime | None:
    """A query time as aware UTC: naive means UTC; one that cannot be converted is a 422."""
    if since is None:
        return None
    try:
        return since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    except OverflowError as err:
        raise Refused(422, "since: out of range", "since") from err


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
        if is_loopback(host):
            settings = settings.model_copy(update={"allow_unauthenticated": True})
            log.warning(
                "NO WEBHOOK KEYS: accepting unauthenticated webhooks because this server only "
                "listens on %s. Set NOTIFIER_WEBHOOK_KEYS before exposing it.", host,
            )  # fmt: skip
        else:
            log.warning("NO WEBHOOK KEYS: every webhook will be refused (401). "
                        "Set NOTIFIER_WEBHOOK_KEYS.")  # fmt: skip
    _say_how_emails_unsubscribe(settings, log)
    config = uvicorn.Config(
        create_app(settings), host=host, port=port, log_config=None,
        log_level=log_level.lower(), timeout_graceful_shutdown=int(settings.shutdown_grace) + 1,
    )  # fmt: skip
    _GracefulServer(config).run()
    return 0


def _say_how_emails_unsubscribe(settings: Settings, log: logging.Logger) -> None:
    if settings.unsubscribe_url:
        log.info("emails carry List-Unsubscribe to NOTIFIER_UNSUBSCRIBE_URL")
    elif settings.secret_key and settings.public_url:
        log.info("emails carry signed one-click unsubscribe links to %s/unsubscribe/…",
                 settings.public_url.rstrip("/"))  # fmt: skip
    else:
        log.warning("emails carry NO unsubscribe link: set NOTIFIER_SECRET_KEY and "
                    "NOTIFIER_PUBLIC_URL for signed one-click links (RFC 8058)")  # fmt: skip


class _GracefulServer(uvicorn.Server):
    """uvicorn re-raises a caught SIGTERM after a clean shutdown, so the process would end with
    status 143; a graceful stop is a success, so the signal is consumed instead.

    Once started, everything built so far (modules, the app, rules, templates, the engines)
    lives as long as the process: it is moved out of the garbage collector's sight
    (``gc.freeze``), so the collections that requests trigger no longer walk it each time.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        gc.freeze()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals.clear()
