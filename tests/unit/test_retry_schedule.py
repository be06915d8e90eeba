"""The reconciler's retry schedule: doubling pauses, a cap, and giving up after the limit."""

from nbfleet.controller.retries import RetrySchedule


def test_pauses_double_up_to_the_cap_and_the_limit_gives_up():
    schedule = RetrySchedule(limit=4, base_seconds=1.0, max_seconds=5.0)
    assert schedule.failed("a", now=0.0) is None  # next try at 2
    assert schedule.waiting(1.9) == ["a"] and schedule.waiting(2.0) == []
    assert schedule.failed("a", now=10.0) is None  # next at 14
    assert schedule.waiting(13.9) == ["a"]
    assert schedule.failed("a", now=20.0) is None  # 8 s capped at 5: next at 25
    assert schedule.waiting(24.9) == ["a"] and schedule.waiting(25.0) == []
    assert schedule.failed("a", now=30.0) == 4  # the fourth failure: give up, forgotten
    assert schedule.waiting(30.0) == []


def test_a_success_forgets_the_failures():
    schedule = RetrySchedule(limit=2, base_seconds=1.0, max_seconds=60.0)
    schedule.failed("a", now=0.0)
    schedule.succeeded("a")
    assert schedule.waiting(0.0) == []
    assert schedule.failed("a", now=1.0) is None  # counting starts again
