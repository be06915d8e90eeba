"""The gateway's host key: made once per installation, kept in the data dir (0600), so that clients never
see a changed host key after a restart or an upgrade."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import asyncssh

from ..private_files import make_private

log = logging.getLogger(__name__)


def load_or_create(path: Path) -> asyncssh.SSHKey:
    """The key in ``path``; a new Ed25519 key written there first if there is none."""
    path = Path(path)
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="nbfleet host key")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_EXCL: two replicas starting together on one data dir keep one key, the first
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(key.export_private_key())
            log.info("SSH host key created at %s (%s)", path, key.get_fingerprint())
    make_private(path)
    key = asyncssh.read_private_key(str(path))
    return key
