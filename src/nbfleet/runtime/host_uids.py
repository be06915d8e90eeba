"""Which host uid each local instance runs as, when nbfleet is root: one uid per instance, from a range.

No accounts are made: a uid is only a number the kernel compares. Each instance's is chosen once and kept
in ``<instance>/uid``; ``<data dir>/sandbox-uids/<uid>``, created exclusively, reserves it, so two
instances (or two nbfleet processes sharing the data dir) never get the same one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from .base import RuntimeFailure


class HostUids:
    def __init__(self, data_dir: Path, uid_range: tuple[int, int]):
        self.table = Path(data_dir) / "sandbox-uids"
        self.low, self.high = uid_range

    def of(self, instance_root: Path) -> int:
        """The instance's uid, chosen now if it has none yet."""
        record = instance_root / "uid"
        try:
            return int(record.read_text())
        except FileNotFoundError:
            pass
        uid = self._reserve(instance_root.name)
        # Two processes choosing for the same instance at once: the first record made wins, the other
        # process gives its reservation back and uses the recorded uid.
        try:
            fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            self.release(uid, instance_root.name)
            return int(record.read_text())
        with os.fdopen(fd, "w") as fh:
            fh.write(str(uid))
        return uid

    def _reserve(self, instance_id: str) -> int:
        self.table.mkdir(mode=0o700, exist_ok=True)
        for _ in range(1000):
            uid = random.randint(self.low, self.high)
            try:
                fd = os.open(self.table / str(uid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(instance_id)
            return uid
        raise RuntimeFailure("no free host uid left in sandbox_uid_range", step=1)

    def recorded(self, instance_root: Path) -> int | None:
        """The instance's uid if it has one."""
        try:
            return int((instance_root / "uid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def release(self, uid: int | None, instance_id: str) -> None:
        """The instance that held ``uid`` is gone: the uid may be given to another one. Only a reservation
        this instance still holds goes: one removed twice (two processes cleaning up after the same instance)
        must not free the uid another instance has been given meanwhile."""
        if uid is None:
            return
        reservation = self.table / str(uid)
        try:
            if reservation.read_text() != instance_id:
                return
            os.unlink(reservation)
        except FileNotFoundError:
            pass
