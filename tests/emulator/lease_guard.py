"""A sample of the code nbfleet.testing is for: a cost guard such as a team would run every few minutes
against ModelArts, written only against the official SDK.

For every RUNNING notebook of the project it renews the lease of those tagged ``keep=true`` and stops the
others whose lease ends within ``window``. It reads the time from the ``now`` it is given (the wall clock by
default), which is what lets its tests move time: they pass the emulated server's clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from huaweicloudsdkmodelarts.v1 import LeaseReq, ListNotebooksRequest, RenewLeaseRequest, StopNotebookRequest

KEEP_TAG = ("keep", "true")
RENEW_BY = timedelta(hours=2)


@dataclass
class Report:
    stopped: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # notebook id -> the API's error code


def _wall_clock() -> datetime:
    return datetime.now(UTC)


def _running(client) -> list:
    notebooks, offset = [], 0
    while True:
        # The API pages by at most 50.
        page = client.list_notebooks(ListNotebooksRequest(status="RUNNING", offset=offset, limit=50))
        notebooks.extend(page.data or [])
        offset += len(page.data or [])
        if not page.data or offset >= page.total:
            return notebooks


def _keeps(notebook) -> bool:
    return any((t.key, t.value) == KEEP_TAG for t in notebook.tags or [])


def guard(client, *, window: timedelta = timedelta(minutes=10), now: Callable[[], datetime] = _wall_clock) -> Report:
    from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

    report = Report()
    deadline_ms = int((now() + window).timestamp() * 1000)
    for notebook in _running(client):
        lease = notebook.lease
        if lease is None or not lease.enable or lease.type != "TIMING":
            continue
        try:
            if _keeps(notebook):
                client.renew_lease(
                    RenewLeaseRequest(id=notebook.id, body=LeaseReq(duration=int(RENEW_BY.total_seconds() * 1000)))
                )
                report.renewed.append(notebook.id)
            elif lease.create_at + lease.duration <= deadline_ms:
                client.stop_notebook(StopNotebookRequest(id=notebook.id))
                report.stopped.append(notebook.id)
        except ClientRequestException as exc:  # e.g. it stopped meanwhile: the next run sees it again
            report.failed[notebook.id] = exc.error_code
    return report
