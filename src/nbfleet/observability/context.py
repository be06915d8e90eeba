"""The request a piece of work belongs to, carried in a context variable.

The HTTP middleware opens a ``RequestContext`` per request; API worker threads and the reconciler's
tasks run in copies of the context, so a log line, an intent write or an audit row anywhere below finds
the request id (and, once authentication has run, the caller) without passing it along by hand.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass
class RequestContext:
    request_id: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    project_id: str | None = None
    target: str | None = None  # the instance the request acts on, when the path does not name it


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("nbfleet_request", default=None)


def begin(request_id: str | None) -> contextvars.Token:
    """Open the context of one request (or of the work a request caused); ``end`` with the token."""
    return _current.set(RequestContext(request_id=request_id))


def end(token: contextvars.Token) -> None:
    _current.reset(token)


def current() -> RequestContext | None:
    return _current.get()


def request_id() -> str | None:
    """The id of the request the running code works for, if any."""
    ctx = _current.get()
    return ctx.request_id if ctx is not None else None


def note_caller(principal) -> None:
    """Remember who made the request (user id and name, project) for its log line and audit row."""
    ctx = _current.get()
    if ctx is not None and principal is not None:
        ctx.user_id, ctx.user_name, ctx.project_id = principal.user_id, principal.user_name, principal.project_id


def note_user(user_id: str, user_name: str) -> None:
    """Remember who a password sign-in signed in (before any project scope is known)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.user_id, ctx.user_name = user_id, user_name


def note_project(project_id: str) -> None:
    """Remember the project a sign-in was scoped to."""
    ctx = _current.get()
    if ctx is not None:
        ctx.project_id = project_id


def note_target(instance_id: str) -> None:
    """Remember the instance a request acts on when its path does not name it (create)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.target = instance_id


def bind_work(request_id: str | None) -> None:
    """In a reconciler task: the log lines of this task carry ``request_id``, the request that asked for
    the work. A task runs in a context of its own, so this ends with the task."""
    _current.set(RequestContext(request_id=request_id))
