"""A local Clickpost: the tracking API in memory, for tests and for developers without an account.

``create_standin()`` builds a FastAPI app answering the five calls of
clickpost-tracking-api.md in Clickpost's shapes, and a control API under ``/_standin`` that
plays the courier and the network::

    POST /api/v1/register-service/          {"key", "service_id"}      flat {"message", ...}
    POST /api/v2/tracking/awb-register/     the awb-register body      result.tracking_id
    POST /api/v1/tracking/awb-unregister/   {"cp_id", "waybill", "key"} result.awb; adds a
                                            scan 23 Expired, as Clickpost does
    GET  /api/v2/track-order/?username&key&waybill=A,B&cp_id            ≤ 5 waybills
    POST /api/v1/test_webhook?key=          {"test_url", "test_data"}: POSTs test_data to
                                            test_url with the ``webhook_key`` header

    POST /_standin/scans          add a scan to a waybill (polling then finds it)
    POST /_standin/faults         answer the next N API calls 429/500/… (or slowly)
    POST /_standin/track-shape    track-order answers "current", "legacy" (lists) or "null"
    GET  /_standin/registrations  what awb-register received (without the key)
    GET  /_standin/calls          every API call: method, path, waybills, status
    GET  /_standin/webhooks       what test_webhook delivered
    POST /_standin/reset          forget everything

Choices where Clickpost's docs are silent, so the client meets both failure paths: a wrong
``key`` or ``username`` is HTTP 401; a bad request is HTTP 200 with ``meta.success: false``
and ``meta.status: 400`` (the docs: "status: … 400 in case of a bad request"). A waybill is
known once registered or once a scan was added for it (the control API stands for the
courier); track-order answers an unknown one ``valid: false``. Polled timestamps are naive
(``2018-07-07 19:34:46``), as Clickpost's are; they are UTC here.

:class:`BackgroundServer` serves any ASGI app (this one, or notifier's) on 127.0.0.1 from a
thread; :func:`serve_standin` serves this one in the foreground (``notifier
clickpost-standin``).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import socket
import threading
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from notifier.clickpost import codes
from notifier.clickpost.client import (
    AWB_REGISTER,
    AWB_UNREGISTER,
    MAX_TRACK_BATCH,
    REGISTER_SERVICE,
    TEST_WEBHOOK,
    TRACK_ORDER,
    install_key_mask,
    mask_key,
)

__all__ = ["BackgroundServer", "StandinState", "create_standin", "serve_standin"]

DEFAULT_KEY = "standin-key"
DEFAULT_USERNAME = "standin"
DEFAULT_WEBHOOK_KEY = "standin-webhook-key"

_KEEP = 10_000  # calls and test webhooks remembered: a stand-in left running stays small

TrackShape = Literal["current", "legacy", "null"]
Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- control API bodies ---------------------------------------------------------------------------


class ScanIn(BaseModel):
    cp_id: int
    waybill: str = Field(min_length=1)
    clickpost_status_code: int
    status: str = ""
    location: str = ""
    remark: str = ""
    timestamp: datetime | None = None  # default: now; naive means UTC
    ndr_status_code: int | None = None


class FaultIn(BaseModel):
    count: int = Field(default=1, ge=1, le=1000)
    status: int | None = Field(default=500, ge=400, le=599)  # None: answer normally, after delay
    retry_after: str | None = None
    delay: float = Field(default=0.0, ge=0, le=60)
    path: str | None = None  # only calls whose path starts with this


class ShapeIn(BaseModel):
    shape: TrackShape


# --- state ----------------------------------------------------------------------------------


@dataclass(kw_only=True)
class _Scan:
    code: int
    status: str
    location: str
    remark: str
    timestamp: datetime
    checkpoint_id: int
    ndr_code: int | None = None


@dataclass(kw_only=True)
class _Shipment:
    cp_id: int
    waybill: str
    tracking_id: int
    body: dict[str, Any] | None = None  # the awb-register body, without key; None: scans only
    active: bool = True
    scans: list[_Scan] = field(default_factory=list)


@dataclass(kw_only=True)
class StandinState:
    """Everything the stand-in remembers; on ``app.state.standin``."""

    key: str
    username: str
    webhook_key: str
    clock: Clock = _utcnow
    track_shape: TrackShape = "current"
    shipments: dict[tuple[int, str], _Shipment] = field(default_factory=dict)
    faults: list[FaultIn] = field(default_factory=list)
    calls: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_KEEP))
    webhooks: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=_KEEP))
    services: set[int] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1188264))

    def next_id(self) -> int:
        return next(self._ids)

    def shipment(self, cp_id: int, waybill: str) -> _Shipment:
        """The shipment, made known (with no registration) if it was not."""
        found = self.shipments.get((cp_id, waybill))
        if found is None:
            found = _Shipment(cp_id=cp_id, waybill=waybill, tracking_id=self.next_id())
            self.shipments[(cp_id, waybill)] = found
        return found

    def add_scan(
        self,
        found: _Shipment,
        code: int,
        at: datetime | None = None,
        *,
        status: str = "",
        location: str = "",
        remark: str = "",
        ndr_code: int | None = None,
    ) -> _Scan:
        """A courier scan; texts default to the code's label, the time to now."""
        label = codes.status(code).label
        scan = _Scan(
            code=code,
            status=status or label,
            location=location,
            remark=remark or label,
            timestamp=(at or self.clock()).astimezone(UTC),
            checkpoint_id=self.next_id(),
            ndr_code=ndr_code,
        )
        found.scans.append(scan)
        return scan

    def next_fault(self, path: str) -> FaultIn | None:
        for index, fault in enumerate(self.faults):
            if fault.path is None or path.startswith(fault.path):
                return self.faults.pop(index)
        return None


# --- Clickpost's shapes ---------------------------------------------------------------------


def _meta(result: object, *, status: int = 200, message: str = "SUCCESS") -> dict[str, Any]:
    meta = {"message": message, "status": status, "success": status == 200}
    return {"meta": meta, "result": result}


def _polled_scan(scan: _Scan, tracking_id: int) -> dict[str, Any]:
    """One scan in track-order's shape: naive timestamp, bucket, checkpoint."""
    info = codes.status(scan.code)
    return {
        "clickpost_status_description": info.name,
        "clickpost_status_code": scan.code,
        "clickpost_status_bucket": int(info.bucket) if info.bucket else None,
        "status": scan.status,
        "location": scan.location,
        "remark": scan.remark,
        "tracking_id": tracking_id,
        "timestamp": scan.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
        "checkpoint_id": scan.checkpoint_id,
    }


def _track_entry(found: _Shipment | None) -> dict[str, Any]:
    if found is None:
        return {"latest_status": {}, "additional": {}, "scans": [], "valid": False}
    newest_first = sorted(found.scans, key=lambda s: (s.timestamp, s.checkpoint_id), reverse=True)
    scans = [_polled_scan(s, found.tracking_id) for s in newest_first]
    latest = dict(scans[0]) if scans else {}
    latest.pop("tracking_id", None)
    latest.pop("checkpoint_id", None)
    additional: dict[str, Any] = {
        "is_stuck": False,
        "dest_hub_inscan": False,
        "order_detail": [],
        "edd": {"min_sla": 2, "max_sla": 5},
    }
    if newest_first and newest_first[0].code in codes.CARRIES_NDR:
        ndr = codes.ndr(newest_first[0].ndr_code or 0)
        additional["ndr"] = {"ndr_bucket_code": ndr.code, "ndr_description": ndr.label}
    return {"latest_status": latest, "additional": additional, "scans": scans, "valid": True}


def _track_result(state: StandinState, cp_id: int, waybills: list[str]) -> object:
    """``result`` in the shape the stand-in was told to answer in."""
    found = {w: state.shipments.get((cp_id, w)) for w in waybills}
    if state.track_shape == "null":
        return None
    if state.track_shape == "legacy":
        return {w: [_polled_scan(s, f.tracking_id) for s in f.scans] if f else []
                for w, f in found.items()}  # fmt: skip
    return {w: _track_entry(f) for w, f in found.items()}


# --- the app --------------------------------------------------------------------------------


def create_standin(
    *,
    key: str = DEFAULT_KEY,
    username: str = DEFAULT_USERNAME,
    webhook_key: str = DEFAULT_WEBHOOK_KEY,
    clock: Clock = _utcnow,
) -> FastAPI:
    """The stand-in app; its memory is ``app.state.standin`` (a :class:`StandinState`)."""
    state = StandinState(key=key, username=username, webhook_key=webhook_key, clock=clock)
    app = FastAPI(title="Clickpost stand-in", docs_url="/_standin/docs",
                  openapi_url="/_standin/openapi.json", redoc_url=None)  # fmt: skip
    app.state.standin = state
    _faults_and_calls(app, state)
    _api(app, state)
    _control(app, state)
    return app


Next = Callable[[Request], Awaitable[Response]]


def _faults_and_calls(app: FastAPI, state: StandinState) -> None:
    @app.middleware("http")
    async def faults(request: Request, call_next: Next) -> Response:
        """Scripted faults first, then the call; every /api call is recorded."""
        path = request.url.path
        if not path.startswith("/api/"):
            return await call_next(request)
        fault = state.next_fault(path)
        if fault and fault.delay:
            await asyncio.sleep(fault.delay)
            if await request.is_disconnected():  # the client timed out: nobody to answer
                return Response(status_code=499)
        response = _fault_response(fault) if fault and fault.status else await call_next(request)
        waybills = request.query_params.get("waybill", "")
        state.calls.append({"method": request.method, "path": path,
                            "query": mask_key(str(request.url.query)),
                            "waybills": waybills.split(",") if waybills else [],
                            "status": response.status_code})  # fmt: skip
        return response


def _fault_response(fault: FaultIn) -> Response:
    """429 as Clickpost's JSON with Retry-After; a 5xx as a proxy's plain-text page."""
    status = fault.status or 500
    headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
    if status == 429:
        body = _meta(None, status=429, message="Too many requests")
        return JSONResponse(body, status_code=429, headers=headers)
    return PlainTextResponse("Internal Server Error", status_code=status, headers=headers)


class _Refusal(Exception):
    """Raised by a handler to answer at once; the app turns it into ``response``."""

    def __init__(self, response: Response) -> None:
        self.response = response
        super().__init__(response.status_code)


def _refuse(message: str) -> _Refusal:
    """A bad request, as Clickpost's docs describe it: meta.status 400 inside an HTTP 200."""
    return _Refusal(JSONResponse(_meta(None, status=400, message=message)))


def _unauthorized(message: str = "Invalid API key") -> _Refusal:
    return _Refusal(JSONResponse(_meta(None, status=401, message=message), status_code=401))


def _matches(given: object, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def _check_key(state: StandinState, given: object) -> None:
    if not _matches(given, state.key):
        raise _unauthorized()


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _refuse("request body must be a JSON object")
    return body


async def _keyed_body(request: Request, state: StandinState) -> dict[str, Any]:
    """The JSON object body, its ``key`` checked (awb-register, awb-unregister)."""
    body = await _json_object(request)
    _check_key(state, body.get("key"))
    return body


def _as_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _courier_and_waybill(body: Mapping[str, Any]) -> tuple[int, str]:
    cp_id, waybill = _as_int(body.get("cp_id")), str(body.get("waybill") or "").strip()
    if cp_id is None or not waybill:
        raise _refuse("waybill and cp_id are required")
    return cp_id, waybill


def _api(app: FastAPI, state: StandinState) -> None:
    @app.exception_handler(_Refusal)
    async def refusal(_: Request, err: _Refusal) -> Response:
        return err.response

    @app.post(REGISTER_SERVICE)
    async def register_service(request: Request) -> Response:
        """Answers the flat shape of the docs, not ``meta``, a bad key too."""
        body = await _json_object(request)
        if not _matches(body.get("key"), state.key):
            flat = {"message": "Invalid key", "status_code": 401, "success": False}
            return JSONResponse(flat, status_code=401)
        service = _as_int(body.get("service_id"))
        if service not in {1, 2, 3}:
            flat = {"message": "service_id must be 1, 2 or 3", "status_code": 400}
            return JSONResponse(flat | {"success": False})
        state.services.add(service)
        return JSONResponse({"message": "SUCCESS", "status_code": 200, "success": True})

    @app.post(AWB_REGISTER)
    async def awb_register(request: Request) -> Response:
        body = await _keyed_body(request, state)
        found = state.shipment(*_courier_and_waybill(body))
        found.body = {k: v for k, v in body.items() if k != "key"}
        found.active = True
        ids = {"consumer_details": {"id": found.tracking_id},
               "shipment_info": {"id": found.tracking_id}}  # fmt: skip
        security = {"security_key": str(uuid.uuid4())}
        return JSONResponse(_meta(security | ids | {"tracking_id": found.tracking_id}))

    @app.post(AWB_UNREGISTER)
    async def awb_unregister(request: Request) -> Response:
        cp_id, waybill = _courier_and_waybill(await _keyed_body(request, state))
        found = state.shipments.get((cp_id, waybill))
        if found is None or found.body is None:
            raise _refuse(f"AWB {waybill} is not registered for tracking")
        if found.active:
            found.active = False
            state.add_scan(found, 23, remark="Tracking expired on request")  # Expired
        return JSONResponse(_meta({"awb": waybill}))

    @app.get(TRACK_ORDER)
    async def track_order(request: Request) -> Response:
        query = request.query_params
        if not (_matches(query.get("key"), state.key) and query.get("username") == state.username):
            raise _unauthorized("Invalid username or key")
        cp_id = _as_int(query.get("cp_id"))
        waybills = [w.strip() for w in query.get("waybill", "").split(",") if w.strip()]
        if cp_id is None or not waybills:
            raise _refuse("waybill and cp_id are required")
        if len(waybills) > MAX_TRACK_BATCH:
            raise _refuse(f"at most {MAX_TRACK_BATCH} waybills per request")
        return JSONResponse(_meta(_track_result(state, cp_id, waybills)))

    @app.post(TEST_WEBHOOK)
    async def test_webhook(request: Request) -> Response:
        _check_key(state, request.query_params.get("key"))
        body = await _json_object(request)
        url, data = body.get("test_url"), body.get("test_data")
        if not isinstance(url, str) or not isinstance(data, dict):
            raise _refuse("test_url (a URL) and test_data (an object) are required")
        return await _deliver(state, url, data)


async def _deliver(state: StandinState, url: str, data: dict[str, Any]) -> Response:
    """POST the test body the way Clickpost posts webhooks: JSON, ``webhook_key`` header."""
    headers = {"Content-Type": "application/json", "webhook_key": state.webhook_key}
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            answer = await client.post(url, json=data, headers=headers)
    except httpx.HTTPError as err:
        state.webhooks.append({"url": url, "status": None, "error": str(err)})
        raise _refuse(f"could not reach test_url: {type(err).__name__}: {err}") from err
    state.webhooks.append({"url": url, "status": answer.status_code, "body": data})
    return JSONResponse(_meta({"status_code": answer.status_code, "response": answer.text[:1000]}))


def _control(app: FastAPI, state: StandinState) -> None:
    @app.post("/_standin/scans", status_code=201)
    async def add_scan(scan: ScanIn) -> dict[str, Any]:
        found = state.shipment(scan.cp_id, scan.waybill.strip())
        at = scan.timestamp
        at = at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at
        added = state.add_scan(found, scan.clickpost_status_code, at, status=scan.status,
                               location=scan.location, remark=scan.remark,
                               ndr_code=scan.ndr_status_code)  # fmt: skip
        return _polled_scan(added, found.tracking_id)

    @app.post("/_standin/faults")
    async def add_faults(fault: FaultIn) -> dict[str, int]:
        state.faults.extend([fault] * fault.count)
        return {"pending": len(state.faults)}

    @app.post("/_standin/track-shape")
    async def track_shape(shape: ShapeIn) -> dict[str, str]:
        state.track_shape = shape.shape
        return {"shape": state.track_shape}

    @app.get("/_standin/registrations")
    async def registrations() -> list[dict[str, Any]]:
        return [{"cp_id": s.cp_id, "waybill": s.waybill, "tracking_id": s.tracking_id,
                 "active": s.active, "body": s.body}
                for s in state.shipments.values() if s.body is not None]  # fmt: skip

    @app.get("/_standin/calls")
    async def calls() -> list[dict[str, Any]]:
        return list(state.calls)

    @app.get("/_standin/webhooks")
    async def webhooks() -> list[dict[str, Any]]:
        return list(state.webhooks)

    @app.post("/_standin/reset")
    async def reset() -> dict[str, bool]:
        for items in (state.shipments, state.calls, state.webhooks, state.faults, state.services):
            items.clear()
        state.track_shape = "current"
        return {"reset": True}


# --- serving --------------------------------------------------------------------------------


class BackgroundServer:
    """An ASGI app served by uvicorn on 127.0.0.1, from a daemon thread, for tests::

        with BackgroundServer(create_standin()) as server:
            ... ClickpostClient(base_url=server.url, ...)

    The socket is bound before the thread starts, so ``url`` is known at once and no port
    race exists. Logging is left as the caller configured it (``log_config=None``), except that
    ``key=`` is masked in uvicorn's access log.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="auto",
                                timeout_graceful_shutdown=2)  # fmt: skip
        self._server = uvicorn.Server(config)
        install_key_mask("uvicorn.access")  # the API key is in track-order's query string
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self, timeout: float = 20.0) -> BackgroundServer:
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout / 0.02)):
            if self._server.started or not self._thread.is_alive():
                break
            deadline.wait(0.02)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"uvicorn did not start on {self.url} within {timeout:g}s")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_standin(
    host: str = "127.0.0.1",
    port: int = 8010,
    webhook_key: str = DEFAULT_WEBHOOK_KEY,
    *,
    key: str = DEFAULT_KEY,
    username: str = DEFAULT_USERNAME,
) -> int:
    """``notifier clickpost-standin``: serve the stand-in in the foreground until Ctrl-C."""
    url = f"http://{host}:{port}"
    print(f"Clickpost stand-in on {url} (control API: {url}/_standin/docs). Point notifier at it:")
    settings: Mapping[str, str] = {"NOTIFIER_CLICKPOST_API_BASE": url,
                                   "NOTIFIER_CLICKPOST_USERNAME": username,
                                   "NOTIFIER_CLICKPOST_KEY": key}  # fmt: skip
    for name, value in settings.items():
        print(f"  export {name}={value}")
    print(f"test_webhook posts with header webhook_key: {webhook_key}", flush=True)
    install_key_mask("uvicorn.access")
    app = create_standin(key=key, username=username, webhook_key=webhook_key)
    uvicorn.run(app, host=host, port=port, log_level="info")
    return 0
