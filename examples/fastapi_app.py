"""A merchant's own FastAPI app with notifier inside it.

Two ways in, both shown here:

1. Mount notifier's whole HTTP API under ``/notifier``: Clickpost posts to
   ``/notifier/webhooks/clickpost``, the order system registers shipments at
   ``/notifier/shipments``, support reads ``/notifier/notifications``.
2. Call the engine from the merchant's own webhook route (``/carrier/clickpost``), for a shop
   that already receives Clickpost's webhooks and wants to do its own work with them too.

Run it (settings come from ``NOTIFIER_*`` variables, see design.md):

    NOTIFIER_WEBHOOK_KEYS=change-me uvicorn examples.fastapi_app:app

The one trap: Starlette does not run a mounted app's lifespan. notifier's app builds its
engine and starts its dispatcher timer in its lifespan, so a bare ``app.mount(...)`` gives
routes that fail on the first request (``app.state.notifier`` was never set) and a dispatcher
that never runs. The parent's lifespan below runs the mounted app's lifespan itself.
(Building the ``Notifier`` yourself and passing ``create_app(settings, notifier=engine)`` is
fine too, but does not remove the need: the mounted app's lifespan is still what puts the
engine on its ``app.state`` and starts the dispatcher.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from notifier import AuthenticationError, InputError, Notifier, Settings
from notifier.server import create_app

PREFIX = "/notifier"


def build_app(settings: Settings | None = None) -> FastAPI:
    """The merchant's app. Settings are read once, here, from the environment."""
    settings = settings or Settings()
    # notifier's app builds the Notifier and the dispatcher timer when its lifespan starts.
    notifier_app = create_app(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The mounted app's lifespan, run by hand (see the module docstring). Its state (the
        # engine, the scheduler) lives on notifier_app.state, where its routes look for it.
        async with notifier_app.router.lifespan_context(notifier_app):
            # ... the merchant's own start-up (database pools, caches) goes here ...
            yield

    app = FastAPI(title="Acme shop", lifespan=lifespan)
    app.mount(PREFIX, notifier_app)

    @app.post("/carrier/clickpost")
    async def clickpost_webhook(request: Request) -> JSONResponse:
        """The merchant's own route: its own work, then the same engine the mount uses."""
        engine: Notifier = notifier_app.state.notifier
        # notifier's own route refuses webhooks when no key is configured; a route of
        # yours must decide that itself. handle_webhook checks the key when keys are set.
        if not (settings.accepted_webhook_keys or settings.allow_unauthenticated):
            return JSONResponse({"error": "set NOTIFIER_WEBHOOK_KEYS"}, status_code=401)
        body = await request.body()
        # ... the merchant's own handling of the update (order status, analytics) ...
        try:
            outcome = await engine.handle_webhook(body, request.headers)
        except AuthenticationError as err:
            return JSONResponse({"error": str(err), "field": err.field}, status_code=401)
        except InputError as err:  # 400: not JSON at all; 422: a field is wrong
            status = 400 if err.field in {"", "body"} else 422
            return JSONResponse({"error": str(err), "field": err.field}, status_code=status)
        # Stored and planned, in one transaction: answer 200 now. The mounted app's dispatcher
        # sends within a second; wake it so it does not wait for its next tick.
        notifier_app.state.scheduler.wake()
        return JSONResponse(_summary(outcome.duplicate, outcome.notifications))

    return app


def _summary(duplicate: bool, planned: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "status": "duplicate" if duplicate else "accepted",
        "notifications": [{"rule": p.rule, "channel": p.channel, "status": p.status}
                          for p in planned],
    }  # fmt: skip


# For ``uvicorn examples.fastapi_app:app``. Building it reads the environment but opens
# nothing: the database, rules and templates are opened when the lifespan starts.
app = build_app()
