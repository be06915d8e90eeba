"""SSH key pairs: the public keys a user registers under names, for ``endpoints[].key_pair_names``.

The notebook API has no call for them (ModelArts keeps them in its key pair service); nbfleet answers the
create/list/delete subset of that service's shape, ``/v3/{project_id}/keypairs``, for the CLI and the console.
Only public keys are kept, in OpenSSH's one-line form; a private key is refused and never stored.
"""

from __future__ import annotations

import re

import asyncssh
from sqlalchemy.exc import IntegrityError

from ..auth.principal import Principal
from ..clock import SystemClock
from ..domain import errors as E
from ..store import identity_repo as repo
from ..store.db import Database

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # whole string (fullmatch): "$" would let a newline end it
MAX_KEY_CHARS = 16384
MAX_RSA_BITS = 16384  # larger keys only cost the gateway time at every sign-in
MAX_KEYPAIRS = 100  # per user
KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


class KeyPairInvalid(ValueError):
    """The name or the public key cannot be used; the message says why."""


def check_name(name) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise KeyPairInvalid("a key pair name is 1-64 letters, digits, '-' or '_'")
    return name


def normal_public_key(text) -> str:
    """One OpenSSH public key line (type, key, comment), or KeyPairInvalid."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_KEY_CHARS:
        raise KeyPairInvalid("public_key must be one OpenSSH public key line")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) != 1 or "PRIVATE KEY" in text:
        raise KeyPairInvalid("public_key must be one OpenSSH public key line (never a private key)")
    try:
        key = asyncssh.import_public_key(lines[0].strip())
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise KeyPairInvalid(f"public_key is not an OpenSSH public key ({exc})") from None
    if key.get_algorithm() not in KEY_TYPES:
        raise KeyPairInvalid(f"key type {key.get_algorithm()} is not accepted; use ssh-ed25519")
    if key.get_algorithm() == "ssh-rsa" and getattr(key.pyca_key, "key_size", 0) < 2048:
        raise KeyPairInvalid("RSA keys need at least 2048 bits")
    if key.get_algorithm() == "ssh-rsa" and getattr(key.pyca_key, "key_size", 0) > MAX_RSA_BITS:
        raise KeyPairInvalid(f"RSA keys may have at most {MAX_RSA_BITS} bits")
    return key.export_public_key("openssh").decode().strip()


def keypair_json(row) -> dict:
    key = asyncssh.import_public_key(row["public_key"])
    return {
        "name": row["name"],
        "type": "ssh",
        "public_key": row["public_key"],
        "fingerprint": key.get_fingerprint("sha256"),
        "create_at": row["create_at"],
    }


class KeyPairService:
    def __init__(self, db: Database, clock=None):
        self.db = db
        self.clock = clock or SystemClock()

    def create(self, principal: Principal, body) -> dict:
        if not isinstance(body, dict):
            raise E.InvalidPayload("Invalid request payload: the body must be a JSON object.")
        keypair = body.get("keypair")
        if not isinstance(keypair, dict):
            raise E.MissingProperty("keypair")
        for member in ("name", "public_key"):
            if member not in keypair:
                raise E.MissingProperty(f"keypair.{member}")
        try:
            name = check_name(keypair["name"])
            public_key = normal_public_key(keypair["public_key"])
        except KeyPairInvalid as exc:
            raise E.InvalidProperty("keypair", str(exc)) from None
        try:
            with self.db.write() as conn:
                if len(repo.list_keypairs(conn, principal.user_id)) >= MAX_KEYPAIRS:
                    raise E.InvalidProperty(
                        "keypair", f"A user may have at most {MAX_KEYPAIRS} key pairs; delete one first."
                    )
                repo.insert_keypair(conn, principal.user_id, name, public_key, self.clock.now_ms())
                row = next(r for r in repo.list_keypairs(conn, principal.user_id) if r["name"] == name)
        except IntegrityError:
            raise E.InvalidProperty("keypair.name", f"A key pair named {name} already exists.") from None
        return {"keypair": keypair_json(row)}

    def list(self, principal: Principal) -> dict:
        with self.db.read() as conn:
            rows = repo.list_keypairs(conn, principal.user_id)
        return {"keypairs": [{"keypair": keypair_json(row)} for row in rows]}

    def delete(self, principal: Principal, name: str) -> dict:
        """Instances naming it keep the name; the key no longer opens their SSH sessions."""
        with self.db.write() as conn:
            if not repo.delete_keypair(conn, principal.user_id, name):
                raise E.KeyPairNotAllowed(name)
        return {}
