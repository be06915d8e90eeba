"""Console sessions, CSRF tokens and one-shot flash messages, all carried in cookies.

A session is an ordinary project-scoped token from ``IdentityService.create_token``: the browser
keeps the opaque token in an HttpOnly, SameSite=Lax cookie; the store keeps only its hash, so
signing out (or the token's expiry) ends the session for good.

The CSRF token of a session is an HMAC of a fixed label keyed by the session token. It is the
same for the whole session, is never stored, and cannot be computed by a page that cannot read
the HttpOnly cookie. The sign-in form, which has no session yet, uses the double-submit pattern:
a random value in a short-lived cookie that must come back in the form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from ..auth.principal import Principal

SESSION_COOKIE = "nbfleet_session"
LOGIN_CSRF_COOKIE = "nbfleet_login_csrf"
FLASH_COOKIE = "nbfleet_flash"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class Session:
    token: str
    principal: Principal

    @property
    def csrf(self) -> str:
        return csrf_for(self.token)


def csrf_for(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"nbfleet-console-csrf", hashlib.sha256).hexdigest()


def csrf_ok(expected: str, given: str | None) -> bool:
    if not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def current_session(request: Request) -> Session | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    principal = request.app.state.services.identity.principal_for_token(token)
    return Session(token, principal) if principal is not None else None


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(request: Request, response: Response, token: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="lax", secure=_secure(request)
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax")


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def set_login_csrf_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        value,
        max_age=3600,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def clear_login_csrf_cookie(response: Response) -> None:
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")


def set_flash(request: Request, response: Response, kind: str, message: str, code: str | None = None) -> None:
    """A message for the next page the browser shows (after a redirect)."""
    raw = json.dumps({"kind": kind, "message": message[:500], "code": code}).encode()
    response.set_cookie(
        FLASH_COOKIE,
        base64.urlsafe_b64encode(raw).decode(),
        max_age=60,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )


def take_flash(request: Request) -> dict | None:
    """The pending flash message, if any (the caller clears the cookie on its response)."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return None
    return {
        "kind": data.get("kind") if data.get("kind") in ("error", "ok") else "error",
        "message": data["message"],
        "code": data.get("code") if isinstance(data.get("code"), str) else None,
    }


def clear_flash(response: Response) -> None:
    response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax")
