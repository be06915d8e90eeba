"""Authentication of API requests (AK/SK signatures and tokens), in two steps around the body.

``begin`` runs every check that needs no body: a token is resolved completely; for a signature the
access key is looked up and the signing date checked. Only a request that passes it has its body read
(by the API layer, up to a size limit), and ``finish`` then verifies the signature over that body. So
an anonymous caller, an unknown key or a stale date costs the server a few header bytes, never a body.

A signature is valid for the whole clock-skew window around its X-Sdk-Date, so a captured request could
be sent again. ``finish`` records the signature of every state-changing signed request in the store until
its date leaves the window and refuses a second request with the same one; reads may repeat.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..auth import signature as sig
from ..auth.principal import Principal
from ..domain import errors as E
from ..store import identity_repo as repo
from ..store import replay_repo
from .identity import IdentityService, token_hash

# Methods that change nothing: their signed requests may be repeated.
SAFE_METHODS = frozenset({"GET", "HEAD"})
PURGE_EVERY_MS = 60_000


@dataclass(frozen=True)
class PendingRequest:
    """A request whose credentials passed the checks that need no body.

    A token's caller is known already (``principal``); a signed request still needs its body verified.
    """

    method: str
    path: str
    raw_query: str
    headers: dict[str, str]
    project_id: str
    principal: Principal | None = None
    signed: sig.SignedRequest | None = None
    key: dict | None = None

    @property
    def writes(self) -> bool:
        """Whether ``finish`` writes to the store (records a signature); call it off the event loop then."""
        return self.signed is not None and self.method.upper() not in SAFE_METHODS


class RequestAuthenticator:
    def __init__(
        self,
        identity: IdentityService,
        *,
        skew_seconds: int = 900,
        allow_unsigned_payload: bool = False,
        refuse_replays: bool = True,
    ):
        self.identity = identity
        self.db = identity.db
        self.clock = identity.clock
        self.skew_seconds = skew_seconds
        self.allow_unsigned_payload = allow_unsigned_payload
        self.refuse_replays = refuse_replays
        self._next_purge_ms = 0

    def begin(
        self, *, method: str, path: str, raw_query: str, headers: dict[str, str], project_id: str
    ) -> PendingRequest:
        """Check what can be checked without the body, or raise the gateway's error."""
        request = PendingRequest(method, path, raw_query, headers, project_id)
        authorization = headers.get("authorization")
        if authorization:
            return self._begin_signed(request, authorization)
        if "x-auth-token" in headers:
            return replace(request, principal=self._by_token(headers["x-auth-token"], headers, project_id))
        raise E.AuthenticationFailed("no credentials")

    def finish(self, pending: PendingRequest, body: bytes) -> Principal:
        """The caller of a request that passed ``begin``, once its signature is verified over ``body``."""
        if pending.principal is not None:
            return pending.principal
        key = pending.key
        assert key is not None and pending.signed is not None  # a signed request that begin let through
        try:
            sig.verify(
                pending.signed,
                self.identity.secret_of(key["secret_enc"]),
                pending.method,
                pending.path,
                pending.raw_query,
                pending.headers,
                body,
                self.clock.now(),
                self.skew_seconds,
                allow_unsigned_payload=self.allow_unsigned_payload,
            )
        except sig.SignatureError as exc:
            raise E.AuthenticationFailed(str(exc)) from None
        header_project = pending.headers.get("x-project-id")
        if not key["member"] or (header_project and header_project != pending.project_id):
            raise E.ProjectMismatch()
        if pending.writes and self.refuse_replays:
            self._remember(pending)
        domain_id, domain_name = self.identity.domain()
        return Principal(
            key["user_id"], key["user_name"], bool(key["is_admin"]), pending.project_id, domain_id, domain_name
        )

    def _remember(self, pending: PendingRequest) -> None:
        """Record the request's signature until its date is out of the window, or refuse it as a repeat."""
        now = self.clock.now_ms()
        assert pending.signed is not None
        # Past that moment its date is refused anyway (a second of slack for the date's resolution).
        expires_at = sig.signing_time_ms(pending.headers) + self.skew_seconds * 1000 + 1000
        with self.db.write() as conn:
            if now >= self._next_purge_ms:
                self._next_purge_ms = now + PURGE_EVERY_MS
                replay_repo.forget_expired(conn, now)
            if not replay_repo.remember(conn, pending.signed.signature, expires_at):
                raise E.ReplayedRequest()

    def _begin_signed(self, request: PendingRequest, authorization: str) -> PendingRequest:
        try:
            signed = sig.parse_authorization(authorization)
        except sig.SignatureError as exc:
            raise E.AuthenticationFailed(str(exc)) from None
        with self.db.read_one() as conn:
            key = repo.access_key_for_project(conn, signed.access_key, request.project_id)
        if key is None:
            raise E.AuthenticationFailed("Get secretKey failed, ak not exist")
        if not key["enabled"]:
            raise E.AccessKeyDisabled()
        try:
            sig.check_before_body(signed, request.headers, self.clock.now(), self.skew_seconds)
        except sig.SignatureError as exc:
            raise E.AuthenticationFailed(str(exc)) from None
        return replace(request, signed=signed, key=dict(key))

    def _by_token(self, token: str, headers, project_id) -> Principal:
        if not token.strip():
            raise E.TokenEmpty()
        with self.db.read_one() as conn:
            row = repo.get_token(conn, token_hash(token.strip()))
        domain_id, domain_name = self.identity.domain()
        if row is None:
            raise E.TokenInvalid()
        if row["expires_at"] <= self.clock.now_ms():
            raise E.TokenExpired()
        if row["project_id"] is None:
            raise E.ModelArtsError(
                "Invalid token header because the token does not contain a project.",
                code="ModelArts.0212",
                http_status=401,
            )
        header_project = headers.get("x-project-id")
        if row["project_id"] != project_id or (header_project and header_project != project_id):
            raise E.ProjectMismatch()
        return Principal(row["user_id"], row["user_name"], bool(row["is_admin"]), project_id, domain_id, domain_name)
