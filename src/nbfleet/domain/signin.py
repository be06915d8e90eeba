"""How long password sign-ins must wait after failures: exponential backoff, kept per account and per address.

A few failures are free (typing mistakes); each further one doubles the wait, up to a ceiling. A counter
is forgotten once no failure has been added to it for ``forget_after_ms``; a successful sign-in clears its
account's counter (not its address's: one's own account must not reset the count of guesses at others).
"""

from __future__ import annotations

from dataclasses import dataclass

BASE_DELAY_MS = 1_000


@dataclass(frozen=True)
class SignInBackoff:
    free_failures: int
    max_delay_ms: int

    @property
    def forget_after_ms(self) -> int:
        """How long a counter without new failures is kept: long enough that the ceiling is reached again."""
        return max(3_600_000, 2 * self.max_delay_ms)

    def delay_ms(self, failures: int) -> int:
        """The wait imposed after ``failures`` consecutive failures (none while they are free)."""
        if failures < self.free_failures:
            return 0
        doublings = min(failures - self.free_failures, 40)  # 2**40 s is past any ceiling already
        factor: int = 2**doublings
        return min(BASE_DELAY_MS * factor, self.max_delay_ms)

    def wait_ms(self, failures: int, last_failure_at: int, now: int) -> int:
        """How long from ``now`` a sign-in must still wait (0: it may try)."""
        if now - last_failure_at >= self.forget_after_ms:
            return 0
        return max(0, last_failure_at + self.delay_ms(failures) - now)
