"""Projects, users, keys and tokens: bootstrap, administration, and authentication of requests."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..auth import passwords
from ..auth.principal import Principal
from ..auth.secrets import SecretBox
from ..clock import SystemClock
from ..domain.ids import new_id  # noqa: F401  (also imported from here)
from ..private_files import make_private, write_private
from ..store import identity_repo as repo
from ..store.db import Database

CREDENTIALS_FILE = "credentials.json"

# Where a token came from (tokens.origin): a password change revokes the ones the old password opened.
TOKEN_FROM_PASSWORD = "password"  # console sessions, POST /v3/auth/tokens
TOKEN_FROM_ADMIN = "admin"  # nbfleet admin create-token


def new_access_key() -> tuple[str, str]:
    ak = "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(20))
    return ak, secrets.token_urlsafe(30)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class NewUser:
    user_id: str
    user_name: str
    project_id: str
    ak: str
    sk: str


class IdentityService:
    def __init__(self, db: Database, box: SecretBox, clock=None, *, token_ttl_seconds: int = 86_400):
        self.db = db
        self.box = box
        self.clock = clock or SystemClock()
        self.token_ttl_ms = token_ttl_seconds * 1000
        self._domain: tuple[str, str] | None = None
        self._secrets: dict[str, str] = {}

    # --- domain (the installation's account) -------------------------------------------------
    def domain(self) -> tuple[str, str]:
        """The installation's account; set once at bootstrap, so it is read once."""
        if self._domain is None:
            with self.db.read() as conn:
                domain_id, name = repo.get_meta(conn, "domain_id"), repo.get_meta(conn, "domain_name")
            if domain_id is None:
                return "", ""
            self._domain = (domain_id, name or "")
        return self._domain

    def secret_of(self, sealed: str) -> str:
        """Decrypt a stored SK; cached by its ciphertext, so a changed or deleted key is never served stale."""
        secret = self._secrets.get(sealed)
        if secret is None:
            if len(self._secrets) > 10_000:
                self._secrets.clear()
            secret = self._secrets[sealed] = self.box.open(sealed)
        return secret

    # --- administration ---------------------------------------------------------------------
    def create_project(self, name: str) -> str:
        with self.db.write() as conn:
            if repo.find_project_by_name(conn, name):
                raise ValueError(f"a project named {name!r} exists")
            project_id = new_id()
            repo.insert_project(conn, project_id, name, self.clock.now_ms())
            return project_id

    def create_user(self, name: str, project_id: str, *, is_admin: bool = False) -> NewUser:
        """A user, member of ``project_id``, with one fresh access key pair."""
        with self.db.write() as conn:
            if repo.get_project(conn, project_id) is None:
                raise ValueError(f"project {project_id} does not exist")
            if repo.find_user_by_name(conn, name):
                raise ValueError(f"a user named {name!r} exists")
            user_id = new_id()
            now = self.clock.now_ms()
            repo.insert_user(conn, user_id, name, is_admin, now)
            repo.add_membership(conn, user_id, project_id)
            ak, sk = new_access_key()
            repo.insert_access_key(conn, ak, user_id, self.box.seal(sk), now)
            return NewUser(user_id, name, project_id, ak, sk)

    def add_member(self, user_id: str, project_id: str) -> None:
        with self.db.write() as conn:
            if repo.get_user(conn, user_id) is None or repo.get_project(conn, project_id) is None:
                raise ValueError("unknown user or project")
            repo.add_membership(conn, user_id, project_id)

    def create_access_key(self, user_id: str) -> tuple[str, str]:
        with self.db.write() as conn:
            if repo.get_user(conn, user_id) is None:
                raise ValueError(f"user {user_id} does not exist")
            ak, sk = new_access_key()
            repo.insert_access_key(conn, ak, user_id, self.box.seal(sk), self.clock.now_ms())
            return ak, sk

    def set_access_key_enabled(self, ak: str, enabled: bool) -> None:
        with self.db.write() as conn:
            if not repo.set_access_key_enabled(conn, ak, enabled):
                raise ValueError(f"access key {ak} does not exist")

    def create_token(self, user_id: str, project_id: str | None, *, origin: str = TOKEN_FROM_ADMIN) -> tuple[str, int]:
        """An opaque token; only its hash is stored. Returns (token, expires_at ms).

        ``origin``: ``TOKEN_FROM_PASSWORD`` for a sign-in with the password (ended by a password change)."""
        with self.db.write() as conn:
            if repo.get_user(conn, user_id) is None:
                raise ValueError(f"user {user_id} does not exist")
            if project_id is not None and not repo.is_member(conn, user_id, project_id):
                raise ValueError(f"user {user_id} is not a member of project {project_id}")
            token = "nbt-" + secrets.token_urlsafe(40)
            now = self.clock.now_ms()
            expires = now + self.token_ttl_ms
            repo.insert_token(conn, token_hash(token), user_id, project_id, expires, now, origin)
            return token, expires

    def set_quota(self, user_id: str, quota: int | None) -> None:
        with self.db.write() as conn:
            if not repo.update_user(conn, user_id, instance_quota=quota):
                raise ValueError(f"user {user_id} does not exist")

    def set_admin(self, user_id: str, is_admin: bool) -> None:
        with self.db.write() as conn:
            if not repo.update_user(conn, user_id, is_admin=is_admin):
                raise ValueError(f"user {user_id} does not exist")

    def add_keypair(self, user_id: str, name: str, public_key: str) -> None:
        """ValueError when the user does not exist, or the name or key cannot be used."""
        from .keypairs import check_name, normal_public_key

        name, public_key = check_name(name), normal_public_key(public_key)
        with self.db.write() as conn:
            if repo.get_user(conn, user_id) is None:
                raise ValueError(f"user {user_id} does not exist")
            if name in repo.keypair_names(conn, user_id):
                raise ValueError(f"user {user_id} already has a key pair named {name}")
            repo.insert_keypair(conn, user_id, name, public_key, self.clock.now_ms())

    def create_workspace(self, project_id: str, name: str) -> str:
        with self.db.write() as conn:
            if repo.get_project(conn, project_id) is None:
                raise ValueError(f"project {project_id} does not exist")
            workspace_id = new_id()
            repo.insert_workspace(conn, workspace_id, project_id, name, self.clock.now_ms())
            return workspace_id

    # --- passwords and sessions ------------------------------------------------------------------
    def set_password(self, user_id: str, password: str) -> None:
        """Store a salted Argon2id hash of ``password``; raises ValueError for a weak one or an unknown user.

        Ends, in the same transaction, every console session and token the user opened with a password:
        whoever knew the old one keeps nothing it gave them."""
        hashed = passwords.hash_password(password)
        with self.db.write() as conn:
            if not repo.update_user(conn, user_id, password_hash=hashed):
                raise ValueError(f"user {user_id} does not exist")
            repo.delete_user_tokens(conn, user_id, TOKEN_FROM_PASSWORD)

    def check_password(self, user_name: str, password: str, *, domain_name: str | None = None) -> dict | None:
        """``{"id", "name", "is_admin"}`` if ``password`` is the user's, else None.

        An unknown user, a user without a password and a wrong domain cost the same hashing time as a
        wrong password, so the answer's timing does not reveal which names exist.
        """
        with self.db.read() as conn:
            user = repo.find_user_by_name(conn, user_name)
        stored = user["password_hash"] if user is not None else None
        if not passwords.verify_password(stored, password):
            return None
        if domain_name is not None and domain_name != self.domain()[1]:
            return None
        if stored is not None and passwords.needs_rehash(stored):  # verified: there is a hash
            with self.db.write() as conn:
                repo.update_user(conn, user["id"], password_hash=passwords.hash_password(password))
        return {"id": user["id"], "name": user["name"], "is_admin": bool(user["is_admin"])}

    def member_project(
        self, user_id: str, *, project_id: str | None = None, project_name: str | None = None
    ) -> tuple[str, str] | None:
        """(id, name) of the project picked by id or name, if the user is a member of it.

        With neither given: the bootstrap project if the user is a member, else the user's first one.
        """
        with self.db.read() as conn:
            if project_id:
                row = repo.get_project(conn, project_id)
            elif project_name:
                row = repo.find_project_by_name(conn, project_name)
            else:
                ids = repo.user_projects(conn, user_id)
                preferred = repo.get_meta(conn, "bootstrap_project")
                chosen = preferred if preferred in ids else (sorted(ids)[0] if ids else None)
                row = repo.get_project(conn, chosen) if chosen else None
            if row is None or not repo.is_member(conn, user_id, row["id"]):
                return None
            return row["id"], row["name"]

    def principal_for_token(self, token: str) -> Principal | None:
        """The principal of a valid, project-scoped token (a console session), or None."""
        if not token:
            return None
        with self.db.read() as conn:
            row = repo.get_token(conn, token_hash(token))
        if row is None or row["project_id"] is None or row["expires_at"] <= self.clock.now_ms():
            return None
        domain_id, domain_name = self.domain()
        return Principal(
            row["user_id"], row["user_name"], bool(row["is_admin"]), row["project_id"], domain_id, domain_name
        )

    def revoke_token(self, token: str) -> None:
        """Forget a token (sign-out); unknown tokens are ignored."""
        with self.db.write() as conn:
            repo.delete_token(conn, token_hash(token))

    # --- bootstrap ----------------------------------------------------------------------------
    def bootstrap(self, data_dir: Path, endpoint: str) -> dict | None:
        """On the first start: a domain, a project, an admin user and a key pair.

        Returns the credentials (also written to ``<data dir>/credentials.json``, mode 0600), or
        None when the store was already bootstrapped.
        """
        make_private(data_dir / CREDENTIALS_FILE)  # a copy from an earlier start may be readable by others
        with self.db.write() as conn:
            if repo.get_meta(conn, "bootstrapped"):
                return None
            now = self.clock.now_ms()
            repo.set_meta(conn, "domain_id", new_id())
            repo.set_meta(conn, "domain_name", "nbfleet")
            project_id, user_id = new_id(), new_id()
            repo.insert_project(conn, project_id, "default", now)
            repo.insert_user(conn, user_id, "admin", True, now)
            repo.add_membership(conn, user_id, project_id)
            ak, sk = new_access_key()
            repo.insert_access_key(conn, ak, user_id, self.box.seal(sk), now)
            repo.set_meta(conn, "bootstrapped", str(now))
            repo.set_meta(conn, "bootstrap_project", project_id)
        creds = {
            "project_id": project_id,
            "user_id": user_id,
            "user_name": "admin",
            "ak": ak,
            "sk": sk,
            "endpoint": endpoint,
        }
        write_credentials(data_dir / CREDENTIALS_FILE, creds)
        return creds

    def check_secret_key(self) -> None:
        """Refuse to start with a secret key other than the one that sealed the stored SKs.

        Replicas on other machines need the same ``NBFLEET_SECRET_KEY`` (or a copy of ``secret.key``);
        with another key every signed request would fail, so say so at start instead."""
        with self.db.read() as conn:
            sealed = repo.any_sealed_secret(conn)
        if sealed is None:
            return
        try:
            self.box.open(sealed)
        except ValueError:
            raise RuntimeError(
                "the secret key (NBFLEET_SECRET_KEY or <data dir>/secret.key) is not the one "
                "that encrypted the access keys in this database; give every replica the same "
                "key"
            ) from None

    def bootstrap_project(self) -> str | None:
        with self.db.read() as conn:
            return repo.get_meta(conn, "bootstrap_project")


def write_credentials(path: Path, creds: dict) -> None:
    write_private(path, json.dumps(creds, indent=2).encode())
