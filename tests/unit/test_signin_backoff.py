"""The sign-in backoff rule: free failures, doubling waits, a ceiling, and forgetting."""

from __future__ import annotations

from nbfleet.domain.signin import SignInBackoff

RULE = SignInBackoff(free_failures=5, max_delay_ms=900_000)


def test_the_first_failures_are_free():
    assert [RULE.delay_ms(n) for n in range(5)] == [0, 0, 0, 0, 0]
    assert RULE.wait_ms(4, last_failure_at=1_000, now=1_000) == 0


def test_each_further_failure_doubles_the_wait_up_to_the_ceiling():
    assert [RULE.delay_ms(n) for n in range(5, 10)] == [1_000, 2_000, 4_000, 8_000, 16_000]
    assert RULE.delay_ms(15) == 900_000 and RULE.delay_ms(10_000) == 900_000


def test_the_wait_runs_from_the_last_failure():
    assert RULE.wait_ms(6, last_failure_at=10_000, now=10_500) == 1_500
    assert RULE.wait_ms(6, last_failure_at=10_000, now=12_000) == 0


def test_an_old_counter_is_forgotten():
    assert RULE.forget_after_ms == 3_600_000
    assert RULE.wait_ms(50, last_failure_at=0, now=3_600_000) == 0
    assert RULE.wait_ms(50, last_failure_at=0, now=899_999) == 1
