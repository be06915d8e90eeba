"""Password sign-in (the console and ``POST /v3/auth/tokens``), throttled.

Two limits, each answered with 429 ``ModelArts.6101`` and ``Retry-After``:
- backoff after failures, per account and per client address, counted in the store so that every replica
  applies it (rule: ``domain/signin.py``). A sign-in that must wait is refused before its password is
  looked at, even if the password is right;
- a fixed number of password checks at a time in this process. Argon2 takes 64 MiB and ~0.1 s of CPU
  per check; a sign-in that finds every slot taken is refused at once instead of queued, so a burst of
  sign-ins can neither grow the server's memory nor occupy the threads the rest of the API needs.
"""

from __future__ import annotations

import math
import threading

from ..domain import errors as E
from ..domain.signin import SignInBackoff
from ..observability import context
from ..store import signin_repo as repo
from .identity import IdentityService

# Addresses get more free failures than accounts: several people may sign in from behind one address.
ADDRESS_ALLOWANCE = 4
PURGE_EVERY_MS = 60_000


class PasswordSignIn:
    def __init__(
        self, identity: IdentityService, clock, *, free_failures: int, max_delay_seconds: int, concurrent_checks: int
    ):
        self.identity = identity
        self.db = identity.db
        self.clock = clock
        self.account_rule = SignInBackoff(free_failures, max_delay_seconds * 1000)
        self.address_rule = SignInBackoff(free_failures * ADDRESS_ALLOWANCE, max_delay_seconds * 1000)
        self._checks = threading.BoundedSemaphore(concurrent_checks)
        self._next_purge_ms = 0

    def sign_in(
        self, user_name: str, password: str, address: str | None, *, domain_name: str | None = None
    ) -> dict | None:
        """``{"id", "name", "is_admin"}`` if the password is right, None if not; raises ``TooManySignIns``
        while the account or the address must wait and ``SignInBusy`` when no check slot is free.

        Blocking (database, Argon2): call it from a worker thread."""
        counters = [(repo.counter_key("account", user_name), self.account_rule)]
        if address:
            counters.append((repo.counter_key("address", address), self.address_rule))
        now = self.clock.now_ms()
        with self.db.read() as conn:
            failures = repo.failures_of(conn, [key for key, _ in counters])
        wait_ms = max((rule.wait_ms(*failures[key], now) for key, rule in counters if key in failures), default=0)
        if wait_ms > 0:
            raise E.TooManySignIns(math.ceil(wait_ms / 1000))
        if not self._checks.acquire(blocking=False):
            raise E.SignInBusy()
        try:
            user = self.identity.check_password(user_name, password, domain_name=domain_name)
        finally:
            self._checks.release()
        self._record(counters, succeeded=user is not None)
        if user is not None:
            context.note_user(user["id"], user["name"])  # who signed in, for the audit trail
        return user

    def _record(self, counters: list[tuple[str, SignInBackoff]], *, succeeded: bool) -> None:
        now = self.clock.now_ms()
        account_key = counters[0][0]
        with self.db.write() as conn:
            if succeeded:
                repo.clear(conn, account_key)
                return
            for key, rule in counters:
                repo.add_failure(conn, key, now, rule.forget_after_ms)
            if now >= self._next_purge_ms:
                self._next_purge_ms = now + PURGE_EVERY_MS
                repo.forget_before(conn, now - max(rule.forget_after_ms for _, rule in counters))
