"""Encryption of stored secret keys with a key that is kept outside the database.

A copy of the database alone does not reveal any SK: the Fernet key lives in
``<data dir>/secret.key`` (mode 0600) or in ``NBFLEET_SECRET_KEY``.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ..private_files import make_private


class SecretBox:
    def __init__(self, key: bytes):
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, secret_key: str | None, data_dir: Path) -> SecretBox:
        if secret_key:
            return cls(secret_key.encode())
        path = data_dir / "secret.key"
        make_private(path)  # a copy put there by hand may be readable by others
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            # Written aside and published with link(), which fails if the name exists: two processes
            # starting together on one data dir agree on one key and never read a half-written file.
            tmp = data_dir / f".secret.key.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return cls(path.read_bytes().strip())

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("secret cannot be decrypted with this key") from exc
