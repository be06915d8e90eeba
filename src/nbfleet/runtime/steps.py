"""How a runtime ends a start that failed: one ``RuntimeFailure`` with its step, reported as that step's
FAILED, whatever was raised (a failure of its own, a bug, an engine error)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..domain.model import StepStatus
from .base import Reporter, RuntimeFailure

log = logging.getLogger(__name__)


async def failed_start(
    exc: BaseException,
    step: int,
    reporter: Reporter,
    instance_id: str,
    describe: Callable[[BaseException], str] = lambda exc: f"{type(exc).__name__}: {exc}",
) -> RuntimeFailure:
    """The ``RuntimeFailure`` to raise for ``exc`` at ``step``, after reporting it; a cancellation (not an
    ``Exception``) is raised again as it is."""
    if isinstance(exc, RuntimeFailure):
        failure = exc
    elif isinstance(exc, Exception):
        log.exception("instance %s: start failed", instance_id)
        failure = RuntimeFailure(describe(exc), step)
    else:
        raise exc
    if failure.step is None:
        failure.step = step
    try:
        await reporter.step(failure.step, StepStatus.FAILED, failure.reason)
    except Exception:
        log.exception("instance %s: could not report the failed step", instance_id)
    return failure
