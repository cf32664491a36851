"""Django views that hand Clickpost webhooks and shipment registrations to notifier.

In a real project the two views go in an app's ``views.py`` and the ``urlpatterns`` in its
``urls.py``; the ``settings.configure`` call below only exists so this file runs on its own:

    NOTIFIER_WEBHOOK_KEYS=change-me python examples/django_view.py runserver

Django views are synchronous, so they use :class:`notifier.SyncNotifier`: one per process,
built on first use and shared by every request thread. The views store and plan; sending is
left to ``notifier serve``'s dispatcher or a ``notifier dispatch`` cron on the same database
(see flask_app.py for why).

Header note: Django's runserver drops header names containing underscores (a guard against
header spoofing, see django/core/servers/basehttp.py), so Clickpost's ``webhook_key`` header
never arrives there; gunicorn 22+ and nginx do the same by default. Have Clickpost send the key
as ``Authorization``, or let the proxy pass the header through.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any

import django
from django.conf import settings as django_settings

if not django_settings.configured:  # standalone only: a real project has its settings module
    django_settings.configure(
        DEBUG=False,
        SECRET_KEY="example-only-not-secret",
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["localhost", "127.0.0.1"],
        INSTALLED_APPS=[],
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        DATABASES={},
    )
    django.setup()

# The rest of Django is imported once settings exist, as in any Django module.
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from notifier import AuthenticationError, InputError, Settings, SyncNotifier


@cache
def notifier() -> SyncNotifier:
    """Built on first use, so importing the views opens nothing; settings from ``NOTIFIER_*``.

    Closed at exit by nothing in particular: the process ends, SQLite and PostgreSQL both
    cope. Call ``notifier().close()`` from a shutdown hook if the server offers one.
    """
    return SyncNotifier(Settings())


@csrf_exempt  # Clickpost cannot send a CSRF token; the webhook key authenticates it instead
@require_POST
def clickpost_webhook(request: HttpRequest) -> JsonResponse:
    try:
        outcome = notifier().handle_webhook(request.body, dict(request.headers))
    except AuthenticationError as err:
        return JsonResponse({"error": str(err), "field": err.field}, status=401)
    except InputError as err:
        return JsonResponse({"error": str(err), "field": err.field}, status=_status(err))
    planned = [_planned(p) for p in outcome.notifications]
    status = "duplicate" if outcome.duplicate else "accepted"
    return JsonResponse({"status": status, "notifications": planned})


@csrf_exempt  # called by the merchant's fulfilment system; put its own auth here (login, token)
@require_POST
def register_shipment(request: HttpRequest) -> JsonResponse:
    try:
        result = notifier().register_shipment(request.body)
    except InputError as err:
        return JsonResponse({"error": str(err), "field": err.field}, status=_status(err))
    return JsonResponse({"shipment_id": result.shipment_id}, status=201 if result.created else 200)


def _status(err: InputError) -> int:
    """400 for a body that is not JSON at all, 422 for a field that is wrong, as notifier's
    own API answers."""
    return 400 if err.field in {"", "body"} else 422


def _planned(summary: Any) -> dict[str, Any]:
    return {"rule": summary.rule, "channel": summary.channel, "status": summary.status}


urlpatterns = [
    path("clickpost/webhook", clickpost_webhook),
    path("shipments", register_shipment),
]


if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
