"""nbfleet's own files in the data dir (database, secret key, credentials) are its user's alone: mode 0600.

Set per file rather than with a process-wide umask: the process also lays out instance directories (the
runtime), whose modes are not nbfleet's own business, and a umask changed at run time would race with
the threads that create them. SQLite creates a database's ``-wal`` and ``-shm`` files with the
database file's own mode, so a database created 0600 keeps its companions private too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE = 0o600


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists; an existing one is made 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))
    except FileExistsError:
        make_private(path)


def make_private(path: Path) -> None:
    """Take group and other permissions away from ``path`` if it exists (files of older versions were 0644)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        os.chmod(path, mode & 0o700)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (replacing it) so that it is never readable by others, not even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), PRIVATE)  # an existing file keeps its old mode through O_CREAT
        f.write(data)
