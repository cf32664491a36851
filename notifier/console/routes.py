"""The console's pages, as a FastAPI router mounted at ``/console`` by :mod:`notifier.server`.

Every page needs a session (else a redirect to the login form); every POST needs the
session's CSRF token; resend and cancel need the admin role (403 for a read-only session).
Personal data never goes into a URL the console makes: shipments are linked by their
opaque row id, the search form posts its query, and the log's filters hold no addresses.
``GET /console/search?q=`` is still answered (design.md names it), for a waybill typed into
the address bar or a bookmark.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from notifier.console import views
from notifier.console.sessions import (
    COOKIE,
    COOKIE_PATH,
    LOGIN_COOKIE,
    SESSION_HOURS,
    LoginThrottle,
    Session,
    Sessions,
    csrf_matches,
    new_login_nonce,
)
from notifier.console.web import STATIC, Pages, query
from notifier.http_input import engine_of
from notifier.settings import Settings
from notifier.store import console as store

Page = Callable[[Request, Session], Awaitable[Response]]
ACTIONS = ("resend", "cancel")
REFUSED = {
    "resend": "only a message that is neither waiting nor being sent, and has an address, "
    "can be resent",
    "cancel": "only a message still waiting to be sent can be cancelled",
}


class Console:
    """The routes' shared state: settings, the session signer, the templates."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions = Sessions(settings)
        self.throttle = LoginThrottle()
        self.pages = Pages()

    # -- sessions --------------------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        return self.sessions.read(request.cookies.get(COOKIE), now=time.time())

    def page(self, name: str, request: Request, session: Session | None, status: int = 200,
             **context: Any) -> Response:  # fmt: skip
        engine = engine_of(request)
        return self.pages.render(
            name, status, session=session, zone=engine.rules.defaults.timezone,
            rules_version=engine.rules.version, **context,
        )  # fmt: skip

    def refuse(
        self, request: Request, session: Session | None, status: int, message: str
    ) -> Response:
        return self.page("error.html", request, session, status, message=message)

    def genuine(self, request: Request, csrf: str, form: dict[str, str]) -> bool:
        """Whether a posted form came from a console page: its CSRF token and its origin."""
        origin_ok = _same_origin(request, self.settings.public_url)
        return origin_ok and csrf_matches(csrf, form.get("csrf"))

    async def checked_form(self, request: Request, session: Session) -> dict[str, str] | Response:
        """The posted form, or a 403 page when its CSRF token or origin is wrong."""
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not self.genuine(request, session.csrf, form):
            return self.refuse(request, session, 403, "This form expired or did not come from "
                               "this console. Reload the page and try again.")  # fmt: skip
        return form


def console_router(settings: Settings) -> APIRouter:
    console = Console(settings)
    router = APIRouter(prefix="/console", include_in_schema=False)

    def page(handler: Page) -> Callable[[Request], Awaitable[Response]]:
        """A page that needs a session: without one, off to the login form."""

        async def wrapped(request: Request) -> Response:
            session = console.session(request)
            if session is None:
                return _to_login(request)
            return await handler(request, session)

        return wrapped

    _auth_routes(router, console)
    views.register(router, console, page)
    _action_routes(router, console, page)

    @router.get("/static/console.css")
    async def stylesheet() -> Response:
        return FileResponse(STATIC / "console.css", media_type="text/css",
                            headers={"Cache-Control": "max-age=3600"})  # fmt: skip

    return router


# -- login and logout ----------------------------------------------------------------------------


def _auth_routes(router: APIRouter, console: Console) -> None:
    @router.get("/login")
    async def login_form(request: Request) -> Response:
        if console.session(request) is not None:
            return RedirectResponse(_next(request.query_params.get("next")), status_code=303)
        return _login_page(console, request, next_path=request.query_params.get("next", ""))

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not console.genuine(request, nonce, form):
            return _login_page(console, request, status=403, next_path=form.get("next", ""),
                               error="The login form expired; please try again.")  # fmt: skip
        client, now = request.client.host if request.client else "", time.time()
        if console.throttle.blocked(client, now=now):
            return _login_page(console, request, status=429, next_path=form.get("next", ""),
                               error="Too many wrong tokens; wait a few minutes.")  # fmt: skip
        role = console.sessions.role_for(form.get("token", ""))
        if role is None:
            console.throttle.failed(client, now=now)
            await asyncio.sleep(0.5)  # a little friction for guessing
            return _login_page(console, request, status=401, next_path=form.get("next", ""),
                               error="That token is not valid for this console.")  # fmt: skip
        cookie, _ = console.sessions.issue(role, now=time.time())
        response = RedirectResponse(_next(form.get("next")), status_code=303)
        _set_cookie(response, request, COOKIE, cookie, SESSION_HOURS * 3600)
        response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        session = console.session(request)
        if session is None:
            return RedirectResponse("/console/login", status_code=303)
        form = await console.checked_form(request, session)
        if isinstance(form, Response):
            return form
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path=COOKIE_PATH)
        return response


def _login_page(console: Console, request: Request, *, status: int = 200, next_path: str = "",
                error: str = "") -> Response:  # fmt: skip
    nonce = new_login_nonce()
    response = console.page(
        "login.html", request, None, status, csrf=nonce, error=error,
        next_path=_next(next_path), enabled=console.sessions.enabled,
    )  # fmt: skip
    _set_cookie(response, request, LOGIN_COOKIE, nonce, 1800)
    return response


def _set_cookie(response: Response, request: Request, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name, value, max_age=age, path=COOKIE_PATH, httponly=True, samesite="lax",
        secure=request.url.scheme == "https",
    )  # fmt: skip


def _to_login(request: Request) -> Response:
    # The path only: console paths carry opaque ids, queries may carry what was searched.
    return RedirectResponse(f"/console/login?next={request.url.path}", status_code=303)


def _next(path: str | None) -> str:
    """Where to go after logging in: a console path of ours, nothing else (no open redirect)."""
    path = path or ""
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or not path.startswith("/console") or "\\" in path:
        return "/console"
    return parts.path


def _same_origin(request: Request, public_url: str | None) -> bool:
    """A browser's POST names its origin; one from another site is refused outright.

    Ours is the host the request was sent to, as the browser saw it: ``Host``, or behind a
    proxy that rewrites it, ``X-Forwarded-Host`` or ``NOTIFIER_PUBLIC_URL``'s host. (A page on
    another site cannot set those headers on a form it posts, so trusting them is safe here.)
    """
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    ours = {request.headers.get("host", ""), request.headers.get("x-forwarded-host", ""),
            urlsplit(public_url or "").netloc}  # fmt: skip
    return urlsplit(origin).netloc in ours - {""}


# -- resend and cancel ---------------------------------------------------------------------------


def _action_routes(
    router: APIRouter, console: Console, page: Callable[[Page], Callable[..., Any]]
) -> None:
    async def confirm(request: Request, session: Session) -> Response:
        action, notification_id = _action_of(request)
        if action is None:
            return console.refuse(request, session, 404, "No such action.")
        if not session.may_act:
            return console.refuse(request, session, 403, "Your token may look, not act.")
        found = await query(request, store.notification, notification_id)
        if found is None:
            return console.refuse(request, session, 404, "No such notification.")
        n, s = found
        return console.page("confirm.html", request, session, action=action, n=n, s=s)

    async def act(request: Request, session: Session) -> Response:
        action, notification_id = _action_of(request)
        if action is None:
            return console.refuse(request, session, 404, "No such action.")
        form = await console.checked_form(request, session)
        if isinstance(form, Response):
            return form
        if not session.may_act:
            return console.refuse(request, session, 403, "Your token may look, not act.")
        return await _perform(console, request, session, action, notification_id)

    path = "/notifications/{notification_id:int}/{action}"
    router.add_api_route(path, page(confirm), methods=["GET"])
    router.add_api_route(path, page(act), methods=["POST"])


async def _perform(console: Console, request: Request, session: Session, action: str,
                   notification_id: int) -> Response:  # fmt: skip
    engine = engine_of(request)
    do = store.resend if action == "resend" else store.cancel
    done = await engine.health.writing(
        f"console {action}",
        do,
        engine.db,
        notification_id,
        role=session.role.value,
        now=engine.clock(),
    )
    found = await query(request, store.notification, notification_id)
    if found is None:
        return console.refuse(request, session, 404, "No such notification.")
    if not done:
        message = f"Nothing done: {REFUSED[action]}. It is {found[0].status} now."
        return console.refuse(request, session, 409, message)
    if action == "resend":
        _wake(request)
    shipment_id = found[1].id
    return RedirectResponse(
        f"/console/shipments/{shipment_id}?done={action}#n{notification_id}", status_code=303
    )


def _action_of(request: Request) -> tuple[str | None, int]:
    action = request.path_params.get("action", "")
    return (action if action in ACTIONS else None), int(request.path_params["notification_id"])


def _wake(request: Request) -> None:
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is not None:
        scheduler.wake()
