"""A merchant's Flask app that stores Clickpost webhooks and registrations with notifier.

Flask views cannot await, so they use :class:`notifier.SyncNotifier`, the blocking facade: one
per process, built once, shared by every request thread (it runs the async engine on a private
event-loop thread).

This app only stores and plans; it never sends. Sending is left to a dispatcher pointed at the
same database (``NOTIFIER_DATABASE_URL``), either of:

- ``notifier serve`` running next to it (its dispatcher wakes every second), or
- a cron line, ``* * * * * notifier dispatch``, sending whatever is due once a minute.

That keeps slow providers (SMTP, Twilio) out of the request: Clickpost gets its 200 as soon as
the update is stored, and a crash loses nothing, because every planned send is already a row.

Run it:

    NOTIFIER_WEBHOOK_KEYS=change-me flask --app examples/flask_app.py run

Header note: Clickpost sends its key as ``webhook_key``, and ``flask run`` (Werkzeug's server),
gunicorn 22+ and nginx all drop header names with underscores (they would read the same as
``webhook-key`` in WSGI's environ). Have Clickpost send the key as ``Authorization`` (notifier
accepts that, and ``webhook-key``), or tell the server to keep it (gunicorn
``--header-map dangerous``, nginx ``underscores_in_headers on``).
"""

from __future__ import annotations

import atexit
from typing import Any

from flask import Flask, Response, jsonify, request

from notifier import AuthenticationError, InputError, Settings, SyncNotifier


def create_app(settings: Settings | None = None) -> Flask:
    """The merchant's app; settings come from ``NOTIFIER_*`` variables unless given."""
    engine = SyncNotifier(settings or Settings())
    atexit.register(engine.close)  # Flask has no shutdown hook; close the database at exit
    app = Flask(__name__)
    app.extensions["notifier"] = engine

    @app.post("/clickpost/webhook")
    def clickpost_webhook() -> tuple[Response, int]:
        # Keys: with NOTIFIER_WEBHOOK_KEYS set, handle_webhook checks the request's key.
        try:
            outcome = engine.handle_webhook(request.get_data(), dict(request.headers))
        except AuthenticationError as err:
            return jsonify(error=str(err), field=err.field), 401
        except InputError as err:
            return jsonify(error=str(err), field=err.field), _status(err)
        planned = [_planned(p) for p in outcome.notifications]
        status = "duplicate" if outcome.duplicate else "accepted"
        return jsonify(status=status, notifications=planned), 200

    @app.post("/shipments")
    def register_shipment() -> tuple[Response, int]:
        # Clickpost's awb-register body, as the merchant's fulfilment code already builds it.
        # Protect this route with the app's own authentication (it carries customers' data).
        try:
            result = engine.register_shipment(request.get_data())
        except InputError as err:
            return jsonify(error=str(err), field=err.field), _status(err)
        return jsonify(shipment_id=result.shipment_id), 201 if result.created else 200

    return app


def _status(err: InputError) -> int:
    """400 for a body that is not JSON at all, 422 for a field that is wrong (as notifier's
    own API answers, so Clickpost's retry behaviour is the same)."""
    return 400 if err.field in {"", "body"} else 422


def _planned(summary: Any) -> dict[str, Any]:
    return {"rule": summary.rule, "channel": summary.channel, "status": summary.status}


if __name__ == "__main__":
    create_app().run()
